"""A sync stopped between its remote writes and its link save loses no later edit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
from azure.core.exceptions import ServiceRequestError
from azure.data.tables.aio import TableClient

from shared.dataverse import ConnectionFailed, DataverseClient
from shared.jobs import SyncJob
from shared.retry import RetryPolicy
from shared.state import LinkStore
from shared.sync import SyncEngine
from shared.sync.mapping import record_id
from tests.sync.conftest import World, _no_sleep, sandbox_settings
from tests.sync.faults import FailingTableTransport
from tests.sync.test_engine_flows import linked_pair, replace


async def test_an_edit_after_a_sync_that_died_before_saving_its_link_wins_without_conflict(
    world: World, storage_connection_string: str, unique_name: str
) -> None:
    referral_id, opportunity_id = await linked_pair(world)
    # The link table lets the sync record what it is about to write, then drops its final
    # save: the opportunity has our write, the link still has the old base.
    crashing = LinkStore(
        TableClient.from_connection_string(
            storage_connection_string,
            unique_name + "l",
            transport=FailingTableTransport('"PartitionKey": "ref"', method="PUT", after=1),
            retry_total=0,
        )
    )
    settings = sandbox_settings(CONFLICT_POLICY="crm")  # a conflict would keep CRM's value
    dying = SyncEngine(pc=world.pc, dataverse=world.dataverse, links=crashing,
                       history=world.history, settings=settings)  # fmt: skip
    await world.edit_referral(referral_id, replace("/details/dealValue", 250000))
    with pytest.raises(ServiceRequestError):
        await dying.sync(SyncJob.now("referral", referral_id, reason="webhook:referral-updated"))
    await crashing.close()
    assert (await world.opportunity(opportunity_id))["estimatedvalue"] == 250000

    await world.edit_referral(referral_id, replace("/details/dealValue", 300000))
    engine = SyncEngine(pc=world.pc, dataverse=world.dataverse, links=world.links,
                        history=world.history, settings=settings)  # fmt: skip
    result = await engine.sync(
        SyncJob.now("referral", referral_id, reason="webhook:referral-updated")
    )

    assert result.plan is not None and result.plan.conflicts == ()
    assert (await world.opportunity(opportunity_id))["estimatedvalue"] == 300000
    referral = await world.referral(referral_id)
    assert referral.details is not None and referral.details.deal_value == 300000
    link = await world.links.get_link(referral_id)
    assert link is not None and link.base is not None and link.base.get("in_flight") is None


async def test_a_sync_that_died_before_any_remote_write_is_simply_done_again(
    world: World, storage_connection_string: str, unique_name: str
) -> None:
    referral_id, opportunity_id = await linked_pair(world)
    await world.edit_opportunity(opportunity_id, description="Kick-off booked")
    # The first write of the sync (its record of what it will write) never arrives.
    crashing = LinkStore(
        TableClient.from_connection_string(
            storage_connection_string,
            unique_name + "l",
            transport=FailingTableTransport('"PartitionKey": "ref"', method="PUT"),
            retry_total=0,
        )
    )
    dying = SyncEngine(pc=world.pc, dataverse=world.dataverse, links=crashing,
                       history=world.history, settings=sandbox_settings())  # fmt: skip
    with pytest.raises(ServiceRequestError):
        await dying.sync(SyncJob.now("opportunity", opportunity_id, reason="poll"))
    await crashing.close()
    referral = await world.referral(referral_id)
    assert referral.details is not None and referral.details.notes != "Kick-off booked"

    result = await world.sync_opportunity(opportunity_id, reason="poll")

    assert result.outcome == "synced"
    referral = await world.referral(referral_id)
    assert referral.details is not None and referral.details.notes == "Kick-off booked"


class EditsCrmBeforeThePatch(httpx.AsyncBaseTransport):
    """Partner Center's transport; just before the sync's referral PATCH goes out, a seller
    edits the opportunity (``edit`` runs once)."""

    def __init__(self, inner: httpx.AsyncBaseTransport, edit: Callable[[], Awaitable[object]]):
        self.inner, self.edit, self.done = inner, edit, False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "PATCH" and not self.done:
            self.done = True
            await self.edit()
        return await self.inner.handle_async_request(request)


async def test_a_crm_edit_made_while_the_sync_writes_partner_center_is_not_lost(
    world: World,
) -> None:
    """The sync read both sides, sent the CRM notes to Partner Center, then found the
    opportunity changed (412) and started again. Partner Center's record is now the newer one
    (our own PATCH), so as a conflict the record-level ``newest`` policy would keep the deal
    value the sync read in Partner Center and lose the seller's later one (chaos, 200 pairs)."""
    referral_id, opportunity_id = await linked_pair(world)
    await world.edit_referral(referral_id, replace("/details/dealValue", 250000))
    await world.edit_opportunity(opportunity_id, description="Kick-off booked")
    world.later_in_dataverse(-1.0)  # the seller's edit is stamped before our PATCH lands

    async def seller_edits() -> object:
        return await world.edit_opportunity(opportunity_id, estimatedvalue=300000)

    pc, engine = world.engine_with_partner_center(
        lambda transport: EditsCrmBeforeThePatch(transport, seller_edits)
    )
    async with pc:
        result = await engine.sync(SyncJob.now("opportunity", opportunity_id, reason="poll"))

    assert result.plan is not None and result.plan.conflicts == ()
    referral = await world.referral(referral_id)
    assert referral.details is not None and referral.details.deal_value == 300000
    assert referral.details.notes == "Kick-off booked"
    assert (await world.opportunity(opportunity_id))["estimatedvalue"] == 300000


def _links_dropping(
    storage_connection_string: str, table: str, *, method: str, after: int = 0
) -> LinkStore:
    """The link store with one write of the link row dropped, as a worker dying there would."""
    return LinkStore(
        TableClient.from_connection_string(
            storage_connection_string,
            table,
            transport=FailingTableTransport('"PartitionKey": "ref"', method=method, after=after),
            retry_total=0,
        )
    )


async def test_edits_on_both_sides_after_a_creation_cut_off_before_its_link_save_are_kept(
    world: World, storage_connection_string: str, unique_name: str
) -> None:
    """make chaos at 1,000 referrals lost an edit here: the worker died between creating the
    opportunity and linking it, and the retry linked the pair with no base, so a seller's edit
    and Partner Center's edit looked like conflicts and the record-level ``newest`` rule threw
    one away. The link is now written ahead of the creation, with the base."""
    referral_id = await world.incoming()
    # The write-ahead link lands; the save after the creation is dropped.
    dying_links = _links_dropping(storage_connection_string, unique_name + "l", method="PUT")
    dying = SyncEngine(pc=world.pc, dataverse=world.dataverse, links=dying_links,
                       history=world.history, settings=sandbox_settings())  # fmt: skip
    with pytest.raises(ServiceRequestError):
        await dying.sync(SyncJob.now("referral", referral_id, reason="webhook:referral-created"))
    await dying_links.close()

    opportunity_id = record_id("opportunity", referral_id)
    await world.edit_referral(referral_id, replace("/details/dealValue", 420000))
    world.later_in_dataverse()  # the seller's edit is the newer record: "newest" would keep it
    await world.edit_opportunity(opportunity_id, description="Kick-off booked")

    result = await world.sync_referral(referral_id, reason="webhook:referral-updated")

    assert result.plan is not None and result.plan.conflicts == ()
    row = await world.opportunity(opportunity_id)
    assert (row["estimatedvalue"], row["description"]) == (420000, "Kick-off booked")
    referral = await world.referral(referral_id)
    assert referral.details is not None and referral.details.notes == "Kick-off booked"
    assert referral.details.deal_value == 420000
    assert referral.external_reference_id == opportunity_id
    link = await world.links.get_link(referral_id)
    assert link is not None and link.pending_create is None
    assert link.last_result is not None and link.last_result.status == "synced"


async def test_a_creation_cut_off_before_the_opportunity_existed_creates_it_once_from_now(
    world: World, storage_connection_string: str, unique_name: str
) -> None:
    """The write-ahead link landed and the worker died before the opportunity was created (here:
    Dataverse unreachable). The next sync creates it, from the referral as it is by then, and
    does not take the missing opportunity for one the seller deleted."""
    referral_id = await world.incoming()

    inner = world.dv_http._transport

    class DataverseDown(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if request.method == "POST":
                raise httpx.ConnectError("injected: Dataverse unreachable", request=request)
            return await inner.handle_async_request(request)

    down = DataverseClient(
        str(world.dv_http.base_url), token="sandbox", transport=DataverseDown(),
        retry_policy=RetryPolicy(attempts=1, sleep=_no_sleep),
    )  # fmt: skip
    dying = SyncEngine(pc=world.pc, dataverse=down, links=world.links,
                       history=world.history, settings=sandbox_settings())  # fmt: skip
    with pytest.raises(ConnectionFailed):
        await dying.sync(SyncJob.now("referral", referral_id, reason="webhook:referral-created"))
    opportunity_id = record_id("opportunity", referral_id)
    assert await world.count("opportunities", cosell_referralid=referral_id) == 0
    await world.edit_referral(referral_id, replace("/details/dealValue", 420000))

    result = await world.sync_referral(referral_id, reason="webhook:referral-updated")

    assert result.outcome == "created"
    assert (await world.opportunity(opportunity_id))["estimatedvalue"] == 420000
    assert await world.count("opportunities", cosell_referralid=referral_id) == 1
    link = await world.links.get_link(referral_id)
    assert link is not None and link.pending_create is None and link.opportunity_etag
