"""The cursor store: watermarks of ``poll_dataverse`` and ``reconcile_partner_center``.

Rows ``cursor`` / name in table ``synccursors`` (SPEC section 5); rows ``summary`` / name hold
small documents a timer computes for others to read cheaply (``drift``: the out-of-sync counts
``/api/health`` reports, ``shared.drift``). Saving is conditional on the
ETag read, so two overlapping timer runs cannot both move a cursor (the loser gets
``ConcurrencyError`` and its work is repeated harmlessly by the next run).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from shared.state._entity import from_entity, to_entity
from shared.state._table import TableStore

CURSORS_TABLE = "synccursors"
_PARTITION = "cursor"
_SUMMARIES = "summary"
_JSON = frozenset({"State", "Document"})


class Cursor(BaseModel):
    """A named watermark, plus any small state the timer needs (ids seen at the watermark)."""

    name: str
    watermark: datetime
    state: dict[str, Any] = Field(default_factory=dict)
    updated_at: datetime | None = None
    etag: str | None = None

    def age_seconds(self, now: datetime | None = None) -> float | None:
        """Seconds since the cursor was last saved."""
        if self.updated_at is None:
            return None
        return ((now or datetime.now(UTC)) - self.updated_at).total_seconds()


class CursorStore(TableStore):
    """Reads and saves cursors."""

    async def get_cursor(self, name: str) -> Cursor | None:
        found = await self._read(_PARTITION, name)
        if found is None:
            return None
        entity, etag = found
        return self._cursor(entity, etag)

    async def list_cursors(self) -> list[Cursor]:
        """Every cursor (there are only a few)."""
        cursors: list[Cursor] = []
        async for entity in self._table.query_entities(
            "PartitionKey eq @pk", parameters={"pk": _PARTITION}
        ):
            cursors.append(self._cursor(dict(entity), str(entity.metadata["etag"])))
        return cursors

    async def save_cursor(self, cursor: Cursor) -> Cursor:
        """Create the cursor (no ETag) or replace the one read (its ETag); returns it saved."""
        now = datetime.now(UTC)
        entity = to_entity(
            _PARTITION,
            cursor.name,
            {"Watermark": cursor.watermark, "State": cursor.state or None, "UpdatedAt": now},
            json_fields=_JSON,
        )
        what = f"cursor {cursor.name}"
        if cursor.etag is None:
            etag = await self._insert(entity, what=what)
        else:
            etag = await self._replace(entity, etag=cursor.etag, what=what)
        return cursor.model_copy(update={"etag": etag, "updated_at": now})

    async def get_summary(self, name: str) -> dict[str, Any] | None:
        """A stored summary document (one point read), or None."""
        found = await self._read(_SUMMARIES, name)
        if found is None:
            return None
        document = from_entity(found[0], json_fields=_JSON).get("Document")
        return document if isinstance(document, dict) else None

    async def save_summary(self, name: str, document: dict[str, Any]) -> None:
        """Replace a summary document (last writer wins: each is a fresh computation)."""
        entity = to_entity(_SUMMARIES, name, {"Document": document}, json_fields=_JSON)
        await self._replace(entity, etag=None, what=f"summary {name}")

    @staticmethod
    def _cursor(entity: dict[str, Any], etag: str) -> Cursor:
        values = from_entity(entity, json_fields=_JSON)
        return Cursor(
            name=entity["RowKey"],
            watermark=values["Watermark"],
            state=values.get("State") or {},
            updated_at=values.get("UpdatedAt"),
            etag=etag,
        )
