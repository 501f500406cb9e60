"""Several host instances on one storage (issue 20), as Azure runs an app scaled out.

``SandboxStack(hosts=2)`` on the tiny app of sample_app.py: two ``python -m sandbox.host``
processes behind the round-robin front door. What each instance ran is read from its
``/admin/host/status``; the singleton lease is also tested on its own, on a virtual clock.
"""

from __future__ import annotations

import asyncio
import base64
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import httpx
import pytest
from azure.storage.queue.aio import QueueClient

from sandbox.host import TableLease, VirtualClock
from sandbox.host.singleton import lock_table
from sandbox.stack import SandboxStack

MODULE = "tests.sandbox.sample_app"
LEASE_S = 3.0  # the timers' singleton lease: short, so a takeover is quick


async def invocations(stack: SandboxStack, function: str) -> dict[str, int]:
    """Completed invocations of ``function`` per live instance."""
    counts = {}
    for process in stack.processes:
        if process.alive:
            status = await process.status()
            counts[process.name] = int(status["invocations"].get(function, 0))
    return counts


async def eventually(check: Callable[[], Awaitable[bool]], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.2)


async def send(queue: QueueClient, bodies: list[str]) -> None:
    await asyncio.gather(
        *(queue.send_message(base64.b64encode(body.encode()).decode()) for body in bodies)
    )


@pytest.fixture
async def stack(storage_connection_string: str, unique_name: str) -> AsyncIterator[SandboxStack]:
    settings = {
        "TEST_STORAGE": storage_connection_string,
        "TEST_QUEUE": unique_name,
        "TEST_OUT_QUEUE": f"{unique_name}out",
        "TEST_SCHEDULE": "* * * * * *",
    }
    async with SandboxStack(
        module=MODULE,
        hosts=2,
        storage_connection_string=storage_connection_string,
        settings=settings,
        max_polling_interval=0.2,
        host_options={"singleton_lease_s": LEASE_S, "shutdown_timeout": 5},
    ) as running:
        yield running


@pytest.fixture
async def queue(storage_connection_string: str, unique_name: str) -> AsyncIterator[QueueClient]:
    async with QueueClient.from_connection_string(storage_connection_string, unique_name) as client:
        await client.create_queue()
        yield client


async def test_two_instances_share_the_queue_and_the_timer_and_survive_a_crash(
    stack: SandboxStack, queue: QueueClient
) -> None:
    assert stack.host is None and len(stack.processes) == 2
    assert len(set(stack.host_urls)) == 2 and stack.host_url not in stack.host_urls

    # Queue messages: each processed exactly once, by one instance or the other.
    bodies = [f"slow-{n}-{uuid.uuid4()}" for n in range(16)]
    await send(queue, bodies)

    async def all_done() -> bool:
        return sum((await invocations(stack, "work")).values()) >= len(bodies)

    await eventually(all_done, within_s=30)
    await asyncio.sleep(1.0)  # nothing more comes (a message run twice would show here)
    per_host = await invocations(stack, "work")
    assert sum(per_host.values()) == len(bodies)
    assert all(count > 0 for count in per_host.values()), per_host  # both took some
    assert (await queue.get_queue_properties()).approximate_message_count == 0

    # The every-second timer: on one instance only, once a second.
    before = await invocations(stack, "tick")
    started = time.monotonic()
    await asyncio.sleep(3.0)
    after = await invocations(stack, "tick")
    elapsed = time.monotonic() - started
    fired = {name: after[name] - before[name] for name in after}
    assert sorted(fired.values())[0] == 0, fired  # the other instance never fired it
    assert 2 <= sum(fired.values()) <= elapsed + 1.5, fired
    holders = [p for p in stack.processes if (await p.status())["timers"]["tick"]]
    assert len(holders) == 1 and after[holders[0].name] > 0

    # The front door takes turns: HTTP requests reach both instances.
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(4):
            answer = await client.get(f"{stack.host_url}/api/items/1", params={"code": "sandbox"})
            assert answer.status_code == 200
    assert stack.front_door is not None
    assert all(count >= 2 for count in stack.front_door.forwarded.values())

    # Kill the timer's instance (SIGKILL, as a crash): the other carries on with both.
    survivor = next(p for p in stack.processes if p is not holders[0])
    holders[0].kill()
    ticks_before = (await invocations(stack, "tick"))[survivor.name]

    async def took_the_timer_over() -> bool:
        return (await invocations(stack, "tick"))[survivor.name] > ticks_before

    await eventually(took_the_timer_over, within_s=LEASE_S * 2 + 3)
    more = [f"ok-{n}-{uuid.uuid4()}" for n in range(4)]
    await send(queue, more)
    work_before = per_host[survivor.name]

    async def survivor_did_them() -> bool:
        return (await invocations(stack, "work"))[survivor.name] >= work_before + len(more)

    await eventually(survivor_did_them, within_s=15)
    # The front door skips the dead instance: every request still answers.
    async with httpx.AsyncClient(timeout=10) as client:
        for _ in range(4):
            answer = await client.get(f"{stack.host_url}/api/items/1", params={"code": "sandbox"})
            assert answer.status_code == 200


async def test_the_singleton_lease_has_one_holder_and_moves_when_it_expires_or_is_released(
    storage_connection_string: str, unique_name: str
) -> None:
    clock = VirtualClock(datetime(2026, 1, 1, tzinfo=UTC))
    table = await lock_table(storage_connection_string)
    async with table:
        first, second = (
            TableLease(table, unique_name, "tick.Listener", owner, period_s=15, clock=clock)
            for owner in ("host-1", "host-2")
        )
        assert await asyncio.gather(first.acquire(), second.acquire()) in (
            [True, False],
            [False, True],
        )
        holder, other = (first, second) if first.held else (second, first)
        await clock.advance(10)
        assert await holder.acquire()  # renewed: 15 s from now
        await clock.advance(10)
        assert not await other.acquire()
        await clock.advance(6)  # not renewed for 16 s: expired
        assert await other.acquire()
        assert not await holder.acquire()
        await other.release()
        assert await holder.acquire()  # released: free at once
