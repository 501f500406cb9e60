"""Apply stage: run a plan's steps in order against Partner Center, Dataverse and the links.

One handler per step type (``_HANDLERS``); no decisions and no dry-run branches here (a dry
run never gets this far). Writes are conditional where the APIs allow it (If-Match on the
referral, the opportunity and the link), so a lost race raises the shared
``PreconditionFailedError`` / ``AlreadyExistsError`` and the engine starts the attempt again.
``Current`` follows what the writes return (new eTags, the created referral), so each step
writes against the version the previous one left.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shared.dataverse import InvalidRequest as DataverseInvalidRequest
from shared.errors import PreconditionFailedError
from shared.partner_center import PartnerCenterError, PatchOperation, Referral
from shared.state import LinkResult, LinkStore, OpportunityIndex, PendingCreate, SyncLink
from shared.sync.merge import SyncBase
from shared.sync.pc_refusals import refusal_lines, revise_after_refusal
from shared.sync.plan import SyncPolicy, after_referral_created
from shared.sync.read import Stored
from shared.sync.sides import CrmSide, PartnerCenterSide, Version
from shared.sync.snapshot import Snapshot
from shared.sync.steps import (
    AdoptOpportunity,
    CloseOpportunity,
    CreateLead,
    CreateLink,
    CreateOpportunity,
    CreateReferral,
    LinkNewReferral,
    LinkOpportunity,
    MarkLink,
    PatchReferral,
    Plan,
    RecordCreateIntent,
    RecordCreation,
    RecordRefusal,
    SaveInFlight,
    SaveLink,
    Step,
    WriteContact,
    WriteCrmId,
    WriteOpportunity,
)


@dataclass
class Current:
    """What the records look like now, as the writes so far left them."""

    referral: Referral | None
    opportunity: Version
    link: SyncLink | None
    index: OpportunityIndex | None
    # Fields Partner Center would not take (``pc_refusals``), as the audit says them.
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Applier:
    """Runs steps; one instance per engine (it holds only the adapters and the policy)."""

    pc: PartnerCenterSide
    crm: CrmSide
    links: LinkStore
    policy: SyncPolicy

    async def apply(self, plan: Plan, snapshot: Snapshot, stored: Stored) -> Current:
        """Run every step of ``plan``; returns the records' versions afterwards."""
        opportunity = snapshot.opportunity
        current = Current(
            referral=snapshot.referral,
            # Read in this attempt: confirmed as of the snapshot's start.
            opportunity=Version(
                opportunity.etag, opportunity.modified_on, opportunity.row_versions, snapshot.now
            )
            if opportunity
            else Version(None, None),
            link=stored.link,
            index=stored.index,
        )
        return await self.resume(plan.steps, snapshot, current)

    async def resume(
        self, steps: tuple[Step, ...], snapshot: Snapshot, current: Current
    ) -> Current:
        """Run ``steps`` from the versions ``current`` holds (after a refusal, say)."""
        run = _Run(self, snapshot, current)
        pending = list(steps)
        while pending:
            step = pending.pop(0)
            try:
                await run.step(step)
            except DataverseInvalidRequest as error:
                raise Refused(step, f"Dynamics 365: {error.message}", current) from error
            except PartnerCenterError as error:
                if error.status != 400:
                    raise
                raise Refused(step, f"Partner Center: {error.message}", current) from error
            if run.refused_fields:
                pending = run.after_refused_fields(pending)
        return current


class Refused(Exception):
    """A service refused a step as invalid (400): retrying the job cannot help, so the engine
    records why on the pair instead of letting the queue retry it into the poison queue."""

    def __init__(self, step: Step, message: str, current: Current) -> None:
        super().__init__(f"{step.describe()}: {message}")
        self.step, self.message, self.current = step, message, current


@dataclass
class _Run:
    """One application of one plan."""

    applier: Applier
    snapshot: Snapshot
    current: Current
    # Field → Partner Center's reason, for the patch just applied without them.
    refused_fields: dict[str, str] = field(default_factory=dict)

    @property
    def now(self) -> datetime:
        return self.snapshot.now

    async def step(self, step: Step) -> None:
        await _HANDLERS[type(step)](self, step)

    def _link(self) -> SyncLink:
        assert self.current.link is not None, "a link step before the link exists"
        return self.current.link

    def _opportunity_versions(self) -> dict[str, Any]:
        """The opportunity's version as the link keeps it (the poll's echo check reads it)."""
        version = self.current.opportunity
        return {
            "opportunity_etag": version.etag,
            "opportunity_modified_on": version.modified_on,
            "opportunity_confirmed_at": version.confirmed_at,
            "row_versions": dict(version.row_versions),
        }

    def _referral(self) -> Referral:
        assert self.current.referral is not None and self.current.referral.id is not None
        return self.current.referral

    # -- links and intents ----------------------------------------------------------------

    async def create_link(self, step: CreateLink) -> None:
        link = SyncLink(referral_id=step.referral_id, opportunity_id=step.opportunity_id)
        if step.base is not None:
            referral = self._referral()
            base = SyncBase(deal=step.base, stand_ins=dict(step.stand_ins))
            versions: dict[str, Any] = {
                "base": base.model_dump(mode="json"),
                "referral_etag": referral.e_tag,
                "referral_updated_at": referral.updated_date_time,
            }
            if step.waiting_lead_id or step.creating:
                target = step.waiting_lead_id or step.opportunity_id
                versions["pending_create"] = PendingCreate(
                    side="crm", target_id=target, started_at=self.now
                )
                message = "waiting for the lead" if step.waiting_lead_id else "being created"
                versions["last_result"] = LinkResult(status="pending", message=message, at=self.now)
            else:
                versions.update(self._opportunity_versions())
                status = "error" if step.problems else "synced"
                versions["last_result"] = LinkResult(
                    status=status, message="; ".join(step.problems), at=self.now
                )
            link = link.model_copy(update=versions)
        self.current.link = await self.applier.links.create_link(link)

    async def record_creation(self, step: RecordCreation) -> None:
        referral = self._referral()
        self.current.link = await self.applier.links.update_link(
            self._link().model_copy(
                update={
                    "base": step.base.model_dump(mode="json"),
                    "referral_etag": referral.e_tag,
                    "referral_updated_at": referral.updated_date_time,
                }
            )
        )

    async def link_opportunity(self, step: LinkOpportunity) -> None:
        adopted = {"opportunity_id": step.opportunity_id, "pending_create": None}
        self.current.link = await self.applier.links.update_link(
            self._link().model_copy(update=adopted)
        )

    async def record_create_intent(self, step: RecordCreateIntent) -> None:
        index = self.current.index or OpportunityIndex(opportunity_id=step.opportunity_id)
        # Stamped when written, not when the sync began reading: slow reads must not eat the
        # lease its POST is timed against (``sides.PartnerCenterSide.create_referral``).
        intent = PendingCreate(
            side="partner_center", started_at=datetime.now(UTC), owner=step.owner
        )
        self.current.index = await self.applier.links.save_opportunity_index(
            index.model_copy(update={"pending_create": intent})
        )

    async def record_refusal(self, step: RecordRefusal) -> None:
        index = self.current.index or OpportunityIndex(opportunity_id=step.opportunity_id)
        result = LinkResult(status="error", message=step.message, at=self.now)
        self.current.index = await self.applier.links.save_opportunity_index(
            index.model_copy(
                update={
                    "opportunity_modified_on": self.current.opportunity.modified_on,
                    "opportunity_confirmed_at": self.current.opportunity.confirmed_at,
                    "row_versions": dict(self.current.opportunity.row_versions),
                    "last_result": result,
                }
            )
        )

    async def save_in_flight(self, step: SaveInFlight) -> None:
        journal = {"base": step.base.model_dump(mode="json")}
        self.current.link = await self.applier.links.update_link(
            self._link().model_copy(update=journal)
        )

    async def mark_link(self, step: MarkLink) -> None:
        result = LinkResult(status=step.status, message=step.message, at=self.now)
        self.current.link = await self.applier.links.update_link(
            self._link().model_copy(update={"last_result": result})
        )

    async def save_link(self, step: SaveLink) -> None:
        referral = self._referral()
        saved = self._link().model_copy(
            update={
                "base": step.base.model_dump(mode="json"),
                "referral_etag": referral.e_tag,
                "referral_updated_at": referral.updated_date_time,
                **self._opportunity_versions(),
                "pending_create": None,
                "last_result": LinkResult(status=step.status, message=step.message, at=self.now),
            }
        )
        self.current.link = await self.applier.links.update_link(saved)

    # -- Partner Center -------------------------------------------------------------------

    async def create_referral(self, step: CreateReferral) -> None:
        index = self.current.index
        intent = index.pending_create if index is not None else None
        assert intent is not None, "a referral POST without the lease on it"
        self.current.referral = await self.applier.pc.create_referral(
            step.body, lease_since=intent.started_at
        )

    async def link_new_referral(self, step: LinkNewReferral) -> None:
        opportunity = self.snapshot.opportunity
        assert opportunity is not None
        versioned = replace(
            opportunity,
            etag=self.current.opportunity.etag,
            modified_on=self.current.opportunity.modified_on,
        )
        for concrete in after_referral_created(
            self._referral(), versioned, step.opportunity_deal, self.applier.policy, now=self.now
        ):
            await self.step(concrete)

    async def patch_referral(self, step: PatchReferral) -> None:
        referral = self._referral()
        assert referral.id is not None
        outcome = await self.applier.pc.patch_keeping_the_rest(
            referral.id, step.operations, etag=referral.e_tag
        )
        if outcome.referral is not None:
            self.current.referral = outcome.referral
        self.refused_fields.update(outcome.refused)

    def after_refused_fields(self, steps: list[Step]) -> list[Step]:
        """The steps left once Partner Center refused some fields of the patch: they are
        blocked in the base and the audit says so (``pc_refusals``); nothing else changes."""
        refused, self.refused_fields = self.refused_fields, {}
        pc = self.applier.policy.pc_deal(self._referral(), self.snapshot.related)
        self.current.notes.extend(
            line.split(" ", 2)[2] for line in refusal_lines(refused, pc, now=self.now)
        )
        return revise_after_refusal(
            steps,
            refused,
            pc=pc,
            opportunity=self.snapshot.opportunity,
            columns=self.applier.policy.columns,
            now=self.now,
        )

    async def write_crm_id(self, step: WriteCrmId) -> None:
        referral = self._referral()
        assert referral.id is not None
        operation = PatchOperation(
            op=step.op, path="/externalReferenceId", value=step.opportunity_id
        )
        try:
            updated = await self.applier.pc.patch_referral(
                referral.id, [operation], etag=referral.e_tag
            )
        except PreconditionFailedError:
            return  # the referral changed meanwhile; the next sync writes the id as a field
        self.current.referral = updated
        self.current.link = await self.applier.links.update_link(
            self._link().model_copy(
                update={
                    "referral_etag": updated.e_tag,
                    "referral_updated_at": updated.updated_date_time,
                }
            )
        )

    # -- Dataverse ------------------------------------------------------------------------

    async def create_opportunity(self, step: CreateOpportunity) -> None:
        self.current.opportunity = self.current.opportunity.after(
            await self.applier.crm.create_opportunity(
                step.opportunity_id,
                step.body,
                currency=step.currency,
                account_id=step.account_id,
                new_account=step.new_account,
            )
        )

    async def create_lead(self, step: CreateLead) -> None:
        await self.applier.crm.create_once("leads", step.columns, step.lead_id)

    async def adopt_opportunity(self, step: AdoptOpportunity) -> None:
        self.current.opportunity = self.current.opportunity.after(
            await self.applier.crm.update_opportunity(step.opportunity_id, step.columns)
        )

    async def write_contact(self, step: WriteContact) -> None:
        crm = self.applier.crm
        write = crm.upsert_contact if step.create else crm.update_contact
        version = await write(step.contact_id, step.columns)
        if version is not None:  # the poll must know this write of the contact as ours
            written = {**self.current.opportunity.row_versions, "contact": version}
            self.current.opportunity = replace(self.current.opportunity, row_versions=written)

    async def write_opportunity(self, step: WriteOpportunity) -> None:
        etag = self.current.opportunity.etag
        self.current.opportunity = self.current.opportunity.after(
            await self.applier.crm.update_opportunity(
                step.opportunity_id, step.columns, currency=step.currency, etag=etag or "*"
            ),
            conditional=etag is not None,
        )

    async def close_opportunity(self, step: CloseOpportunity) -> None:
        self.current.opportunity = self.current.opportunity.after(
            await self.applier.crm.close_opportunity(
                step.opportunity_id, won=step.won, status=step.statuscode
            )
        )


# Step type → its handler: the whole apply stage at a glance.
_HANDLERS: dict[type[Step], Callable[[_Run, Any], Awaitable[None]]] = {
    CreateLink: _Run.create_link,
    LinkOpportunity: _Run.link_opportunity,
    RecordCreateIntent: _Run.record_create_intent,
    RecordCreation: _Run.record_creation,
    RecordRefusal: _Run.record_refusal,
    SaveInFlight: _Run.save_in_flight,
    SaveLink: _Run.save_link,
    MarkLink: _Run.mark_link,
    CreateReferral: _Run.create_referral,
    LinkNewReferral: _Run.link_new_referral,
    PatchReferral: _Run.patch_referral,
    WriteCrmId: _Run.write_crm_id,
    CreateOpportunity: _Run.create_opportunity,
    CreateLead: _Run.create_lead,
    AdoptOpportunity: _Run.adopt_opportunity,
    WriteContact: _Run.write_contact,
    WriteOpportunity: _Run.write_opportunity,
    CloseOpportunity: _Run.close_opportunity,
}
