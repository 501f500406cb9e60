"""End to end over real sockets: Azurite, both emulators under uvicorn, the local Functions host
running function_app.py — the same stack `make demo` and `python -m sandbox up` run."""

from __future__ import annotations

import asyncio
import base64
import json
import time
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from azure.storage.queue.aio import QueueClient

from sandbox.demo import play
from sandbox.stack import SandboxStack
from shared.jobs import POISON_QUEUE, SYNC_JOBS_QUEUE, SyncJob


@pytest.fixture
async def stack(storage_connection_string: str) -> AsyncIterator[SandboxStack]:
    async with QueueClient.from_connection_string(storage_connection_string, SYNC_JOBS_QUEUE) as q:
        await q.create_queue() if not await _exists(q) else await q.clear_messages()
    async with SandboxStack(
        storage_connection_string=storage_connection_string,
        host_options={"visibility_timeout": 1},
    ) as running:
        yield running


async def _exists(queue: QueueClient) -> bool:
    try:
        await queue.get_queue_properties()
    except Exception:  # noqa: BLE001 - ResourceNotFoundError: not created yet
        return False
    return True


async def queue_depth(stack: SandboxStack, name: str) -> int:
    async with QueueClient.from_connection_string(stack.connection_string, name) as queue:
        if not await _exists(queue):
            return 0
        return len(await queue.peek_messages(max_messages=32))


async def test_the_co_sell_story_runs_both_ways_within_seconds(stack: SandboxStack) -> None:
    """The story's Partner Center steps arrive by signed webhook, verified as in Azure: leaf from
    x-ms-certificate-url, its intermediate from the leaf's AIA URL, the (test) root trusted
    (Partner Center webhook docs and Microsoft's sample verifier, reference
    dataverse-push-and-webhook-trust §2)."""
    assert stack.settings["WEBHOOK_SIGNATURE_MODE"] == "verify"

    steps = await play(stack)

    assert [(s.title, s.ok) for s in steps if not s.ok] == []
    incoming = steps[0]
    assert incoming.latency_s is not None and incoming.latency_s < 5  # webhook path
    assert all(s.latency_s is not None and s.latency_s < 15 for s in steps)  # ≤ poll + slack
    async with httpx.AsyncClient(base_url=stack.partner_center_url) as control:
        stats = (await control.get("/_emulator/stats")).json()
    assert stats["requests"].get("GET /_emulator/pki/{name}", 0) >= 1  # the AIA fetch


def signed(stack: SandboxStack, body: bytes) -> dict[str, str]:
    """The headers the Partner Center emulator would sign ``body`` with."""
    emulator = stack.partner_center_app.state.emulator
    headers: dict[str, str] = emulator.dispatcher.headers(body, emulator.certificate_url, True)
    return headers


async def test_forged_or_malformed_webhooks_get_4xx_and_enqueue_nothing(
    stack: SandboxStack,
) -> None:
    """SPEC 8; Microsoft's sample verifier: unsigned or forged → 401, no certificate URL → 400
    (reference dataverse-push-and-webhook-trust §2). Malformed bodies are signed properly, so
    what refuses them is the event check (400/413)."""
    url = stack.function_url("partner_center_webhook")
    no_key = url.split("?")[0]
    event = {
        "EventName": "referral-created",
        "ResourceName": "referral",
        "ResourceUri": f"https://api.partnercenter.microsoft.com/v1/referrals/{uuid.uuid4()}",
    }
    good = json.dumps(event).encode()
    forged = json.dumps({**event, "EventName": "referral-updated"}).encode()
    no_url = {k: v for k, v in signed(stack, good).items() if k != "x-ms-certificate-url"}
    malformed = [
        b"{not json",
        json.dumps({**event, "ResourceName": "customer"}).encode(),
        json.dumps({**event, "ResourceUri": "https://evil.example/x"}).encode(),
    ]
    async with httpx.AsyncClient() as http:
        answers = [
            (await http.post(no_key, content=good, headers=signed(stack, good))).status_code,
            (await http.post(url, json=event)).status_code,  # unsigned
            (await http.post(url, content=forged, headers=signed(stack, good))).status_code,
            (await http.post(url, content=good, headers=no_url)).status_code,
            *[(await http.post(url, content=b, headers=signed(stack, b))).status_code
              for b in malformed],
            (await http.post(url, content=b"{" + b" " * 70_000 + b"}")).status_code,
        ]  # fmt: skip
    await asyncio.sleep(0.5)

    assert answers == [401, 401, 401, 400, 400, 400, 400, 413]
    assert await queue_depth(stack, SYNC_JOBS_QUEUE) == 0


async def test_a_job_that_always_fails_lands_in_the_poison_queue_after_five_attempts(
    stack: SandboxStack,
) -> None:
    async with httpx.AsyncClient(base_url=stack.partner_center_url) as control:
        faults = {"error_rate": 1.0, "statuses": [400], "drop_webhook_rate": 0.0}
        assert (await control.put("/_emulator/faults", json=faults)).status_code < 300
    job = SyncJob.now("referral", str(uuid.uuid4()), reason="manual")
    async with QueueClient.from_connection_string(stack.connection_string, SYNC_JOBS_QUEUE) as q:
        await q.send_message(base64.b64encode(job.to_json().encode()).decode())

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and await queue_depth(stack, POISON_QUEUE) == 0:  # noqa: ASYNC110 - polling another process's queue
        await asyncio.sleep(0.5)

    async with QueueClient.from_connection_string(stack.connection_string, POISON_QUEUE) as q:
        [poisoned] = await q.peek_messages(max_messages=32)
        body = json.loads(base64.b64decode(poisoned.content))
        await q.clear_messages()
    assert body["id"] == str(job.id)
    assert stack.host is not None
    assert stack.host.invocations.get("sync_job", 0) >= 5
