"""Remote calls counted where they happen: a request hook on each SaaS client's httpx client.

A sync runs its reads and writes inside ``counting()``; every request that its Partner Center
and Dataverse clients send adds one to that sync's counter. The counter lives in a context
variable, so concurrent syncs sharing one client count apart (tasks copy the context, and the
counter object they share is the one the sync created). Retries happen below the hook, in the
transport, so one logical call counts once, as SPEC 11's "remote calls" means.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import httpx


@dataclass
class CallCounter:
    """Requests sent to the SaaS APIs while it was the current counter, and the request id of
    the last Partner Center answer (for support: the history row keeps it)."""

    calls: int = 0
    request_id: str | None = None


_current: ContextVar[CallCounter | None] = ContextVar("cosell_call_counter", default=None)


@contextmanager
def counting() -> Iterator[CallCounter]:
    """Count the remote calls made inside the block (and in tasks it starts)."""
    counter = CallCounter()
    token = _current.set(counter)
    try:
        yield counter
    finally:
        _current.reset(token)


async def count_request(request: httpx.Request) -> None:
    """httpx ``request`` event hook: one more call for the running sync, if one is counting."""
    counter = _current.get()
    if counter is not None:
        counter.calls += 1


def note_request_id(request_id: str | None) -> None:
    """Remember Partner Center's request id of the answer just received, for the running sync."""
    counter = _current.get()
    if counter is not None and request_id:
        counter.request_id = request_id


def current_calls() -> int:
    """The running sync's count so far (0 outside ``counting``): a stage's calls by difference."""
    counter = _current.get()
    return counter.calls if counter is not None else 0
