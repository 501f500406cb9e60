"""The local Functions host over real sockets and Azurite, with the tiny app in sample_app.py.

Each test starts its own host on a free port with its own queue names; what the functions saw
is read from ``sample_app.SEEN`` and what stayed in storage from the queues themselves. Timer
tests run the host on a ``VirtualClock`` and move it forward: no real second is waited for.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import sys
import time
import types
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path

import azure.functions as func
import httpx
import pytest
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue.aio import QueueClient

from sandbox.host import (
    FunctionHost,
    HostConfig,
    HostError,
    VirtualClock,
    compile_route,
    parse_timespan,
    route_precedence,
)
from tests.sandbox import sample_app
from tests.sandbox.sample_app import SEEN

ROOT = Path(__file__).resolve().parents[2]
MODULE = "tests.sandbox.sample_app"
MAX_DEQUEUE = 3  # fewer attempts than host.json's 5 keep the poison test short


@pytest.fixture
def queue_name(unique_name: str) -> str:
    return unique_name


@pytest.fixture
def environ(storage_connection_string: str, queue_name: str) -> dict[str, str]:
    return {
        "TEST_STORAGE": storage_connection_string,
        "TEST_QUEUE": queue_name,
        "TEST_OUT_QUEUE": f"{queue_name}out",
        "TEST_SCHEDULE": "* * * * * *",
    }


@pytest.fixture
async def host(environ: dict[str, str]) -> AsyncIterator[FunctionHost]:
    SEEN.reset()
    async with FunctionHost(
        MODULE,
        host_json=ROOT / "host.json",
        environ=environ,
        function_key="k3y",
        visibility_timeout=1.0,
        max_dequeue_count=MAX_DEQUEUE,
        max_polling_interval=0.2,
        shutdown_timeout=5,
    ) as running:
        yield running


@pytest.fixture
def clock() -> VirtualClock:
    # A quarter past a second mark: the first occurrence of "* * * * * *" is 0.75 s away.
    return VirtualClock(datetime(2026, 1, 1, 12, 0, 0, 250_000, tzinfo=UTC))


@pytest.fixture
async def timer_host(environ: dict[str, str], clock: VirtualClock) -> AsyncIterator[FunctionHost]:
    """The host on virtual time (the sample timer sleeps on it too)."""
    SEEN.reset()
    SEEN.clock = clock
    async with FunctionHost(
        MODULE,
        host_json=ROOT / "host.json",
        environ=environ,
        function_key="k3y",
        serve_http=False,
        shutdown_timeout=5,
        clock=clock,
    ) as running:
        yield running
    SEEN.reset()


@pytest.fixture
async def http(host: FunctionHost) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=host.url, timeout=10) as client:
        yield client


@pytest.fixture
async def queue(storage_connection_string: str, queue_name: str) -> AsyncIterator[QueueClient]:
    async with QueueClient.from_connection_string(storage_connection_string, queue_name) as client:
        await client.create_queue()
        yield client


async def send(queue: QueueClient, body: str) -> None:
    # What shared/jobs.py and the Azure host agree on: base64 text in the queue (§0.6).
    await queue.send_message(base64.b64encode(body.encode()).decode())


async def eventually(check: Callable[[], bool], within_s: float = 10.0) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def stored(client: QueueClient) -> list[str]:
    return [m.content for m in await client.peek_messages(max_messages=32)]


async def poisoned(connection: str, queue_name: str, within_s: float = 15.0) -> list[str]:
    """The text in ``<queue>-poison`` once something is there (the host creates it on demand)."""
    deadline = time.monotonic() + within_s
    async with QueueClient.from_connection_string(connection, f"{queue_name}-poison") as poison:
        while time.monotonic() < deadline:
            with contextlib.suppress(ResourceNotFoundError):
                found = await stored(poison)
                if found:
                    return found
            await asyncio.sleep(0.1)
    raise AssertionError("nothing reached the poison queue in time")


def test_host_json_of_the_repo_is_read_with_its_queue_rules() -> None:
    config = HostConfig.load(ROOT / "host.json")
    assert config.route_prefix == "api"
    assert config.queues.batch_size == 4
    assert config.queues.threshold == 2
    assert config.queues.max_dequeue_count == 5
    assert config.queues.visibility_timeout == 30
    assert config.queues.max_polling_interval == 2
    assert config.queues.message_encoding == "base64"
    assert config.function_timeout == 600
    assert parse_timespan("1.02:03:04.5") == 86400 + 2 * 3600 + 3 * 60 + 4.5


def test_route_templates_follow_the_host_routing_rules() -> None:
    pattern = compile_route("items/{item_id:int}/{label?}")
    assert pattern.fullmatch("items/7") is not None
    assert pattern.fullmatch("ITEMS/7/x") is not None
    assert pattern.fullmatch("items/x") is None
    rest = compile_route("files/{*path}").fullmatch("files/a/b/c")
    assert rest is not None and rest.group("path") == "a/b/c"
    assert route_precedence("items/new") < route_precedence("items/{id:int}")
    assert route_precedence("items/{id:int}") < route_precedence("items/{id}")
    assert route_precedence("items/{id}") < route_precedence("items/{*rest}")


async def test_http_function_needs_the_function_key(http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/items/1")).status_code == 401
    assert (await http.get("/api/items/1", params={"code": "wrong"})).status_code == 401
    assert (await http.get("/api/items/1", params={"code": "k3y"})).status_code == 200
    with_header = await http.get("/api/items/1", headers={"x-functions-key": "k3y"})
    assert with_header.status_code == 200


async def test_anonymous_function_needs_no_key(http: httpx.AsyncClient) -> None:
    answer = await http.get("/api/open")
    assert answer.status_code == 200
    assert answer.text == "open open_door"  # a `context` parameter gets func.Context


async def test_request_reaches_the_function_with_route_params_query_headers_and_body(
    http: httpx.AsyncClient,
) -> None:
    answer = await http.post(
        "/api/items/42/blue",
        params={"code": "k3y", "q": "v"},
        headers={"x-test": "yes"},
        content=b"hello",
    )
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/json")
    seen = answer.json()
    assert seen["method"] == "POST"
    assert seen["route_params"] == {"item_id": "42", "label": "blue"}
    assert seen["params"]["q"] == "v"
    assert seen["header"] == "yes"
    assert seen["body"] == "hello"
    optional = (await http.get("/api/items/42", params={"code": "k3y"})).json()
    assert optional["route_params"] == {"item_id": "42"}


async def test_unknown_route_constraint_miss_and_wrong_method_are_404(
    http: httpx.AsyncClient,
) -> None:
    assert (await http.get("/api/items/abc", params={"code": "k3y"})).status_code == 404
    assert (await http.delete("/api/items/1", params={"code": "k3y"})).status_code == 404
    assert (await http.get("/api/nothing", params={"code": "k3y"})).status_code == 404


async def test_failing_http_function_answers_500_without_its_message(
    http: httpx.AsyncClient,
) -> None:
    answer = await http.get("/api/boom", params={"code": "k3y"})
    assert answer.status_code == 500
    assert "must not" not in answer.text


async def test_queue_output_binding_writes_a_base64_message(
    http: httpx.AsyncClient, storage_connection_string: str, environ: dict[str, str]
) -> None:
    answer = await http.post("/api/enqueue", params={"code": "k3y"}, content=b"job-1")
    assert answer.status_code == 202
    async with QueueClient.from_connection_string(
        storage_connection_string, environ["TEST_OUT_QUEUE"]
    ) as out:
        assert await stored(out) == [base64.b64encode(b"job-1").decode()]


async def test_timer_fires_every_second_on_its_schedule(
    timer_host: FunctionHost, clock: VirtualClock
) -> None:
    await clock.advance(3.5)
    moments = [moment for moment, _ in SEEN.ticks]
    assert moments == [datetime(2026, 1, 1, 12, 0, second, tzinfo=UTC) for second in (1, 2, 3)]
    assert not any(past_due for _, past_due in SEEN.ticks)
    assert timer_host.invocations["tick"] == 3


async def test_timer_runs_never_overlap_and_a_late_run_is_past_due(
    timer_host: FunctionHost, clock: VirtualClock
) -> None:
    SEEN.tick_seconds = 2.5  # longer than the 1 s period: the next run starts late
    await clock.advance(4.0)  # runs at 12:00:01 (until 03.5) and, late, at 03.5
    assert [moment.second for moment, _ in SEEN.ticks] == [1, 3]
    assert SEEN.most_ticks_running == 1  # one run at a time, like the host's singleton lock
    assert SEEN.ticks[0][1] is False
    assert SEEN.ticks[1][1] is True  # started more than a second after it was due
    SEEN.tick_seconds = 0.0
    await clock.advance(4.0)  # the late run ends at 06; missed seconds are not replayed
    assert SEEN.most_ticks_running == 1
    assert [(moment.second, past_due) for moment, past_due in SEEN.ticks[2:]] == [
        (7, False),
        (8, False),
    ]


async def test_run_on_startup_fires_once_at_start(
    timer_host: FunctionHost, clock: VirtualClock
) -> None:
    await clock.settle()
    assert SEEN.startups == 1
    await clock.advance(2.0)
    assert SEEN.startups == 1


async def test_stop_lets_running_invocations_finish(host: FunctionHost, queue: QueueClient) -> None:
    await send(queue, f"slow-{uuid.uuid4()}")
    await eventually(lambda: SEEN.running == 1)
    await host.stop()
    assert SEEN.running == 0
    assert host.invocations["work"] == 1
    assert await stored(queue) == []  # finished and deleted, not left to reappear


async def test_queue_message_is_decoded_and_deleted_after_success(
    host: FunctionHost, queue: QueueClient
) -> None:
    body = f"ok-{uuid.uuid4()}"
    await send(queue, body)
    await eventually(lambda: any(m[2] == body.encode() for m in SEEN.messages))
    assert [m[1] for m in SEEN.messages if m[2] == body.encode()] == [1]
    await eventually(lambda: host.invocations.get("work", 0) >= 1)
    await asyncio.sleep(0.3)
    assert (await queue.get_queue_properties()).approximate_message_count == 0


async def test_failing_message_is_retried_then_moved_to_poison(
    host: FunctionHost, queue: QueueClient, storage_connection_string: str, queue_name: str
) -> None:
    body = f"fail-{uuid.uuid4()}"
    await send(queue, body)
    found = await poisoned(storage_connection_string, queue_name)
    assert found == [base64.b64encode(body.encode()).decode()]
    attempts = [m for m in SEEN.messages if m[2] == body.encode()]
    assert [m[1] for m in attempts] == list(range(1, MAX_DEQUEUE + 1))
    # Released with visibilityTimeout (1 s here) after each failure, not retried at once.
    assert all(b[3] - a[3] > 0.9 for a, b in itertools.pairwise(attempts))
    assert await stored(queue) == []


async def test_message_past_max_dequeue_count_goes_straight_to_poison(
    storage_connection_string: str, queue: QueueClient, queue_name: str, environ: dict[str, str]
) -> None:
    body = f"ok-{uuid.uuid4()}"
    await send(queue, body)
    for _ in range(MAX_DEQUEUE):  # someone else (a crashed host) dequeued it already
        async for message in queue.receive_messages(visibility_timeout=1, max_messages=1):
            await queue.update_message(message, visibility_timeout=0)
    SEEN.reset()
    async with FunctionHost(
        MODULE,
        environ=environ,
        host_json=ROOT / "host.json",
        max_dequeue_count=MAX_DEQUEUE - 1,
        max_polling_interval=0.2,
        serve_http=False,
    ):
        found = await poisoned(storage_connection_string, queue_name)
    assert found == [base64.b64encode(body.encode()).decode()]
    assert not any(m[2] == body.encode() for m in SEEN.messages)


async def test_several_messages_run_at_once(host: FunctionHost, queue: QueueClient) -> None:
    bodies = [f"slow-{n}-{uuid.uuid4()}" for n in range(8)]
    started = time.monotonic()
    await asyncio.gather(*(send(queue, body) for body in bodies))
    await eventually(lambda: host.invocations.get("work", 0) >= len(bodies), within_s=10)
    elapsed = time.monotonic() - started
    # batchSize 4 + newBatchThreshold 2 (host.json): up to 6 at once, never one by one.
    assert SEEN.most_running >= 4
    assert SEEN.most_running <= 6
    assert elapsed < len(bodies) * 0.5


async def test_invalid_base64_fails_and_ends_in_poison(
    host: FunctionHost, queue: QueueClient, storage_connection_string: str, queue_name: str
) -> None:
    await queue.send_message("not base64 !!")
    assert await poisoned(storage_connection_string, queue_name) == ["not base64 !!"]


async def test_admin_api_runs_a_timer_function_now(
    host: FunctionHost, http: httpx.AsyncClient
) -> None:
    assert (await http.get("/admin/host/status")).status_code == 401
    status = await http.get("/admin/host/status", params={"code": "k3y"})
    assert status.json()["state"] == "Running"
    before = host.invocations.get("tick", 0)
    answer = await http.post("/admin/functions/tick", params={"code": "k3y"}, json={})
    assert answer.status_code == 202
    await eventually(lambda: host.invocations.get("tick", 0) > before)


def test_sample_app_is_importable_once() -> None:
    assert sample_app.app is not None


async def test_parameters_that_do_not_match_the_bindings_stop_the_host(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bad = func.FunctionApp()

    @bad.route(route="x")
    def handler(request: func.HttpRequest) -> func.HttpResponse:  # binding is named "req"
        return func.HttpResponse("")

    module = types.ModuleType("mismatched_app")
    module.app = bad  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "mismatched_app", module)
    with pytest.raises(HostError, match="do not match"):
        await FunctionHost("mismatched_app", serve_http=False).start()
