"""What the dashboard page shows, gathered with bounded reads (issue 18).

A page load costs, against storage only (never Partner Center or Dataverse, but for the token
checks health makes, which cached tokens answer at once):

* the health report (``shared.health``): both queues' depths, the cursors, the stored drift
  summary, the oldest poison message;
* the stored drift listing: one point read. Finding drift reads every referral and flagged
  opportunity, so a page load never does: the list is the last scan's (the reconcile timer's
  every 10 minutes at most, ``cosell drift``, or the page's **Scan now** button), with its age;
* the poison queue: one peek of the first 32 messages and, per job, the failure recorded at its
  last attempt (a few point reads each: ``shared.poison.recorded``);
* the history of the last ``HOURS`` hours: one query across partitions for the timing columns
  of at most ``MAX_TIMED`` rows (the chart), then one for the full rows of the newest
  ``RECENT`` syncs. Table Storage scans the table for a filter across partitions, so both run
  within ``BUDGET_S``; what was read by then is shown, and the page says it is partial.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from azure.core.exceptions import AzureError, ResourceNotFoundError

from shared import drift, poison
from shared.errors import CosellError
from shared.health import HealthReport, check_health
from shared.runtime import Runtime
from shared.state import HistoryEntry

log = logging.getLogger(__name__)

HOURS = 24  # the chart's span
RECENT = 30  # syncs listed
MAX_TIMED = 20_000  # history rows read for the chart
BUDGET_S = 10.0  # for the history queries together
TIMED_COLUMNS = ["At", "Outcome", "DurationMs"]
# Outcomes whose duration is a sync's latency (a failed attempt's is how long it took to fail).
TIMED_OUTCOMES = frozenset({"synced", "created", "no_change"})


@dataclass(frozen=True)
class HourLatency:
    hour: datetime  # the hour's start, UTC
    count: int
    p50_ms: int | None
    p95_ms: int | None


@dataclass(frozen=True)
class PoisonRow:
    message: poison.PoisonMessage
    reason: str
    failed_at: datetime | None
    link_error: str | None


@dataclass
class DashboardData:
    now: datetime
    health: HealthReport
    listing: drift.DriftListing | None = None
    poison: list[PoisonRow] = field(default_factory=list)
    poison_depth: int = 0
    recent: list[HistoryEntry] = field(default_factory=list)
    latency: list[HourLatency] = field(default_factory=list)
    history_rows: int = 0  # history rows read for the chart
    history_partial: bool = False  # the cap or the time budget cut the history short
    problems: list[str] = field(default_factory=list)  # what could not be read


async def gather(runtime: Runtime, *, now: datetime | None = None) -> DashboardData:
    """Everything the page shows; never raises for storage that does not answer (the page then
    says what it could not read)."""
    moment = now or datetime.now(UTC)
    health = await check_health(runtime, now=moment)
    data = DashboardData(now=moment, health=health)
    try:
        await runtime.ensure_storage()
        data.listing = await drift.load_listing(runtime.cursors())
    except (AzureError, CosellError, ValueError) as exc:
        data.problems.append(f"the drift list could not be read: {type(exc).__name__}")
    await _poison(runtime, data)
    await _history(runtime, data)
    return data


async def _poison(runtime: Runtime, data: DashboardData) -> None:
    try:
        messages, data.poison_depth = await poison.peek(runtime.poison_queue)
        jobs = [m.job for m in messages if m.job is not None]
        found = await poison.recorded(runtime.links(), runtime.history(), jobs)
    except AzureError as exc:
        data.problems.append(f"the poison queue could not be read: {type(exc).__name__}")
        return
    for message in messages:
        recorded = found.get(str(message.job.id)) if message.job else None
        data.poison.append(
            PoisonRow(
                message=message,
                reason=poison.reason_of(message, recorded),
                failed_at=recorded.failure.at if recorded and recorded.failure else None,
                link_error=recorded.link_error if recorded else None,
            )
        )


async def _history(runtime: Runtime, data: DashboardData) -> None:
    history = runtime.history()
    since = data.now - timedelta(hours=HOURS)
    timed: list[HistoryEntry] = []
    try:
        async with asyncio.timeout(BUDGET_S):
            timed, data.history_partial = await history.list_recent(
                since=since, limit=MAX_TIMED, select=TIMED_COLUMNS
            )
            if timed:
                newest = sorted(timed, key=lambda e: e.at, reverse=True)[:RECENT]
                cutoff = newest[-1].at - timedelta(microseconds=1)
                full, _ = await history.list_recent(since=cutoff, limit=RECENT * 4)
                data.recent = sorted(full, key=lambda e: e.at, reverse=True)[:RECENT]
    except TimeoutError:
        data.history_partial = True
        data.problems.append(f"the history was read for {BUDGET_S:g} s only")
    except ResourceNotFoundError:
        pass  # no history table yet: nothing has synced
    except AzureError as exc:
        data.problems.append(f"the history could not be read: {type(exc).__name__}")
    data.history_rows = len(timed)
    data.latency = hourly_latency(timed, now=data.now, hours=HOURS)


def hourly_latency(
    entries: list[HistoryEntry], *, now: datetime, hours: int = HOURS
) -> list[HourLatency]:
    """p50 and p95 of the syncs' durations per UTC hour, the last ``hours`` hours (the current
    one included), oldest first; an hour without syncs has no percentiles."""
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    starts = [current - timedelta(hours=h) for h in range(hours - 1, -1, -1)]
    buckets: dict[datetime, list[int]] = {start: [] for start in starts}
    for entry in entries:
        if entry.outcome not in TIMED_OUTCOMES:
            continue
        hour = entry.at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
        if hour in buckets:
            buckets[hour].append(max(0, int(entry.duration_ms)))
    return [
        HourLatency(
            hour=start,
            count=len(values),
            p50_ms=percentile(values, 50),
            p95_ms=percentile(values, 95),
        )
        for start, values in buckets.items()
    ]


def percentile(values: list[int], p: float) -> int | None:
    """The nearest-rank percentile (a value that occurred), None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))  # ceil(n * p / 100)
    return ordered[int(rank) - 1]
