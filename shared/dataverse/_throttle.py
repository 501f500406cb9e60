"""Adaptive throttling toward Dataverse's service protection limits (reference section 6).

* Never more than ``limit`` requests in flight; ``limit`` starts at ``max_in_flight`` (keep it
  well under the 52 concurrent requests Dataverse allows per user).
* A 429 halves ``limit`` (once per burst: only a request sent after the last cut can cut again)
  and pauses every new request until its ``Retry-After`` has passed.
* Each run of ``limit`` successes without a 429 raises ``limit`` by one, back to the maximum.
* Optionally, a client-side budget of ``window_requests`` per ``window_s`` (a sliding window like
  Dataverse's) keeps a burst from ever reaching the request limit.
* Optionally, a ``RequestBudget`` shared by every instance of the app (``shared.state.budget``)
  admits each request and caps the concurrency at this instance's share, so N instances together
  stay under the one application user's limits.

The throttle never retries: ``ThrottledTransport`` sits *inside* ``shared.retry.RetryTransport``
so it counts every attempt that reaches Dataverse and sees every 429, while the retry rule stays
in one place. Each 429 is a ``throttled`` event (Retry-After, the new limit) on the call's span.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

import httpx

from shared.retry import parse_retry_after
from shared.telemetry import EVENT_THROTTLED, add_event


class RequestBudget(Protocol):
    """A request budget shared with other instances (``shared.state.budget.TableBudget``)."""

    @property
    def concurrency(self) -> int:
        """This instance's share of the concurrent-request cap."""

    async def take(self) -> None:
        """Wait until one more request fits the shared window."""

    def debit(self, requests: int) -> None:
        """Count requests already sent beyond those taken (a ``$batch``'s operations)."""


class AdaptiveThrottle:
    """A concurrency limit that shrinks while 429s arrive and grows back after."""

    def __init__(
        self,
        max_in_flight: int = 16,
        *,
        min_in_flight: int = 1,
        window_requests: int | None = None,
        window_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        budget: RequestBudget | None = None,
    ) -> None:
        if not 1 <= min_in_flight <= max_in_flight:
            raise ValueError("expected 1 <= min_in_flight <= max_in_flight")
        if window_requests is not None and (window_requests < 1 or window_s <= 0):
            raise ValueError("expected window_requests >= 1 and window_s > 0")
        self.window_requests = window_requests
        self.window_s = window_s
        self._sent: deque[float] = deque()  # start times inside the budget window
        self.max_in_flight = max_in_flight
        self.min_in_flight = min_in_flight
        self.limit = max_in_flight
        self.in_flight = 0
        self.peak_in_flight = 0
        self.throttled = 0  # 429s seen
        self._clock = clock
        self._sleep = sleep
        self._resume_at = 0.0
        self._successes = 0
        self._generation = 0  # bumped on every cut, so one burst of 429s cuts once
        self._waiters: deque[asyncio.Future[None]] = deque()
        self.budget = budget

    @property
    def _cap(self) -> int:
        """The in-flight limit now: the adaptive one, within this instance's shared share."""
        if self.budget is None:
            return self.limit
        return max(1, min(self.limit, self.budget.concurrency))

    async def acquire(self) -> int:
        """Wait for a slot (and for any Retry-After pause); returns a ticket for ``release``."""
        if self.budget is not None:
            await self.budget.take()  # the shared window first: it may wait for a bucket
        while True:
            pause = max(self._resume_at, self._budget_free_at()) - self._clock()
            if pause > 0:
                await self._sleep(pause)
                continue
            if self.in_flight < self._cap:
                if self.window_requests is not None:
                    self._sent.append(self._clock())
                self.in_flight += 1
                self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                return self._generation
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # pass on the slot this task was woken for
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def charge(self, requests: int) -> None:
        """Count ``requests`` more against the window budget: the operations of a ``$batch``
        beyond the one request it was admitted as (each counts, reference 5)."""
        if self.window_requests is not None:
            self._sent.extend([self._clock()] * max(0, requests))
        if self.budget is not None:
            self.budget.debit(requests)

    def _budget_free_at(self) -> float:
        """When the next request fits the client-side window budget (0 = now)."""
        if self.window_requests is None:
            return 0.0
        horizon = self._clock() - self.window_s
        while self._sent and self._sent[0] <= horizon:
            self._sent.popleft()
        if len(self._sent) < self.window_requests:
            return 0.0
        return self._sent[0] + self.window_s

    def release(self, ticket: int, status: int | None, retry_after: float | None = None) -> None:
        """Free the slot and learn from the answer (``status`` None: no answer arrived)."""
        self.in_flight -= 1
        if status == 429:
            self.throttled += 1
            self._successes = 0
            if ticket == self._generation:
                self._generation += 1
                self.limit = max(self.min_in_flight, self.limit // 2)
            if retry_after:
                self._resume_at = max(self._resume_at, self._clock() + retry_after)
        elif status is not None and status < 500:
            self._successes += 1
            if self._successes >= self.limit and self.limit < self.max_in_flight:
                self._successes = 0
                self.limit += 1
        self._wake()

    def _wake(self) -> None:
        free = self._cap - self.in_flight
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1


class ThrottledTransport(httpx.AsyncBaseTransport):
    """Passes each request through ``AdaptiveThrottle`` on its way to ``inner``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, throttle: AdaptiveThrottle) -> None:
        self._inner = inner
        self.throttle = throttle

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        ticket = await self.throttle.acquire()
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException:
            self.throttle.release(ticket, None)
            raise
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        self.throttle.release(ticket, response.status_code, retry_after)
        if response.status_code == 429:
            # On the call's dependency span (shared.telemetry): how long and how far it slowed.
            add_event(
                EVENT_THROTTLED,
                status=429,
                retry_after_s=retry_after,
                limit=self.throttle.limit,
                throttled=self.throttle.throttled,
            )
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
