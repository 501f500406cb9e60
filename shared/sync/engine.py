"""``SyncEngine.sync(job)``: one referral ↔ opportunity pair brought in line (SPEC 4.4).

1. load the link; a job whose change the link already covers stops here (no remote call);
2. read the referral and the opportunity (with account, contact, currency, solutions);
3. map both to ``Deal``; the link's base is the merge base;
4. merge (pure) into a plan; validate what would go to Partner Center (SPEC 4.6);
5. record in the link what is about to be written (``merge.settle_in_flight`` uses it if the
   sync stops before step 6), then write each side conditionally (If-Match); a 412 or a lost
   race starts again (bounded);
6. save the new base and both versions in the link, conditionally on its ETag;
7. history row, and the audit / sync status / ✔✖ mark in the same opportunity write.

Creation paths (SPEC 4.5) live in ``creation.py``; Dataverse reads and writes of an
opportunity in ``crm.py``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import UTC, datetime
from typing import Literal

from shared.dataverse import AlreadyExists as CrmAlreadyExists
from shared.dataverse import DataverseClient
from shared.dataverse import PreconditionFailed as CrmPreconditionFailed
from shared.errors import ConcurrencyError
from shared.jobs import SyncJob
from shared.partner_center import NotFound as PcNotFound
from shared.partner_center import PartnerCenterClient, Referral
from shared.partner_center import PreconditionFailed as PcPreconditionFailed
from shared.settings import Settings
from shared.state import HistoryEntry, HistoryStore, LinkResult, LinkStore, SyncLink
from shared.sync import creation, leads
from shared.sync.audit import audit_lines, history_changes
from shared.sync.crm import CrmOpportunity, CrmSide
from shared.sync.deal import Deal
from shared.sync.mapping import Columns, referral_patch, referral_to_deal
from shared.sync.merge import Plan, SyncBase, merge, settle_in_flight
from shared.sync.run import Outcome, Restart, Run, SyncResult, SyncRetry
from shared.sync.validation import validate_for_partner_center

log = logging.getLogger(__name__)
MAX_PENDING_AUDIT = 20  # audit lines kept in the link until the next opportunity write


class SyncEngine:
    """Applies SPEC 4 to one job at a time; safe to run many jobs concurrently."""

    def __init__(
        self,
        *,
        pc: PartnerCenterClient,
        dataverse: DataverseClient,
        links: LinkStore,
        history: HistoryStore,
        settings: Settings,
        max_restarts: int = 8,
    ) -> None:
        self.pc = pc
        self.links = links
        self.history = history
        self.settings = settings
        self.columns = Columns.from_settings(settings)
        self.crm = CrmSide(dataverse, self.columns, settings)
        self.max_restarts = max_restarts

    async def sync(self, job: SyncJob, *, dry_run: bool = False) -> SyncResult:
        """Run one job to completion; raises ``SyncRetry`` (or a client error) to be retried."""
        started = time.perf_counter()
        calls = 0
        for attempt in range(self.max_restarts + 1):
            run = Run(job=job, dry_run=dry_run, attempt=attempt)
            try:
                result = await self._sync_once(run)
            except (
                Restart,
                ConcurrencyError,
                PcPreconditionFailed,
                CrmPreconditionFailed,
                CrmAlreadyExists,
            ) as exc:
                calls += run.calls
                log.info("sync %s %s restarts after %s", job.kind, job.id, type(exc).__name__)
                await asyncio.sleep(random.uniform(0, 0.05 * (attempt + 1)))  # noqa: S311
                continue
            result.remote_calls += calls + run.calls
            result.duration_ms = int((time.perf_counter() - started) * 1000)
            result.dry_run = dry_run
            result.notes = run.notes + result.notes
            if not dry_run and result.outcome != "skipped":
                await self._record_history(job, result)
            return result
        raise SyncRetry(
            f"{job.kind} {job.id}: still changing after {self.max_restarts} restarts; "
            "the job will be retried"
        )

    # -- one attempt --------------------------------------------------------------------------

    async def _sync_once(self, run: Run) -> SyncResult:
        job = run.job
        if job.kind == "referral":
            return await self._from_referral(run, str(job.id))
        return await self._from_opportunity(run, str(job.id))

    async def _from_referral(self, run: Run, referral_id: str) -> SyncResult:
        link = await self.links.get_link(referral_id)
        if link is not None and _already_covered(run.job, link.referral_updated_at):
            return SyncResult("no_change", referral_id, link.opportunity_id)
        referral = await self._get_referral(run, referral_id)
        if referral is None:
            return SyncResult("skipped", referral_id, notes=["referral not found"])
        related: list[Referral] = []
        if link is None:
            linked = await self._link_of_related(run, referral)
            if linked is None:
                return await creation.from_referral(self, run, referral)
            # Microsoft's side of one of our engagements changed: sync our side with it.
            link, related, referral = linked[0], [referral], linked[1]
        if link.opportunity_id is None and link.pending_create is not None:
            return await leads.follow_lead(self, run, link, referral)
        if link.referral_etag == referral.e_tag and not related and run.job.reason != "manual":
            return SyncResult("no_change", referral_id, link.opportunity_id)
        assert link.opportunity_id is not None
        opportunity = await self.crm.read(run, link.opportunity_id)
        if opportunity is None:
            return SyncResult("skipped", referral_id, link.opportunity_id, notes=[
                "the linked opportunity no longer exists"
            ])  # fmt: skip
        return await self.reconcile(run, link, referral, opportunity, related=related)

    async def _from_opportunity(self, run: Run, opportunity_id: str) -> SyncResult:
        index = await self.links.get_opportunity_index(opportunity_id)
        link = await self.links.get_link_of(index)
        covered = link.opportunity_modified_on if link else None
        if link is None and index is not None:
            covered = index.opportunity_modified_on  # our own write before a referral existed
        if _already_covered(run.job, covered):
            return SyncResult("no_change", link.referral_id if link else None, opportunity_id)
        opportunity = await self.crm.read(run, opportunity_id)
        if opportunity is None:
            return SyncResult("skipped", None, opportunity_id, notes=["opportunity not found"])
        if not opportunity.sync_enabled and link is None:
            return SyncResult("skipped", None, opportunity_id, notes=["sync flag is off"])
        if link is None:
            return await creation.from_opportunity(self, run, opportunity, index)
        referral = await self._get_referral(run, link.referral_id)
        if referral is None:
            return SyncResult("skipped", link.referral_id, opportunity_id, notes=[
                "the linked referral no longer exists"
            ])  # fmt: skip
        return await self.reconcile(run, link, referral, opportunity)

    async def _get_referral(self, run: Run, referral_id: str) -> Referral | None:
        run.count()
        try:
            return await self.pc.get_referral(referral_id)
        except PcNotFound:
            return None

    async def _link_of_related(
        self, run: Run, referral: Referral
    ) -> tuple[SyncLink, Referral] | None:
        """(link, our referral) when ``referral`` is the other side of an engagement we sync."""
        if not referral.engagement_id or not run.job.reason.startswith("webhook:related-"):
            return None
        run.count()
        async for other in self.pc.list_related_referrals(referral.engagement_id):
            if other.id and other.id != referral.id:
                link = await self.links.get_link(other.id)
                if link is not None:
                    run.notes.append(_microsoft_decision(referral))
                    return link, other
        return None

    # -- merge and apply ----------------------------------------------------------------------

    def pc_deal(self, referral: Referral, related: list[Referral] | None = None) -> Deal:
        return referral_to_deal(
            referral,
            link_template=self.settings.referral_link_template,
            related=related or [],
        )

    async def reconcile(
        self,
        run: Run,
        link: SyncLink,
        referral: Referral,
        opportunity: CrmOpportunity,
        *,
        related: list[Referral] | None = None,
    ) -> SyncResult:
        """Steps 3-7 for a linked pair."""
        if not opportunity.sync_enabled:
            # The seller switched "Sync with Partner Center" off: the pair stays linked (switching
            # it on again resumes) but nothing flows either way meanwhile.
            return SyncResult("skipped", link.referral_id, link.opportunity_id, notes=[
                "sync with Partner Center is off for this opportunity"
            ])  # fmt: skip
        if related is None:
            related = await self._related(run, referral)
        pc = self.pc_deal(referral, related)
        base = _base(link)
        if base is not None:
            base = settle_in_flight(base, pc, opportunity.deal)
        plan = merge(
            base,
            pc,
            opportunity.deal,
            policy=self.settings.conflict_policy,
            pc_updated_at=referral.updated_date_time,
            crm_modified_on=opportunity.modified_on,
            pc_status=str(referral.status) if referral.status is not None else None,
        )
        problems = validate_for_partner_center(_with_crm_customer(plan.merged, opportunity.deal))
        if plan.to_pc and problems:
            plan = _hold_pc_changes(plan, pc)
        else:
            problems = []
        result_status: Literal["synced", "error"] = "error" if problems else "synced"
        lines = audit_lines(plan, problems=problems, notes=run.notes)
        if run.dry_run:
            outcome: Outcome = "error" if problems else ("no_change" if plan.empty else "synced")
            return SyncResult(outcome, link.referral_id, link.opportunity_id, plan, problems)

        if base is not None and not plan.empty:
            link = await self._save_in_flight(link, base, plan)
        if plan.to_pc:
            referral = await self._write_referral(run, link.referral_id, plan, referral)
        # A change that only went to Partner Center does not write the opportunity just for its
        # audit line: the line waits in the link and goes with the next opportunity write.
        urgent = bool(plan.to_crm or problems or plan.conflicts or plan.newly_blocked or run.notes)
        waiting = [*(base.pending_audit if base else ()), *([] if urgent else lines)]
        written = await self.crm.write(
            run,
            opportunity,
            plan.to_crm,
            plan.merged,
            status=result_status,
            audit=lines if urgent else [],
            audit_if_writing=waiting,
        )
        wrote = written.etag != opportunity.etag
        pending = () if wrote else tuple(waiting[-MAX_PENDING_AUDIT:])
        await self._save_link(
            link, plan, referral, written, result_status, problems, pending_audit=pending
        )
        outcome = "error" if problems else ("no_change" if plan.empty else "synced")
        return SyncResult(outcome, link.referral_id, link.opportunity_id, plan, problems)

    async def _related(self, run: Run, referral: Referral) -> list[Referral]:
        """Microsoft's referral of the same engagement, when ours lacks Microsoft's CRM id.

        Looked up only by the periodic and operator paths: Microsoft's changes otherwise
        arrive as ``related-referral-*`` events, which carry that referral itself.
        """
        has_id = referral.tracking_info and referral.tracking_info.microsoft_msx_id
        periodic = run.job.reason in ("reconcile", "manual", "backfill")
        if has_id or not periodic or str(referral.type) != "Shared" or not referral.engagement_id:
            return []
        run.count()
        return [
            r
            async for r in self.pc.list_related_referrals(referral.engagement_id)
            if r.id != referral.id
        ]

    async def _write_referral(
        self, run: Run, referral_id: str, plan: Plan, referral: Referral
    ) -> Referral:
        operations = referral_patch(plan.to_pc, plan.merged, referral)
        if not operations:
            return referral
        run.count()
        updated = await self.pc.patch_referral(referral_id, operations, etag=referral.e_tag)
        if updated is None:  # a 204 answer: read back the new eTag
            run.count()
            updated = await self.pc.get_referral(referral_id)
        return updated

    async def _save_in_flight(self, link: SyncLink, base: SyncBase, plan: Plan) -> SyncLink:
        """Record what this sync is about to write before it writes (see ``settle_in_flight``).

        One Table write per sync that changes something: without it a sync stopped after a
        remote write leaves a base that makes the next user edit look like a conflict.
        """
        journal = base.model_copy(update={"in_flight": plan.in_flight()})
        return await self.links.update_link(
            link.model_copy(update={"base": journal.model_dump(mode="json")})
        )

    async def _save_link(
        self,
        link: SyncLink,
        plan: Plan,
        referral: Referral,
        opportunity: CrmOpportunity,
        status: Literal["synced", "error"],
        problems: list[str],
        *,
        pending_audit: tuple[str, ...] = (),
    ) -> None:
        saved = link.model_copy(
            update={
                "base": plan.base(pending_audit=pending_audit).model_dump(mode="json"),
                "referral_etag": referral.e_tag,
                "referral_updated_at": referral.updated_date_time,
                "opportunity_etag": opportunity.etag,
                "opportunity_modified_on": opportunity.modified_on,
                "pending_create": None,
                "last_result": LinkResult(
                    status=status, message="; ".join(problems), at=datetime.now(UTC)
                ),
            }
        )
        unchanged = (
            plan.empty
            and link.base == saved.base
            and link.referral_etag == saved.referral_etag
            and link.opportunity_etag == saved.opportunity_etag
            and link.last_result is not None
            and link.last_result.status == status
        )
        if not unchanged:
            await self.links.update_link(saved)

    async def _record_history(self, job: SyncJob, result: SyncResult) -> None:
        key = result.referral_id or result.opportunity_id or str(job.id)
        plan = result.plan
        direction: Literal["pc_to_crm", "crm_to_pc", "both", "none"] = "none"
        if plan is not None and plan.to_pc and plan.to_crm:
            direction = "both"
        elif plan is not None and plan.to_crm:
            direction = "pc_to_crm"
        elif plan is not None and plan.to_pc:
            direction = "crm_to_pc"
        if result.outcome == "no_change" and result.remote_calls == 0:
            return  # an echo or a duplicate event: nothing happened worth a row
        await self.history.add_entry(
            HistoryEntry(
                key=key,
                outcome=result.outcome,
                reason=job.reason,
                direction=direction,
                changes=history_changes(plan),
                conflicts=list(plan.conflicts + plan.newly_blocked) if plan else [],
                errors=result.problems,
                duration_ms=result.duration_ms,
                remote_calls=result.remote_calls,
            )
        )


def _already_covered(job: SyncJob, seen_up_to: datetime | None) -> bool:
    """True when the change the job observed is no newer than what the link already holds.

    ``observed_at`` is the changed record's own timestamp (the referral's updatedDateTime for
    webhook and reconcile jobs, the opportunity's modifiedon for poll jobs), so it compares with
    the link's copy of that timestamp; other jobs always run.
    """
    if seen_up_to is None:
        return False
    same_clock = (job.kind == "referral" and (job.reason.startswith("webhook:")
                  or job.reason == "reconcile")) or (job.kind == "opportunity"
                  and job.reason == "poll")  # fmt: skip
    return same_clock and job.observed_at <= seen_up_to


def _base(link: SyncLink) -> SyncBase | None:
    return SyncBase.model_validate(link.base) if link.base else None


def _with_crm_customer(deal: Deal, crm: Deal) -> Deal:
    # The account is CRM's after creation: validate the country the seller can fix.
    return deal.model_copy(update={"customer": crm.customer or deal.customer})


def _hold_pc_changes(plan: Plan, pc: Deal) -> Plan:
    """Send nothing to Partner Center: keep PC's values in the base so the change is seen
    again (and validated again) on the next edit, while CRM-bound changes still apply."""
    held = {name: getattr(pc, name) for name in plan.to_pc}
    return Plan(
        merged=plan.merged.model_copy(update=held),
        to_pc={},
        to_crm=plan.to_crm,
        conflicts=plan.conflicts,
        blocked=plan.blocked,
        newly_blocked=plan.newly_blocked,
    )


def _microsoft_decision(referral: Referral) -> str:
    status = f"{referral.status}/{referral.substatus}"
    return f"Microsoft's referral of this engagement is now {status}"
