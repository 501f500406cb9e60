"""What both timer functions share: reading their cursor, bounded concurrent lookups, and saving
the cursor only if no other run moved it meanwhile (SPEC 5, reference: platform §5).

A cursor's ``state`` remembers the records a run enqueued close to the new watermark, with the
version it saw (``modifiedon`` or eTag). The next run re-reads an overlap window before the
watermark (clock skew, equal timestamps, late commits) and skips those it already enqueued.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from shared.errors import ConcurrencyError
from shared.state import Cursor, CursorStore

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# The state lives in one Table property (≤ 64 KiB, 32K characters, SPEC 5): about 300 entries
# of id + version. Dropping older entries only costs a repeated (harmless) job.
MAX_REMEMBERED = 300
LOOKUP_CONCURRENCY = 16


def start_of(cursor: Cursor | None, *, now: datetime, first_run_window: timedelta) -> datetime:
    """The watermark to read from: the cursor's, or ``first_run_window`` before ``now``."""
    return cursor.watermark if cursor is not None else now - first_run_window


def remembered(cursor: Cursor | None) -> dict[str, str]:
    """The ``{id: version}`` the previous run enqueued near its watermark."""
    seen = cursor.state.get("seen") if cursor is not None else None
    if not isinstance(seen, dict):
        return {}
    return {str(k): str(v) for k, v in seen.items()}


def to_remember(versions: dict[str, tuple[datetime, str]], *, since: datetime) -> dict[str, str]:
    """The entries (id → (changed at, version)) changed at or after ``since``, newest kept."""
    recent = sorted(
        ((at, key, version) for key, (at, version) in versions.items() if at >= since),
        reverse=True,
    )[:MAX_REMEMBERED]
    return {key: version for _, key, version in recent}


async def save(
    store: CursorStore,
    name: str,
    previous: Cursor | None,
    *,
    watermark: datetime,
    seen: dict[str, str],
    extra: dict[str, Any] | None = None,
) -> Cursor | None:
    """Save the cursor conditionally on the ETag read; the saved cursor, or None (and nothing
    else) on a lost race.

    The loser's jobs are already queued; the winner's cursor stands, and the engine makes any
    job enqueued twice harmless (SPEC 7). ``extra`` is more state beside ``seen``.
    """
    state: dict[str, Any] = {"seen": seen} if seen else {}
    state.update(extra or {})
    cursor = Cursor(
        name=name,
        watermark=watermark,
        state=state,
        etag=previous.etag if previous is not None else None,
    )
    try:
        return await store.save_cursor(cursor)
    except ConcurrencyError:
        logger.info("cursor %s was moved by another run; leaving it", name)
        return None


async def gather_bounded(
    items: Iterable[T], call: Callable[[T], Awaitable[R]], *, limit: int = LOOKUP_CONCURRENCY
) -> list[R]:
    """``call`` for every item, at most ``limit`` at a time, results in order."""
    gate = asyncio.Semaphore(limit)

    async def one(item: T) -> R:
        async with gate:
            return await call(item)

    return list(await asyncio.gather(*(one(item) for item in items)))


async def close_pager(pager: AsyncIterator[Any]) -> None:
    """Close a client's paging generator left early, so it does not linger until GC."""
    close = getattr(pager, "aclose", None)
    if close is not None:
        await close()


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """A stable text form of a moment (the versions compared across runs)."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
