"""``reconcile_partner_center``: catch what webhooks missed (SPEC 3, SPEC 12 "auto-heal").

Lists the referrals updated since the cursor (``updatedDateTime gt`` the watermark minus an
overlap, oldest first; reference: partner-center-referrals-api §1.2) and enqueues those whose
eTag differs from the one the link stored, or that have no link yet. A referral whose eTag the
link holds is either synced already or the echo of the engine's own write: nothing to do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

from shared.jobs import SyncJob
from shared.partner_center import Referral
from shared.runtime import Runtime, get_runtime
from shared.state import LinkStore
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


@dataclass
class ReconcileReport:
    """What one run found and did (counts and the watermark: no referral data)."""

    referrals: int = 0
    enqueued: int = 0
    unchanged: int = 0
    already_queued: int = 0
    watermark: datetime | None = None
    cursor_saved: bool = False


async def reconcile_partner_center(
    runtime: Runtime | None = None,
    *,
    now: datetime | None = None,
    overlap: timedelta = OVERLAP,
    first_run_window: timedelta = FIRST_RUN_WINDOW,
    max_referrals: int = MAX_REFERRALS,
) -> ReconcileReport:
    """One timer run; raises on storage or Partner Center failures (the next run repeats it)."""
    runtime = runtime or get_runtime()
    moment = now or cursor_run.utc_now()
    await runtime.ensure_storage()
    store = runtime.cursors()
    cursor = await store.get_cursor(CURSOR)
    watermark = cursor_run.start_of(cursor, now=moment, first_run_window=first_run_window)
    since = watermark - overlap

    found: dict[str, Referral] = {}
    updated: dict[str, datetime] = {}
    last: datetime | None = None
    referrals = runtime.partner_center().list_referrals(
        # An unquoted DateTimeOffset literal (reference §1.2); only our own timestamp goes in.
        filter=f"updatedDateTime gt {cursor_run.iso(since)}",
        orderby="updatedDateTime",
    )
    try:
        async for referral in referrals:
            if len(found) >= max_referrals:
                break  # oldest first: the next run resumes at the last one read
            referral_id = _guid(referral.id)
            if referral_id is None:
                continue
            found[referral_id] = referral
            updated[referral_id] = referral.updated_date_time or moment
            if referral.updated_date_time is not None:  # only the service's own times move it
                at = referral.updated_date_time
                last = at if last is None else max(last, at)
    finally:
        await cursor_run.close_pager(referrals)

    report = ReconcileReport(referrals=len(found))
    previous = cursor_run.remembered(cursor)
    fresh = {i: r for i, r in found.items() if not (r.e_tag and previous.get(i) == r.e_tag)}
    report.already_queued = len(found) - len(fresh)
    stale = await cursor_run.gather_bounded(
        fresh.items(), lambda item: _needs_sync(runtime.links(), item[0], item[1])
    )
    jobs = [
        SyncJob(kind="referral", id=UUID(i), reason="reconcile", observed_at=updated[i])
        for (i, _), needed in zip(fresh.items(), stale, strict=True)
        if needed
    ]
    report.unchanged = len(fresh) - len(jobs)
    report.enqueued = await runtime.jobs.enqueue_many(jobs)

    new_watermark = max(watermark, last) if last is not None else watermark
    seen = cursor_run.to_remember(
        {i: (updated[i], r.e_tag) for i, r in found.items() if r.e_tag},
        since=new_watermark - overlap,
    )
    report.watermark = new_watermark
    report.cursor_saved = await cursor_run.save(
        store, CURSOR, cursor, watermark=new_watermark, seen=seen
    )
    logger.info(
        "reconcile_partner_center: %d referrals updated, %d enqueued, %d unchanged, "
        "%d already queued",
        report.referrals,
        report.enqueued,
        report.unchanged,
        report.already_queued,
        extra={"watermark": cursor_run.iso(new_watermark), "cursor_saved": report.cursor_saved},
    )
    return report


async def _needs_sync(links: LinkStore, referral_id: str, referral: Referral) -> bool:
    link = await links.get_link(referral_id)
    return link is None or link.referral_etag != referral.e_tag


def _guid(value: str | None) -> str | None:
    try:
        return str(UUID(value or ""))
    except ValueError:
        return None
