"""Retries for calls to the SaaS APIs (SPEC section 7), as an httpx transport.

Both clients wrap whatever transport they are given (the real network, or an emulator's ASGI
app in tests) in ``RetryTransport``, so the rule lives in one place:

* 429 and 503 honour ``Retry-After`` (seconds or an HTTP date), capped by ``max_delay``;
* other 5xx, 408 and transport timeouts/connection errors retry with jittered exponential backoff,
  but only for idempotent methods: a POST that timed out may have been carried out, and sending
  it again could create a second record, so the caller (which can look for the first) decides;
  a kept-alive connection the server closed without answering ("Server disconnected without
  sending a response", ``httpx.RemoteProtocolError``) is such a connection error too;
* every other status (including 409/412, which the caller settles) is returned at once;
* a request is tried at most ``attempts`` times; the last response (or error) is what the caller
  sees, so typed errors are raised by the client from the final answer.

Each retry is a ``retry`` event (attempt, status or error type, delay) on the call's dependency
span (``shared.telemetry.traced_transport`` wraps this transport), so a trace shows the 503s
and 429s a call waited out.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from shared.telemetry import EVENT_RETRY, add_event

RETRY_AFTER_STATUSES = frozenset({429, 503})
BACKOFF_STATUSES = frozenset({408, 500, 502, 504})
# PATCH with If-Match and PUT are safe to repeat; POST is not (it may create twice).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry; keyword-only knobs with production defaults."""

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.5  # each backoff delay is scaled by a factor in [1 - jitter, 1]
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep, repr=False)

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt`` (1-based) after a 5xx or a timeout."""
        delay: float = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return delay * (1 - self.jitter * random.random())  # noqa: S311 - jitter, not crypto


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class RetryTransport(httpx.AsyncBaseTransport):
    """Wraps another async transport and retries transient failures per ``RetryPolicy``."""

    def __init__(self, inner: httpx.AsyncBaseTransport, policy: RetryPolicy | None = None) -> None:
        self._inner = inner
        self._policy = policy or RetryPolicy()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        policy = self._policy
        idempotent = request.method in IDEMPOTENT_METHODS
        for attempt in range(1, policy.attempts + 1):
            last = attempt == policy.attempts
            try:
                response = await self._inner.handle_async_request(request)
            except httpx.ConnectError as exc:
                if last:  # nothing reached the server: safe to retry any method
                    raise
                await self._wait(policy.backoff(attempt), attempt, error=type(exc).__name__)
                continue
            # RemoteProtocolError is not a NetworkError in httpx, but a dropped keep-alive is
            # one in effect; the request may have arrived, hence idempotent methods only.
            except (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError) as exc:
                if last or not idempotent:
                    raise
                await self._wait(policy.backoff(attempt), attempt, error=type(exc).__name__)
                continue
            delay = self._delay_for(response, attempt, idempotent=idempotent)
            if delay is None or last:
                return response
            await response.aclose()
            await self._wait(
                delay,
                attempt,
                status=response.status_code,
                retry_after=response.headers.get("Retry-After"),
            )
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _wait(
        self,
        delay: float,
        attempt: int,
        *,
        status: int | None = None,
        error: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        add_event(
            EVENT_RETRY,
            attempt=attempt,
            status=status,
            error=error,
            delay_s=round(delay, 3),
            retry_after_s=parse_retry_after(retry_after),
        )
        await self._policy.sleep(delay)

    def _delay_for(
        self, response: httpx.Response, attempt: int, *, idempotent: bool
    ) -> float | None:
        status = response.status_code
        if status in RETRY_AFTER_STATUSES:
            after = parse_retry_after(response.headers.get("Retry-After"))
            wait = self._policy.backoff(attempt) if after is None else after
            return min(wait, self._policy.max_delay)
        if status in BACKOFF_STATUSES and idempotent:
            return self._policy.backoff(attempt)
        return None

    async def aclose(self) -> None:
        await self._inner.aclose()
