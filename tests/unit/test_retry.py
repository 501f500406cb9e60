"""The retry transport both SaaS clients use (SPEC section 7)."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from shared.dataverse import ConnectionFailed as DataverseConnectionFailed
from shared.dataverse import DataverseClient
from shared.dataverse import StaticTokenProvider as DataverseToken
from shared.errors import ConnectionFailedError
from shared.partner_center import ConnectionFailed as PartnerCenterConnectionFailed
from shared.partner_center import PartnerCenterClient
from shared.partner_center import StaticTokenProvider as PartnerCenterToken
from shared.retry import RetryPolicy, RetryTransport, parse_retry_after


class Script:
    """Answers requests with the given statuses (or exceptions) in order and records sleeps."""

    def __init__(self, *answers: int | Exception, retry_after: str | None = None) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.sleeps: list[float] = []
        self.retry_after = retry_after

    def handler(self, request: httpx.Request) -> httpx.Response:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if isinstance(answer, Exception):
            raise answer
        headers = {"Retry-After": self.retry_after} if self.retry_after else {}
        return httpx.Response(answer, headers=headers, json={"n": self.calls})

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)

    def client(self, **policy: float) -> httpx.AsyncClient:
        retry = RetryPolicy(sleep=self.sleep, **policy)  # type: ignore[arg-type]
        transport = RetryTransport(httpx.MockTransport(self.handler), retry)
        return httpx.AsyncClient(transport=transport, base_url="http://emulator.test")


async def test_429_waits_retry_after_then_succeeds() -> None:
    script = Script(429, 429, 200, retry_after="2")
    async with script.client() as client:
        response = await client.get("/x")

    assert response.status_code == 200
    assert script.calls == 3
    assert script.sleeps == [2.0, 2.0]


async def test_retry_after_is_capped_by_max_delay() -> None:
    script = Script(503, 200, retry_after="3600")
    async with script.client(max_delay=5.0) as client:
        await client.get("/x")

    assert script.sleeps == [5.0]


async def test_500_backs_off_exponentially_with_jitter() -> None:
    script = Script(500, 502, 504, 200)
    async with script.client(base_delay=1.0, jitter=0.5) as client:
        response = await client.get("/x")

    assert response.status_code == 200
    for attempt, slept in enumerate(script.sleeps, start=1):
        full = 2 ** (attempt - 1)
        assert full * 0.5 <= slept <= full


async def test_post_is_not_repeated_after_a_5xx_or_timeout() -> None:
    script = Script(500, 201)
    async with script.client() as client:
        response = await client.post("/x", json={"a": 1})
    assert response.status_code == 500
    assert script.calls == 1

    timed_out = Script(httpx.ReadTimeout("slow"), 201)
    async with timed_out.client() as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/x", json={"a": 1})
    assert timed_out.calls == 1


async def test_post_is_repeated_after_429_and_connection_refused() -> None:
    script = Script(429, 201, retry_after="1")
    async with script.client() as client:
        assert (await client.post("/x", json={})).status_code == 201

    refused = Script(httpx.ConnectError("refused"), 201)
    async with refused.client() as client:
        assert (await client.post("/x", json={})).status_code == 201
    assert refused.calls == 2


@pytest.mark.parametrize("status", [400, 401, 403, 404, 409, 412])
async def test_other_4xx_are_returned_at_once(status: int) -> None:
    script = Script(status, 200)
    async with script.client() as client:
        response = await client.post("/x", json={"a": 1})

    assert response.status_code == status
    assert script.calls == 1
    assert script.sleeps == []


async def test_timeouts_retry_and_the_last_one_is_raised() -> None:
    script = Script(httpx.ReadTimeout("slow"))
    async with script.client(attempts=3) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("/x")

    assert script.calls == 3
    assert len(script.sleeps) == 2


async def test_last_attempt_returns_the_error_response_for_the_client_to_raise() -> None:
    script = Script(503, retry_after="1")
    async with script.client(attempts=2) as client:
        response = await client.get("/x")

    assert response.status_code == 503
    assert script.calls == 2


async def test_request_body_is_sent_again_on_retry() -> None:
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        return httpx.Response(503 if len(bodies) == 1 else 201)

    async def no_sleep(_: float) -> None:
        return None

    transport = RetryTransport(httpx.MockTransport(handler), RetryPolicy(sleep=no_sleep))
    async with httpx.AsyncClient(transport=transport) as client:
        await client.post("http://emulator.test/x", json={"name": "Contoso"})

    assert bodies == [b'{"name":"Contoso"}', b'{"name":"Contoso"}']


def _disconnected() -> httpx.RemoteProtocolError:
    # What httpx raises when a kept-alive connection is closed before the answer came.
    return httpx.RemoteProtocolError("Server disconnected without sending a response.")


async def test_a_dropped_keep_alive_is_retried_for_get_but_not_for_post() -> None:
    dropped = Script(_disconnected(), 200)
    async with dropped.client() as client:
        response = await client.get("/x")
    assert response.status_code == 200
    assert dropped.calls == 2

    posted = Script(_disconnected(), 201)
    async with posted.client() as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/x", json={"a": 1})
    assert posted.calls == 1  # it may have been carried out: never sent twice


async def test_partner_center_retries_a_dropped_get_and_reports_a_dropped_post() -> None:
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) == 1 or request.method == "POST":
            raise _disconnected()
        return httpx.Response(200, json={"value": []})

    async with PartnerCenterClient(
        "http://emulator.test/v1.0/engagements",
        token_provider=PartnerCenterToken("sandbox"),
        transport=httpx.MockTransport(handler),
        retry_policy=RetryPolicy(sleep=_no_sleep),
    ) as pc:
        listed = [r async for r in pc.list_referrals()]
        with pytest.raises(ConnectionFailedError) as failed:
            await pc.create_referral({"name": "Contoso"})

    assert listed == []
    assert calls == ["GET", "GET", "POST"]
    assert isinstance(failed.value, PartnerCenterConnectionFailed)
    assert failed.value.code == "transportError"


async def test_dataverse_retries_a_dropped_get_and_reports_a_dropped_post() -> None:
    ids = {"UserId": _GUID, "BusinessUnitId": _GUID, "OrganizationId": _GUID}

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        if len(calls) == 1 or request.method == "POST":
            raise _disconnected()
        return httpx.Response(200, json=ids)

    calls: list[str] = []

    async with DataverseClient(
        "http://emulator.test",
        token_provider=DataverseToken("sandbox"),
        transport=httpx.MockTransport(handler),
        retry_policy=RetryPolicy(sleep=_no_sleep),
    ) as dataverse:
        me = await dataverse.who_am_i()
        with pytest.raises(DataverseConnectionFailed):
            await dataverse.create("accounts", {"name": "Contoso"})

    assert str(me.user_id) == _GUID
    assert calls == ["GET", "GET", "POST"]


_GUID = "00000000-0000-0000-0000-000000000001"


async def _no_sleep(_: float) -> None:
    return None


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    now = datetime(2026, 11, 27, 10, 0, 0, tzinfo=UTC)

    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Fri, 27 Nov 2026 10:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Fri, 27 Nov 2026 09:00:00 GMT", now=now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
