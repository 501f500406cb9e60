"""Creation never duplicates anything (SPEC 4.5), whatever runs concurrently or crashes."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from azure.core.exceptions import ServiceRequestError
from azure.data.tables.aio import TableClient

from shared.jobs import SyncJob
from shared.partner_center import PartnerCenterError
from shared.retry import RetryPolicy
from shared.state import LinkStore, OpportunityIndex, PendingCreate
from shared.sync import SyncEngine
from shared.sync.plan import CREATE_LEASE, plan
from shared.sync.sides import CREATE_REFERRAL_DEADLINE_S
from shared.sync.steps import RecordCreateIntent
from tests.sync.conftest import World, sandbox_settings
from tests.sync.faults import FailingTableTransport


async def test_fifty_concurrent_jobs_for_one_new_referral_create_one_of_each(
    world: World,
) -> None:
    referral_id = await world.incoming()
    jobs = [SyncJob.now("referral", referral_id, reason="webhook:referral-created")] * 50

    results = await asyncio.gather(*(world.engine.sync(job) for job in jobs))

    # Whichever run linked the pair first, every run ends with the same single pair.
    assert {r.outcome for r in results} <= {"created", "synced", "no_change"}
    assert len({r.opportunity_id for r in results}) == 1
    assert await world.count("accounts") == 1
    assert await world.count("contacts") == 1
    assert await world.count("opportunities") == 1
    assert await world.count("cosell_solutions") == 1
    link = await world.links.get_link(referral_id)
    assert (link is not None and link.opportunity_id == results[0].opportunity_id) or any(
        r.opportunity_id == link.opportunity_id for r in results if link
    )


async def test_two_referrals_for_one_new_customer_share_one_account(world: World) -> None:
    first, second = await world.incoming(), await world.incoming(name="Contoso - second deal")

    await asyncio.gather(world.sync_referral(first), world.sync_referral(second))

    assert await world.count("accounts") == 1
    assert await world.count("opportunities") == 2


async def test_webhook_jobs_for_one_new_customer_each_get_their_opportunity(
    world: World,
) -> None:
    """Concurrent creations race for the customer's derived account id; the losers restart.
    A loser's write-ahead link already held the referral's ``updatedDateTime``, so its
    restart took the webhook job as covered and stopped: that referral never got an
    opportunity (found by the e2e mapping story's 50 concurrent creations)."""
    referrals = [await world.incoming(name=f"Contoso - deal {n}") for n in range(10)]
    jobs = []
    for referral_id in referrals:
        referral = await world.referral(referral_id)
        assert referral.updated_date_time is not None
        jobs.append(SyncJob(kind="referral", id=referral_id, reason="webhook:referral-created",
                            observed_at=referral.updated_date_time))  # type: ignore[arg-type]  # fmt: skip

    await asyncio.gather(*(world.engine.sync(job) for job in jobs))

    assert await world.count("accounts") == 1
    assert await world.count("opportunities") == len(referrals)


async def test_crash_after_referral_post_before_link_then_retry_makes_one_referral(
    world: World, storage_connection_string: str, unique_name: str
) -> None:
    opportunity_id = await world.flagged_opportunity()
    # The link table drops the first insert of a `ref` row: the POST to Partner Center has
    # happened, the link is not saved, and the job fails as if the worker died.
    crashing = LinkStore(
        TableClient.from_connection_string(
            storage_connection_string,
            unique_name + "l",
            transport=FailingTableTransport('"PartitionKey": "ref"'),
            retry_total=0,  # the SDK's own retry would hide the crash
        )
    )
    engine = SyncEngine(
        pc=world.pc,
        dataverse=world.dataverse,
        links=crashing,
        history=world.history,
        settings=sandbox_settings(),
    )
    job = SyncJob.now("opportunity", opportunity_id, reason="poll")
    with pytest.raises(ServiceRequestError):
        await engine.sync(job)

    retried = await engine.sync(job)  # the host's retry of the same message
    await crashing.close()

    assert retried.outcome in ("created", "synced", "no_change")
    referrals = [
        r
        async for r in world.pc.list_referrals(filter=f"externalReferenceId eq '{opportunity_id}'")
    ]
    assert len(referrals) == 1
    opportunity = await world.opportunity(opportunity_id)
    assert opportunity["cosell_referralid"] == referrals[0].id


@pytest.mark.parametrize("runs", [2, 3, 5])
async def test_concurrent_jobs_for_a_flagged_opportunity_under_throttling_make_one_referral(
    world: World, runs: int
) -> None:
    """Issue 13, class 1: with Partner Center answering 503 (Retry-After) to half the requests,
    a run that found another's intent took it for a crash's leftover and posted again while the
    first run was still waiting to retry its POST."""
    opportunity_id = await world.flagged_opportunity()
    faults = {"error_rate": 0.5, "statuses": [503], "retry_after_s": 0.2, "latency_ms": 20}
    assert (await world.pc_http.put("/_emulator/faults", json=faults)).status_code < 300
    # A client that really waits out Retry-After, as in Azure (the world's never sleeps).
    patient, engine = world.engine_with_partner_center(
        retry_policy=RetryPolicy(attempts=8, base_delay=0.05, jitter=0.0)
    )
    job = SyncJob.now("opportunity", opportunity_id, reason="poll")

    async with patient:
        results = await asyncio.gather(
            *(engine.sync(job) for _ in range(runs)), return_exceptions=True
        )
    await world.pc_http.delete("/_emulator/faults")

    referrals = [
        r
        async for r in world.pc.list_referrals(filter=f"externalReferenceId eq '{opportunity_id}'")
    ]
    assert len(referrals) == 1, results
    outcomes = [r.outcome for r in results if not isinstance(r, BaseException)]
    assert outcomes.count("created") == 1
    assert set(outcomes) <= {"created", "deferred", "synced", "no_change"}


class FailsFirstPost(httpx.AsyncBaseTransport):
    """Partner Center's transport; the first referral POST gets a 500 (not retried: whether
    the referral was made is unknown)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner, self.failed = inner, False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and not self.failed:
            self.failed = True
            return httpx.Response(500, json={"error": {"code": "generalException"}})
        return await self.inner.handle_async_request(request)


async def test_after_a_failed_post_the_retry_waits_for_the_lease_then_posts_once(
    world: World,
) -> None:
    """A POST that failed (a 500, not retried: whether the referral was made is unknown) leaves
    its lease; the job's retry, a new sync, waits for it, then takes it over, looks the referral
    up and posts once."""
    opportunity_id = await world.flagged_opportunity()
    pc, engine = world.engine_with_partner_center(
        FailsFirstPost, retry_policy=RetryPolicy(attempts=2, base_delay=0.0, jitter=0.0)
    )
    job = SyncJob.now("opportunity", opportunity_id, reason="poll")
    async with pc:
        with pytest.raises(PartnerCenterError):
            await engine.sync(job)
        waiting = await engine.sync(job)
        index = await world.links.get_opportunity_index(opportunity_id)
        assert index is not None and index.pending_create is not None
        expired = index.pending_create.started_at - CREATE_LEASE
        await world.links.save_opportunity_index(
            index.model_copy(
                update={
                    "pending_create": index.pending_create.model_copy(
                        update={"started_at": expired}
                    )
                }
            )
        )
        retried = await engine.sync(job)

    assert waiting.outcome == "deferred" and waiting.retry_after is not None
    assert retried.outcome == "created"
    referrals = [
        r
        async for r in world.pc.list_referrals(filter=f"externalReferenceId eq '{opportunity_id}'")
    ]
    assert len(referrals) == 1


async def _post_count(world: World, opportunity_id: str) -> int:
    return len(
        [
            r
            async for r in world.pc.list_referrals(
                filter=f"externalReferenceId eq '{opportunity_id}'"
            )
        ]
    )


async def test_the_lease_is_timed_from_its_write_not_from_reads_slowed_by_throttling(
    world: World,
) -> None:
    """The lease used to start at the snapshot's time: reads that waited out 429s before the
    intent ate into it, the POST's 90 s then ran past its end, and another sync could take it
    over and post a second referral (a seller opportunity with two referrals, make chaos at
    1,000). Here the reads "took" 100 s; the lease is stamped when it is written."""
    opportunity_id = await world.flagged_opportunity()
    leases_at_post: list[datetime] = []

    class SeesTheLease(httpx.AsyncBaseTransport):
        def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
            self.inner = inner

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.method == "POST":
                index = await world.links.get_opportunity_index(opportunity_id)
                assert index is not None and index.pending_create is not None
                leases_at_post.append(index.pending_create.started_at)
            return await self.inner.handle_async_request(request)

    pc, engine = world.engine_with_partner_center(SeesTheLease)
    job = SyncJob.now("opportunity", opportunity_id, reason="poll")
    async with pc:
        snapshot, stored = await engine.reader.read(job, run_id="slow-reader")
        slow = snapshot.but(now=snapshot.now - timedelta(seconds=100))
        await engine.applier.apply(plan(slow, engine.policy), slow, stored)

    [lease] = leases_at_post
    assert datetime.now(UTC) - lease < timedelta(seconds=30)  # not 100 s old at the POST
    assert await _post_count(world, opportunity_id) == 1


async def test_a_sync_whose_own_lease_is_nearly_over_does_not_post(world: World) -> None:
    """Its POST could still be landing when the lease expires and another sync takes over:
    it stops with a clear error instead, and the job's retry looks the referral up first."""
    opportunity_id = await world.flagged_opportunity()
    engine = world.engine
    taken = datetime.now(UTC) - timedelta(seconds=CREATE_REFERRAL_DEADLINE_S + 5)
    lease = PendingCreate(side="partner_center", owner="this-sync", started_at=taken)
    await world.links.save_opportunity_index(
        OpportunityIndex(opportunity_id=opportunity_id, pending_create=lease)
    )
    job = SyncJob.now("opportunity", opportunity_id, reason="poll")
    snapshot, stored = await engine.reader.read(job, run_id="this-sync")
    planned = plan(snapshot, engine.policy)
    assert RecordCreateIntent not in [type(step) for step in planned.steps]  # it holds it

    with pytest.raises(TimeoutError, match="too late to POST"):
        await engine.applier.apply(planned, snapshot, stored)

    assert await _post_count(world, opportunity_id) == 0
