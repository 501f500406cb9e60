"""Values over Dataverse's column limits (issue 13, class 6): one field the CRM refuses used to
block the whole pair (a 400 on every write, then the poison queue) under a ✔. Now the value
that does not fit is not written (cut to fit on creation), the pair is in error with the
reason, and every other field syncs. Limits: opportunity name 300, description 2,000, account
name 160, money ±1e12 (Dataverse column reference; the emulator enforces the same)."""

from __future__ import annotations

from tests.sync.conftest import World
from tests.sync.test_engine_flows import linked_pair, replace


async def test_a_referral_with_an_oversized_name_is_created_cut_to_fit_and_in_error(
    world: World,
) -> None:
    long_name = "Contoso - " + "x" * 400
    referral_id = await world.incoming(name=long_name)

    created = await world.sync_referral(referral_id)

    assert created.outcome == "created" and created.opportunity_id is not None
    opportunity = await world.opportunity(created.opportunity_id)
    assert len(opportunity["name"]) <= 300 and opportunity["name"].startswith("✖ Contoso")
    assert opportunity["cosell_syncstatus"] == 2
    assert "holds 298" in opportunity["cosell_audit"]
    referral = await world.referral(referral_id)
    assert referral.name == long_name  # our cut is never sent back


async def test_oversized_notes_are_refused_and_the_other_fields_still_sync(world: World) -> None:
    referral_id, opportunity_id = await linked_pair(world)
    await world.edit_referral(
        referral_id,
        replace("/details/notes", "n" * 2500),
        replace("/details/dealValue", 250000),
    )

    result = await world.sync_referral(referral_id, reason="webhook:referral-updated")
    await world.edit_opportunity(opportunity_id, name="Renamed in CRM")
    later = await world.sync_opportunity(opportunity_id, reason="poll")

    assert result.outcome == "error" and "2500 characters" in result.problems[0]
    opportunity = await world.opportunity(opportunity_id)
    assert opportunity["estimatedvalue"] == 250000
    assert opportunity["description"] != "n" * 2500
    referral = await world.referral(referral_id)
    assert referral.details is not None and referral.details.notes == "n" * 2500
    assert referral.name == "Renamed in CRM"
    assert later.plan is not None and "notes" not in later.plan.to_pc


async def test_an_oversized_name_on_a_linked_pair_leaves_the_rest_of_the_write_landing(
    world: World,
) -> None:
    """Found by the chaos run's oversize family: with a name Dataverse cannot hold in Partner
    Center, every later opportunity PATCH carried it (the ✔/✖ mark was put on the merged
    name) and Dataverse refused the whole PATCH: the deal value, the status and the audit
    never landed, for good."""
    referral_id, opportunity_id = await linked_pair(world)
    before = await world.opportunity(opportunity_id)
    await world.edit_referral(
        referral_id, replace("/name", "N" * 340), replace("/details/dealValue", 250000)
    )

    result = await world.sync_referral(referral_id, reason="webhook:referral-updated")
    await world.edit_referral(referral_id, replace("/details/notes", "Kick-off booked"))
    later = await world.sync_referral(referral_id, reason="webhook:referral-updated")

    assert result.outcome == "error" and "340 characters" in result.problems[0]
    opportunity = await world.opportunity(opportunity_id)
    assert opportunity["estimatedvalue"] == 250000
    assert opportunity["description"] == "Kick-off booked"
    assert opportunity["name"] == "✖ " + before["name"].removeprefix("✔ ")  # the row's name
    assert opportunity["cosell_syncstatus"] == 2 and "340 characters" in opportunity["cosell_audit"]
    referral = await world.referral(referral_id)
    assert referral.name == "N" * 340  # never shortened by us
    assert later.outcome == "error"


async def test_a_deal_value_beyond_dataverse_money_is_refused_with_the_reason(
    world: World,
) -> None:
    referral_id, opportunity_id = await linked_pair(world)
    await world.edit_referral(referral_id, replace("/details/dealValue", 5e12))

    result = await world.sync_referral(referral_id, reason="webhook:referral-updated")

    assert result.outcome == "error" and "money columns" in result.problems[0]
    assert (await world.opportunity(opportunity_id))["estimatedvalue"] == 120000


async def test_a_deal_reopened_and_lost_after_partner_center_won_it_is_never_written_closed(
    world: World,
) -> None:
    """Issue 13, class 6: Partner Center has the deal as Won; the seller reopened the
    opportunity and closed it as lost. The sync then wrote its audit line into the closed
    opportunity, which Dataverse refuses (a 400 on every retry, then the poison queue)."""
    referral_id, opportunity_id = await linked_pair(world)
    await world.dataverse.win_opportunity(opportunity_id)
    assert (await world.sync_opportunity(opportunity_id, reason="poll")).outcome == "synced"
    await world.edit_opportunity(opportunity_id, statecode=0, statuscode=1)  # reopened
    await world.sync_opportunity(opportunity_id, reason="poll")
    await world.dataverse.lose_opportunity(opportunity_id)

    result = await world.sync_opportunity(opportunity_id, reason="poll")

    assert result.outcome in ("synced", "no_change", "error")
    assert not any(type(step).__name__ == "WriteOpportunity" for step in result.steps)
    referral = await world.referral(referral_id)
    assert (str(referral.status), str(referral.substatus)) == ("Closed", "Won")
    assert (await world.opportunity(opportunity_id))["statecode"] == 2


async def test_a_contact_with_an_oversized_name_is_created_cut_to_fit(world: World) -> None:
    """A contact's first name holds 50 characters: one longer failed the whole creation."""
    long_first = "Anastasia" * 8
    team = [{"firstName": long_first, "lastName": "Example", "email": "ana@example.com"}]
    profile = {
        "name": "Contoso Ltd",
        "address": {"city": "Berlin", "postalCode": "10115", "country": "DE"},
        "team": team,
    }
    referral_id = await world.incoming(customerProfile=profile)

    created = await world.sync_referral(referral_id)

    assert created.outcome == "created"
    assert await world.count("contacts", emailaddress1="ana@example.com") == 1
