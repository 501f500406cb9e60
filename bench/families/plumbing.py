"""What the families share to drive the run: the harness's retry and edit record, jobs sent at
once, and waiting for what the product does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from shared.errors import CosellError
from shared.jobs import JobQueue, SyncJob

# ``chaos._with_retries``: runs an action again on faults that outlasted the client's retries.
Retried = Callable[[Callable[[], Awaitable[Any]]], Awaitable[Any]]

# ``chaos._edit``'s record of an edit the families make themselves: pair number, side, field,
# value (the run's traces show it, and its field-by-field check expects it).
Edited = Callable[[int, str, str, Any], None]


async def send_all(queue: JobQueue, jobs: list[SyncJob], retried: Retried) -> None:
    # The host creates sync-jobs on its first start; a fresh stack may not have it yet.
    await queue.create_queue()

    def sender(one: SyncJob) -> Callable[[], Awaitable[None]]:
        return lambda: queue.enqueue(one)

    await asyncio.gather(*(retried(sender(j)) for j in jobs))


async def wait_for(probe: Callable[[], Awaitable[Any]], within_s: float) -> Any:
    """``probe()``'s first truthy answer, tried every half second (faults: tried again)."""
    deadline = time.monotonic() + within_s
    while True:
        try:
            found = await probe()
        except (CosellError, httpx.HTTPError):
            found = None
        if found or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.5)
