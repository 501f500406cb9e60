"""A sync stopped between its remote writes and its link save loses no later edit."""

from __future__ import annotations

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
