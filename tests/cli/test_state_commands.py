"""schema check/apply, poison list/replay, history and backfill (queue mode) against the sandbox."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from azure.data.tables.aio import TableClient
from azure.storage.queue import QueueClient

from shared.jobs import POISON_QUEUE, SYNC_JOBS_QUEUE, SyncJob
from shared.state import (
    HISTORY_TABLE,
    LINKS_TABLE,
    FieldChange,
    HistoryEntry,
    HistoryStore,
    LinkStore,
    SyncLink,
)
from tests.cli.conftest import AUTH, BareDataverse, Sandbox, incoming_referral, jobs_in

# -- schema -------------------------------------------------------------------------------------


def test_schema_check_passes_on_the_emulator_default_schema(cli_env: Sandbox, cosell: Any) -> None:
    ran = cosell("schema", "check")

    assert ran.code == 0, ran.out
    assert "everything the sync needs is there" in ran.out


def test_schema_apply_creates_what_is_missing_once(
    bare_env: BareDataverse, cosell: Any, monkeypatch: Any
) -> None:
    # A bare org with another publisher prefix (the views and roles carry one name per org).
    monkeypatch.setenv("CRM_COLUMN_PREFIX", "acme_")

    check = cosell("schema", "check", "--json")
    missing = {item["name"] for item in check.json()["items"] if item["status"] == "missing"}
    first = cosell("schema", "apply", "--yes")
    second = cosell("schema", "apply", "--yes", "--json")
    after = cosell("schema", "check")

    assert check.code == 1
    assert missing >= {
        "acme_helpneeded",
        "acme_visibletomicrosoft",
        "acme_referralid",
        "acme_referrallink",
        "acme_microsoftcrmid",
        "acme_referralprogram",
        "acme_syncwithpartnercenter",
        "acme_syncstatus",
        "acme_audit",
        "acme_solution",
        "acme_solutiondetail",
        "acme_solutionidentifier",
        "acme_type",
        "acme_publishername",
        "acme_opportunityid",
    }
    assert first.code == 0, first.out + first.err
    assert first.out.index("Will create") < first.out.index("Created")
    assert "+ table acme_solution" in first.out
    assert second.code == 0 and second.json()["created"] == []
    assert second.json()["planned"] == []
    assert after.code == 0, after.out


def test_applied_schema_takes_rows_with_the_lookup(
    cli_env: Sandbox, cosell: Any, monkeypatch: Any
) -> None:
    monkeypatch.setenv("CRM_COLUMN_PREFIX", "acme_")
    assert cosell("schema", "apply", "--yes").code == 0
    api = f"{cli_env.dataverse_url}/api/data/v9.2"
    opportunity = str(uuid.uuid4())
    created = httpx.post(
        f"{api}/opportunities",
        headers=AUTH,
        json={"opportunityid": opportunity, "name": "Deal", "acme_syncwithpartnercenter": True},
    )
    assert created.status_code == 204, created.text

    solution = httpx.post(
        f"{api}/acme_solutions",
        headers=AUTH,
        json={
            "acme_name": "SOL-1",
            "acme_solutionidentifier": "SOL-1",
            "acme_opportunityid@odata.bind": f"/opportunities({opportunity})",
        },
    )

    assert solution.status_code == 204, solution.text


# -- poison -------------------------------------------------------------------------------------


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_poison_list_shows_reasons_and_replay_moves_jobs_back(
    cli_env: Sandbox, cosell: Any, queues: dict[str, QueueClient]
) -> None:
    poison, jobs = queues[POISON_QUEUE], queues[SYNC_JOBS_QUEUE]
    plain = SyncJob.now("referral", str(uuid.uuid4()), reason="webhook:referral-updated")
    wrapped = SyncJob.now("opportunity", str(uuid.uuid4()), reason="poll")
    poison.send_message(_b64(plain.to_json()))  # as the host moves it after the last retry
    poison.send_message(_b64(json.dumps({"reason": "engine gave up", "body": wrapped.to_json()})))
    poison.send_message(
        _b64(json.dumps({"reason": "malformed sync job: body is not JSON", "body": "{oops"}))
    )

    listed = cosell("poison", "list", "--json").json()
    table = cosell("poison", "list")

    assert listed["depth"] == 3
    reasons = {m["id"]: m["reason"] for m in listed["messages"]}
    assert reasons[str(plain.id)].startswith("failed on every retry")
    assert reasons[str(wrapped.id)] == "engine gave up"
    assert reasons[None] == "malformed sync job: body is not JSON"
    assert str(plain.id) in table.out and "engine gave up" in table.out

    one = cosell("poison", "replay", str(plain.id))

    assert one.code == 0, one.out + one.err
    assert jobs_in(jobs) == [json.loads(plain.to_json())]
    assert poison.get_queue_properties().approximate_message_count == 2

    rest = cosell("poison", "replay", "--all", "--json")

    assert rest.code == 1  # the malformed one cannot be replayed and stays
    assert [r["id"] for r in rest.json()["replayed"]] == [str(wrapped.id)]
    assert len(rest.json()["skipped"]) == 1
    assert [j["id"] for j in jobs_in(jobs)] == [str(plain.id), str(wrapped.id)]
    left = poison.peek_messages(max_messages=32)  # visible again at once
    assert len(left) == 1 and "oops" in base64.b64decode(left[0].content).decode()


def test_poison_replay_of_an_unknown_id_fails(
    cli_env: Sandbox, cosell: Any, queues: dict[str, QueueClient]
) -> None:
    ran = cosell("poison", "replay", str(uuid.uuid4()))

    assert ran.code == 1 and "Not found" in ran.out
    assert cosell("poison", "replay").code == 2


# -- history ------------------------------------------------------------------------------------


def _seed_history(connection: str, referral_id: str, opportunity_id: str) -> None:
    async def seed() -> None:
        async with (
            LinkStore(TableClient.from_connection_string(connection, LINKS_TABLE)) as links,
            HistoryStore(TableClient.from_connection_string(connection, HISTORY_TABLE)) as history,
        ):
            await links.create_table()
            await history.create_table()
            await links.create_link(
                SyncLink(referral_id=referral_id, opportunity_id=opportunity_id)
            )
            start = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
            # Before the referral existed, the opportunity's own id keyed its history.
            await history.add_entry(
                HistoryEntry(key=opportunity_id, at=start, outcome="created", reason="poll")
            )
            for hours, value in ((1, 100), (3, 300), (2, 200)):
                await history.add_entry(
                    HistoryEntry(
                        key=referral_id,
                        at=start + timedelta(hours=hours),
                        outcome="synced",
                        reason="webhook:referral-updated",
                        direction="pc_to_crm",
                        changes=[
                            FieldChange(field="deal_value", direction="pc_to_crm", old=0, new=value)
                        ],
                    )
                )

    asyncio.run(seed())


def test_history_of_an_opportunity_lists_its_deal_newest_first(
    cli_env: Sandbox, cosell: Any, storage_connection_string: str
) -> None:
    referral_id, opportunity_id = str(uuid.uuid4()), str(uuid.uuid4())
    _seed_history(storage_connection_string, referral_id, opportunity_id)

    by_opportunity = cosell("history", opportunity_id, "--json").json()
    by_referral = cosell("history", referral_id.upper(), "--json").json()
    table = cosell("history", opportunity_id)

    assert by_opportunity["referral_id"] == referral_id
    times = [e["at"] for e in by_opportunity["entries"]]
    assert times == sorted(times, reverse=True) and len(times) == 4
    assert [e["outcome"] for e in by_opportunity["entries"]] == [
        "synced",
        "synced",
        "synced",
        "created",
    ]
    assert by_referral["entries"] == by_opportunity["entries"]
    rows = [line for line in table.out.splitlines() if "deal_value" in line]
    assert ["300" in rows[0], "200" in rows[1], "100" in rows[2]] == [True, True, True]
    assert "PC → CRM" in rows[0]


# -- backfill (enqueue) -------------------------------------------------------------------------


def _opportunity(dataverse_url: str, *, flagged: bool) -> str:
    row_id = str(uuid.uuid4())
    response = httpx.post(
        f"{dataverse_url}/api/data/v9.2/opportunities",
        headers=AUTH,
        json={"opportunityid": row_id, "name": "Deal", "cosell_syncwithpartnercenter": flagged},
    )
    assert response.status_code == 204, response.text
    return row_id


def test_backfill_enqueues_every_referral_and_flagged_opportunity(
    cli_env: Sandbox, cosell: Any, queues: dict[str, QueueClient]
) -> None:
    referrals = {incoming_referral(cli_env.pc_url, name=f"Lead {n}") for n in range(3)}
    flagged = {_opportunity(cli_env.dataverse_url, flagged=True) for _ in range(2)}
    _opportunity(cli_env.dataverse_url, flagged=False)

    ran = cosell("backfill", "--json")

    assert ran.code == 0, ran.err
    assert ran.json()["found"] == {"referrals": 3, "opportunities": 2}
    assert ran.json()["enqueued"] == 5
    jobs = jobs_in(queues[SYNC_JOBS_QUEUE])
    assert {(j["kind"], j["id"]) for j in jobs} == {("referral", r) for r in referrals} | {
        ("opportunity", o) for o in flagged
    }
    assert {j["reason"] for j in jobs} == {"backfill"}
    assert "enqueue [" in ran.err  # the progress bar


def test_backfill_since_and_direction_narrow_the_jobs(
    cli_env: Sandbox, cosell: Any, queues: dict[str, QueueClient]
) -> None:
    incoming_referral(cli_env.pc_url, name="Old lead")
    _opportunity(cli_env.dataverse_url, flagged=True)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()

    later = cosell("backfill", "--since", tomorrow, "--json")
    crm_only = cosell("backfill", "--direction", "crm-to-pc")

    assert later.json()["found"] == {"referrals": 0, "opportunities": 0}
    assert crm_only.code == 0
    assert "found opportunities         1" in crm_only.out
    assert "found referrals" not in crm_only.out
    assert cosell("backfill", "--since", "yesterday").code == 2


def test_poison_delete_removes_the_malformed_and_by_id_only_when_confirmed(
    cli_env: Sandbox, cosell: Any, queues: dict[str, QueueClient]
) -> None:
    """Issue 18: one malformed message keeps health at 503 until it is gone; ``poison delete``
    removes it for good, by id, ``--malformed`` or ``--all``, and never without ``--yes`` when
    nobody is at a terminal to say yes."""
    poison = queues[POISON_QUEUE]
    kept = SyncJob.now("referral", str(uuid.uuid4()), reason="webhook:referral-updated")
    dropped = SyncJob.now("opportunity", str(uuid.uuid4()), reason="poll")
    poison.send_message(_b64(kept.to_json()))
    poison.send_message(_b64(dropped.to_json()))
    poison.send_message(_b64(json.dumps({"reason": "malformed sync job", "body": "{oops"})))

    unconfirmed = cosell("poison", "delete", "--malformed")  # tests have no terminal
    assert unconfirmed.code == 2 and "not confirmed" in unconfirmed.err
    assert poison.get_queue_properties().approximate_message_count == 3

    malformed = cosell("poison", "delete", "--malformed", "--yes", "--json")
    by_id = cosell("poison", "delete", str(dropped.id), "--yes", "--json")
    unknown = cosell("poison", "delete", str(uuid.uuid4()), "--yes")

    assert malformed.code == 0 and [d["id"] for d in malformed.json()["deleted"]] == [None]
    assert by_id.code == 0 and [d["id"] for d in by_id.json()["deleted"]] == [str(dropped.id)]
    assert unknown.code == 1 and "Not found" in unknown.out
    left = [json.loads(base64.b64decode(m.content)) for m in poison.peek_messages(32)]
    assert [m["id"] for m in left] == [str(kept.id)]  # the others are untouched and visible
    assert cosell("poison", "delete", "--all", "--malformed", "--yes").code == 2
