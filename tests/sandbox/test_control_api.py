"""Both emulators serve one control API (``sandbox.kit``): the same fault settings, the same
scripted failures and the same refusal, each failure answered in its own service's error shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from starlette.applications import Starlette

from sandbox.dataverse import create_app as dataverse_app
from sandbox.partner_center import create_app as partner_center_app


@dataclass
class Emulator:
    app: Starlette
    api_path: str  # a GET the API answers 200 with the sandbox token


EMULATORS = {
    "partner center": lambda: Emulator(partner_center_app(seed=1), "/v1.0/engagements/referrals"),
    "dataverse": lambda: Emulator(dataverse_app(seed=1), "/api/data/v9.2/WhoAmI"),
}


@pytest.fixture(params=sorted(EMULATORS))
async def emulator(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[Emulator, httpx.AsyncClient]]:
    emulator = EMULATORS[request.param]()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=emulator.app),
        base_url="http://emulator.test",
        headers={"Authorization": "Bearer sandbox"},
    ) as http:
        yield emulator, http


async def test_scripted_faults_fail_exactly_the_next_requests_with_statuses_in_turn(
    emulator: tuple[Emulator, httpx.AsyncClient],
) -> None:
    target, http = emulator
    faults = {"fail_next": 2, "statuses": [429, 500], "retry_after_s": 7}
    put = await http.put("/_emulator/faults", json=faults)

    answers = [await http.get(target.api_path) for _ in range(3)]

    assert put.json() == {
        "error_rate": 0.0,
        "statuses": [429, 500],
        "retry_after_s": 7,
        "latency_ms": 0.0,
        "drop_webhook_rate": 0.0,
        "fail_next": 2,
    }
    assert [a.status_code for a in answers] == [429, 500, 200]
    assert answers[0].headers["Retry-After"] == "7"
    assert "Retry-After" not in answers[1].headers


async def test_a_fault_setting_out_of_range_or_unknown_is_refused_naming_it(
    emulator: tuple[Emulator, httpx.AsyncClient],
) -> None:
    _, http = emulator
    out_of_range = await http.put("/_emulator/faults", json={"error_rate": 2})
    unknown = await http.put("/_emulator/faults", json={"chaos_monkey": True})

    assert out_of_range.status_code == unknown.status_code == 400
    assert out_of_range.json()["error"]["target"] == "error_rate"
    assert "chaos_monkey" in unknown.json()["error"]["message"]


async def test_deleting_faults_restores_the_api_and_health_names_the_service(
    emulator: tuple[Emulator, httpx.AsyncClient],
) -> None:
    target, http = emulator
    await http.put("/_emulator/faults", json={"error_rate": 1, "statuses": [503]})
    failing = await http.get(target.api_path)
    deleted = await http.delete("/_emulator/faults")
    healthy = await http.get(target.api_path)
    health = (await http.get("/_emulator/health")).json()

    assert (failing.status_code, deleted.status_code, healthy.status_code) == (503, 204, 200)
    assert health["status"] == "ok" and health["service"]
