"""``SyncEngine.sync(job)``: one referral ↔ opportunity pair brought in line (SPEC 4.4).

Each attempt is three stages:

1. **read** (``read.py``): one ``Snapshot`` — the link or index row, the referral, the
   opportunity with its account, contact, currency and solutions, related referrals — with
   only the reads the plan can use (an echo stops at the link: no remote call);
2. **plan** (``plan.py``, pure): the outcome, the merge's field plan and the typed steps;
3. **apply** (``apply.py``): the steps in order, each write conditional on the version read.

A lost race (412, a row created by another run) starts the attempt again from fresh reads,
a bounded number of times. A dry run stops after the plan. The engine then records history.
Remote calls are counted by the clients' request hook (``shared.calls``), not here.

Each stage is a span (``sync.read``, ``sync.plan``, ``sync.apply``: ``shared.telemetry``) with
the attempt, the remote calls it made and, from the plan on, the ids, the outcome, the step
types and the number of conflicts; the history row keeps the trace's ``traceparent`` and
Partner Center's last request id.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from datetime import datetime
from typing import Literal

from opentelemetry.trace import Span

from shared.calls import counting, current_calls
from shared.dataverse import DataverseClient
from shared.errors import AlreadyExistsError, PreconditionFailedError
from shared.failures import describe, record_failure
from shared.jobs import SyncJob
from shared.partner_center import PartnerCenterClient
from shared.settings import Settings
from shared.state import FieldChange, HistoryEntry, HistoryStore, LinkStore
from shared.sync.apply import Applier, Refused
from shared.sync.mapping import Columns
from shared.sync.merge import FieldPlan, to_json_value
from shared.sync.plan import SyncPolicy, after_refusal, plan
from shared.sync.read import Reader
from shared.sync.result import SyncResult, SyncRetry
from shared.sync.sides import CrmSide, PartnerCenterSide
from shared.sync.steps import Plan
from shared.telemetry import (
    SPAN_APPLY,
    SPAN_PLAN,
    SPAN_READ,
    current_traceparent,
    set_attributes,
    span,
)

log = logging.getLogger(__name__)
# Another run got there first: read again and decide again.
LOST_RACE = (PreconditionFailedError, AlreadyExistsError)


def sync_policy(settings: Settings) -> SyncPolicy:
    """The settings the plan depends on."""
    return SyncPolicy(
        columns=Columns(
            prefix=settings.crm_column_prefix,
            deal_value=settings.crm_deal_value_field,
            country=settings.crm_country_field,
            mapping=settings.mapping,
        ),
        conflict_policy=settings.conflict_policy,
        referral_link_template=settings.referral_link_template,
        cosell_only=settings.sync_cosell_only,
        show_sync_mark=settings.show_sync_mark_in_name,
    )


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
        self.history = history
        self.links = links
        self.policy = sync_policy(settings)
        self.crm = CrmSide(dataverse, self.policy.columns)
        pc_side = PartnerCenterSide(pc)
        self.reader = Reader(pc_side, self.crm, links, self.policy)
        self.applier = Applier(pc_side, self.crm, links, self.policy)
        self.max_restarts = max_restarts

    async def sync(
        self,
        job: SyncJob,
        *,
        dry_run: bool = False,
        enqueued_at: datetime | None = None,
        delivery: int | None = None,
    ) -> SyncResult:
        """Run one job to completion; raises ``SyncRetry`` (or a client error) to be retried.

        With ``dry_run`` it reads and plans, and returns the plan's steps without running them.
        ``enqueued_at`` is when the job's queue message was inserted (the worker knows it): a
        redelivered poll job is then recognised without a read. A failure is recorded before
        it is raised (``shared.failures``: a history row, and the link's last result), with
        ``delivery``, the queue's dequeue count, as its attempt.
        """
        started = time.perf_counter()
        # Owns the leases this sync takes, across its restarts. Not the queue message: a
        # redelivery after a worker died mid-POST must wait for that POST to land (the lease),
        # or its lookup could miss it and post a second referral.
        run_id = uuid.uuid4().hex
        with counting() as calls:
            try:
                result = await self._restarting(job, run_id, dry_run, enqueued_at)
            except Exception as exc:
                if not dry_run:
                    elapsed = int((time.perf_counter() - started) * 1000)
                    await self._record_failure(job, exc, delivery, elapsed, calls.calls)
                raise
        result.remote_calls = calls.calls
        result.duration_ms = int((time.perf_counter() - started) * 1000)
        if not dry_run and result.outcome not in ("skipped", "deferred"):
            await self._record_history(job, result, request_id=calls.request_id)
        return result

    async def _restarting(
        self, job: SyncJob, run_id: str, dry_run: bool, enqueued_at: datetime | None
    ) -> SyncResult:
        for attempt in range(self.max_restarts + 1):
            try:
                return await self._attempt(
                    job, attempt=attempt, run_id=run_id, dry_run=dry_run, enqueued=enqueued_at
                )
            except LOST_RACE as exc:
                log.info("sync %s %s restarts after %s", job.kind, job.id, type(exc).__name__)
                await asyncio.sleep(random.uniform(0, 0.05 * (attempt + 1)))  # noqa: S311
        raise SyncRetry(
            f"{job.kind} {job.id}: still changing after {self.max_restarts} restarts; "
            "the job will be retried"
        )

    async def _record_failure(
        self, job: SyncJob, exc: Exception, delivery: int | None, elapsed_ms: int, calls: int
    ) -> None:
        """Best effort: a failure to record (storage down too) must not hide the first one."""
        try:
            await record_failure(
                self.links,
                self.history,
                job,
                describe(exc, attempt=delivery),
                duration_ms=elapsed_ms,
                remote_calls=calls,
            )
        except Exception as second:  # noqa: BLE001 - the job's own error is what is raised
            log.warning(
                "sync %s %s: its failure (%s) could not be recorded: %s",
                job.kind,
                job.id,
                type(exc).__name__,
                type(second).__name__,
            )

    async def _attempt(
        self, job: SyncJob, *, attempt: int, run_id: str, dry_run: bool, enqueued: datetime | None
    ) -> SyncResult:
        before = current_calls()
        with span(SPAN_READ, attempt=attempt) as stage:
            snapshot, stored = await self.reader.read(
                job, attempt=attempt, run_id=run_id, enqueued_at=enqueued
            )
            set_attributes(stage, remote_calls=current_calls() - before)
        with span(SPAN_PLAN, attempt=attempt) as stage:
            planned = plan(snapshot, self.policy)
            _describe(stage, planned)
        referral_id = planned.referral_id
        notes = list(planned.notes)
        if not dry_run:
            before = current_calls()
            with span(SPAN_APPLY, attempt=attempt) as stage:
                try:
                    current = await self.applier.apply(planned, snapshot, stored)
                except Refused as refused:
                    planned = after_refusal(
                        planned,
                        refused.step,
                        refused.message,
                        linked=refused.current.link is not None,
                    )
                    current = await self.applier.resume(planned.steps, snapshot, refused.current)
                if referral_id is None and current.referral is not None and planned.steps:
                    referral_id = current.referral.id  # a referral this sync created
                _describe(stage, planned)
                set_attributes(
                    stage, referral_id=referral_id, remote_calls=current_calls() - before
                )
            notes += current.notes  # fields Partner Center would not take
        return SyncResult(
            planned.outcome,
            referral_id,
            planned.opportunity_id,
            planned.fields,
            list(planned.problems),
            notes,
            planned.steps,
            dry_run=dry_run,
            retry_after=planned.retry_after,
        )

    async def _record_history(
        self, job: SyncJob, result: SyncResult, *, request_id: str | None = None
    ) -> None:
        if result.outcome == "no_change" and result.remote_calls == 0:
            return  # an echo or a duplicate event: nothing happened worth a row
        fields = result.plan
        await self.history.add_entry(
            HistoryEntry(
                key=result.referral_id or result.opportunity_id or str(job.id),
                outcome=result.outcome,
                reason=str(job.reason),
                direction=_direction(fields),
                changes=history_changes(fields),
                conflicts=list(fields.conflicts + fields.newly_blocked) if fields else [],
                errors=result.problems,
                duration_ms=result.duration_ms,
                remote_calls=result.remote_calls,
                trace_parent=current_traceparent(),
                pc_request_id=request_id,
            )
        )


def _describe(stage: Span, planned: Plan) -> None:
    """Ids, the outcome, the step types and the conflict count: no field values (SPEC 8)."""
    fields = planned.fields
    set_attributes(
        stage,
        referral_id=planned.referral_id,
        opportunity_id=planned.opportunity_id,
        outcome=planned.outcome,
        steps=[type(step).__name__ for step in planned.steps],
        conflicts=len(fields.conflicts) if fields is not None else 0,
        problems=len(planned.problems),
    )


def _direction(fields: FieldPlan | None) -> Literal["pc_to_crm", "crm_to_pc", "both", "none"]:
    if fields is None:
        return "none"
    if fields.to_pc and fields.to_crm:
        return "both"
    if fields.to_crm:
        return "pc_to_crm"
    return "crm_to_pc" if fields.to_pc else "none"


def history_changes(fields: FieldPlan | None) -> list[FieldChange]:
    """The field changes of a plan, for the history table."""
    if fields is None:
        return []
    return [
        FieldChange(
            field=c.field, direction=direction, old=to_json_value(c.old), new=to_json_value(c.new)
        )
        for direction, changes in (("pc_to_crm", fields.to_crm), ("crm_to_pc", fields.to_pc))
        for c in changes.values()
    ]
