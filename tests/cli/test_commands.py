"""Every command's help, config check, status and webhook registration, against the sandbox."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from azure.data.tables.aio import TableClient

from shared.state import LINKS_TABLE, LinkResult, LinkStore, SyncLink
from tests.cli.conftest import Sandbox

COMMANDS = [
    ["config", "check"],
    ["status"],
    ["webhook", "register"],
    ["webhook", "show"],
    ["webhook", "test"],
    ["sync", "referral"],
    ["sync", "opportunity"],
    ["backfill"],
    ["poison", "list"],
    ["poison", "replay"],
    ["history"],
    ["schema", "check"],
    ["schema", "apply"],
    ["solution", "export"],
    ["solution", "import"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_examples(cosell: Any, command: list[str]) -> None:
    ran = cosell(*command, "--help")

    assert ran.code == 0
    assert f"cosell {' '.join(command)}" in ran.out
    assert "examples:" in ran.out
    assert "--json" in ran.out


def test_a_usage_error_exits_2(cosell: Any) -> None:
    assert cosell("sync", "referral", "not-a-guid").code == 2
    assert cosell("frobnicate").code == 2


def test_config_check_passes_against_the_sandbox(cli_env: Sandbox, cosell: Any) -> None:
    ran = cosell("config", "check")

    assert ran.code == 0, ran.out + ran.err
    assert "[FAIL]" not in ran.out
    assert "Dataverse API (WhoAmI)" in ran.out
    assert "Partner Center referrals API" in ran.out
    document = cosell("config", "check", "--json").json()
    assert document["ok"] is True
    assert {c["name"] for c in document["checks"] if c["status"] == "pass"} >= {
        "settings",
        "Partner Center referrals API",
        "Dataverse API (WhoAmI)",
    }


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_config_check_with_a_wrong_dataverse_url_names_the_setting(
    cli_env: Sandbox, cosell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATAVERSE_URL", f"http://127.0.0.1:{_closed_port()}")

    ran = cosell("config", "check")

    assert ran.code == 1
    failing = [line for line in ran.out.splitlines() if line.startswith("[FAIL]")]
    assert len(failing) == 1 and failing[0].startswith("[FAIL] Dataverse API")
    assert "fix: check DATAVERSE_URL" in ran.out


def test_config_check_on_a_dataverse_500_does_not_blame_the_url(
    cli_env: Sandbox, cosell: Any
) -> None:
    faults = {"error_rate": 1.0, "statuses": [500]}  # the emulator's control API (SPEC 9)
    httpx.put(
        f"{cli_env.dataverse_url}/_emulator/faults", json=faults, timeout=10
    ).raise_for_status()
    try:
        ran = cosell("config", "check")
    finally:
        httpx.delete(f"{cli_env.dataverse_url}/_emulator/faults", timeout=10).raise_for_status()

    assert ran.code == 1
    assert "fix: Dataverse failed on its side (HTTP 500)" in ran.out
    assert "check DATAVERSE_URL" not in ran.out


def test_a_wrong_setting_is_reported_with_its_name(
    cli_env: Sandbox, cosell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CONFLICT_POLICY", "latest")

    check = cosell("config", "check")
    status = cosell("status")

    assert check.code == 1 and "[FAIL] settings" in check.out
    assert "CONFLICT_POLICY" in check.out
    assert status.code == 1 and "CONFLICT_POLICY" in status.err
    assert cosell("status", "--json").json()["ok"] is False


def _link_with_error(connection: str, referral_id: str, message: str) -> None:
    async def seed() -> None:
        table = TableClient.from_connection_string(connection, LINKS_TABLE)
        async with LinkStore(table) as links:
            await links.create_table()
            at = datetime.now(UTC) + timedelta(days=1)  # the newest error of this shared table
            result = LinkResult(status="error", message=message, at=at)
            await links.create_link(SyncLink(referral_id=referral_id, last_result=result))

    asyncio.run(seed())


def test_status_shows_queues_links_and_last_errors(
    cli_env: Sandbox, cosell: Any, queues: Any, storage_connection_string: str
) -> None:
    referral_id = str(uuid.uuid4())
    _link_with_error(storage_connection_string, referral_id, "no country on the account")

    ran = cosell("status")
    document = cosell("--json", "status").json()

    assert ran.code == 0, ran.out + ran.err
    assert "sync-jobs-poison" in ran.out and "Links by sync status" in ran.out
    assert "no country on the account" in ran.out
    assert document["status"] == "healthy"
    assert document["queues"] == {"sync-jobs": 0, "sync-jobs-poison": 0}
    assert document["links"]["error"] >= 1
    assert document["last_errors"][0]["referral_id"] == referral_id


def test_status_checks_that_dataverse_answers(cli_env: Sandbox, cosell: Any, queues: Any) -> None:
    healthy = cosell("--json", "status").json()
    faults = {"error_rate": 1.0, "statuses": [500]}
    httpx.put(
        f"{cli_env.dataverse_url}/_emulator/faults", json=faults, timeout=10
    ).raise_for_status()
    try:
        down = cosell("status")
    finally:
        httpx.delete(f"{cli_env.dataverse_url}/_emulator/faults", timeout=10).raise_for_status()

    assert healthy["dataverse"]["reachable"] is True
    assert down.code == 1
    assert "Dataverse did not answer WhoAmI" in down.out and "500" in down.out


# -- webhook ------------------------------------------------------------------------------------

HOOK = "/api/webhooks/partner-center"


def test_webhook_register_refuses_to_replace_another_url_without_overwrite(
    cli_env: Sandbox, cosell: Any
) -> None:
    first = f"https://cosell-a.example.com{HOOK}?code=first-key"
    second = f"https://cosell-b.example.com{HOOK}?code=second-key"

    assert cosell("webhook", "show").code == 1  # nothing registered yet
    registered = cosell("webhook", "register", "--url", first, "--json")
    again = cosell("webhook", "register", "--url", first)
    refused = cosell("webhook", "register", "--url", second)
    shown = cosell("webhook", "show", "--json").json()

    assert registered.code == 0 and registered.json()["action"] == "registered"
    assert sorted(registered.json()["events"]) == sorted(
        [
            "referral-created",
            "referral-updated",
            "related-referral-created",
            "related-referral-updated",
            "test-created",
        ]
    )
    assert again.code == 0 and "unchanged" in again.out
    assert refused.code == 1 and "--overwrite" in refused.err
    assert shown["webhook_url"].startswith("https://cosell-a.example.com")

    replaced = cosell("webhook", "register", "--url", second, "--overwrite")
    shown = cosell("webhook", "show", "--json").json()

    assert replaced.code == 0 and "updated" in replaced.out
    assert shown["webhook_url"] == f"https://cosell-b.example.com{HOOK}?code=***"
    everything = registered.out + again.out + refused.out + refused.err + replaced.out
    assert "first-key" not in everything and "second-key" not in everything


def test_webhook_register_needs_https_outside_localhost(cli_env: Sandbox, cosell: Any) -> None:
    ran = cosell("webhook", "register", "--url", f"http://cosell.example.com{HOOK}")

    assert ran.code == 1 and "https" in ran.err


def test_webhook_test_reports_the_delivery(cli_env: Sandbox, cosell: Any) -> None:
    url = f"{cli_env.receiver_url}{HOOK}?code=sandbox"
    assert cosell("webhook", "register", "--url", url).code == 0
    before = cli_env.receiver.events

    ran = cosell("webhook", "test", "--timeout", "10", "--interval", "0.05", "--json")

    assert ran.code == 0, ran.out + ran.err
    result = ran.json()
    assert result["delivered"] is True
    assert result["attempts"][0]["response_code"] == 200
    assert cli_env.receiver.events == before + 1


def test_webhook_test_fails_when_nothing_answers(cli_env: Sandbox, cosell: Any) -> None:
    url = f"http://127.0.0.1:{_closed_port()}{HOOK}"
    assert cosell("webhook", "register", "--url", url).code == 0

    ran = cosell("webhook", "test", "--timeout", "0.3", "--interval", "0.05")

    assert ran.code == 1
    assert "not delivered" in ran.err


def test_emulator_stats_see_one_list_call_per_config_check(cli_env: Sandbox, cosell: Any) -> None:
    cosell("config", "check")

    stats = httpx.get(f"{cli_env.pc_url}/_emulator/stats").json()

    assert stats["requests"].get("GET /v1.0/engagements/referrals") == 1


def test_webhook_register_derives_the_sandbox_url(
    cli_env: Sandbox, cosell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SANDBOX_HOST_PORT", "7071")

    ran = cosell("webhook", "register", "--json")

    assert ran.code == 0, ran.err
    assert ran.json()["webhook_url"] == f"http://127.0.0.1:7071{HOOK}?code=***"


def test_webhook_register_takes_the_running_sandbox_from_its_settings_file(
    cli_env: Sandbox, cosell: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # `make up` writes the host's port and key to .sandbox/local.settings.json (SPEC 6).
    monkeypatch.delenv("SANDBOX_HOST_PORT", raising=False)
    path = tmp_path / "local.settings.json"
    values = {"SANDBOX_HOST_PORT": "17071", "SANDBOX_FUNCTION_KEY": "k"}
    path.write_text(json.dumps({"IsEncrypted": False, "Values": values}))

    ran = cosell("--settings-file", str(path), "webhook", "register", "--json")

    assert ran.code == 0, ran.err
    assert ran.json()["webhook_url"] == f"http://127.0.0.1:17071{HOOK}?code=***"
    assert f"Partner Center webhook URL: http://127.0.0.1:17071{HOOK}?code=***" in ran.err


def test_settings_can_come_from_a_local_settings_file(
    cli_env: Sandbox, cosell: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    url = os.environ["DATAVERSE_URL"]
    monkeypatch.delenv("DATAVERSE_URL")
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": {"DATAVERSE_URL": url}}))

    without = cosell("schema", "check")
    ran = cosell("--settings-file", str(path), "schema", "check")

    assert without.code == 1 and "DATAVERSE_URL: missing" in without.err
    assert ran.code == 0, ran.err
