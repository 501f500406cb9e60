"""Service protection (reference section 6).

Limits are per emulator (one user): a sliding window of requests and a cap on concurrent
requests. Over either → 429 with ``Retry-After`` in whole seconds and the documented code. The
clock is injectable so tests can run a 10-second window in virtual time.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sandbox.dataverse.errors import CONCURRENCY_LIMIT, REQUESTS_LIMIT, DataverseFault


@dataclass
class Limits:
    """Dataverse's defaults: 6,000 requests per 300 s and 52 concurrent requests."""

    requests: int = 6000
    window_s: float = 300.0
    concurrent: int = 52


class ServiceProtection:
    """Counts requests in the window and in flight; refuses those over a limit."""

    def __init__(self, limits: Limits | None = None, *, clock: Callable[[], float]) -> None:
        self.limits = limits or Limits()
        self._clock = clock
        self._recent: deque[float] = deque()
        self.in_flight = 0
        self.peak_in_flight = 0
        self.throttled = 0

    def set(self, limits: Limits) -> None:
        self.limits = limits
        self._recent.clear()

    def reset_counters(self) -> None:
        self._recent.clear()
        self.peak_in_flight = self.in_flight
        self.throttled = 0

    def enter(self) -> None:
        """Admit a request or raise the 429 Dataverse would answer."""
        now = self._clock()
        limits = self.limits
        while self._recent and self._recent[0] <= now - limits.window_s:
            self._recent.popleft()
        if self.in_flight >= limits.concurrent:
            self.throttled += 1
            raise DataverseFault(
                429,
                CONCURRENCY_LIMIT,
                f"Number of concurrent requests exceeded the limit of {limits.concurrent}.",
                {"Retry-After": "1"},
            )
        if len(self._recent) >= limits.requests:
            self.throttled += 1
            wait = self._recent[0] + limits.window_s - now
            raise DataverseFault(
                429,
                REQUESTS_LIMIT,
                f"Number of requests exceeded the limit of {limits.requests} over time window of "
                f"{limits.window_s:g} seconds.",
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        # Refused requests are not counted, so a client that waits as told gets through.
        self._recent.append(now)
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def charge(self, count: int) -> None:
        """Count ``count`` more requests in the window without refusing anything: the inner
        operations of an admitted ``$batch`` beyond the one ``enter`` counted (reference 5 and
        6: batching does not avoid the limits). They make later requests wait; like Dataverse's
        request limit, this one may be overshot a little before it bites."""
        if count > 0:
            self._recent.extend([self._clock()] * count)

    def leave(self) -> None:
        self.in_flight -= 1


def monotonic() -> float:
    return time.monotonic()
