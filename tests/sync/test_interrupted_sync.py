"""A sync stopped between its remote writes and its link save loses no later edit."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import httpx
import pytest
from azure.core.exceptions import ServiceRequestError
from azure.data.tables.aio import TableClient

from shared.jobs import SyncJob
from shared.state import LinkStore
from shared.sync import SyncEngine
from tests.sync.conftest import World, sandbox_settings
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
