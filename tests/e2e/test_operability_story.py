"""Operability end to end (issue 18), over real sockets: Azurite, both emulators under uvicorn and
the local Functions host on function_app.py (host.json's maxDequeueCount 5, a 1 s visibility
timeout), faults injected through the emulators' control API (``/_emulator/faults``).

* A job that fails on every attempt because Dataverse answers 500 lands in ``sync-jobs-poison``
  and ``cosell poison list`` (and ``/api/health``'s ``last_error``) says why: "Dataverse 500 on
  GET opportunities(…)", from the history row the engine recorded at each attempt (the host's
  copy of the job carries no reason).
* Referrals whose webhooks Partner Center dropped show in ``cosell drift`` and make
  ``/api/health`` degraded with their count; the reconcile timer heals them.

The reconcile timer is set to once a year, so only the test runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
import pytest_asyncio
from azure.data.tables.aio import TableClient
from azure.storage.queue.aio import QueueClient

from sandbox.stack import PORT_VARIABLES
from shared.cli import main
from shared.jobs import POISON_QUEUE
from shared.state import HISTORY_TABLE, HistoryStore
from tests.e2e.story import Sandbox, customer, eventually, open_sandbox, set_faults, unique

pytestmark = pytest.mark.asyncio(loop_scope="module")

ENVIRONMENT = {
    **{variable: "0" for variable, _ in PORT_VARIABLES.values()},
    "PARTNER_CENTER_RECONCILE_SCHEDULE": "0 0 0 1 1 *",  # only when the test runs it
}
POISONED_WITHIN_S = 180.0  # 5 attempts, each with the client's retries of the 500 (~4-8 s)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sandbox(storage_connection_string: str) -> AsyncIterator[Sandbox]:
    async with open_sandbox(ENVIRONMENT, storage_connection_string) as running:
        yield running


async def _cosell(*args: str) -> tuple[int, str]:
    """The CLI as an operator runs it (its own event loop, so in a thread), on the stack's
    settings (the stack put them in the environment); its exit code and stdout."""
    buffer = io.StringIO()

    def run() -> int:
        saved = sys.stdout
        sys.stdout = buffer
        try:
            return main(list(args))
        finally:
            sys.stdout = saved

    code = await asyncio.to_thread(run)
    return code, buffer.getvalue()


async def _poison(sandbox: Sandbox) -> QueueClient:
    queue = QueueClient.from_connection_string(sandbox.stack.connection_string, POISON_QUEUE)
    with contextlib.suppress(Exception):  # ResourceNotFoundError: nothing poisoned yet
        await queue.create_queue()
    return queue


async def test_a_job_failing_on_a_dataverse_500_is_poisoned_with_its_reason(
    sandbox: Sandbox,
) -> None:
    referral_id = await sandbox.microsoft_sends(customerProfile=customer(unique("Poison GmbH")))
    await eventually(lambda: sandbox.opportunity_for(referral_id), "the opportunity")
    poison = await _poison(sandbox)
    async with poison:
        await poison.clear_messages()
        await set_faults(sandbox.stack.dataverse_url, {"error_rate": 1.0, "statuses": [500]})
        try:
            # A partner's edit: the webhook's job reads the referral, then the opportunity (500).
            await sandbox.partner_edits(referral_id, details__dealValue=123456)

            async def poisoned() -> bool:
                return bool(await poison.peek_messages(max_messages=32))

            await eventually(poisoned, "the job in sync-jobs-poison", within_s=POISONED_WITHIN_S)
        finally:
            await set_faults(sandbox.stack.dataverse_url, None)

        code, listed = await _cosell("poison", "list", "--json")
        table_code, table = await _cosell("poison", "list")
        async with httpx.AsyncClient(timeout=10) as client:
            health = (await client.get(sandbox.stack.function_url("health"))).json()

        assert (code, table_code) == (0, 0)
        [message] = [m for m in json.loads(listed)["messages"] if m["id"] == referral_id]
        assert message["reason"].startswith("Dataverse 500 on GET opportunities(…)")
        assert message["failure"]["attempt"] == 5
        assert "Dataverse 500 on GET opportunities(…)" in table
        assert health["status"] == "degraded"
        assert health["last_error"].startswith(
            "a job failed 5 times: Dataverse 500 on GET opportunities(…)"
        )
        table = TableClient.from_connection_string(sandbox.stack.connection_string, HISTORY_TABLE)
        async with HistoryStore(table) as history:
            entries = await history.list_entries(referral_id)
        failed = [e for e in entries if e.failure is not None]
        assert [e.failure.attempt for e in failed if e.failure] == [5, 4, 3, 2, 1]
        await poison.clear_messages()


async def test_referrals_whose_webhooks_were_dropped_show_as_drift_and_degrade_health(
    sandbox: Sandbox,
) -> None:
    pc_url = sandbox.stack.partner_center_url
    await set_faults(pc_url, {"error_rate": 0.0, "drop_webhook_rate": 1.0})
    try:
        dropped = {
            await sandbox.microsoft_sends(customerProfile=customer(unique("Dropped AG")))
            for _ in range(3)
        }
    finally:
        await set_faults(pc_url, None)
    await asyncio.sleep(2)  # were a webhook delivered, its job would have run by now
    assert [await sandbox.opportunity_for(r) for r in dropped] == [None, None, None]

    code, listed = await _cosell("drift", "--grace", "0", "--json")
    async with httpx.AsyncClient(timeout=10) as client:
        health = await client.get(sandbox.stack.function_url("health"))

    assert code == 1
    document = json.loads(listed)
    missing = {
        i["referral_id"] for i in document["items"] if i["kind"] == "referral_without_opportunity"
    }
    assert missing == dropped
    assert health.status_code == 503
    report = health.json()
    assert report["status"] == "degraded"
    assert report["drift"]["counts"]["referral_without_opportunity"] == 3
    assert "3 referrals without an opportunity: see `cosell drift`" in report["problems"]

    # What to do: the reconcile timer (or a backfill) finds them and creates the opportunities.
    async with httpx.AsyncClient(timeout=10) as client:
        ran = await client.post(
            f"{sandbox.stack.host_url}/admin/functions/reconcile_partner_center"
            f"?code={sandbox.stack.function_key}",
            json={"input": ""},
        )
        assert ran.status_code in (200, 202), ran.text
    for referral_id in dropped:
        await eventually(lambda r=referral_id: sandbox.opportunity_for(r), "healed by reconcile")
    _, after = await _cosell("drift", "--grace", "0", "--json")
    left = {i["referral_id"] for i in json.loads(after)["items"]}
    assert not left & dropped
