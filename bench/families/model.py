"""The families' sizes, their records (one dataclass a family), ``Families`` (what the run
asks of them), ``Observed`` and ``FamilyProblems`` (what their checks read and found), with
the constants that more than one module uses."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.dataverse import DataverseClient
from shared.partner_center import PartnerCenterClient
from shared.state import LinkStore

UNKNOWN_CURRENCY = "ZWG"  # not among the emulator's currencies (sandbox/dataverse/store.py)
RACE_JOBS = (2, 3)  # poll jobs enqueued at once per new flagged opportunity
CONTACT_GROUP = 3  # opportunities sharing one seller contact
SYNC_STATUS_ERROR = 2
SLOW_LINK_S = 60.0  # a seller's referral linked later than this waited on a creation's lease
SYNC_STATUS_SYNCED = 1
# Class 6, oversize values: how each oversize pair gets its long value, in turn.
OVERSIZE_KINDS = (("name", True), ("notes", True), ("name", False), ("notes", False))


@dataclass(frozen=True)
class FamilySizes:
    crm_created: int  # seller's opportunities flagged for sync, each with a creation race
    shared_contact_groups: int  # groups of CONTACT_GROUP of them sharing one contact
    unknown_currency_every: int  # every n-th of Microsoft's referrals is in UNKNOWN_CURRENCY
    oversize: int  # Microsoft's referrals with a value over a column's limit
    reopened: int  # linked pairs won, edited in Partner Center while closed, reopened
    leads: int  # marketplace leads qualified and flagged within one poll interval
    case_twins: int  # Microsoft's referrals with two solution ids that differ only by case
    # How long a family waits for the product to get to one of its pairs: the queue's backlog
    # under kills and faults grows with the run (1,000 referrals: minutes, not seconds).
    patience_s: float = 60.0

    @classmethod
    def of(cls, referrals: int) -> FamilySizes:
        crm_created = max(4, referrals // 10)
        return cls(
            crm_created=crm_created,
            shared_contact_groups=max(1, (crm_created * 6 // 10) // CONTACT_GROUP),
            unknown_currency_every=20 if referrals >= 40 else 2,
            oversize=min(referrals // 4, max(len(OVERSIZE_KINDS) * 2, referrals // 25)),
            reopened=min(referrals // 4, max(4, referrals // 40)),
            leads=max(3, referrals // 40),
            case_twins=min(referrals // 4, max(2, referrals // 50)),
            patience_s=max(60.0, referrals * 0.6),
        )


@dataclass
class SharedContact:
    contact_id: str
    firstname: str
    lastname: str
    email: str
    numbers: list[int] = field(default_factory=list)  # the pairs whose opportunity uses it


@dataclass
class SellerOpportunity:
    number: int  # the pair number in the chaos run
    opportunity_id: str
    contact_email: str
    contact_edit: bool = False  # Partner Center changes its referral's contact


@dataclass
class Oversize:
    """One of Microsoft's pairs with a Partner Center value no opportunity column can hold."""

    number: int
    field: str  # "name" or "notes"
    value: str  # the long value Partner Center keeps
    on_create: bool  # in the referral as Microsoft sent it; else a Partner Center edit
    crm_value: str  # what the opportunity must hold: cut to fit, or the value before the edit


@dataclass
class Reopened:
    """A linked pair the seller closes as Won, Partner Center edits meanwhile, and the seller
    reopens and edits."""

    number: int
    referral_id: str = ""
    opportunity_id: str = ""
    closed_edit: str | None = None  # the notes Partner Center took while the row was closed
    closed: dict[str, Any] | None = None  # the referral as first seen Closed
    error_seen: bool = False  # the link said why it could not take the edit, while closed
    reopened: bool = False
    seller_value: int | None = None  # the deal value the seller set once it was reopened
    problems: list[str] = field(default_factory=list)


@dataclass
class LeadRace:
    """A marketplace lead from Microsoft that the seller qualifies and flags at once."""

    number: int
    referral_id: str
    opportunity_id: str = ""
    flagged_first: bool = False  # flagged when created, before the lead is qualified
    jobs: int = 0
    problems: list[str] = field(default_factory=list)


@dataclass
class Families:
    sizes: FamilySizes
    seller: list[SellerOpportunity] = field(default_factory=list)
    shared_contacts: list[SharedContact] = field(default_factory=list)
    unknown_currency: set[int] = field(default_factory=set)  # pair numbers
    oversize: dict[int, Oversize] = field(default_factory=dict)  # pair number → its value
    reopened: dict[int, Reopened] = field(default_factory=dict)
    leads: list[LeadRace] = field(default_factory=list)
    case_twins: set[int] = field(default_factory=set)  # pair numbers
    microsoft: dict[int, str] = field(default_factory=dict)  # pair number → Microsoft's referral
    race_jobs: int = 0
    related_jobs: int = 0
    flagged_at: dict[int, float] = field(default_factory=dict)  # pair number → monotonic time
    linked_after: dict[int, float] = field(default_factory=dict)  # seconds from flag to link

    def linked(self, number: int) -> None:
        """The harness saw the referral id in the seller's opportunity now."""
        if number in self.flagged_at:
            self.linked_after.setdefault(number, time.monotonic() - self.flagged_at[number])

    def slow_links(self, over_s: float = SLOW_LINK_S) -> set[int]:
        return {n for n, s in self.linked_after.items() if s > over_s}

    def is_unknown_currency(self, number: int) -> bool:
        return number in self.unknown_currency

    def not_compared(self, number: int) -> set[str]:
        """Fields of a pair the run's field-by-field check leaves to the family's own check:
        the oversize value (the sides rightly differ), the deal value the seller set on a
        reopened deal (the Closed referral cannot take it)."""
        if number in self.oversize:
            return {self.oversize[number].field}
        if number in self.reopened:
            return {"deal_value"}
        return set()

    def status_of(self, number: int) -> set[tuple[str, int, int]] | None:
        """The (referral status, statecode, statuscode) a pair may end in, if not the usual:
        a reopened deal is open in Dynamics 365 and stays Closed in Partner Center."""
        if number in self.reopened and self.reopened[number].reopened:
            return {("Closed", 0, 1)}
        return None

    def excluded_from_edits(self, number: int) -> bool:
        """The reopened deals get their own edits (a Closed referral refuses the run's)."""
        return number in self.reopened

    def edit_fields(self, number: int, fields: tuple[str, ...]) -> tuple[str, ...]:
        """The fields the run's random edits may change (never an oversize one)."""
        skip = self.not_compared(number)
        return tuple(f for f in fields if f not in skip)

    def refusing_ids(self, ids_of: Mapping[int, tuple[str | None, ...]]) -> set[str]:
        """Record ids whose syncs end in "error" by design (currency, oversize value)."""
        numbers = self.unknown_currency | set(self.oversize)
        return {i.lower() for n in numbers for i in ids_of.get(n, ()) if i}

    def lead_referrals(self) -> set[str]:
        return {lead.referral_id for lead in self.leads}

    def counts(self) -> dict[str, int]:
        return {
            "seller_opportunities": len(self.seller),
            "race_jobs": self.race_jobs,
            "microsoft_referrals": len(self.microsoft),
            "related_jobs": self.related_jobs,
            "unknown_currency": len(self.unknown_currency),
            "shared_contacts": len(self.shared_contacts),
            "contact_edits": sum(s.contact_edit for s in self.seller),
            "slow_links": len(self.slow_links()),
            "oversize_on_create": sum(o.on_create for o in self.oversize.values()),
            "oversize_edits": sum(not o.on_create for o in self.oversize.values()),
            "reopened": sum(r.reopened for r in self.reopened.values()),
            "closed_edits": sum(r.closed_edit is not None for r in self.reopened.values()),
            "closed_errors_seen": sum(r.error_seen for r in self.reopened.values()),
            "leads": len(self.leads),
            "leads_qualified": sum(bool(lead.opportunity_id) for lead in self.leads),
            "lead_race_jobs": sum(lead.jobs for lead in self.leads),
            "case_twins": len(self.case_twins),
        }

    def summary(self) -> str:
        counts = self.counts()
        edits = sum(s.contact_edit for s in self.seller)
        waits = sorted(self.linked_after.values())
        slowest = (
            f"linked {waits[len(waits) // 2]:.0f} s (median) / {waits[-1]:.0f} s (max) "
            f"after the flag, {len(self.slow_links())} over {SLOW_LINK_S:.0f} s"
            if waits
            else ""
        )
        return (
            f"{len(self.seller)} seller opportunities ({self.race_jobs} racing poll jobs; "
            f"{slowest}), "
            f"{len(self.microsoft)} Microsoft referrals of linked engagements "
            f"({self.related_jobs} jobs), {len(self.unknown_currency)} in {UNKNOWN_CURRENCY}, "
            f"{len(self.shared_contacts)} shared contacts ({edits} contact edits), "
            f"{len(self.oversize)} oversize values ({counts['oversize_on_create']} as sent, "
            f"{counts['oversize_edits']} by edit), {counts['reopened']} reopened deals "
            f"({counts['closed_edits']} edited in Partner Center while closed, "
            f"{counts['closed_errors_seen']} said so), {len(self.leads)} leads qualified and "
            f"flagged at once ({counts['lead_race_jobs']} racing poll jobs), "
            f"{len(self.case_twins)} with solution ids that differ only by case"
        )


@dataclass
class FamilyProblems:
    duplicates: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    unequal: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Observed:
    """What the families' checks read once the run is over (``checks.check_families``)."""

    referral_of: Mapping[int, str]  # pair number → its referral id
    opportunities: Mapping[str, list[dict[str, Any]]]  # rows by lower-case cosell_referralid
    pc: PartnerCenterClient
    crm: DataverseClient
    links: LinkStore
    poison: Sequence[str]  # the text of every message in the poison queue
