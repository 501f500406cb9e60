"""Currencies Dataverse does not have (issue 13, class 4): never a silent USD opportunity, never
a currency rewritten in Partner Center that nobody changed, and the pair says why (✖ + audit).

Dataverse binds an opportunity's ``transactioncurrencyid`` to a ``transactioncurrencies`` row,
which exists only for the currencies an admin added to the organization (reference 2.5); the
emulator has 19 (``sandbox/dataverse/store.py``), not the Zimbabwe dollar (ZWG) used here.
"""

from __future__ import annotations

from typing import Any

from shared.dataverse import Expand
from tests.sync.conftest import World
from tests.sync.test_engine_flows import linked_pair, replace

UNKNOWN = "ZWG"


def details(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "notes": "Customer wants to move 40 VMs.",
        "dealValue": 120000,
        "currency": "EUR",
        "closingDateTime": "2027-03-31T00:00:00Z",
        "requirements": {"solutions": [{"type": "Name", "id": "SOL-12345-ABC"}]},
    }
    return {**body, **changes}


async def currency_of(world: World, opportunity_id: str) -> str:
    row = await world.dataverse.get(
        "opportunities",
        opportunity_id,
        select=["name"],
        expand=[Expand("transactioncurrencyid", ["isocurrencycode"])],
    )
    return str(row["transactioncurrencyid"]["isocurrencycode"])


async def test_a_referral_in_a_currency_dataverse_lacks_is_created_marked_as_an_error(
    world: World,
) -> None:
    referral_id = await world.incoming(details=details(currency=UNKNOWN))

    created = await world.sync_referral(referral_id)

    assert created.outcome == "created" and created.opportunity_id is not None
    assert any(UNKNOWN in p for p in created.problems)
    opportunity = await world.opportunity(created.opportunity_id)
    assert opportunity["name"].startswith("✖ ")
    assert opportunity["cosell_syncstatus"] == 2
    assert UNKNOWN in opportunity["cosell_audit"]
    link = await world.links.get_link(referral_id)
    assert link is not None and link.last_result is not None
    assert link.last_result.status == "error"


async def test_a_notes_edit_in_crm_leaves_partner_centers_unknown_currency_alone(
    world: World,
) -> None:
    referral_id = await world.incoming(details=details(currency=UNKNOWN))
    created = await world.sync_referral(referral_id)
    assert created.opportunity_id is not None
    await world.edit_opportunity(created.opportunity_id, description="Kick-off booked")

    await world.sync_opportunity(created.opportunity_id, reason="poll")

    referral = await world.referral(referral_id)
    assert referral.details is not None
    assert referral.details.notes == "Kick-off booked"
    assert referral.details.currency == UNKNOWN  # not the org's base currency in its place
    assert referral.details.deal_value == 120000


async def test_a_change_to_an_unknown_currency_is_refused_and_the_rest_still_syncs(
    world: World,
) -> None:
    referral_id, opportunity_id = await linked_pair(world)
    await world.edit_referral(
        referral_id,
        replace("/details/currency", UNKNOWN),
        replace("/details/dealValue", 250000),
    )

    result = await world.sync_referral(referral_id, reason="webhook:referral-updated")
    await world.edit_opportunity(opportunity_id, description="Later notes")
    later = await world.sync_opportunity(opportunity_id, reason="poll")

    assert result.outcome == "error" and any(UNKNOWN in p for p in result.problems)
    opportunity = await world.opportunity(opportunity_id)
    assert opportunity["estimatedvalue"] == 250000  # what can be written, is
    assert await currency_of(world, opportunity_id) == "EUR"
    assert UNKNOWN in opportunity["cosell_audit"]
    assert later.plan is not None and "currency" not in later.plan.to_pc
    referral = await world.referral(referral_id)
    assert referral.details is not None and referral.details.currency == UNKNOWN
    assert referral.details.notes == "Later notes"


async def test_a_seller_choosing_a_currency_in_crm_resolves_the_refusal(world: World) -> None:
    referral_id, opportunity_id = await linked_pair(world)
    await world.edit_referral(referral_id, replace("/details/currency", UNKNOWN))
    await world.sync_referral(referral_id, reason="webhook:referral-updated")
    gbp = await world.dataverse.currency_id("GBP")
    await world.edit_opportunity(
        opportunity_id, **{"transactioncurrencyid@odata.bind": f"/transactioncurrencies({gbp})"}
    )

    result = await world.sync_opportunity(opportunity_id, reason="poll")

    assert result.outcome == "synced"
    referral = await world.referral(referral_id)
    assert referral.details is not None and referral.details.currency == "GBP"
