"""``cosell sync`` and ``cosell backfill --inline`` through the app's engine (sandbox)."""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

import httpx
import pytest
from azure.data.tables import TableClient
from azure.storage.queue import QueueClient

from shared.jobs import POISON_QUEUE, SYNC_JOBS_QUEUE, SyncJob
from shared.runtime import Runtime
from shared.settings import load_settings
from shared.state import LINKS_TABLE
from shared.triggers.worker import run_sync_job
from tests.cli.conftest import AUTH, Sandbox, incoming_referral

WRITES = ("POST ", "PATCH ", "PUT ", "DELETE ")


def api_writes(sandbox: Sandbox) -> dict[str, int]:
    """Write requests each emulator has served (its control API left out)."""
    counts = {}
    for side, url in (("pc", sandbox.pc_url), ("dataverse", sandbox.dataverse_url)):
        routes = sandbox.stats(url)["requests"]
        api = {r: n for r, n in routes.items() if "_emulator" not in r}
        counts[side] = sum(n for route, n in api.items() if route.startswith(WRITES))
    return counts


def edit_referral(sandbox: Sandbox, referral_id: str, path: str, value: Any) -> None:
    """The partner edits the referral in Partner Center (JSON Patch with its eTag)."""
    url = f"{sandbox.pc_url}/v1.0/engagements/referrals/{referral_id}"
    current = httpx.get(url, headers=AUTH).json()
    response = httpx.patch(
        url,
        headers={**AUTH, "If-Match": current["eTag"]},
        json=[{"op": "replace", "path": path, "value": value}],
    )
    assert response.is_success, response.text


def opportunity(sandbox: Sandbox, opportunity_id: str) -> dict[str, Any]:
    response = httpx.get(
        f"{sandbox.dataverse_url}/api/data/v9.2/opportunities({opportunity_id})", headers=AUTH
    )
    response.raise_for_status()
    row: dict[str, Any] = response.json()
    return row


def test_sync_dry_run_prints_the_plan_and_writes_nothing(cli_env: Sandbox, cosell: Any) -> None:
    referral_id = incoming_referral(cli_env.pc_url)
    before = api_writes(cli_env)

    dry = cosell("sync", "referral", referral_id, "--dry-run", "--json")
    table = cosell("sync", "referral", referral_id, "--dry-run")

    assert dry.code == 0, dry.out + dry.err
    assert dry.json()["dry_run"] is True
    assert api_writes(cli_env) == before
    assert "dry run: nothing written" in table.out
    history = cosell("history", referral_id, "--json").json()
    assert history["entries"] == [] and history["opportunity_id"] is None


def test_sync_dry_run_lists_the_steps_it_would_run(cli_env: Sandbox, cosell: Any) -> None:
    referral_id = incoming_referral(cli_env.pc_url)

    dry = cosell("sync", "referral", referral_id, "--dry-run", "--json").json()
    table = cosell("sync", "referral", referral_id, "--dry-run")

    steps = dry["steps"]
    assert steps[0].startswith(f"link referral {referral_id}")  # written ahead of the creation
    assert steps[1].startswith("create opportunity ")
    assert any("CRM id" in step for step in steps)
    assert "Steps (would run)" in table.out
    assert steps[1] in table.out


def test_sync_writes_what_its_plan_says(cli_env: Sandbox, cosell: Any) -> None:
    referral_id = incoming_referral(cli_env.pc_url)
    created = cosell("sync", "referral", referral_id, "--json")
    assert created.code == 0, created.out + created.err
    opportunity_id = created.json()["opportunity_id"]
    assert created.json()["outcome"] == "created" and opportunity_id
    edit_referral(cli_env, referral_id, "/details/dealValue", 150000)
    before = api_writes(cli_env)

    dry = cosell("sync", "referral", referral_id, "--dry-run", "--json").json()
    assert api_writes(cli_env) == before
    ran = cosell("sync", "referral", referral_id, "--json")
    table = cosell("history", opportunity_id)

    assert ran.code == 0, ran.out + ran.err
    planned = [(c["field"], c["direction"], c["old"], c["new"]) for c in dry["changes"]]
    done = [(c["field"], c["direction"], c["old"], c["new"]) for c in ran.json()["changes"]]
    assert ("deal_value", "pc_to_crm") in {(f, d) for f, d, *_ in planned}
    assert done == planned
    assert ran.json()["outcome"] == "synced"
    assert float(opportunity(cli_env, opportunity_id)["estimatedvalue"]) == 150000
    assert api_writes(cli_env)["dataverse"] > before["dataverse"]
    assert "deal_value" in table.out and "PC → CRM" in table.out


def test_sync_plan_is_a_readable_table(cli_env: Sandbox, cosell: Any) -> None:
    referral_id = incoming_referral(cli_env.pc_url)
    assert cosell("sync", "referral", referral_id).code == 0
    edit_referral(cli_env, referral_id, "/name", "Contoso - Azure migration, phase 2")

    ran = cosell("sync", "referral", referral_id, "--dry-run")

    assert ran.code == 0, ran.out + ran.err
    plan = ran.out[ran.out.index("Plan") :]
    assert "field" in plan and "direction" in plan and "old" in plan and "new" in plan
    assert any(
        line.split()[:1] == ["name"] and "PC → CRM" in line and "phase 2" in line
        for line in plan.splitlines()
    )


def test_sync_of_an_unknown_record_fails_with_a_reason(cli_env: Sandbox, cosell: Any) -> None:
    unknown = "6f1f8a5e-3d4c-4b2a-9e8f-00000000dead"

    for kind in ("referral", "opportunity"):
        ran = cosell("sync", kind, unknown)

        assert ran.code == 1
        assert f"{kind} not found" in ran.err


def test_backfill_inline_links_every_referral(
    cli_env: Sandbox, cosell: Any, storage_connection_string: str
) -> None:
    referrals = [incoming_referral(cli_env.pc_url, name=f"Lead {n}") for n in range(8)]

    ran = cosell("backfill", "--direction", "pc-to-crm", "--inline", "--json")
    again = cosell("backfill", "--direction", "pc-to-crm", "--inline")

    assert ran.code == 0, ran.out + ran.err
    assert ran.json()["found"] == {"referrals": 8}
    assert ran.json()["outcomes"] == {"created": 8}
    with TableClient.from_connection_string(storage_connection_string, LINKS_TABLE) as links:
        for referral_id in referrals:
            assert links.get_entity("ref", referral_id).get("OpportunityId"), referral_id
    assert again.code == 0 and "outcome no_change" in again.out
    assert "sync [" in ran.err  # the progress bar


def test_a_replayed_poison_job_then_syncs(
    cli_env: Sandbox,
    cosell: Any,
    queues: dict[str, QueueClient],
    storage_connection_string: str,
) -> None:
    referral_id = incoming_referral(cli_env.pc_url)
    job = SyncJob.now("referral", referral_id, reason="webhook:referral-created")
    # As the host leaves it after the last failed attempt: the base64 body, nothing else.
    queues[POISON_QUEUE].send_message(base64.b64encode(job.to_json().encode()).decode())

    replayed = cosell("poison", "replay", referral_id)
    [message] = queues[SYNC_JOBS_QUEUE].receive_messages(max_messages=1)

    async def work(body: str) -> None:  # what the sync_job function does with the message
        runtime = Runtime.from_settings(load_settings())
        try:
            await run_sync_job(body, message_id=message.id, runtime=runtime)
        finally:
            await runtime.close()

    asyncio.run(work(base64.b64decode(message.content).decode()))

    assert replayed.code == 0, replayed.out + replayed.err
    assert queues[POISON_QUEUE].peek_messages() == []
    with TableClient.from_connection_string(storage_connection_string, LINKS_TABLE) as links:
        assert links.get_entity("ref", referral_id).get("OpportunityId")


@pytest.mark.skipif(
    not os.environ.get("COSELL_SLOW_TESTS"), reason="slow (1-2 min); set COSELL_SLOW_TESTS=1"
)
def test_backfill_inline_of_500_referrals_links_them_all(
    cli_env: Sandbox, cosell: Any, storage_connection_string: str
) -> None:
    async def seed() -> list[str]:
        limit = asyncio.Semaphore(16)

        async def one(n: int) -> str:
            async with limit:
                return await asyncio.to_thread(incoming_referral, cli_env.pc_url, name=f"L{n}")

        return list(await asyncio.gather(*(one(n) for n in range(500))))

    referrals = asyncio.run(seed())

    ran = cosell("backfill", "--direction", "pc-to-crm", "--inline", "--concurrency", "16")

    assert ran.code == 0, ran.err[-2000:]
    summary = " ".join(ran.out.split())
    assert "found referrals 500" in summary and "outcome created 500" in summary
    with TableClient.from_connection_string(storage_connection_string, LINKS_TABLE) as links:
        linked = [links.get_entity("ref", r).get("OpportunityId") for r in referrals]
    assert all(linked) and len(set(linked)) == 500
