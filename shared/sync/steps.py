"""What a sync will do, as data: the ``Plan`` and the typed steps it is made of (pure).

``plan.py`` decides and returns a ``Plan``; ``apply.py`` runs its steps in order, one handler
per step type; ``cosell sync --dry-run`` prints them (``Step.describe``). Each step is one
remote call or one state write, except ``CreateOpportunity`` (one request, all or nothing) and
``LinkNewReferral`` (whose values exist only once Partner Center has answered the POST).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.partner_center import PatchOperation
from shared.sync.deal import Deal
from shared.sync.merge import FieldPlan, SyncBase

# "deferred": another sync holds the lease on this creation; try again at ``Plan.retry_after``.
Outcome = Literal["synced", "no_change", "created", "error", "skipped", "deferred"]
LinkStatus = Literal["synced", "error"]


@dataclass(frozen=True)
class Step:
    """One thing a sync does; ``describe`` says it in a line for the dry run."""

    def describe(self) -> str:  # pragma: no cover - every step overrides it
        raise NotImplementedError


# -- links and intents (Table Storage) --------------------------------------------------------


@dataclass(frozen=True)
class CreateLink(Step):
    """Insert the pair's link. Without ``base`` it is a bare link to a record that already
    exists (the merge then settles the pair); with one it records the base and the versions
    both sides have now. ``waiting_lead_id``: the link waits on that Dataverse lead.
    ``creating``: written *before* the opportunity is created (a write-ahead link), so a sync
    cut off between the creation and ``SaveLink`` leaves the base behind, and the next one
    merges against it instead of guessing which side changed."""

    referral_id: str
    opportunity_id: str | None
    base: Deal | None = None
    waiting_lead_id: str | None = None
    creating: bool = False
    stand_ins: Mapping[str, Any] = field(default_factory=dict)  # see ``SyncBase.stand_ins``
    problems: tuple[str, ...] = ()  # the new pair is in error for these reasons

    def describe(self) -> str:
        if self.waiting_lead_id:
            return f"link referral {self.referral_id}, waiting on lead {self.waiting_lead_id}"
        if self.base is None:
            return f"link referral {self.referral_id} to opportunity {self.opportunity_id}"
        if self.creating:
            return (
                f"link referral {self.referral_id} to the opportunity {self.opportunity_id} "
                "about to be created"
            )
        return f"link referral {self.referral_id} to the new opportunity {self.opportunity_id}"


@dataclass(frozen=True)
class RecordCreation(Step):
    """A write-ahead link whose opportunity was never created (the sync stopped first): record
    the base of the creation about to be tried again, from the referral as it is now."""

    opportunity_id: str
    base: SyncBase

    def describe(self) -> str:
        return f"record the base of opportunity {self.opportunity_id}, created again"


@dataclass(frozen=True)
class LinkOpportunity(Step):
    """The waiting link now names the qualified lead's opportunity."""

    opportunity_id: str

    def describe(self) -> str:
        return f"link the referral to the qualified lead's opportunity {self.opportunity_id}"


@dataclass(frozen=True)
class RecordCreateIntent(Step):
    """Take the lease on creating this opportunity's referral, before the POST: while it is
    live no other sync posts one, and after it expires (its holder died) one sync takes it over,
    conditionally on the index row's ETag, and looks the referral up before posting."""

    opportunity_id: str
    owner: str

    def describe(self) -> str:
        return f"record the intent to create a referral for opportunity {self.opportunity_id}"


@dataclass(frozen=True)
class RecordRefusal(Step):
    """Remember the reasons an opportunity was refused (SPEC 4.6), with the version our own
    refusal write gave it, so that write is not taken for a seller's edit."""

    opportunity_id: str
    message: str

    def describe(self) -> str:
        return f"record the refusal of opportunity {self.opportunity_id}"


@dataclass(frozen=True)
class SaveInFlight(Step):
    """Record what this sync is about to write before its first remote write (see
    ``merge.settle_in_flight``)."""

    base: SyncBase

    def describe(self) -> str:
        assert self.base.in_flight is not None
        sides = [
            f"{name} → {', '.join(fields)}"
            for name, fields in (
                ("PC", self.base.in_flight.to_pc),
                ("CRM", self.base.in_flight.to_crm),
            )
            if fields
        ]
        return "record what is about to be written (" + "; ".join(sides) + ")"


@dataclass(frozen=True)
class MarkLink(Step):
    """Record on the link why the pair cannot sync (its last result), so ``cosell status`` and
    the history say so instead of the last ✔."""

    status: LinkStatus
    message: str

    def describe(self) -> str:
        return f"mark the link {self.status}: {self.message}"


@dataclass(frozen=True)
class SaveLink(Step):
    """Save the new base and the versions both sides have after the writes."""

    base: SyncBase
    status: LinkStatus
    message: str = ""

    def describe(self) -> str:
        return f"save the link (base and both versions; last result {self.status})"


# -- Partner Center ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateReferral(Step):
    """POST the referral made from an opportunity (SPEC 4.5)."""

    body: Mapping[str, Any]

    def describe(self) -> str:
        return f"create a referral in Partner Center ({self.body.get('type')})"


@dataclass(frozen=True)
class LinkNewReferral(Step):
    """Link the referral just created (or found) and write what Partner Center gave it (id,
    link, program) into the opportunity. Its values exist only after the POST, so apply asks
    ``plan.after_referral_created`` for the concrete steps."""

    opportunity_deal: Deal

    def describe(self) -> str:
        return "link the referral and write its id, link and program into the opportunity"


@dataclass(frozen=True)
class PatchReferral(Step):
    """One JSON Patch of exactly the changed paths, conditional on the referral's eTag."""

    operations: tuple[PatchOperation, ...]

    def describe(self) -> str:
        paths = ", ".join(sorted({op.path for op in self.operations}))
        return f"patch the referral ({paths})"


@dataclass(frozen=True)
class WriteCrmId(Step):
    """Tell Partner Center the opportunity id (its "CRM ID", ``externalReferenceId``). A
    referral that changed meanwhile is left alone: the next sync sends the id as a field."""

    opportunity_id: str
    op: Literal["add", "replace"]

    def describe(self) -> str:
        return f"write the CRM id {self.opportunity_id} into the referral"


# -- Dataverse --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CreateOpportunity(Step):
    """The opportunity with its contact, solution rows and (if new) account, in one request,
    ids derived from the referral id (a second creation collides instead of duplicating)."""

    opportunity_id: str
    body: Mapping[str, Any]
    currency: str | None
    account_id: str
    new_account: Mapping[str, Any] | None = None

    def describe(self) -> str:
        account = "a new account" if self.new_account else f"account {self.account_id}"
        return f"create opportunity {self.opportunity_id} (with {account})"


@dataclass(frozen=True)
class CreateLead(Step):
    """A Dataverse lead for a marketplace lead, its id derived from the referral id."""

    lead_id: str
    columns: Mapping[str, Any]

    def describe(self) -> str:
        return f"create Dataverse lead {self.lead_id}"


@dataclass(frozen=True)
class AdoptOpportunity(Step):
    """Switch sync on in the qualified lead's opportunity and name the referral in it."""

    opportunity_id: str
    columns: Mapping[str, Any]

    def describe(self) -> str:
        return f"mark opportunity {self.opportunity_id} for sync with the referral"


@dataclass(frozen=True)
class WriteContact(Step):
    """Update a contact this product made, or create (or refresh) the one whose id derives
    from the opportunity: a seller's own contact is never rewritten."""

    contact_id: str
    columns: Mapping[str, Any]
    create: bool

    def describe(self) -> str:
        return f"{'create' if self.create else 'update'} contact {self.contact_id}"


@dataclass(frozen=True)
class WriteOpportunity(Step):
    """One PATCH (If-Match) with the changed columns, audit, sync status and ✔/✖ mark;
    ``currency`` is an ISO code to bind (its id is looked up, once per worker)."""

    opportunity_id: str
    columns: Mapping[str, Any]
    currency: str | None = None

    def describe(self) -> str:
        shown = sorted(c.split("@")[0] for c in self.columns)
        if self.currency:
            shown.append(f"currency {self.currency}")
        return f"update opportunity {self.opportunity_id} ({', '.join(shown)})"


@dataclass(frozen=True)
class CloseOpportunity(Step):
    """WinOpportunity / LoseOpportunity, which Dataverse requires for closing (SPEC 4.3)."""

    opportunity_id: str
    won: bool
    statuscode: int

    def describe(self) -> str:
        action = "win" if self.won else "lose"
        return f"{action} opportunity {self.opportunity_id} (status {self.statuscode})"


@dataclass(frozen=True)
class Plan:
    """What one sync attempt will do and why: the outcome, the field plan of the merge, the
    steps in order, the reasons nothing was sent (``problems``) and notes for the seller."""

    outcome: Outcome
    referral_id: str | None = None
    opportunity_id: str | None = None
    fields: FieldPlan | None = None
    steps: tuple[Step, ...] = ()
    problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())
    retry_after: float | None = None  # seconds, for a deferred plan
