"""``sync_job``: a message that is not a job goes to ``sync-jobs-poison`` with its reason and the
function returns (no crash loop); engine failures propagate so the host retries (SPEC 3, 7)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import azure.functions as func
import httpx
import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

import function_app
from shared.dataverse import eq
from shared.jobs import SyncJob
from shared.partner_center import PartnerCenterError
from shared.runtime import Runtime, Transports, close_runtime, use_runtime
from shared.state import OpportunityIndex, PendingCreate
from shared.sync.plan import CLOCK_SKEW
from shared.triggers.worker import MAX_ENVELOPE_BYTES
from tests.partner_center.payloads import cosell_deal

from .conftest import App


def message(
    body: str | bytes, *, dequeue_count: int = 1, insertion_time: datetime | None = None
) -> QueueMessage:
    """The queue message as the host hands it over (base64 already decoded)."""
    return QueueMessage(
        id=str(uuid.uuid4()),
        body=body.encode() if isinstance(body, str) else body,
        dequeue_count=dequeue_count,
        insertion_time=insertion_time,
        pop_receipt="receipt",
    )


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ("not json", "body is not JSON"),
        ('["a list"]', "body is a JSON list"),
        (
            '{"kind":"invoice","id":"5d3a2b10-7c4e-4f6a-9b8c-0123456789ab",'
            '"reason":"poll","observed_at":"2026-11-27T10:00:00Z"}',
            "kind",
        ),
        (
            '{"kind":"referral","id":"42","reason":"poll","observed_at":"2026-11-27T10:00:00Z"}',
            "id",
        ),
        (b"\xff\xfe", "not UTF-8"),
    ],
    ids=["not-json", "list", "unknown-kind", "bad-id", "not-utf8"],
)
async def test_malformed_message_goes_to_poison_with_its_reason(
    app: App, body: str | bytes, says: str
) -> None:
    await function_app.sync_job(message(body))  # returns: the host deletes the original

    [poisoned] = await app.poison()
    assert says in poisoned["reason"]
    expected = body if isinstance(body, str) else body.decode("utf-8", errors="replace")
    assert poisoned["body"] == expected
    assert await app.jobs() == []


async def test_oversized_malformed_message_is_cut_to_fit_the_poison_queue(app: App) -> None:
    body = '{"kind": "' + "é" * 60_000 + '"}'

    await function_app.sync_job(message(body))

    [poisoned] = await app.poison()
    assert "body cut to" in poisoned["reason"]
    assert body.startswith(poisoned["body"])
    assert len(json.dumps(poisoned, ensure_ascii=False).encode()) <= MAX_ENVELOPE_BYTES


async def test_referral_job_runs_the_engine_and_creates_the_opportunity(app: App) -> None:
    incoming = cosell_deal(name="Contoso - co-sell from Microsoft")
    del incoming["externalReferenceId"]  # Microsoft's referral: no opportunity exists yet
    async with app.control() as control:
        response = await control.post("/_emulator/microsoft/referrals", json=incoming)
        assert response.status_code == 201
        referral_id = response.json()["id"]
    job = SyncJob.now("referral", referral_id, reason="webhook:referral-created")

    await function_app.sync_job(message(job.to_json()))

    rows = [
        row
        async for row in app.runtime.dataverse().list_rows(
            "opportunities",
            select=["cosell_referralid"],
            filter=eq("cosell_referralid", referral_id),
        )
    ]
    assert len(rows) == 1
    assert await app.poison() == []


async def test_engine_failure_propagates_so_the_host_retries(app: App) -> None:
    # Partner Center refuses our token: not retried by the client (SPEC 7), so it surfaces.
    refusing = httpx.MockTransport(lambda request: httpx.Response(401, json={"error": "no"}))
    use_runtime(
        Runtime.from_settings(app.runtime.settings, transports=Transports(partner_center=refusing))
    )
    job = SyncJob(
        kind="referral",
        id=uuid.uuid4(),
        reason="webhook:referral-updated",
        observed_at=datetime.now(UTC),
    )
    try:
        with pytest.raises(PartnerCenterError):
            await function_app.sync_job(message(job.to_json(), dequeue_count=2))
    finally:
        await close_runtime()
        await app.runtime.close()  # replaced above, so the fixture no longer closes it

    assert await app.poison() == []


async def test_webhook_to_engine_to_poll_makes_no_echo(app: App) -> None:
    """Microsoft's referral → webhook → job → opportunity; the next poll sees the engine's own
    write of that opportunity and enqueues nothing."""
    async with app.control() as control:
        incoming = cosell_deal(name="Contoso - co-sell from Microsoft")
        del incoming["externalReferenceId"]
        referral_id = (await control.post("/_emulator/microsoft/referrals", json=incoming)).json()[
            "id"
        ]
    body = {
        "EventName": "referral-created",
        "ResourceUri": f"https://api.partnercenter.microsoft.com/engagements/v1/referrals/{referral_id}",
        "ResourceName": "referral",
    }
    request = func.HttpRequest(
        method="POST", url="/api/webhooks/partner-center", body=json.dumps(body).encode()
    )
    assert (await function_app.partner_center_webhook(request)).status_code == 202

    # What the host does with the queue message: decode base64, call the function, delete it.
    [queued] = [m async for m in app.jobs_queue.receive_messages()]
    await function_app.sync_job(message(str(queued.content)))
    await app.jobs_queue.delete_message(queued)
    await function_app.poll_dataverse(TimerRequest(past_due=False))

    assert await app.jobs() == []
    assert await app.poison() == []
    link = await app.runtime.links().get_link(referral_id)
    assert link is not None and link.opportunity_id is not None


async def test_a_creation_another_sync_holds_is_queued_again_for_when_its_lease_ends(
    app: App,
) -> None:
    """Waiting for another sync's lease costs no dequeue: the job comes back later by itself
    instead of being retried by the host into the poison queue."""
    dataverse = app.runtime.dataverse()
    account_id, opportunity_id = str(uuid.uuid4()), str(uuid.uuid4())
    await dataverse.create(
        "accounts", {"name": "Fabrikam", "address1_country": "DE"}, row_id=account_id
    )
    await dataverse.create(
        "opportunities",
        {
            "name": "Flagged",
            "cosell_syncwithpartnercenter": True,
            "parentaccountid@odata.bind": f"/accounts({account_id})",
        },
        row_id=opportunity_id,
    )
    await dataverse.create(
        "cosell_solutions",
        {
            "cosell_name": "SOL-1",
            "cosell_solutionidentifier": "SOL-1",
            "cosell_opportunityid@odata.bind": f"/opportunities({opportunity_id})",
        },
    )
    lease = PendingCreate(side="partner_center", owner="another-sync", started_at=datetime.now(UTC))
    await app.runtime.links().save_opportunity_index(
        OpportunityIndex(opportunity_id=opportunity_id, pending_create=lease)
    )
    job = SyncJob.now("opportunity", opportunity_id, reason="poll")

    await function_app.sync_job(message(job.to_json()))  # returns: nothing for the host to retry

    properties = await app.jobs_queue.get_queue_properties()
    assert properties.approximate_message_count == 1  # queued again, invisible until then
    assert await app.jobs() == []  # not visible yet
    assert await app.poison() == []


async def _run_queued_jobs(app: App) -> None:
    """What the host does with each visible queue message: decode, call, delete."""
    async for queued in app.jobs_queue.receive_messages():
        await function_app.sync_job(message(str(queued.content), insertion_time=queued.inserted_on))
        await app.jobs_queue.delete_message(queued)


async def test_a_country_fixed_on_the_account_alone_lets_the_refused_opportunity_sync(
    app: App,
) -> None:
    """Issue 13, class 8: the seller's opportunity was refused (the account has no country);
    the seller fixes only the account. The next poll picks the fix up and the referral is
    created, without anyone saving the opportunity again."""
    dataverse = app.runtime.dataverse()
    account_id, opportunity_id = str(uuid.uuid4()), str(uuid.uuid4())
    await dataverse.create("accounts", {"name": "Fabrikam"}, row_id=account_id)
    await dataverse.create(
        "opportunities",
        {"name": "Flagged", "estimatedvalue": 50000, "estimatedclosedate": "2027-06-30",
         "cosell_syncwithpartnercenter": True,
         "parentaccountid@odata.bind": f"/accounts({account_id})"},
        row_id=opportunity_id,
    )  # fmt: skip
    await dataverse.create(
        "cosell_solutions",
        {"cosell_name": "SOL-1", "cosell_solutionidentifier": "SOL-1",
         "cosell_opportunityid@odata.bind": f"/opportunities({opportunity_id})"},
    )  # fmt: skip
    await function_app.poll_dataverse(TimerRequest(past_due=False))
    await _run_queued_jobs(app)
    refused = await dataverse.get("opportunities", opportunity_id)
    assert refused["cosell_syncstatus"] == 2 and "country" in refused["cosell_audit"]
    await function_app.poll_dataverse(TimerRequest(past_due=False))
    assert await app.jobs() == []  # our own refusal write is no change

    await dataverse.update("accounts", account_id, {"address1_country": "DE"})
    await function_app.poll_dataverse(TimerRequest(past_due=False))
    await _run_queued_jobs(app)

    synced = await dataverse.get("opportunities", opportunity_id)
    assert synced["cosell_referralid"]
    assert synced["cosell_syncstatus"] == 1


async def _requests(app: App) -> int:
    """API requests both emulators answered so far (their control routes left out)."""
    total = 0
    for emulator in (app.pc_app, app.dataverse_app):
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=emulator), base_url="http://127.0.0.1:9"
        ) as http:
            routes = (await http.get("/_emulator/stats")).json()["requests"]
        total += sum(n for route, n in routes.items() if "/_emulator/" not in route)
    return total


async def test_a_poll_job_the_queue_delivers_again_makes_no_remote_call(app: App) -> None:
    """SPEC 11 "duplicate event: 0" for the Dataverse side (issue 13, class 12): Azure Queue
    delivers at least once (reference azure-functions-platform §2.1: a message whose function
    did not finish comes back after its visibility timeout, with the same insertion time).
    ``modifiedon`` has whole seconds, so the job's own second cannot tell a redelivery from a
    seller's later edit; the insertion time the host hands over can: the link's versions were
    read after it, so the redelivery costs nothing."""
    async with app.control() as control:
        incoming = cosell_deal(name="Contoso - co-sell from Microsoft")
        del incoming["externalReferenceId"]
        answer = await control.post("/_emulator/microsoft/referrals", json=incoming)
        referral_id = answer.json()["id"]
    await function_app.sync_job(
        message(SyncJob.now("referral", referral_id, reason="webhook:referral-created").to_json())
    )
    link = await app.runtime.links().get_link(referral_id)
    assert link is not None and link.opportunity_id is not None
    await function_app.poll_dataverse(TimerRequest(past_due=False))  # moves the cursor on
    await app.runtime.dataverse().update(
        "opportunities", link.opportunity_id, {"description": "Kick-off booked"}
    )
    await function_app.poll_dataverse(TimerRequest(past_due=False))
    await asyncio.sleep(CLOCK_SKEW.total_seconds() + 0.1)  # a worker takes it a little later

    # The first delivery: its function "dies" after the sync (the message is not deleted).
    [first] = [m async for m in app.jobs_queue.receive_messages(visibility_timeout=1)]
    await function_app.sync_job(message(str(first.content), insertion_time=first.inserted_on))
    referral = await app.runtime.partner_center().get_referral(referral_id)
    assert referral.details is not None and referral.details.notes == "Kick-off booked"
    await asyncio.sleep(1.2)
    before = await _requests(app)

    [again] = [m async for m in app.jobs_queue.receive_messages()]
    assert (again.id, again.dequeue_count) == (first.id, 2)
    await function_app.sync_job(
        message(str(again.content), dequeue_count=2, insertion_time=again.inserted_on)
    )

    assert await _requests(app) == before


async def test_the_app_takes_its_dataverse_requests_from_the_shared_budget(app: App) -> None:
    """Issue 20: every instance's Dataverse client draws on one ledger in ``synccursors``
    (``shared.state.budget``), so N instances share the application user's window."""
    incoming = cosell_deal(name="Contoso - budget")
    del incoming["externalReferenceId"]
    async with app.control() as control:
        response = await control.post("/_emulator/microsoft/referrals", json=incoming)
        referral_id = response.json()["id"]

    job = SyncJob.now("referral", referral_id, reason="webhook:referral-created")
    await function_app.sync_job(message(job.to_json()))

    table = app.runtime.tables.get_table_client("synccursors")
    ledgers = [e async for e in table.query_entities("PartitionKey eq 'budget'")]
    instances = [e async for e in table.query_entities("PartitionKey ge 'instances-'")]
    assert len(ledgers) == 1 and json.loads(ledgers[0]["Buckets"])  # grants were recorded
    assert instances  # and this instance's heartbeat, for the concurrency share
