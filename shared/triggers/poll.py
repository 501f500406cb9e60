"""``poll_dataverse``: enqueue the opportunities that changed since the cursor (SPEC 3).

Dataverse change tracking cannot be combined with ``$filter`` (reference: dataverse-web-api
§3.2), so this uses the ``modifiedon`` watermark of §3.7: opportunities with the sync flag on,
and the ``<prefix>solutions`` rows of such opportunities (each a change of its opportunity),
changed at or after the watermark minus an overlap, ordered by ``modifiedon`` and paged.
Deleted solution rows leave no ``modifiedon`` behind: the opportunity's next edit carries them.

A row is not enqueued when it is an echo of the engine's own write, or when the previous run
already enqueued it at that same version (the cursor's state). Dataverse stamps ``modifiedon``
to the second, so a seller's edit in the same second as our write has the same ``modifiedon``:
the echo check compares ``versionnumber`` (it grows with every write) with the one the link, or
without a link the opportunity's index row, recorded; only where no version was recorded (links
of older versions) does a ``modifiedon`` *strictly* older than the recorded one count as an echo.
That check is ``shared.triggers.echo``'s, shared with ``dataverse_webhook``.
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
from shared.dataverse import VERSION_COLUMNS, Expand, all_of, eq, ge, ne
from shared.jobs import SyncJob
from shared.runtime import Runtime, get_runtime
from shared.sync.snapshot import version_in
from shared.telemetry import SPAN_POLL, traced
from shared.triggers import cursor_run
from shared.triggers.echo import Seen, is_echo

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
    related_rows: int = 0  # flagged opportunities whose account or contact changed
    enqueued: int = 0
    echoes: int = 0
    already_queued: int = 0
    watermark: datetime | None = None
    cursor_saved: bool = False


@dataclass
class _Changes:
    """Changed records of one query: id → its newest row, and where reading stopped."""

    by_id: dict[str, Seen] = field(default_factory=dict)
    rows: int = 0
    last: datetime | None = None
    capped: bool = False


@traced(SPAN_POLL)
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
                select=["opportunityid", *VERSION_COLUMNS],
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
                select=[solutions_key, lookup.value_name, *VERSION_COLUMNS],
                # Through the lookup (reference §2.2): only solutions of flagged opportunities.
                filter=all_of(ge("modifiedon", since), eq(f"{lookup.logical_name}/{flag}", True)),
                orderby=["modifiedon asc", f"{solutions_key} asc"],
                page_size=PAGE_SIZE,
            ),
            lookup.value_name,
            max_rows,
        ),
    )
    # An account or contact fixed alone (a country, a phone) is a change of each flagged
    # opportunity using it: validation and the contact depend on them (issue 13, class 8).
    # Not ordered by the related row's time, so they do not move the watermark.
    accounts, contacts = await asyncio.gather(
        *(
            _read(
                dataverse.list_rows(
                    "opportunities",
                    select=["opportunityid"],
                    expand=[Expand(lookup_name, VERSION_COLUMNS)],
                    filter=all_of(ge(f"{lookup_name}/modifiedon", since), eq(flag, True)),
                    orderby=["opportunityid asc"],
                    page_size=PAGE_SIZE,
                ),
                "opportunityid",
                max_rows,
                changed_row=lookup_name,
            )
            for lookup_name in ("parentaccountid", "parentcontactid")
        )
    )
    leads = _Changes()
    if not runtime.settings.sync_cosell_only:
        # Qualified or disqualified leads made from referrals: the engine then links the new
        # opportunity and accepts (or declines) the referral (SPEC 4.5).
        leads = await _read(
            dataverse.list_rows(
                "leads",
                select=["leadid", lead_referral, *VERSION_COLUMNS],
                filter=all_of(ge("modifiedon", since), ne("statecode", 0), ne(lead_referral, None)),
                orderby=["modifiedon asc", "leadid asc"],
                page_size=PAGE_SIZE,
            ),
            lead_referral,
            max_rows,
        )
    # A solution added or edited is a change of its opportunity (SPEC 4.1, CRM → PC).
    reads = {"opportunity": opportunities, "solutions": solutions, "account": accounts,
             "contact": contacts}  # fmt: skip
    changed = {
        i: _Change({kind: read.by_id[i] for kind, read in reads.items() if i in read.by_id})
        for i in set().union(*(read.by_id for read in reads.values()))
    }
    report = PollReport(
        opportunities=opportunities.rows,
        solution_rows=solutions.rows,
        related_rows=accounts.rows + contacts.rows,
    )
    previous = cursor_run.remembered(cursor)
    fresh = {i: c for i, c in changed.items() if previous.get(i) != c.mark}
    report.already_queued = len(changed) - len(fresh)
    covered = await cursor_run.gather_bounded(
        fresh.items(), lambda item: is_echo(runtime.links(), item[0], item[1].rows)
    )
    jobs = [
        SyncJob(kind="opportunity", id=UUID(i), reason="poll", observed_at=c.at)
        for (i, c), echo in zip(fresh.items(), covered, strict=True)
        if not echo
    ]
    report.echoes = len(fresh) - len(jobs)
    lead_changes = {i: _Change({"lead": seen}) for i, seen in leads.by_id.items()}
    fresh_leads = {i: c for i, c in lead_changes.items() if previous.get(i) != c.mark}
    jobs += [
        SyncJob(kind="referral", id=UUID(i), reason="poll", observed_at=c.at)
        for i, c in fresh_leads.items()
    ]
    report.enqueued = await runtime.jobs.enqueue_many(jobs)

    new_watermark = _next_watermark(watermark, opportunities, solutions, leads)
    seen = cursor_run.to_remember(
        {i: (c.at, c.mark) for i, c in {**changed, **lead_changes}.items()},
        since=new_watermark - overlap,
    )
    report.watermark = new_watermark
    saved = await cursor_run.save(store, CURSOR, cursor, watermark=new_watermark, seen=seen)
    report.cursor_saved = saved is not None
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


async def _read(
    rows: AsyncIterator[dict[str, Any]],
    id_column: str,
    max_rows: int,
    *,
    changed_row: str | None = None,
) -> _Changes:
    """``changed_row``: the expanded lookup whose row changed (else the row itself)."""
    changes = _Changes()
    try:
        async for row in rows:
            changes.rows += 1
            changed = row.get(changed_row) if changed_row else row
            if not isinstance(changed, dict):
                continue
            at = _modified_on(changed)
            if at is None:
                continue
            changes.last = at
            record_id = row.get(id_column)
            key = _guid(record_id)
            seen = Seen(at, version_in(changed))
            known = changes.by_id.get(key) if key is not None else None
            if key is not None and (known is None or seen.newer_than(known)):
                changes.by_id[key] = seen
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


@dataclass(frozen=True)
class _Change:
    """What changed for one record, by kind of row: "opportunity", "solutions" (its newest
    solution row), "account", "contact" (the rows it uses), or "lead"."""

    rows: dict[str, Seen]

    @property
    def at(self) -> datetime:
        return max(seen.at for seen in self.rows.values())

    @property
    def mark(self) -> str:
        """The change as the cursor remembers it: a new version of any row is a new mark."""
        versions = [
            f"{kind}={seen.version if seen.version is not None else cursor_run.iso(seen.at)}"
            for kind, seen in sorted(self.rows.items())
        ]
        return "|".join([cursor_run.iso(self.at), *versions])


def _next_watermark(watermark: datetime, *reads: _Changes) -> datetime:
    """The newest ``modifiedon`` read, or where a capped query stopped (it resumes there)."""
    capped = [r.last for r in reads if r.capped and r.last is not None]
    if capped:
        return max(watermark, min(capped))
    newest = [r.last for r in reads if r.last is not None]
    return max([watermark, *newest])
