"""The history store: one row per sync, newest first.

Rows in table ``synchistory`` (SPEC section 5): PartitionKey is the referral or opportunity id,
RowKey an inverted timestamp, so a plain ascending query of one partition lists the newest sync
first. A short random suffix keeps two syncs in the same microsecond apart.

A failed attempt of a sync job (the worker raised, the host will retry it) is a row too, with
outcome ``error`` and a ``failure``: what failed, by type, HTTP status, the service's error code
and the call (method and path with ids replaced by ``(…)``) — never a message or a body, which
may quote customer data. ``cosell poison list`` reads it back for a job the host poisoned.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.state._entity import check_key, from_entity, to_entity
from shared.state._table import TableStore

HISTORY_TABLE = "synchistory"
_JSON = frozenset({"Changes", "Conflicts", "Errors", "Failure"})
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_INVERT_FROM = 10**17 - 1  # microseconds: sorts correctly until the year 4738


class FieldChange(BaseModel):
    """One field written by a sync: which way, from what, to what."""

    model_config = ConfigDict(frozen=True)

    field: str
    direction: Literal["pc_to_crm", "crm_to_pc"]
    old: Any = None
    new: Any = None


class FailureRecord(BaseModel):
    """Why one attempt of a sync job failed, without personal data (ids, codes, paths only)."""

    model_config = ConfigDict(frozen=True)

    service: str  # "Dataverse", "Partner Center", "Table Storage" or "sync"
    error: str  # the exception's class name
    status: int | None = None  # the HTTP status, when the service answered
    code: str | None = None  # the service's own error code (Dataverse 0x..., Partner Center's)
    method: str | None = None
    path: str | None = None  # the call's path, ids replaced by (…): "opportunities(…)"
    request_id: str | None = None  # Partner Center's request-id, for Microsoft support
    attempt: int | None = None  # the queue's dequeue count, when known

    @property
    def summary(self) -> str:
        """One line: ``Dataverse 500 on GET opportunities(…) (code 0x80040216)``."""
        text = self.service
        # The status says it all for an answer; without one (no answer, or not a service's
        # error) the error's type does.
        text += f" {self.status}" if self.status else f" {self.error}"
        if self.method and self.path:
            text += f" on {self.method} {self.path}"
        if self.code:
            text += f" (code {self.code})"
        return text


class HistoryEntry(BaseModel):
    """What one sync did."""

    key: str  # the referral or opportunity id the sync was about
    at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    outcome: Literal["synced", "no_change", "created", "error", "skipped"]
    reason: str = ""
    direction: Literal["pc_to_crm", "crm_to_pc", "both", "none"] = "none"
    changes: list[FieldChange] = Field(default_factory=list)
    conflicts: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)
    duration_ms: int = 0
    remote_calls: int = 0
    failure: FailureRecord | None = None  # a failed attempt of a job (outcome "error")
    # For support (issue 18): the W3C traceparent of the sync's span (its trace id is App
    # Insights' operation_Id) and Partner Center's request id of the sync's last call.
    trace_parent: str | None = None
    pc_request_id: str | None = None


def inverted_row_key(at: datetime) -> str:
    """A RowKey that sorts newer moments first."""
    return f"{_inverted(at)}-{secrets.token_hex(3)}"


def _inverted(at: datetime) -> str:
    micros = (at.astimezone(UTC) - _EPOCH) // timedelta(microseconds=1)
    return f"{_INVERT_FROM - micros:017d}"


class HistoryStore(TableStore):
    """Appends and lists history rows."""

    async def add_entry(self, entry: HistoryEntry) -> None:
        key = check_key(entry.key.strip("{}").lower(), what="history key")
        entity = to_entity(
            key,
            inverted_row_key(entry.at),
            {
                "At": entry.at,
                "Outcome": entry.outcome,
                "Reason": entry.reason,
                "Direction": entry.direction,
                "Changes": [c.model_dump(mode="json") for c in entry.changes] or None,
                "Conflicts": entry.conflicts or None,
                "Errors": entry.errors or None,
                "DurationMs": entry.duration_ms,
                "RemoteCalls": entry.remote_calls,
                "Failure": entry.failure.model_dump(mode="json") if entry.failure else None,
                "TraceParent": entry.trace_parent,
                "PcRequestId": entry.pc_request_id,
            },
            json_fields=_JSON,
        )
        await self._insert(entity, what=f"history row of {key}")

    async def list_recent(
        self, *, since: datetime, limit: int = 1000, select: list[str] | None = None
    ) -> tuple[list[HistoryEntry], bool]:
        """Rows of every deal written after ``since``, at most ``limit`` (for the dashboard),
        and whether there were more. One query filtered on the inverted RowKey across
        partitions (the service scans the table; the rows come partition by partition, not
        newest first). ``select`` names the stored properties to fetch (``At`` is always)."""
        cutoff = _inverted(since)
        columns = None if select is None else sorted({"PartitionKey", "At", *select})
        entries: list[HistoryEntry] = []
        pages = self._table.query_entities(
            "RowKey lt @cutoff",
            parameters={"cutoff": cutoff},
            select=columns,
            results_per_page=min(limit, 1000),
        )
        async for entity in pages:
            if len(entries) >= limit:
                return entries, True
            entries.append(self._entry(str(entity["PartitionKey"]), dict(entity)))
        return entries, False

    async def list_entries(self, key: str, *, limit: int = 50) -> list[HistoryEntry]:
        """The newest ``limit`` entries of one referral or opportunity, newest first."""
        partition = check_key(key.strip("{}").lower(), what="history key")
        entries: list[HistoryEntry] = []
        pages = self._table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": partition}, results_per_page=min(limit, 1000)
        )
        async for entity in pages:
            entries.append(self._entry(partition, dict(entity)))
            if len(entries) >= limit:
                break
        return entries

    @staticmethod
    def _entry(key: str, entity: dict[str, Any]) -> HistoryEntry:
        values = from_entity(entity, json_fields=_JSON)
        return HistoryEntry(
            key=key,
            at=values["At"],
            outcome=values.get("Outcome", "synced"),
            reason=values.get("Reason", ""),
            direction=values.get("Direction", "none"),
            changes=values.get("Changes") or [],
            conflicts=values.get("Conflicts") or [],
            errors=values.get("Errors") or [],
            duration_ms=values.get("DurationMs", 0),
            remote_calls=values.get("RemoteCalls", 0),
            failure=values.get("Failure"),
            trace_parent=values.get("TraceParent"),
            pc_request_id=values.get("PcRequestId"),
        )
