"""Adaptive throttling against the emulator's service protection (reference section 6).

The issue's case — limits of 100 requests per 10 s and 2,000 queued operations — runs as written,
in virtual time: the emulator's window clock and the client's sleeps (retry policy and throttle)
share one ``VirtualTime`` that advances only when something sleeps, so twenty 10-second windows
pass in well under a second of real time. Emulated latency is real (1 ms) so requests overlap.
"""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from starlette.applications import Starlette

from sandbox.dataverse import Faults, Limits, create_app, emulator_of
from shared.dataverse import (
    AdaptiveThrottle,
    AlreadyExists,
    Create,
    DataverseClient,
    ServiceError,
    Throttled,
)
from shared.retry import RetryPolicy

from .conftest import TOKEN, URL, VirtualTime, no_wait

CAP = 8


def _client(app: object, time: VirtualTime, throttle: AdaptiveThrottle) -> DataverseClient:
    return DataverseClient(
        URL,
        token=TOKEN,
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        retry_policy=RetryPolicy(sleep=time.sleep),
        throttle=throttle,
    )


async def test_two_thousand_operations_under_100_requests_per_10s_all_succeed_within_the_cap() -> (
    None
):
    time = VirtualTime()
    app = create_app(token=TOKEN, limits=Limits(requests=100, window_s=10), clock=time.clock)
    emulator = emulator_of(app)
    emulator.faults.latency_ms = 1
    throttle = AdaptiveThrottle(CAP, clock=time.clock, sleep=time.sleep)
    ids = [uuid.uuid4() for _ in range(2_000)]

    async with _client(app, time, throttle) as client:
        results = await asyncio.gather(
            *(
                client.create("accounts", {"name": f"Contoso {n}"}, row_id=row_id)
                for n, row_id in enumerate(ids)
            ),
            return_exceptions=True,
        )

    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert set(emulator.store.tables["accounts"]) == {str(i) for i in ids}
    stats = emulator.stats()
    assert stats["throttled"] > 0  # the window really was exhausted, again and again
    assert 1 < stats["peak_concurrent"] <= CAP
    assert throttle.peak_in_flight <= CAP
    assert time.now >= 10 * (2_000 // 100 - 1)  # it took the windows it had to take


async def test_the_in_flight_limit_drops_while_429s_arrive_and_recovers_after() -> None:
    time = VirtualTime()
    app = create_app(token=TOKEN, clock=time.clock)
    emulator = emulator_of(app)
    emulator.faults.latency_ms = 1
    throttle = AdaptiveThrottle(CAP, clock=time.clock, sleep=time.sleep)

    async with _client(app, time, throttle) as client:
        # Every answer is a 429 for a while: the limit is cut (once per burst, not per answer).
        emulator.faults = Faults(error_rate=1.0, statuses=[429], retry_after_s=2)
        results = await asyncio.gather(
            *(client.who_am_i() for _ in range(CAP * 2)), return_exceptions=True
        )
        assert all(isinstance(r, Throttled) for r in results)
        lowered = throttle.limit
        assert lowered < CAP

        # The service recovers: successes raise the limit step by step back to the maximum.
        emulator.faults = Faults(latency_ms=1)
        for _ in range(10):
            await asyncio.gather(*(client.who_am_i() for _ in range(CAP * 4)))

    assert throttle.limit == CAP
    assert emulator.stats()["peak_concurrent"] <= CAP


async def test_a_client_side_budget_matching_the_limits_avoids_429s_entirely() -> None:
    time = VirtualTime()
    app = create_app(token=TOKEN, limits=Limits(requests=100, window_s=10), clock=time.clock)
    emulator = emulator_of(app)
    emulator.faults.latency_ms = 1
    throttle = AdaptiveThrottle(
        CAP, window_requests=100, window_s=10, clock=time.clock, sleep=time.sleep
    )

    async with _client(app, time, throttle) as client:
        await asyncio.gather(*(client.create("accounts", {"name": "Contoso"}) for _ in range(500)))

    assert emulator.store.count("accounts") == 500
    assert emulator.stats()["throttled"] == 0
    assert time.now >= 40  # five windows' worth of requests needed four waits


async def test_every_operation_of_a_change_set_counts_against_the_budget() -> None:
    time = VirtualTime()
    app = create_app(token=TOKEN, limits=Limits(requests=100, window_s=10), clock=time.clock)
    emulator = emulator_of(app)
    throttle = AdaptiveThrottle(
        CAP, window_requests=100, window_s=10, clock=time.clock, sleep=time.sleep
    )
    pair = [Create("accounts", {"name": "Contoso"}), Create("accounts", {"name": "Fabrikam"})]

    async with _client(app, time, throttle) as client:
        for _ in range(150):  # 300 operations: three windows' worth
            await client.create_in_change_set(pair)

    assert emulator.store.count("accounts") == 300
    assert emulator.stats()["throttled"] == 0
    assert time.now >= 20


async def test_retry_after_pauses_every_request_not_just_the_refused_one() -> None:
    time = VirtualTime()
    app = create_app(token=TOKEN, limits=Limits(requests=5, window_s=60), clock=time.clock)
    throttle = AdaptiveThrottle(4, clock=time.clock, sleep=time.sleep)

    async with _client(app, time, throttle) as client:
        for _ in range(6):
            await client.who_am_i()

    stats = emulator_of(app).stats()
    assert stats["throttled"] == 1  # one 429; the pause then held the client back
    assert time.now >= 60


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_injected_faults_are_retried_to_zero_failures(app: Starlette, status: int) -> None:
    emulator = emulator_of(app)
    emulator.faults = Faults(error_rate=0.3, statuses=[status], retry_after_s=0)
    ids = [uuid.uuid4() for _ in range(100)]
    # 12 attempts: the chance that one of 100 operations meets 12 faults in a row is ~5e-5.
    async with DataverseClient(
        URL,
        token=TOKEN,
        transport=httpx.ASGITransport(app=app),
        retry_policy=RetryPolicy(attempts=12, sleep=no_wait),
    ) as client:
        # Upserts by a chosen id are idempotent, so shared.retry repeats them after a 5xx too.
        await asyncio.gather(
            *(client.upsert("contacts", row_id, {"lastname": "Example"}) for row_id in ids)
        )

    assert set(emulator.store.tables["contacts"]) == {str(i) for i in ids}
    assert emulator.stats()["faults_injected"] > 0


async def test_a_create_is_not_repeated_after_a_5xx_and_repeating_it_by_id_is_safe(
    app: Starlette, client: DataverseClient
) -> None:
    emulator = emulator_of(app)
    emulator.faults = Faults(error_rate=1.0, statuses=[500])
    row_id = uuid.uuid4()

    with pytest.raises(ServiceError):
        await client.create("contacts", {"lastname": "Example"}, row_id=row_id)
    assert emulator.stats()["faults_injected"] == 1  # shared.retry never repeats a POST on 5xx

    emulator.faults = Faults()
    await client.create("contacts", {"lastname": "Example"}, row_id=row_id)
    with pytest.raises(AlreadyExists):  # had the first one landed, the repeat would say so
        await client.create("contacts", {"lastname": "Example"}, row_id=row_id)
    assert emulator.store.count("contacts") == 1


async def test_fault_on_every_attempt_surfaces_as_a_typed_error(app: object) -> None:
    emulator = emulator_of(app)  # type: ignore[arg-type]
    emulator.faults.error_rate = 1.0
    emulator.faults.statuses = [429]
    emulator.faults.retry_after_s = 0
    async with DataverseClient(
        URL,
        token=TOKEN,
        transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
        retry_policy=RetryPolicy(attempts=3, sleep=no_wait),
    ) as client:
        with pytest.raises(Throttled) as throttled:
            await client.who_am_i()
        emulator.faults.statuses = [500]
        with pytest.raises(ServiceError):
            await client.who_am_i()
    assert throttled.value.code == "0x80072322"
    assert emulator.stats()["faults_injected"] == 6
