"""The host's clock: wall time for timer schedules, monotonic time and sleeping.

Timers (schedules, past-due, the singleton lease) and queue listeners (idle polling, lease
renewal) read time and sleep only through a ``Clock``. ``SystemClock`` is the real one (the
default); ``VirtualClock`` stands still until a test moves it with ``advance()``, so a test of a
timer that fires every second runs in milliseconds. Message visibility itself is Azurite's and
stays in real time.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current UTC wall time (timezone-aware)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for durations)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` on this clock."""
        ...


class SystemClock:
    """The real clock: ``datetime.now(UTC)``, ``time.monotonic()``, ``asyncio.sleep``."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(seconds, 0.0))


class VirtualClock:
    """A clock that moves only when ``advance()`` is awaited (tests).

    Sleepers wake in deadline order; after each wake-up the event loop gets ``settle_rounds``
    turns, so what the woken task does (fire a timer, call an async function, sleep again) has
    happened before time moves on. Time is kept in whole microseconds, so a sleep until a
    schedule's due time ends exactly on it.
    """

    def __init__(self, start: datetime | None = None, *, settle_rounds: int = 100) -> None:
        self._start = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._us = 0
        self._sleepers: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self.settle_rounds = settle_rounds

    def now(self) -> datetime:
        return self._start + timedelta(microseconds=self._us)

    def monotonic(self) -> float:
        return self._us / 1_000_000

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        deadline = self._us + math.ceil(seconds * 1_000_000)
        heapq.heappush(self._sleepers, (deadline, next(self._order), future))
        await future

    async def advance(self, seconds: float) -> None:
        """Move time forward by ``seconds``, waking each sleeper at its deadline."""
        target = self._us + math.ceil(seconds * 1_000_000)
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            self._us = max(self._us, deadline)
            if not future.done():
                future.set_result(None)
                await self.settle()
        self._us = target
        await self.settle()

    async def settle(self) -> None:
        """Give the event loop a few turns (what became ready runs)."""
        for _ in range(self.settle_rounds):
            await asyncio.sleep(0)


SYSTEM_CLOCK = SystemClock()


async def wait_or_stop(stop: asyncio.Event, seconds: float, clock: Clock) -> bool:
    """Sleep up to ``seconds`` on ``clock``; True (at once) if ``stop`` is or gets set."""
    if stop.is_set():
        return True
    sleeper = asyncio.ensure_future(clock.sleep(max(seconds, 0.0)))
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sleeper, stopper):
            task.cancel()
        await asyncio.gather(sleeper, stopper, return_exceptions=True)
    return stop.is_set()
