"""``poll_dataverse``: enqueue the opportunities that changed since the cursor (SPEC 3).

Dataverse change tracking cannot be combined with ``$filter`` (reference: dataverse-web-api
§3.2), so this uses the ``modifiedon`` watermark of §3.7: opportunities with the sync flag on,
and the ``<prefix>solutions`` rows of such opportunities (each a change of its opportunity),
changed at or after the watermark minus an overlap, ordered by ``modifiedon`` and paged.
Deleted solution rows leave no ``modifiedon`` behind: the opportunity's next edit carries them.

A row is not enqueued when it is an echo of the engine's own write (its ``modifiedon`` is no
newer than the one the link, or without a link the opportunity's index row, recorded), or when
the previous run already enqueued it at that same ``modifiedon`` (the cursor's state).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from shared.crm_schema import crm_schema
from shared.dataverse import all_of, eq, ge, ne
from shared.jobs import SyncJob
from shared.runtime import Runtime, get_runtime
from shared.state import LinkStore
from shared.triggers import cursor_run

logger = logging.getLogger(__name__)

CURSOR = "poll_dataverse"
# Clock skew between Dataverse's nodes, equal timestamps and commits that become visible after
# a later-stamped one: re-read this much before the watermark.
OVERLAP = timedelta(seconds=5)
# First run: changes of the last day. Older opportunities are synced when next edited (or by
# `cosell sync opportunity`); reaching further back would flood the queue on day one.
FIRST_RUN_WINDOW = timedelta(days=1)
# Rows read per query and run; the next run carries on from the last row read.
MAX_ROWS = 5000
PAGE_SIZE = 500


@dataclass
class PollReport:
    """What one run found and did (counts and the watermark: no record data)."""

    opportunities: int = 0
    solution_rows: int = 0
    enqueued: int = 0
    echoes: int = 0
    already_queued: int = 0
    watermark: datetime | None = None
    cursor_saved: bool = False


@dataclass
class _Changes:
    """Changed records of one query: id → newest ``modifiedon``, and where reading stopped."""

    by_id: dict[str, datetime] = field(default_factory=dict)
    rows: int = 0
    last: datetime | None = None
    capped: bool = False


async def poll_dataverse(
    runtime: Runtime | None = None,
    *,
    now: datetime | None = None,
    overlap: timedelta = OVERLAP,
    first_run_window: timedelta = FIRST_RUN_WINDOW,
    max_rows: int = MAX_ROWS,
) -> PollReport:
    """One timer run; raises on storage or Dataverse failures (the next run repeats it)."""
    runtime = runtime or get_runtime()
    await runtime.ensure_storage()
    store = runtime.cursors()
    cursor = await store.get_cursor(CURSOR)
    watermark = cursor_run.start_of(
        cursor, now=now or cursor_run.utc_now(), first_run_window=first_run_window
    )
    since = watermark - overlap
    schema = crm_schema(runtime.settings.crm_column_prefix)
    flag = schema.sync_with_partner_center.logical_name
    solutions_key = schema.solution.primary_key
    lookup = schema.solution_opportunity
    lead_referral = schema.lead_referral_id.logical_name
    dataverse = runtime.dataverse()
    opportunities, solutions = await asyncio.gather(
        _read(
            dataverse.list_rows(
                "opportunities",
                select=["opportunityid", "modifiedon"],
                filter=all_of(ge("modifiedon", since), eq(flag, True)),
                orderby=["modifiedon asc", "opportunityid asc"],
                page_size=PAGE_SIZE,
            ),
            "opportunityid",
            max_rows,
        ),
        _read(
            dataverse.list_rows(
                schema.solution.entity_set,
                select=[solutions_key, lookup.value_name, "modifiedon"],
                # Through the lookup (reference §2.2): only solutions of flagged opportunities.
                filter=all_of(ge("modifiedon", since), eq(f"{lookup.logical_name}/{flag}", True)),
                orderby=["modifiedon asc", f"{solutions_key} asc"],
                page_size=PAGE_SIZE,
            ),
            lookup.value_name,
            max_rows,
        ),
    )
    leads = _Changes()
    if not runtime.settings.sync_cosell_only:
        # Qualified or disqualified leads made from referrals: the engine then links the new
        # opportunity and accepts (or declines) the referral (SPEC 4.5).
        leads = await _read(
            dataverse.list_rows(
                "leads",
                select=["leadid", lead_referral, "modifiedon"],
                filter=all_of(ge("modifiedon", since), ne("statecode", 0), ne(lead_referral, None)),
                orderby=["modifiedon asc", "leadid asc"],
                page_size=PAGE_SIZE,
            ),
            lead_referral,
            max_rows,
        )
    changed = dict(opportunities.by_id)
    for opportunity_id, at in solutions.by_id.items():
        # A solution added or edited is a change of its opportunity (SPEC 4.1, CRM → PC).
        changed[opportunity_id] = max(at, changed.get(opportunity_id, at))

    report = PollReport(opportunities=opportunities.rows, solution_rows=solutions.rows)
    previous = cursor_run.remembered(cursor)
    fresh = {i: at for i, at in changed.items() if previous.get(i) != cursor_run.iso(at)}
    report.already_queued = len(changed) - len(fresh)
    covered = await cursor_run.gather_bounded(
        fresh.items(), lambda item: _is_echo(runtime.links(), item[0], item[1])
    )
    jobs = [
        SyncJob(kind="opportunity", id=UUID(i), reason="poll", observed_at=at)
        for (i, at), echo in zip(fresh.items(), covered, strict=True)
        if not echo
    ]
    report.echoes = len(fresh) - len(jobs)
    fresh_leads = {i: at for i, at in leads.by_id.items() if previous.get(i) != cursor_run.iso(at)}
    jobs += [
        SyncJob(kind="referral", id=UUID(i), reason="poll", observed_at=at)
        for i, at in fresh_leads.items()
    ]
    report.enqueued = await runtime.jobs.enqueue_many(jobs)

    new_watermark = _next_watermark(watermark, opportunities, solutions, leads)
    seen = cursor_run.to_remember(
        {i: (at, cursor_run.iso(at)) for i, at in {**changed, **leads.by_id}.items()},
        since=new_watermark - overlap,
    )
    report.watermark = new_watermark
    report.cursor_saved = await cursor_run.save(
        store, CURSOR, cursor, watermark=new_watermark, seen=seen
    )
    logger.info(
        "poll_dataverse: %d opportunities and %d solution rows changed, %d enqueued, "
        "%d echoes, %d already queued",
        report.opportunities,
        report.solution_rows,
        report.enqueued,
        report.echoes,
        report.already_queued,
        extra={"watermark": cursor_run.iso(new_watermark), "cursor_saved": report.cursor_saved},
    )
    return report


async def _read(rows: AsyncIterator[dict[str, Any]], id_column: str, max_rows: int) -> _Changes:
    changes = _Changes()
    try:
        async for row in rows:
            changes.rows += 1
            at = _modified_on(row)
            if at is None:
                continue
            changes.last = at
            record_id = row.get(id_column)
            key = _guid(record_id)
            if key is not None:
                changes.by_id[key] = max(at, changes.by_id.get(key, at))
            if changes.rows >= max_rows:
                changes.capped = True
                break
    finally:
        await cursor_run.close_pager(rows)
    return changes


def _guid(value: object) -> str | None:
    if not isinstance(value, str):
        return None  # e.g. a solution row not attached to an opportunity
    try:
        return str(UUID(value))
    except ValueError:
        return None


def _modified_on(row: dict[str, Any]) -> datetime | None:
    value = row.get("modifiedon")
    if not isinstance(value, str):
        return None
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo is not None else None


async def _is_echo(links: LinkStore, opportunity_id: str, modified_on: datetime) -> bool:
    """True when the link (or, before a referral exists, the index row) already records this
    ``modifiedon`` or a later one: the change is the engine's own write or already synced."""
    link = await links.get_link_by_opportunity(opportunity_id)
    if link is not None:
        seen = link.opportunity_modified_on
    else:
        index = await links.get_opportunity_index(opportunity_id)
        seen = index.opportunity_modified_on if index is not None else None
    return seen is not None and modified_on <= seen


def _next_watermark(watermark: datetime, *reads: _Changes) -> datetime:
    """The newest ``modifiedon`` read, or where a capped query stopped (it resumes there)."""
    capped = [r.last for r in reads if r.capped and r.last is not None]
    if capped:
        return max(watermark, min(capped))
    newest = [r.last for r in reads if r.last is not None]
    return max([watermark, *newest])
