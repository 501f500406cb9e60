"""``cosell drift``, the drift counts in ``cosell status``, ``cosell poison list`` with the
recorded failure of a job the host poisoned, and ``cosell backfill --dry-run`` — against the
sandbox (both emulators over HTTP, Azurite)."""

from __future__ import annotations

import asyncio
import base64
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from azure.data.tables.aio import TableClient
from azure.storage.queue import QueueClient

from shared.jobs import POISON_QUEUE, SYNC_JOBS_QUEUE, SyncJob
from shared.state import HISTORY_TABLE, FailureRecord, HistoryEntry, HistoryStore
from tests.cli.conftest import AUTH, Sandbox, incoming_referral, jobs_in


def _flagged_opportunity(dataverse_url: str, name: str) -> str:
    row_id = str(uuid.uuid4())
    response = httpx.post(
        f"{dataverse_url}/api/data/v9.2/opportunities",
        headers=AUTH,
        json={"opportunityid": row_id, "name": name, "cosell_syncwithpartnercenter": True},
    )
    assert response.status_code == 204, response.text
    return row_id


def _opportunities(dataverse_url: str) -> list[dict[str, Any]]:
    response = httpx.get(f"{dataverse_url}/api/data/v9.2/opportunities", headers=AUTH)
    response.raise_for_status()
    rows: list[dict[str, Any]] = response.json()["value"]
    return rows


def test_drift_lists_referrals_without_opportunities_and_status_is_degraded(
    cli_env: Sandbox, cosell: Any, queues: dict[str, QueueClient]
) -> None:
    # Nothing syncs in this sandbox: as if every webhook had been dropped.
    missing = {incoming_referral(cli_env.pc_url, name=f"Dropped {n}") for n in range(3)}

    listed = cosell("drift", "--grace", "0", "--json")
    table = cosell("drift", "--grace", "0")
    status = cosell("status", "--json")
    status_table = cosell("status")

    assert listed.code == 1, listed.err
    document = listed.json()
    assert document["counts"]["referral_without_opportunity"] == 3
    assert {
        i["referral_id"] for i in document["items"] if i["kind"] == "referral_without_opportunity"
    } == missing
    assert all(i["detail"] == "New/Pending" for i in document["items"])
    assert "referrals without an opportunity (3)" in table.out
    assert "what to do: `cosell sync referral ID`" in table.out
    assert status.code == 1
    assert status.json()["status"] == "degraded"
    assert status.json()["drift"]["counts"]["referral_without_opportunity"] == 3
    assert "3 referrals without an opportunity: see `cosell drift`" in status.json()["problems"]
    assert "Out of sync" in status_table.out


def test_drift_lists_a_flagged_opportunity_without_a_referral(
    cli_env: Sandbox, cosell: Any, queues: dict[str, QueueClient]
) -> None:
    opportunity_id = _flagged_opportunity(cli_env.dataverse_url, "Seller's own deal")

    document = cosell("drift", "--json").json()

    [item] = document["items"]
    assert (item["kind"], item["opportunity_id"], item["name"]) == (
        "opportunity_without_referral",
        opportunity_id,
        "Seller's own deal",
    )
    assert item["in_flight"] is True  # just created: younger than the grace


def test_drift_shows_a_validation_failure_with_the_audit_reasons(
    cli_env: Sandbox, cosell: Any, queues: dict[str, QueueClient]
) -> None:
    opportunity_id = _flagged_opportunity(cli_env.dataverse_url, "No country yet")
    refused = cosell("sync", "opportunity", opportunity_id)
    assert refused.code == 1  # refused by validation (SPEC 4.6)

    ran = cosell("drift", "--grace", "0", "--json")
    table = cosell("drift", "--grace", "0", "--kind", "validation_failed")

    assert ran.code == 0  # a seller's fix, not an operator's problem
    [item] = ran.json()["items"]
    assert (item["kind"], item["opportunity_id"]) == ("validation_failed", opportunity_id)
    assert "solution" in item["detail"].lower()
    assert "opportunities in sync status Error (1)" in table.out
    assert "No country yet" in table.out


def _seed_failure(connection: str, job: SyncJob, failure: FailureRecord) -> None:
    async def seed() -> None:
        async with HistoryStore(TableClient.from_connection_string(connection, HISTORY_TABLE)) as h:
            await h.create_table()
            await h.add_entry(
                HistoryEntry(
                    key=str(job.id),
                    at=datetime.now(UTC),
                    outcome="error",
                    reason=str(job.reason),
                    errors=[failure.summary],
                    failure=failure,
                )
            )

    asyncio.run(seed())


def test_poison_list_shows_the_failure_recorded_for_a_job_the_host_poisoned(
    cli_env: Sandbox, cosell: Any, queues: dict[str, QueueClient], storage_connection_string: str
) -> None:
    job = SyncJob.now("opportunity", str(uuid.uuid4()), reason="webhook:dataverse-update")
    failure = FailureRecord(
        service="Dataverse",
        error="ServiceError",
        status=500,
        code="0x80040216",
        method="GET",
        path="opportunities(…)",
        attempt=5,
    )
    _seed_failure(storage_connection_string, job, failure)
    # The host's copy of the job after its last retry: no reason in it.
    queues[POISON_QUEUE].send_message(base64.b64encode(job.to_json().encode()).decode())

    listed = cosell("poison", "list", "--json").json()
    table = cosell("poison", "list")

    [message] = listed["messages"]
    assert message["reason"] == "Dataverse 500 on GET opportunities(…) (code 0x80040216)"
    assert message["failure"]["attempt"] == 5
    assert "Dataverse 500 on GET opportunities(…)" in table.out


def test_backfill_dry_run_lists_what_it_would_create_and_writes_nothing(
    cli_env: Sandbox, cosell: Any, queues: dict[str, QueueClient]
) -> None:
    referrals = {
        incoming_referral(cli_env.pc_url, name=f"Not yet in the CRM {n}") for n in range(2)
    }
    refused = _flagged_opportunity(cli_env.dataverse_url, "Flagged, but no solution")

    ran = cosell("backfill", "--dry-run", "--json")
    table = cosell("backfill", "--dry-run")

    assert ran.code == 0, ran.err
    would = {(r["action"], r["kind"], r["id"]) for r in ran.json()["would"]}
    assert would == {("create", "referral", r) for r in referrals} | {
        ("refuse", "opportunity", refused)
    }
    assert {r["what"] for r in ran.json()["would"] if r["action"] == "create"} == {
        "create opportunity"
    }
    assert "would create" in table.out and "create opportunity" in table.out
    assert "nothing written" in table.out
    assert jobs_in(queues[SYNC_JOBS_QUEUE]) == []
    assert [o["opportunityid"] for o in _opportunities(cli_env.dataverse_url)] == [refused]
