"""The lookup-based country (SPEC 13 ``country``): the account's country is a lookup to a table
of countries, and the ISO code lives in that table's code column.

Microsoft's connector takes only a text column for the customer account's country code; an
organisation whose country is a lookup must add a helper text column and fill it both ways in
the "[Customize] Create or get details from Dynamics 365" flow (learn.microsoft.com/
partner-center/connector-dynamics, "Customer account country code field name"; reference
dynamics-cosell-connector.md). Here the mapping names the lookup, its table and code column, and
the sync reads and writes the code through them, validated like the text column (SPEC 4.6).

The customer's country table and lookup are made through the Dataverse emulator's metadata API,
as an administrator's tooling would: ``POST EntityDefinitions``, ``.../Attributes`` and a
``POST RelationshipDefinitions`` that names no ``ReferencingEntityNavigationPropertyName``, so
the account's navigation property is the lookup's SchemaName, ``cr1a2_CountryId`` (Web API
navigation properties: names are case-sensitive, the single-valued one is the relationship's
``ReferencingEntityNavigationPropertyName``, the lookup is read as ``_<name>_value``;
learn.microsoft.com/power-apps/developer/data-platform/webapi/web-api-navigation-properties).
A bind through the lower-case logical name is refused there, so these tests also prove the
sync binds through the name the metadata gives.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.country_table import BY_NAME_ID, GERMANY_ID, LOOKUP, NAVIGATION, add_country_table
from tests.sync.conftest import World, open_world

MAPPING = {"country": {"lookup": LOOKUP}}


@pytest.fixture
async def world(storage_connection_string: str, unique_name: str) -> AsyncIterator[World]:
    async with open_world(
        storage_connection_string, unique_name, CRM_MAPPING=json.dumps(MAPPING)
    ) as opened:
        await add_country_table(opened.dataverse, opened.dv_http)
        yield opened


async def account_of(world: World, opportunity_id: str) -> dict[str, Any]:
    opportunity = await world.opportunity(opportunity_id)
    return await world.dataverse.get("accounts", opportunity["_parentaccountid_value"])


async def seller_opportunity(world: World, country_row: str | None) -> str:
    """A seller's flagged opportunity whose account's country lookup points at ``country_row``."""
    opportunity_id = await world.flagged_opportunity(country=None)
    if country_row is not None:
        account = await account_of(world, opportunity_id)
        await world.dataverse.update(
            "accounts",
            account["accountid"],
            {f"{NAVIGATION}@odata.bind": f"/cr1a2_countries({country_row})"},
        )
    return opportunity_id


async def test_a_referral_country_binds_the_new_account_to_its_country_row(world: World) -> None:
    """SPEC 13 ``country``: the ISO code is written through the looked-up table's code column —
    the new account's lookup points at the row whose code is the referral's (the connector
    needs a helper text column for this; here the text column is not written at all)."""
    created = await world.sync_referral(await world.incoming())

    assert created.outcome == "created" and created.opportunity_id is not None, created.problems
    account = await account_of(world, created.opportunity_id)
    assert account["_cr1a2_countryid_value"] == GERMANY_ID
    assert account.get("address1_country") is None
    opportunity = await world.opportunity(created.opportunity_id)
    assert opportunity["name"].startswith("✔ ") and opportunity["cosell_syncstatus"] == 1


async def test_an_account_whose_country_row_has_a_non_iso_code_is_refused(world: World) -> None:
    """SPEC 13 ``country`` validated like the text column (SPEC 4.6): the looked-up row's code
    "Germany" is not a two-letter ISO code, so no referral is created; the opportunity gets the
    ✖ mark, sync status Error and the reason in its audit."""
    opportunity_id = await seller_opportunity(world, BY_NAME_ID)
    pc_writes = (await world.writes())["pc"]

    result = await world.sync_opportunity(opportunity_id, reason="poll")

    assert result.outcome == "error"
    assert (await world.writes())["pc"] == pc_writes  # nothing sent to Partner Center
    opportunity = await world.opportunity(opportunity_id)
    assert opportunity["name"].startswith("✖ ")
    assert opportunity["cosell_syncstatus"] == 2
    assert "'GERMANY' is not a two-letter ISO 3166 code" in opportunity["cosell_audit"]


async def test_an_account_without_a_country_row_is_refused(world: World) -> None:
    """SPEC 4.6 through the lookup (SPEC 13): an empty lookup is a missing country."""
    opportunity_id = await seller_opportunity(world, None)

    result = await world.sync_opportunity(opportunity_id, reason="poll")

    assert result.outcome == "error"
    audit = (await world.opportunity(opportunity_id))["cosell_audit"]
    assert "Set the account's country as a two-letter ISO code" in audit


async def test_an_account_whose_country_row_has_an_iso_code_creates_the_referral(
    world: World,
) -> None:
    """SPEC 13 ``country``: the ISO code is read from the looked-up row's code column, and the
    referral created from the opportunity carries it as ``customerProfile.address.country``."""
    opportunity_id = await seller_opportunity(world, GERMANY_ID)

    result = await world.sync_opportunity(opportunity_id, reason="poll")

    assert result.outcome == "created" and result.referral_id is not None, result.problems
    referral = await world.referral(result.referral_id)
    profile = referral.customer_profile
    assert profile is not None and profile.address is not None
    assert profile.address.country == "DE"
    assert (await world.opportunity(opportunity_id))["name"].startswith("✔ ")


async def test_a_referral_country_the_table_lacks_leaves_the_account_without_one(
    world: World,
) -> None:
    """SPEC 13 ``country``, never a wrong country: a referral from France, which the customer's
    table has no row for, makes the opportunity and its account, the account without a country;
    the opportunity is in error (✖, sync status Error) and its audit names the code and the
    table, as a missing or invalid country is reported (SPEC 4.6)."""
    referral_id = await world.incoming(
        customerProfile={
            "name": "Fabrikam SARL",
            "address": {"city": "Paris", "postalCode": "75001", "country": "FR"},
            "team": [{"firstName": "Léa", "lastName": "Example", "email": "lea@example.com"}],
        }
    )

    created = await world.sync_referral(referral_id)

    assert created.outcome == "created" and created.opportunity_id is not None
    assert any("FR" in p and "cr1a2_countries" in p for p in created.problems), created.problems
    account = await account_of(world, created.opportunity_id)
    assert account["name"] == "Fabrikam SARL"
    assert account["_cr1a2_countryid_value"] is None
    assert account.get("address1_country") is None
    opportunity = await world.opportunity(created.opportunity_id)
    assert opportunity["name"].startswith("✖ ")
    assert opportunity["cosell_syncstatus"] == 2
    audit = opportunity["cosell_audit"]
    assert "country FR has no row in the country table cr1a2_countries" in audit


async def test_the_country_table_is_read_once_per_worker(world: World) -> None:
    """SPEC 11's request budget with SPEC 13's lookup country: the small country table is read
    once and kept (with its metadata), not once per sync."""
    first = await world.sync_referral(await world.incoming())
    second = await world.sync_referral(
        await world.incoming(name="Contoso - second deal", externalReferenceId=None)
    )
    assert first.outcome == second.outcome == "created"

    routes = (await world.dv_http.get("/_emulator/stats")).json()["requests"]
    reads = {r: n for r, n in routes.items() if r.startswith("GET") and "cr1a2_countries" in r}
    assert sum(reads.values()) == 1, reads


async def test_the_country_bind_rides_in_the_change_set_fallback_too(world: World) -> None:
    """SPEC 13 ``country`` on the ``$batch`` path (``CrmSide._insert``: the account and the
    opportunity as one change set where Dataverse refuses the account nested in the deep
    insert): the new account's lookup is bound there just the same (an ``@odata.bind`` to an
    existing row in a change set's POST; learn.microsoft.com/power-apps/developer/
    data-platform/webapi/execute-batch-operations-using-web-api)."""
    world.engine.crm.nested_binds = False

    created = await world.sync_referral(await world.incoming())

    assert created.outcome == "created" and created.opportunity_id is not None, created.problems
    account = await account_of(world, created.opportunity_id)
    assert account["_cr1a2_countryid_value"] == GERMANY_ID
    routes = (await world.dv_http.get("/_emulator/stats")).json()["requests"]
    assert any(route.endswith("$batch") for route in routes), routes
