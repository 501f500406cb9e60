"""``reconcile_partner_center``: catch what webhooks missed (SPEC 3, SPEC 12 "auto-heal").

Lists the referrals updated since the cursor (``updatedDateTime gt`` the watermark minus an
overlap, oldest first; reference: partner-center-referrals-api §1.2) and enqueues those whose
eTag differs from the one the link stored, or that have no link yet. A referral whose eTag the
link holds is either synced already or the echo of the engine's own write: nothing to do.

A run works a page at a time: it enqueues a page's jobs and saves the cursor before it reads the
next page, with where it stopped (``resume``). A run cut short (a host recycled, the function's
time limit, a storage outage) loses at most one page, and the next run carries on from there
instead of re-reading the whole window: under frequent restarts a run that had to finish the
window before it enqueued anything never got anywhere, and missed webhooks waited for a backfill.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from shared import drift
from shared.jobs import SyncJob
from shared.partner_center import Referral
from shared.runtime import Runtime, get_runtime
from shared.state import Cursor, LinkStore
from shared.telemetry import SPAN_RECONCILE, traced
from shared.triggers import cursor_run

logger = logging.getLogger(__name__)

CURSOR = "reconcile_partner_center"
# Partner Center stamps updatedDateTime on its side and its list may lag a write (ordering and
# consistency are undocumented, reference §4.3): re-read five minutes before the watermark.
OVERLAP = timedelta(minutes=5)
# First run = backfill window (SPEC 3): referrals updated in the last 30 days.
FIRST_RUN_WINDOW = timedelta(days=30)
# Referrals read per run; the next run carries on from the last one read.
MAX_REFERRALS = 5000
# Referrals handled (looked up, enqueued, cursor saved) at a time: the emulator's list page.
CHUNK = 100
# A resumed run re-reads this much before where the last one stopped: referrals that share one
# updatedDateTime may straddle the stop (the re-read ones cost a link read, no job).
RESUME_BACK = timedelta(seconds=1)
# Cursor state: where an unfinished pass stopped (absent once a pass reached the end).
RESUME = "resume"


@dataclass
class ReconcileReport:
    """What one run found and did (counts and the watermark: no referral data)."""

    referrals: int = 0
    enqueued: int = 0
    unchanged: int = 0
    already_queued: int = 0
    watermark: datetime | None = None
    cursor_saved: bool = False
    finished: bool = False  # the pass reached the newest referral (no ``resume`` left)


@traced(SPAN_RECONCILE)
async def reconcile_partner_center(
    runtime: Runtime | None = None,
    *,
    now: datetime | None = None,
    overlap: timedelta = OVERLAP,
    first_run_window: timedelta = FIRST_RUN_WINDOW,
    max_referrals: int = MAX_REFERRALS,
    chunk: int = CHUNK,
) -> ReconcileReport:
    """One timer run; raises on storage or Partner Center failures (the next run resumes)."""
    runtime = runtime or get_runtime()
    moment = now or cursor_run.utc_now()
    await runtime.ensure_storage()
    store = runtime.cursors()
    cursor = await store.get_cursor(CURSOR)
    watermark = cursor_run.start_of(cursor, now=moment, first_run_window=first_run_window)
    resume = _resume_of(cursor)
    since = resume - RESUME_BACK if resume is not None else watermark - overlap

    run = _Run(runtime, cursor, watermark, overlap=overlap, moment=moment)
    referrals = runtime.partner_center().list_referrals(
        # An unquoted DateTimeOffset literal (reference §1.2); only our own timestamp goes in.
        filter=f"updatedDateTime gt {cursor_run.iso(since)}",
        orderby="updatedDateTime",
    )
    exhausted = False
    counted = 0  # toward the cap: only those past the resume point (the re-read ones are not)
    try:
        page: list[Referral] = []
        async for referral in referrals:
            page.append(referral)
            if len(page) >= chunk:
                if not await run.handle(page, resume=True):
                    return run.report  # another run moved the cursor: it carries on
                page = []
            at = referral.updated_date_time
            counted += resume is None or at is None or at > resume
            if counted >= max_referrals:
                break  # oldest first: the next run resumes at the last one read
        else:
            exhausted = True
        await run.handle(page, resume=not exhausted)
    finally:
        await cursor_run.close_pager(referrals)
    run.report.finished = exhausted
    logger.info(
        "reconcile_partner_center: %d referrals updated, %d enqueued, %d unchanged, "
        "%d already queued",
        run.report.referrals,
        run.report.enqueued,
        run.report.unchanged,
        run.report.already_queued,
        extra={
            "watermark": cursor_run.iso(run.watermark),
            "cursor_saved": run.report.cursor_saved,
            "finished": exhausted,
        },
    )
    return run.report


async def scan_drift(runtime: Runtime | None = None) -> drift.DriftSummary | None:
    """After the run: refresh the out-of-sync counts ``/api/health`` reads (``shared.drift``;
    skipped while the stored ones are younger than ``drift.SCAN_EVERY``; never raises)."""
    runtime = runtime or get_runtime()
    return await drift.refresh(
        pc=runtime.partner_center(),
        dataverse=runtime.dataverse(),
        links=runtime.links(),
        cursors=runtime.cursors(),
        settings=runtime.settings,
    )


class _Run:
    """One run's progress: the cursor as last saved, the watermark so far, what was seen."""

    def __init__(
        self,
        runtime: Runtime,
        cursor: Cursor | None,
        watermark: datetime,
        *,
        overlap: timedelta,
        moment: datetime,
    ) -> None:
        self.runtime = runtime
        self.cursor = cursor
        self.watermark = watermark
        self.overlap = overlap
        self.moment = moment
        self.previous = cursor_run.remembered(cursor)
        self.seen: dict[str, tuple[datetime, str]] = {}
        self.report = ReconcileReport(watermark=watermark)

    async def handle(self, page: list[Referral], *, resume: bool) -> bool:
        """Enqueue one page's jobs, then save the cursor; False when another run moved it."""
        found: dict[str, Referral] = {}
        for referral in page:
            referral_id = _guid(referral.id)
            if referral_id is not None:
                found[referral_id] = referral
        self.report.referrals += len(found)
        fresh = {
            i: r for i, r in found.items() if not (r.e_tag and self.previous.get(i) == r.e_tag)
        }
        self.report.already_queued += len(found) - len(fresh)
        links = self.runtime.links()
        stale = await cursor_run.gather_bounded(
            fresh.items(), lambda item: _needs_sync(links, item[0], item[1])
        )
        jobs = [
            SyncJob(kind="referral", id=UUID(i), reason="reconcile", observed_at=self._at(r))
            for (i, r), needed in zip(fresh.items(), stale, strict=True)
            if needed
        ]
        self.report.unchanged += len(fresh) - len(jobs)
        self.report.enqueued += await self.runtime.jobs.enqueue_many(jobs)

        stamps = [r.updated_date_time for r in found.values() if r.updated_date_time is not None]
        last = max(stamps, default=None)  # only the service's own times move the cursor
        if last is not None:
            self.watermark = max(self.watermark, last)
        self.seen.update({i: (self._at(r), r.e_tag) for i, r in found.items() if r.e_tag})
        return await self._save(resume_at=last if resume else None, resuming=resume)

    async def _save(self, *, resume_at: datetime | None, resuming: bool) -> bool:
        # What earlier runs enqueued ranks below this run's (its times are not stored).
        oldest = self.watermark - self.overlap
        remembered = {**{i: (oldest, etag) for i, etag in self.previous.items()}, **self.seen}
        seen = cursor_run.to_remember(remembered, since=oldest)
        extra: dict[str, str] = {}
        if resuming:
            # Where to carry on: the last stamp this pass handled (the one before, if this page
            # had none), so an unfinished pass is never restarted from its overlap.
            before = _resume_of(self.cursor)
            at = resume_at or before or self.watermark - self.overlap
            extra[RESUME] = cursor_run.iso(at)
        saved = await cursor_run.save(
            self.runtime.cursors(),
            CURSOR,
            self.cursor,
            watermark=self.watermark,
            seen=seen,
            extra=extra,
        )
        self.report.watermark = self.watermark
        self.report.cursor_saved = saved is not None
        if saved is None:
            return False
        self.cursor = saved
        return True

    def _at(self, referral: Referral) -> datetime:
        return referral.updated_date_time or self.moment


def _resume_of(cursor: Cursor | None) -> datetime | None:
    text = cursor.state.get(RESUME) if cursor is not None else None
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None  # an unreadable resume point: re-read the overlap, nothing is skipped


async def _needs_sync(links: LinkStore, referral_id: str, referral: Referral) -> bool:
    link = await links.get_link(referral_id)
    return link is None or link.referral_etag != referral.e_tag


def _guid(value: str | None) -> str | None:
    try:
        return str(UUID(value or ""))
    except ValueError:
        return None
