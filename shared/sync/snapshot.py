"""What one sync attempt knows: the ``Snapshot`` that ``read.py`` builds and ``plan`` decides on.

Pure data. The stored link and index row appear as ``LinkState`` / ``IndexState`` (the store's
rows typed for the sync, the base validated once here), so the plan stage never sees a storage
model; ``apply.py`` writes them back through the store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shared.jobs import SyncJob
from shared.partner_center import Referral
from shared.sync.deal import Customer, Deal
from shared.sync.mapping import Columns, opportunity_to_deal
from shared.sync.merge import SyncBase

# Dataverse lead states (reference 8): what the seller did with a lead.
LEAD_QUALIFIED = 1
LEAD_DISQUALIFIED = 2


@dataclass(frozen=True)
class LinkState:
    """The pair's link as the last sync left it."""

    referral_id: str
    opportunity_id: str | None = None
    base: SyncBase | None = None
    referral_etag: str | None = None
    referral_updated_at: datetime | None = None
    opportunity_etag: str | None = None
    opportunity_modified_on: datetime | None = None
    opportunity_confirmed_at: datetime | None = None  # see ``SyncLink``
    waiting_lead_id: str | None = None  # the link waits on this Dataverse lead
    # A write-ahead link: the opportunity was (or is being) created, but no sync has seen it
    # since. ``base`` is what the creation wrote.
    creating_opportunity: bool = False
    last_status: str | None = None
    last_message: str = ""


@dataclass(frozen=True)
class IndexState:
    """The opportunity's index row: its referral, or the intent to create one."""

    referral_id: str | None = None
    # A referral is being created: the intent recorded before the Partner Center POST, a lease
    # held by the sync ``intent_owner`` since ``intent_since``.
    creating_referral: bool = False
    intent_owner: str | None = None
    intent_since: datetime | None = None
    opportunity_modified_on: datetime | None = None  # our own write before a referral existed
    opportunity_confirmed_at: datetime | None = None
    last_message: str | None = None  # the reasons of the last refusal


@dataclass(frozen=True)
class CrmOpportunity:
    """An opportunity as read: the raw row, its deal, and its version."""

    id: str
    row: Mapping[str, Any]
    deal: Deal
    etag: str | None
    modified_on: datetime | None
    sync_enabled: bool = True
    # ``versionnumber`` of the row, its newest solution row, account and contact, as read
    # (see ``SyncLink.row_versions``).
    row_versions: Mapping[str, int] = field(default_factory=dict)

    @property
    def contact_id(self) -> str | None:
        value = self.row.get("_parentcontactid_value")
        return str(value) if value else None

    @property
    def originating_lead_id(self) -> str | None:
        value = self.row.get("_originatingleadid_value")
        return str(value) if value else None


def opportunity_of(row: Mapping[str, Any], columns: Columns) -> CrmOpportunity:
    """The opportunity a row (read with its ``$expand``s, see ``sides.CrmSide``) describes."""
    currency = row.get("transactioncurrencyid") or {}
    deal = opportunity_to_deal(
        row,
        columns=columns,
        account=row.get("parentaccountid"),
        contact=row.get("parentcontactid"),
        currency=currency.get("isocurrencycode") if isinstance(currency, dict) else None,
        solutions=row.get(columns.solutions_relationship) or [],
    )
    return CrmOpportunity(
        str(row["opportunityid"]),
        row,
        deal,
        etag_in(row),
        modified_on_in(row),
        sync_enabled=bool(row.get(columns.syncwithpartnercenter)),
        row_versions=row_versions(row, columns.solutions_relationship),
    )


def etag_in(row: Mapping[str, Any]) -> str | None:
    value = row.get("@odata.etag")
    return str(value) if value else None


def modified_on_in(row: Mapping[str, Any]) -> datetime | None:
    value = row.get("modifiedon")
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def version_in(row: Mapping[str, Any]) -> int | None:
    """A row's ``versionnumber`` (a rowversion: it grows with every write, where ``modifiedon``
    has whole seconds), if it was selected. Tolerant of the text form of an Int64."""
    value = row.get("versionnumber")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def row_versions(row: Mapping[str, Any], solutions_relationship: str) -> dict[str, int]:
    """The versions of an opportunity row and the rows expanded in it: its solution rows (the
    newest), account and contact (each only if its ``versionnumber`` was selected)."""
    solutions = [
        version_in(r) for r in row.get(solutions_relationship) or [] if isinstance(r, dict)
    ]
    found = {
        "opportunity": version_in(row),
        "solutions": max((v for v in solutions if v is not None), default=None),
        "account": _expanded_version(row.get("parentaccountid")),
        "contact": _expanded_version(row.get("parentcontactid")),
    }
    return {kind: version for kind, version in found.items() if version is not None}


def _expanded_version(value: Any) -> int | None:
    return version_in(value) if isinstance(value, Mapping) else None


@dataclass(frozen=True)
class AccountMatch:
    """The account a new opportunity gets: the one matching name + postal code, or a new one
    (``new_account`` is its body) with an id derived from both (SPEC 4.5).

    ``refused``: Deal fields the new account cannot hold as Partner Center has them, with the
    reason a seller or admin can act on — a lookup country whose table has no row for the
    referral's code (SPEC 13). The account is made without it (``customer`` says what it holds)
    and the new opportunity is in error, never given a wrong value."""

    account_id: str
    customer: Customer
    new_account: Mapping[str, Any] | None = None
    refused: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class LeadState:
    """A Dataverse lead the link waits on; ``opportunity_id`` once qualifying made one;
    ``referral_id`` the referral it was made for."""

    statecode: int | None
    opportunity_id: str | None = None
    referral_id: str | None = None


@dataclass(frozen=True)
class Snapshot:
    """Everything one attempt read, in one place. A field is None when it was not needed
    (``read.py`` reads only what the plan can use) or the record does not exist."""

    job: SyncJob
    attempt: int = 0  # restarts so far: a later attempt knows another run was busy here
    run_id: str = ""  # this sync (all its attempts): the owner of the leases it takes
    # Taken before the first read: every read of this attempt sees what was committed by then.
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    # When the job's queue message was enqueued (the queue's clock), if the worker knows it.
    enqueued_at: datetime | None = None
    link: LinkState | None = None
    index: IndexState | None = None
    referral: Referral | None = None
    # The other referrals of the engagement: Microsoft's side of a co-sell (its CRM id).
    related: tuple[Referral, ...] = ()
    # Set when the job was for Microsoft's referral of an engagement we sync: ``referral`` is
    # then ours and this is the one whose change started the job.
    changed_related: Referral | None = None
    opportunity: CrmOpportunity | None = None
    account: AccountMatch | None = None
    lead: LeadState | None = None
    # ISO codes of currencies Partner Center uses here that this Dataverse org does not have.
    missing_currencies: frozenset[str] = frozenset()

    def but(self, **changes: Any) -> Snapshot:
        return replace(self, **changes)
