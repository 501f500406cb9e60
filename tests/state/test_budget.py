"""``shared.state.budget.TableBudget``: one Dataverse budget for several app instances, on real
Azurite tables (issue 20). Windows are scaled down (seconds, not minutes) so a test lasts a few
seconds; the rule checked is the same: in no sliding window do the instances together send more
than the budget, and none stalls when storage is gone."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from azure.data.tables.aio import TableClient

from shared.dataverse import AdaptiveThrottle
from shared.state.budget import TableBudget

WINDOW_S = 2.0
BUDGET = 60  # requests per window, for all instances together


@pytest.fixture
async def table(storage_connection_string: str, unique_name: str) -> AsyncIterator[TableClient]:
    client = TableClient.from_connection_string(storage_connection_string, table_name=unique_name)
    await client.create_table()
    async with client:
        yield client


def _budget(table: TableClient, name: str, **options: Any) -> TableBudget:
    settings: dict[str, Any] = {
        "requests_per_window": BUDGET,
        "window_s": WINDOW_S,
        "buckets": 8,
        "headroom": 1.0,
        "grant": 5,
        **options,
    }
    return TableBudget(table, scope="contoso.crm.dynamics.com", instance_id=name, **settings)


async def _send_for(budget: TableBudget, seconds: float, sent: list[float]) -> None:
    """One instance sending as fast as its budget lets it."""
    end = time.time() + seconds
    while time.time() < end:
        await budget.take()
        sent.append(time.time())


def _busiest_window(sent: list[float]) -> int:
    sent = sorted(sent)
    start, most = 0, 0
    for end, at in enumerate(sent):
        while sent[start] <= at - WINDOW_S:
            start += 1
        most = max(most, end - start + 1)
    return most


async def test_three_instances_together_stay_within_one_window_budget(table: TableClient) -> None:
    instances = [_budget(table, f"instance-{i}") for i in range(3)]
    sent: list[float] = []

    await asyncio.gather(*(_send_for(b, 3 * WINDOW_S, sent) for b in instances))

    assert _busiest_window(sent) <= BUDGET
    # It is a budget, not a stop: the three made real progress together.
    assert len(sent) >= BUDGET
    assert all(b.granted > 0 for b in instances)


async def test_each_instance_gets_its_share_of_the_concurrency_cap(table: TableClient) -> None:
    # heartbeat_s=0: every take beats, so the count is current without waiting
    first, second = _budget(table, "a", heartbeat_s=0), _budget(table, "b", heartbeat_s=0)
    await first.take()
    await second.take()
    await first.take()
    assert first.live_instances == 2 and first.concurrency == 26

    third = _budget(table, "c")
    await third.take()
    assert third.live_instances == 3 and third.concurrency == 52 // 3


async def test_the_throttle_caps_in_flight_at_the_instance_share(table: TableClient) -> None:
    budget = _budget(table, "only")
    budget.concurrent = 2
    throttle = AdaptiveThrottle(16, budget=budget, window_requests=None)

    tickets = [await throttle.acquire(), await throttle.acquire()]
    third = asyncio.ensure_future(throttle.acquire())
    await asyncio.sleep(0.2)

    assert not third.done()  # 2 in flight: this instance's share
    throttle.release(tickets[0], 200)
    assert await asyncio.wait_for(third, 2) is not None


async def test_without_storage_an_instance_keeps_to_its_fair_share_and_never_stalls() -> None:
    unreachable = TableClient.from_connection_string(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey="
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UFEa6qnA0ezyBZCY86QhXdXhVJgQmzWlfYQ==;"
        "TableEndpoint=http://127.0.0.1:9/devstoreaccount1",  # the discard port: nothing answers
        table_name="budget",
    )
    async with unreachable:
        budget = _budget(unreachable, "alone", storage_timeout_s=0.5)
        started = time.monotonic()
        sent: list[float] = []
        await asyncio.wait_for(_send_for(budget, WINDOW_S, sent), 10)

    assert time.monotonic() - started < 5
    assert sent, "it kept sending on its fair share"
    assert budget.storage_failures > 0 and budget.fallback_grants > 0
    # its share per bucket: the rate that keeps any window within the budget
    assert _busiest_window(sent) <= BUDGET


async def test_storage_calls_per_dataverse_request_stay_small(table: TableClient) -> None:
    # Dataverse's own window (6,000 per 5 minutes, 10 s buckets): the cost the app pays.
    budget = TableBudget(table, scope="contoso.crm.dynamics.com", instance_id="measured")
    requests = 100
    for _ in range(requests):
        await budget.take()

    # a read and a write per grant of 25, plus the first heartbeat's two calls
    assert budget.storage_calls == 2 * (requests // 25) + 2
    assert budget.storage_calls / requests <= 0.1


async def test_a_batch_s_extra_operations_are_paid_from_the_next_grants(table: TableClient) -> None:
    """A ``$batch`` is admitted as one request and its other operations are debited after
    (reference 5: each counts); the ledger must end up holding all of them."""
    budget = _budget(table, "batcher", buckets=1, window_s=60.0)  # one long bucket
    await budget.take()  # a grant of 5, one spent
    budget.debit(10)  # the batch's ten other operations

    await budget.take()

    assert budget.granted >= 1 + 10 + 1  # nothing owed was forgiven
