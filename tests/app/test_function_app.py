"""function_app.py checked the way the Functions worker indexes it, and the health function.

The worker (not installable on Python 3.11) validates each function when the host starts; these
tests re-create its checks so a mismatch fails here instead of at deployment.
"""

from __future__ import annotations

import inspect
import json
import re
import typing
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import pytest

import function_app
from shared.health import check_health
from shared.jobs import POISON_QUEUE, SYNC_JOBS_QUEUE, JobQueue, SyncJob
from shared.runtime import close_runtime
from shared.settings import get_settings, setting_names
from shared.state import CURSORS_TABLE, Cursor, CursorStore
from shared.storage import queue_client, table_service_client

ROOT = Path(__file__).resolve().parents[2]
SETTING_REFERENCE = re.compile(r"%([^%]+)%")


@pytest.fixture(scope="module")
def functions() -> list[Any]:
    # get_functions() may be called once per FunctionApp (a second call raises): cache it.
    return list(function_app.app.get_functions())


def bindings_of(function: Any) -> list[dict[str, Any]]:
    return list(json.loads(function.get_function_json())["bindings"])


def test_function_names_are_unique(functions: list[Any]) -> None:
    names = [f.get_function_name() for f in functions]
    assert len(names) == len(set(names))


def test_each_function_has_exactly_one_trigger(functions: list[Any]) -> None:
    for function in functions:
        triggers = [b for b in bindings_of(function) if b["type"].endswith("Trigger")]
        assert len(triggers) == 1, function.get_function_name()


def test_every_binding_name_matches_a_parameter_and_back(functions: list[Any]) -> None:
    for function in functions:
        user_function = function.get_user_function()
        parameters = {
            name
            for name, p in inspect.signature(user_function).parameters.items()
            if not (name == "context" and p.annotation in (func.Context, "func.Context"))
        }
        bound = {b["name"] for b in bindings_of(function) if b["name"] != "$return"}
        assert parameters == bound, function.get_function_name()


def test_only_functions_with_a_return_binding_return_a_value(functions: list[Any]) -> None:
    for function in functions:
        hints = typing.get_type_hints(function.get_user_function(), vars(function_app))
        returns = hints.get("return", type(None))
        has_return_binding = any(b["name"] == "$return" for b in bindings_of(function))
        assert (returns is not type(None)) == has_return_binding, function.get_function_name()


def test_out_bindings_and_only_those_are_func_out(functions: list[Any]) -> None:
    for function in functions:
        hints = typing.get_type_hints(function.get_user_function(), vars(function_app))
        for binding in bindings_of(function):
            if binding["name"] == "$return":
                continue
            is_out = typing.get_origin(hints.get(binding["name"])) is func.Out
            assert is_out == (binding["direction"] == "OUT"), binding["name"]


def test_every_setting_used_in_a_binding_exists(functions: list[Any]) -> None:
    sample = json.loads((ROOT / "local.settings.sample.json").read_text())["Values"]
    for function in functions:
        for binding in bindings_of(function):
            for value in binding.values():
                for name in SETTING_REFERENCE.findall(str(value)):
                    assert name in setting_names(), f"{name} is not a setting"
                    assert name in sample, f"{name} is not in local.settings.sample.json"


def test_http_functions_need_the_function_key(functions: list[Any]) -> None:
    for function in functions:
        for binding in bindings_of(function):
            if binding["type"] == "httpTrigger":
                assert binding["authLevel"] == "FUNCTION", function.get_function_name()


def test_health_is_a_get_on_api_health(functions: list[Any]) -> None:
    health = next(f for f in functions if f.get_function_name() == "health")
    trigger = bindings_of(health)[0]

    assert trigger["route"] == "health"
    assert trigger["methods"] == ["GET"]


def test_importing_the_app_reads_no_settings() -> None:
    """The worker indexes the app before any invocation; settings errors surface at first use."""
    assert "get_settings" not in vars(function_app)


# --- health against real storage ------------------------------------------------------------


@pytest.fixture
def app_settings(storage_connection_string: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection_string)
    monkeypatch.setenv("DATAVERSE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("PARTNER_CENTER_API_URL", "http://127.0.0.1:9/v1.0/engagements")
    monkeypatch.setenv("DATAVERSE_POLL_SCHEDULE", "*/5 * * * * *")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
async def empty_queues(app_settings: None) -> AsyncIterator[tuple[JobQueue, JobQueue]]:
    settings = get_settings()
    async with (
        JobQueue(queue_client(settings, SYNC_JOBS_QUEUE)) as jobs,
        JobQueue(queue_client(settings, POISON_QUEUE)) as poison,
    ):
        for queue in (jobs, poison):
            await queue.create_queue()
            await queue._client.clear_messages()
        yield jobs, poison
        await close_runtime()  # the health function opened this loop's runtime


async def call_health() -> tuple[int, dict[str, Any]]:
    request = func.HttpRequest(method="GET", url="/api/health", body=b"")
    response = await function_app.health(request)
    assert response.mimetype == "application/json"
    return response.status_code, json.loads(response.get_body())


async def test_health_reports_version_and_queue_depths(
    empty_queues: tuple[JobQueue, JobQueue],
) -> None:
    jobs, _ = empty_queues
    await jobs.enqueue_many(
        SyncJob.now("referral", f"6f1f8a5e-3d4c-4b2a-9e8f-{n:012d}", reason="poll")
        for n in range(3)
    )

    status, body = await call_health()

    assert status == 200
    assert body["status"] == "healthy"
    assert body["version"] == "0.1.0"
    assert body["queues"] == {SYNC_JOBS_QUEUE: 3, POISON_QUEUE: 0}
    assert body["tokens"] == {"partner_center": "ok", "dataverse": "ok"}  # sandbox tokens
    assert body["last_error"] is None


async def test_poison_messages_make_health_degraded(
    empty_queues: tuple[JobQueue, JobQueue],
) -> None:
    _, poison = empty_queues
    guid = "6f1f8a5e-3d4c-4b2a-9e8f-000000000001"
    await poison.enqueue(SyncJob.now("referral", guid, reason="poll"))

    status, body = await call_health()

    assert status == 503
    assert body["queues"][POISON_QUEUE] == 1
    assert any("sync-jobs-poison" in p for p in body["problems"])
    assert "failed 5 times" in body["last_error"]


async def test_health_shows_cursor_ages_and_flags_a_stalled_cursor(
    empty_queues: tuple[JobQueue, JobQueue],
) -> None:
    async with table_service_client(get_settings()) as service:
        await service.create_table_if_not_exists(CURSORS_TABLE)
        store = CursorStore(service.get_table_client(CURSORS_TABLE))
        for name in ("poll_dataverse", "reconcile_partner_center"):
            existing = await store.get_cursor(name)
            await store.save_cursor(existing or Cursor(name=name, watermark=datetime.now(UTC)))

    status, body = await call_health()

    assert status == 200
    assert set(body["cursors"]) >= {"poll_dataverse", "reconcile_partner_center"}
    assert 0 <= body["cursors"]["poll_dataverse"]["age_seconds"] < 60
    # Polled every 5 s, the cursor counts as stalled after 3 periods plus a minute of slack.
    later = await check_health(now=datetime.now(UTC) + timedelta(seconds=120))
    assert later.http_status == 503
    assert any("cursor poll_dataverse has not moved" in p for p in later.problems)
    assert not any("reconcile_partner_center" in p for p in later.problems)


async def test_wrong_settings_make_health_degraded_with_the_reason(
    app_settings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONFLICT_POLICY", "latest")
    get_settings.cache_clear()

    status, body = await call_health()
    await close_runtime()

    assert status == 503
    assert "CONFLICT_POLICY" in body["problems"][0]


async def test_a_broken_mapping_makes_health_degraded_naming_its_json_path(
    app_settings: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SPEC 13: a wrong mapping entry stops start-up and the health endpoint says which."""
    monkeypatch.setenv("CRM_MAPPING", '{"fields": {"notes": {"direction": "sideways"}}}')
    get_settings.cache_clear()

    status, body = await call_health()
    await close_runtime()

    assert status == 503
    assert "CRM_MAPPING: $.fields.notes.direction" in " ".join(body["problems"])
