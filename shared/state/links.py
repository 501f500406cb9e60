"""The link store: which referral belongs to which opportunity, and the last synced state.

Rows (SPEC section 5) in table ``synclinks``:

* ``ref`` / referral id — the link: the base ``Deal`` (JSON), the referral's eTag and
  updatedDateTime, the opportunity's etag and modifiedon, a pending-create intent, the last result.
* ``opp`` / opportunity id — an index row naming the referral id. While a referral is being
  created for an opportunity there is no referral id yet, so the index row alone carries that
  pending-create intent (SPEC 4.5: record the intent before the Partner Center POST).

The two rows live in different partitions, so they cannot share a transaction. The index row is
written first and is derived data (upserted): a crash between the two writes leaves an index row
pointing at a link that does not exist yet, which reads as "no link" and heals on the retry.
"""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from typing import Any, Literal

from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from shared.state._entity import check_key, from_entity, to_entity
from shared.state._table import TableStore, translated

LINKS_TABLE = "synclinks"
_REF = "ref"
_OPP = "opp"
_JSON = frozenset({"Base", "PendingCreate", "LastResult"})
_SCANNED = (
    "PartitionKey",
    "RowKey",
    "OpportunityId",
    "ReferralId",
    "ReferralETag",
    "ReferralUpdatedAt",
    "OpportunityETag",
    "OpportunityModifiedOn",
    "RowVersions",
    "PendingCreate",
    "LastResult",
)


class PendingCreate(BaseModel):
    """An intent recorded before creating a record, so a retry finds it instead of a second."""

    model_config = ConfigDict(frozen=True)

    side: Literal["partner_center", "crm"]  # where the record is being created
    target_id: str | None = None  # the id chosen in advance (uuid5 for CRM records), if any
    started_at: datetime
    # The sync that holds it: a lease, live until it expires (older rows have no owner).
    owner: str | None = None


class LinkResult(BaseModel):
    """How the last sync of this pair ended. ``failed``: an attempt raised (a service down, a
    5xx after the retries) and the queue retries the job; ``message`` is the failure's summary
    (``shared.failures``), the next sync that completes replaces it."""

    model_config = ConfigDict(frozen=True)

    status: Literal["synced", "error", "pending", "failed"]
    message: str = ""
    at: datetime


class SyncLink(BaseModel):
    """One referral ↔ opportunity pair and the state both sides had at the last sync."""

    referral_id: str
    opportunity_id: str | None = None
    base: dict[str, Any] | None = None  # the last synced canonical Deal, as JSON
    referral_etag: str | None = None
    referral_updated_at: datetime | None = None
    opportunity_etag: str | None = None
    opportunity_modified_on: datetime | None = None
    # A moment (our clock) by which every version of the opportunity Dataverse had committed is
    # one the link holds: when the sync that stored it began to read (a conditional write after
    # that read keeps it). A poll job enqueued before it is covered, whatever its second.
    opportunity_confirmed_at: datetime | None = None
    # Dataverse ``versionnumber`` of the rows the last sync read or wrote — "opportunity",
    # "solutions" (the newest of its solution rows), "account", "contact": what tells our own
    # write from a seller's edit in the same second (``modifiedon`` has whole seconds). Kept per
    # table: whether one counter serves the whole organization (SQL rowversion) is not
    # documented (UNCERTAIN); compared per table it is safe either way.
    row_versions: dict[str, int] = Field(default_factory=dict)
    pending_create: PendingCreate | None = None
    last_result: LinkResult | None = None
    etag: str | None = Field(default=None, description="the row's ETag, set by the store")
    _indexed_opportunity_id: str | None = PrivateAttr(default=None)

    @field_validator("referral_id", "opportunity_id")
    @classmethod
    def _normalise(cls, value: str | None) -> str | None:
        return _norm(value)


class OpportunityIndex(BaseModel):
    """The ``opp`` row: the referral of an opportunity, or the intent to create one.

    Before a referral exists, it also remembers the last result for the opportunity and the
    ``modifiedon`` our own write gave it, so that write is not mistaken for a user's edit.
    """

    opportunity_id: str
    referral_id: str | None = None
    pending_create: PendingCreate | None = None
    opportunity_modified_on: datetime | None = None
    opportunity_confirmed_at: datetime | None = None  # see ``SyncLink``
    row_versions: dict[str, int] = Field(default_factory=dict)  # see ``SyncLink``
    last_result: LinkResult | None = None
    etag: str | None = None

    @field_validator("opportunity_id", "referral_id")
    @classmethod
    def _normalise(cls, value: str | None) -> str | None:
        return _norm(value)


def _norm(value: str | None) -> str | None:
    # GUIDs arrive in either case (and with braces) from the two APIs; keys are case-sensitive.
    return None if value is None else value.strip().strip("{}").lower()


def _stored_versions(versions: dict[str, int]) -> str | None:
    # JSON text: a versionnumber is a 64-bit rowversion, beyond Table Storage's default Int32.
    return json.dumps(versions, sort_keys=True) if versions else None


def _versions(value: Any) -> dict[str, int]:
    """The stored versions; anything unreadable is left out (the timestamp rules apply)."""
    try:
        parsed = json.loads(value) if isinstance(value, str) else {}
    except ValueError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    return {str(k): v for k, v in parsed.items() if isinstance(v, int) and not isinstance(v, bool)}


def _id(value: str, *, what: str) -> str:
    return check_key(_norm(value) or "", what=what)


class LinkStore(TableStore):
    """Reads and writes links; every change of a link is conditional on its ETag."""

    async def get_link(self, referral_id: str) -> SyncLink | None:
        """The link of a referral, or None."""
        found = await self._read(_REF, _id(referral_id, what="referral id"))
        if found is None:
            return None
        entity, etag = found
        values = from_entity(entity, json_fields=_JSON)
        link = SyncLink(
            referral_id=entity["RowKey"],
            opportunity_id=values.get("OpportunityId"),
            base=values.get("Base"),
            referral_etag=values.get("ReferralETag"),
            referral_updated_at=values.get("ReferralUpdatedAt"),
            opportunity_etag=values.get("OpportunityETag"),
            opportunity_modified_on=values.get("OpportunityModifiedOn"),
            opportunity_confirmed_at=values.get("OpportunityConfirmedAt"),
            row_versions=_versions(values.get("RowVersions")),
            pending_create=values.get("PendingCreate"),
            last_result=values.get("LastResult"),
            etag=etag,
        )
        link._indexed_opportunity_id = link.opportunity_id
        return link

    async def get_opportunity_index(self, opportunity_id: str) -> OpportunityIndex | None:
        """The index row of an opportunity (its referral id or pending intent), or None."""
        found = await self._read(_OPP, _id(opportunity_id, what="opportunity id"))
        if found is None:
            return None
        entity, etag = found
        values = from_entity(entity, json_fields=_JSON)
        return OpportunityIndex(
            opportunity_id=entity["RowKey"],
            referral_id=values.get("ReferralId"),
            pending_create=values.get("PendingCreate"),
            opportunity_modified_on=values.get("OpportunityModifiedOn"),
            opportunity_confirmed_at=values.get("OpportunityConfirmedAt"),
            row_versions=_versions(values.get("RowVersions")),
            last_result=values.get("LastResult"),
            etag=etag,
        )

    async def get_link_by_opportunity(self, opportunity_id: str) -> SyncLink | None:
        """The link of an opportunity (two point reads), or None."""
        return await self.get_link_of(await self.get_opportunity_index(opportunity_id))

    async def get_link_of(self, index: OpportunityIndex | None) -> SyncLink | None:
        """The link an index row names (one point read), or None."""
        if index is None or index.referral_id is None:
            return None
        link = await self.get_link(index.referral_id)
        if link is None or link.opportunity_id != index.opportunity_id:
            return None  # a stale index row left by an interrupted write
        return link

    async def scan(self) -> tuple[list[SyncLink], list[OpportunityIndex]]:
        """Every link and index row, in one paged scan of the table (without the base Deal,
        which no reader of a scan needs): for ``cosell drift`` and ``cosell status``."""
        links: list[SyncLink] = []
        indexes: list[OpportunityIndex] = []
        try:
            return await self._scan(links, indexes)
        except ResourceNotFoundError:  # no table yet: nothing has been linked
            return [], []

    async def _scan(
        self, links: list[SyncLink], indexes: list[OpportunityIndex]
    ) -> tuple[list[SyncLink], list[OpportunityIndex]]:
        async for entity in self._table.list_entities(select=list(_SCANNED)):
            # A selected property a row lacks may come back as null.
            present = {k: v for k, v in entity.items() if v is not None}
            values = from_entity(present, json_fields=_JSON)
            key = str(entity.get("RowKey") or "")
            if entity.get("PartitionKey") == _REF:
                links.append(
                    SyncLink(
                        referral_id=key,
                        opportunity_id=values.get("OpportunityId"),
                        referral_etag=values.get("ReferralETag"),
                        referral_updated_at=values.get("ReferralUpdatedAt"),
                        opportunity_etag=values.get("OpportunityETag"),
                        opportunity_modified_on=values.get("OpportunityModifiedOn"),
                        row_versions=_versions(values.get("RowVersions")),
                        pending_create=values.get("PendingCreate"),
                        last_result=values.get("LastResult"),
                    )
                )
            elif entity.get("PartitionKey") == _OPP:
                indexes.append(
                    OpportunityIndex(
                        opportunity_id=key,
                        referral_id=values.get("ReferralId"),
                        pending_create=values.get("PendingCreate"),
                        opportunity_modified_on=values.get("OpportunityModifiedOn"),
                        row_versions=_versions(values.get("RowVersions")),
                        last_result=values.get("LastResult"),
                    )
                )
        return links, indexes

    async def create_link(self, link: SyncLink) -> SyncLink:
        """Insert a new link; ``AlreadyExistsError`` if the referral is linked already."""
        referral_id = _id(link.referral_id, what="referral id")
        entity = self._link_entity(link)
        if link.opportunity_id:
            await self._index(link.opportunity_id, referral_id)
        etag = await self._insert(entity, what=f"link of referral {referral_id}")
        return self._saved(link, etag)

    async def update_link(self, link: SyncLink) -> SyncLink:
        """Replace a link read earlier, only if nobody changed it since (its ETag).

        Raises ``ConcurrencyError`` on a lost race: the caller re-reads and starts again.
        """
        if link.etag is None:
            raise ValueError("update_link needs a link read from the store (it has no ETag)")
        referral_id = _id(link.referral_id, what="referral id")
        if link.opportunity_id and link.opportunity_id != link._indexed_opportunity_id:
            await self._index(link.opportunity_id, referral_id)
        etag = await self._replace(
            self._link_entity(link), etag=link.etag, what=f"link of referral {referral_id}"
        )
        return self._saved(link, etag)

    async def delete_link(self, link: SyncLink) -> None:
        """Remove a link and its index row (the link conditionally on its ETag)."""
        referral_id = _id(link.referral_id, what="referral id")
        with translated(f"link of referral {referral_id}"):
            await self._table.delete_entity(
                _REF, referral_id, etag=link.etag, match_condition=MatchConditions.IfNotModified
            )
        if link.opportunity_id:
            with contextlib.suppress(ResourceNotFoundError):
                await self._table.delete_entity(
                    _OPP, _id(link.opportunity_id, what="opportunity id")
                )

    async def create_pending_referral(
        self, opportunity_id: str, intent: PendingCreate
    ) -> OpportunityIndex:
        """Record, before the Partner Center POST, that a referral is being created.

        ``AlreadyExistsError`` means another run got there first (or a link exists): re-read.
        """
        key = _id(opportunity_id, what="opportunity id")
        index = OpportunityIndex(opportunity_id=key, pending_create=intent)
        etag = await self._insert(self._index_entity(index), what=f"index of opportunity {key}")
        return index.model_copy(update={"etag": etag})

    async def save_opportunity_index(self, index: OpportunityIndex) -> OpportunityIndex:
        """Create the index row (no ETag) or replace the one read earlier (its ETag)."""
        key = _id(index.opportunity_id, what="opportunity id")
        entity, what = self._index_entity(index), f"index of opportunity {key}"
        if index.etag is None:
            etag = await self._insert(entity, what=what)
        else:
            etag = await self._replace(entity, etag=index.etag, what=what)
        return index.model_copy(update={"etag": etag})

    async def _index(self, opportunity_id: str, referral_id: str) -> None:
        index = OpportunityIndex(opportunity_id=opportunity_id, referral_id=referral_id)
        await self._replace(self._index_entity(index), etag=None, what="opportunity index")

    @staticmethod
    def _saved(link: SyncLink, etag: str) -> SyncLink:
        saved = link.model_copy(update={"etag": etag})
        saved._indexed_opportunity_id = link.opportunity_id
        return saved

    @staticmethod
    def _link_entity(link: SyncLink) -> dict[str, Any]:
        opportunity_id = link.opportunity_id
        return to_entity(
            _REF,
            _id(link.referral_id, what="referral id"),
            {
                "OpportunityId": _id(opportunity_id, what="opportunity id")
                if opportunity_id
                else None,
                "Base": link.base,
                "ReferralETag": link.referral_etag,
                "ReferralUpdatedAt": link.referral_updated_at,
                "OpportunityETag": link.opportunity_etag,
                "OpportunityModifiedOn": link.opportunity_modified_on,
                "OpportunityConfirmedAt": link.opportunity_confirmed_at,
                "RowVersions": _stored_versions(link.row_versions),
                "PendingCreate": link.pending_create.model_dump(mode="json")
                if link.pending_create
                else None,
                "LastResult": link.last_result.model_dump(mode="json")
                if link.last_result
                else None,
            },
            json_fields=_JSON,
        )

    @staticmethod
    def _index_entity(index: OpportunityIndex) -> dict[str, Any]:
        return to_entity(
            _OPP,
            _id(index.opportunity_id, what="opportunity id"),
            {
                "ReferralId": _id(index.referral_id, what="referral id")
                if index.referral_id
                else None,
                "PendingCreate": index.pending_create.model_dump(mode="json")
                if index.pending_create
                else None,
                "OpportunityModifiedOn": index.opportunity_modified_on,
                "OpportunityConfirmedAt": index.opportunity_confirmed_at,
                "RowVersions": _stored_versions(index.row_versions),
                "LastResult": index.last_result.model_dump(mode="json")
                if index.last_result
                else None,
            },
            json_fields=_JSON,
        )
