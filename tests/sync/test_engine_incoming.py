"""Microsoft sends a referral → an opportunity appears; then edits flow both ways."""

from __future__ import annotations

from tests.sync.conftest import World, incoming_cosell


async def test_incoming_referral_creates_account_contact_opportunity_and_solution(
    world: World,
) -> None:
    referral_id = await world.incoming()

    result = await world.sync_referral(referral_id, reason="webhook:referral-created")

    assert result.outcome == "created"
    assert result.opportunity_id is not None
    opportunity = await world.opportunity(result.opportunity_id)
    assert opportunity["name"] == "✔ Contoso - Azure migration"
    assert opportunity["estimatedvalue"] == 120000
    assert opportunity["estimatedclosedate"] == "2027-03-31"
    assert opportunity["cosell_referralid"] == referral_id
    assert opportunity["cosell_syncwithpartnercenter"] is True
    assert opportunity["statecode"] == 0 and opportunity["statuscode"] == 2  # Open / On Hold
    assert await world.count("accounts", name="Contoso Ltd") == 1
    # A new account is both the opportunity's account and its (required) potential customer.
    assert opportunity["_customerid_value"] == opportunity["_parentaccountid_value"] is not None
    assert await world.count("contacts", emailaddress1="ana@example.com") == 1
    assert await world.count("cosell_solutions") == 1
    referral = await world.referral(referral_id)
    assert referral.external_reference_id == result.opportunity_id


async def test_second_sync_after_creation_makes_no_write(world: World) -> None:
    referral_id = await world.incoming()
    await world.sync_referral(referral_id)
    before = await world.writes()

    again = await world.sync_referral(referral_id)

    assert again.outcome == "no_change"
    assert await world.writes() == before


async def test_a_new_referral_costs_two_dataverse_requests(world: World) -> None:
    # Warm the currency cache (one lookup per process and currency).
    await world.sync_referral(await world.incoming())
    referrals = [
        await world.incoming(
            customerProfile={**incoming_cosell()["customerProfile"], "name": f"Customer {n}"}
        )
        for n in range(5)
    ]
    before = await world.dataverse_requests()

    for referral_id in referrals:
        assert (await world.sync_referral(referral_id, reason="backfill")).outcome == "created"

    assert (await world.dataverse_requests() - before) / len(referrals) <= 2


async def test_where_dataverse_refuses_binds_into_a_deep_insert_new_customers_go_in_a_change_set(
    world: World,
) -> None:
    # UNCERTAIN in the reference; the emulator can behave either way.
    world.dv_emulator.store.binds_to_nested_rows = False
    first, second = [
        await world.incoming(
            customerProfile={**incoming_cosell()["customerProfile"], "name": f"Customer {n}"}
        )
        for n in range(2)
    ]

    before = await world.dataverse_requests()
    created = await world.sync_referral(first, reason="backfill")
    middle = await world.dataverse_requests()
    await world.sync_referral(second, reason="backfill")
    after = await world.dataverse_requests()

    assert created.opportunity_id is not None
    opportunity = await world.opportunity(created.opportunity_id)
    assert opportunity["_customerid_value"] == opportunity["_parentaccountid_value"] is not None
    assert await world.count("accounts", name="Customer 0") == 1
    # First: currency, account lookup, the refused deep insert, the change set. Then the
    # change set goes first: lookup and change set, as a deep insert would cost.
    assert (middle - before, after - middle) == (4, 2)


async def test_solution_ids_that_differ_only_by_case_get_a_row_each(world: World) -> None:
    """Issue 13, class 7: both derived ids were the same, so the deep insert collided with
    itself, restarted every time and ended in the poison queue; the referral never synced."""
    requirements = {"solutions": [{"type": "Name", "id": "SOL-A"}, {"type": "Name", "id": "sol-a"}]}
    referral_id = await world.incoming(
        details={
            "dealValue": 120000,
            "currency": "EUR",
            "closingDateTime": "2027-03-31T00:00:00Z",
            "requirements": requirements,
        }
    )

    result = await world.sync_referral(referral_id)

    assert result.outcome == "created"
    assert await world.count("cosell_solutions") == 2


async def test_a_renamed_account_made_for_the_customer_is_reused_not_created_again(
    world: World,
) -> None:
    """Issue 13, class 7: the account's derived id exists, but the seller renamed it, so the
    name + postal code search missed it and every creation collided with it and restarted."""
    first = await world.sync_referral(await world.incoming())
    assert first.opportunity_id is not None
    account_id = (await world.opportunity(first.opportunity_id))["_parentaccountid_value"]
    await world.dataverse.update("accounts", account_id, {"name": "Contoso Holding"})

    second = await world.sync_referral(await world.incoming(name="Contoso - second deal"))

    assert second.outcome == "created" and second.opportunity_id is not None
    assert (await world.opportunity(second.opportunity_id))["_parentaccountid_value"] == account_id
    assert await world.count("accounts") == 1
