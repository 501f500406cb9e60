"""The whole sandbox: ``python -m sandbox up`` as a user runs it, and ``SandboxStack`` in-process.

Every port is 0 (any free port): nothing assumes 7071/7101/7102/10001/10002 are free.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from sandbox.partner_center import DEFAULT_TOKEN
from sandbox.stack import PORT_VARIABLES, SandboxStack
from shared.settings import setting_names

ROOT = Path(__file__).resolve().parents[2]
STORAGE = "AzureWebJobsStorage"  # the app setting name, fixed by the SPEC
HOST_LINE = re.compile(r"^Functions host\s+(http://\S+)")


def _read_lines(process: subprocess.Popen[str], lines: list[str], ready: threading.Event) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if line.strip() == "ready":
            ready.set()
    ready.set()


def _seed_then_both_sides_sync(settings_file: Path) -> None:
    """``python -m sandbox seed``: its referrals get opportunities and its flagged opportunities
    get referrals, through the running app."""
    seeded = subprocess.run(
        [sys.executable, "-m", "sandbox", "seed", "--settings-file", str(settings_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert seeded.returncode == 0, seeded.stdout + seeded.stderr
    referrals = re.findall(r"referral from Microsoft\s+(\S+)", seeded.stdout)
    opportunities = re.findall(r"opportunity to share\s+(\S+)", seeded.stdout)
    assert len(referrals) == 3 and len(opportunities) == 2
    values = json.loads(settings_file.read_text(encoding="utf-8"))["Values"]
    api = values["DATAVERSE_URL"] + "/api/data/v9.2/opportunities"
    auth = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
    deadline = time.monotonic() + 45
    while True:
        rows = httpx.get(api, params={"$select": "cosell_referralid"}, headers=auth).json()
        linked = {r["cosell_referralid"] for r in rows["value"] if r.get("cosell_referralid")}
        if set(referrals) <= linked and len(linked) >= 5:
            return
        assert time.monotonic() < deadline, f"not synced in 45 s: {linked}"
        time.sleep(0.5)


def test_sandbox_up_prints_ready_serves_health_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    environ = dict(os.environ)
    environ.update({variable: "0" for variable, _ in PORT_VARIABLES.values()})
    environ.pop("SANDBOX_FUNCTION_KEY", None)
    settings_file = tmp_path / "local.settings.json"
    environ["SANDBOX_LOCAL_SETTINGS"] = str(settings_file)
    process = subprocess.Popen(
        [sys.executable, "-m", "sandbox", "up"],
        cwd=ROOT,
        env=environ,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()
    reader = threading.Thread(target=_read_lines, args=(process, lines, ready), daemon=True)
    reader.start()
    try:
        assert ready.wait(60), f"no 'ready' line; stdout so far: {lines}"
        assert lines.count("ready") == 1
        host_url = next(m.group(1) for m in map(HOST_LINE.match, lines) if m)
        answer = httpx.get(f"{host_url}/api/health", params={"code": "sandbox"}, timeout=10)
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "healthy"
        assert httpx.get(f"{host_url}/api/health", timeout=10).status_code == 401
        # SPEC 6: the settings it runs with, for `cosell --settings-file` on these random ports
        assert f"  cosell --settings-file {settings_file} status" in lines
        clean = {k: v for k, v in os.environ.items() if k not in setting_names()}
        check = subprocess.run(
            [
                sys.executable,
                "-m",
                "shared.cli",
                "--settings-file",
                str(settings_file),
                "config",
                "check",
            ],
            cwd=ROOT,
            env=clean,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert check.returncode == 0, check.stdout + check.stderr
        _seed_then_both_sides_sync(settings_file)
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - started < 30
        reader.join(5)
        assert lines[-1] == "ready"  # nothing printed on stdout after it
        assert process.stderr is not None
        errors = process.stderr.read()
        assert "Traceback" not in errors
        assert "Unclosed" not in errors
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


async def test_stack_sets_sandbox_settings_serves_the_app_and_restores_the_environment(
    storage_connection_string: str,
) -> None:
    before = os.environ.get(STORAGE)
    async with SandboxStack(storage_connection_string=storage_connection_string) as stack:
        assert stack.host is not None
        assert os.environ[STORAGE] == stack.connection_string
        assert os.environ["DATAVERSE_URL"] == stack.dataverse_url
        assert os.environ["PARTNER_CENTER_API_URL"] == (
            f"{stack.partner_center_url}/v1.0/engagements"
        )
        assert os.environ["PARTNER_CENTER_WEBHOOK_API_URL"] == (
            f"{stack.partner_center_url}/webhooks/v1"
        )
        assert os.environ["DATAVERSE_POLL_SCHEDULE"] == "*/5 * * * * *"
        assert all(port > 0 for port in (stack.host_port, stack.queue_port, stack.table_port))
        async with httpx.AsyncClient(timeout=10) as client:
            health = await client.get(stack.function_url("health"))
            assert health.status_code == 200, health.text
            registration = await client.get(
                f"{stack.partner_center_url}/webhooks/v1/registration",
                headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
            )
        if "partner_center_webhook" in stack.host.functions:
            assert registration.status_code == 200
            assert registration.json()["WebhookUrl"] == stack.webhook_url
            assert stack.webhook_url == stack.function_url("partner_center_webhook")
        else:
            assert stack.webhook_url is None
            assert registration.status_code == 404
    assert os.environ.get(STORAGE) == before


def test_ports_come_from_the_sandbox_variables() -> None:
    stack = SandboxStack.from_environ(
        {"SANDBOX_HOST_PORT": "7171", "SANDBOX_QUEUE_PORT": "0", "SANDBOX_FUNCTION_KEY": "k"}
    )
    assert stack.host_port == 7171
    assert stack.partner_center_port == 7101
    assert stack.dataverse_port == 7102
    assert stack.queue_port == 0
    assert stack.table_port == 10002
    assert stack.function_key == "k"
    assert stack.hosts == 1


def test_several_hosts_come_from_sandbox_hosts() -> None:
    assert SandboxStack.from_environ({"SANDBOX_HOSTS": "3"}).hosts == 3
    for wrong in ("0", "x", "99"):
        with pytest.raises(ValueError, match="SANDBOX_HOSTS"):
            SandboxStack.from_environ({"SANDBOX_HOSTS": wrong})
