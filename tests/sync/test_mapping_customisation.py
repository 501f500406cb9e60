"""The declarative mapping in the engine (SPEC 13): extra fields merged three ways through
value maps, per-field directions, defaults on rows the product creates (never on update), and
another account-match rule. What Microsoft's connector leaves to editing its "[Customize] Create
or get details from Dynamics 365" flow (docs: learn.microsoft.com/partner-center/referrals/
connector-customize), as data.

Custom columns are created through the Dataverse emulator's metadata API (``EntityDefinitions
(...)/Attributes``, as ``cosell schema apply`` does); the emulator refuses writes of columns
that do not exist, as Dataverse does.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from shared.dataverse import ColumnDefinition
from tests.sync.conftest import World, open_world

STAGES = {"Qualify": 100000000, "Develop": 100000001, "Propose": 100000002, "Close": 100000003}
MAPPING = {
    "fields": {"close_date": {"direction": "off"}, "notes": {"direction": "pc_to_crm"}},
    "extra": [
        # Both ways: /salesStage is a path the connector lets a partner patch.
        {"referral": "salesStage", "crm": "cr1a2_salesstage", "direction": "both",
         "values": STAGES},
        {"referral": "customerProfile.size", "crm": "cr1a2_companysize",
         "direction": "pc_to_crm"},
    ],
    "defaults": {
        "opportunity": {"cr1a2_region": "EMEA"},
        "account": {"cr1a2_segment": "Enterprise"},
        "contact": {"cr1a2_source": "Co-sell"},
    },
}  # fmt: skip


async def add_columns(world: World) -> None:
    columns = [
        ("opportunity", ColumnDefinition(schema_name="cr1a2_SalesStage", display_name="Stage",
                                         kind="choice", options={v: k for k, v in STAGES.items()})),
        ("opportunity", ColumnDefinition(schema_name="cr1a2_CompanySize",
                                         display_name="Company size", kind="string")),
        ("opportunity", ColumnDefinition(schema_name="cr1a2_Region", display_name="Region",
                                         kind="string")),
        ("account", ColumnDefinition(schema_name="cr1a2_Segment", display_name="Segment",
                                     kind="string")),
        ("contact", ColumnDefinition(schema_name="cr1a2_Source", display_name="Source",
                                     kind="string")),
    ]  # fmt: skip
    for table, column in columns:
        await world.dataverse.create_column(table, column)


@pytest.fixture
async def world(storage_connection_string: str, unique_name: str) -> AsyncIterator[World]:
    async with open_world(
        storage_connection_string, unique_name, CRM_MAPPING=json.dumps(MAPPING)
    ) as opened:
        await add_columns(opened)
        yield opened


def replace(path: str, value: object) -> dict[str, object]:
    return {"op": "replace", "path": path, "value": value}


async def new_pair(world: World, **fields: Any) -> tuple[str, str]:
    referral_id = await world.incoming(salesStage="Qualify", **fields)
    created = await world.sync_referral(referral_id)
    assert created.outcome == "created" and created.opportunity_id is not None, created.problems
    return referral_id, created.opportunity_id


async def test_an_extra_choice_column_syncs_both_ways_through_its_value_map(world: World) -> None:
    referral_id, opportunity_id = await new_pair(world)
    assert (await world.opportunity(opportunity_id))["cr1a2_salesstage"] == STAGES["Qualify"]

    await world.edit_opportunity(opportunity_id, cr1a2_salesstage=STAGES["Propose"])
    await world.sync_opportunity(opportunity_id, reason="poll")
    assert (await world.referral(referral_id)).to_wire()["salesStage"] == "Propose"

    await world.edit_referral(referral_id, replace("/salesStage", "Close"))
    result = await world.sync_referral(referral_id, reason="webhook:referral-updated")

    assert result.outcome == "synced"
    row = await world.opportunity(opportunity_id)
    assert row["cr1a2_salesstage"] == STAGES["Close"]
    # Merged like a built-in field: the audit and the history name the change.
    assert "from Partner Center: cr1a2_salesstage Propose → Close" in row["cosell_audit"]
    [latest, *_] = await world.history.list_entries(referral_id)
    assert any(c.field == "extra.cr1a2_salesstage" for c in latest.changes)


async def test_a_referral_value_without_a_choice_is_reported_not_written(world: World) -> None:
    referral_id, opportunity_id = await new_pair(world)

    await world.edit_referral(referral_id, replace("/salesStage", "Negotiate"))
    await world.sync_referral(referral_id, reason="webhook:referral-updated")

    row = await world.opportunity(opportunity_id)
    assert row["cr1a2_salesstage"] == STAGES["Qualify"]  # never written as something else
    assert row["cosell_syncstatus"] == 2 and row["name"].startswith("✖ ")
    assert "salesStage 'Negotiate' has no choice value in cr1a2_salesstage" in row["cosell_audit"]


async def test_a_one_way_extra_field_flows_from_partner_center_only(world: World) -> None:
    referral_id, opportunity_id = await new_pair(world)
    await world.edit_referral(referral_id, replace("/customerProfile/size", "51to250employees"))
    await world.sync_referral(referral_id, reason="webhook:referral-updated")
    assert (await world.opportunity(opportunity_id))["cr1a2_companysize"] == "51to250employees"

    await world.edit_opportunity(opportunity_id, cr1a2_companysize="10000+")
    await world.sync_opportunity(opportunity_id, reason="poll")

    profile = (await world.referral(referral_id)).to_wire()["customerProfile"]
    assert profile.get("size") == "51to250employees"


async def test_defaults_fill_new_rows_and_never_overwrite_later(world: World) -> None:
    referral_id, opportunity_id = await new_pair(world)
    row = await world.opportunity(opportunity_id)
    assert row["cr1a2_region"] == "EMEA"
    account = await world.dataverse.get("accounts", row["_parentaccountid_value"])
    contact = await world.dataverse.get("contacts", row["_parentcontactid_value"])
    assert (account["cr1a2_segment"], contact["cr1a2_source"]) == ("Enterprise", "Co-sell")

    await world.edit_opportunity(opportunity_id, cr1a2_region="APAC")
    await world.edit_referral(referral_id, replace("/details/dealValue", 999000))
    await world.sync_referral(referral_id, reason="webhook:referral-updated")

    assert (await world.opportunity(opportunity_id))["cr1a2_region"] == "APAC"


async def test_a_field_switched_off_is_never_written(world: World) -> None:
    referral_id, opportunity_id = await new_pair(world)
    assert (await world.opportunity(opportunity_id)).get("estimatedclosedate") is None

    await world.edit_referral(
        referral_id, replace("/details/closingDateTime", "2028-01-31T00:00:00Z")
    )
    await world.sync_referral(referral_id, reason="webhook:referral-updated")
    await world.edit_opportunity(opportunity_id, estimatedclosedate="2029-05-01")
    await world.sync_opportunity(opportunity_id, reason="poll")

    assert (await world.opportunity(opportunity_id))["estimatedclosedate"] == "2029-05-01"
    details = (await world.referral(referral_id)).details
    assert details is not None and details.closing_date_time is not None
    assert details.closing_date_time.date().isoformat() == "2028-01-31"


async def test_notes_from_partner_center_only_are_not_sent_back(world: World) -> None:
    referral_id, opportunity_id = await new_pair(world)
    before = (await world.referral(referral_id)).details

    await world.edit_opportunity(opportunity_id, description="Seller's own notes")
    await world.sync_opportunity(opportunity_id, reason="poll")

    after = (await world.referral(referral_id)).details
    assert before is not None and after is not None and after.notes == before.notes


async def test_an_account_matched_by_another_rule_is_reused(
    storage_connection_string: str, unique_name: str
) -> None:
    """``account_match: ["name"]``: the same customer at another postal code is one account."""
    mapping = json.dumps({"account_match": ["name"]})
    async with open_world(storage_connection_string, unique_name, CRM_MAPPING=mapping) as world:
        first = await world.sync_referral(await world.incoming())
        moved = await world.incoming(
            name="Contoso - second deal",
            customerProfile={"name": "Contoso Ltd", "address": {"postalCode": "80331",
                             "city": "Munich", "country": "DE"},
                             "team": [{"firstName": "Bo", "lastName": "Example",
                                       "email": f"bo{uuid.uuid4().hex[:6]}@example.com"}]},
        )  # fmt: skip
        second = await world.sync_referral(moved)

        assert first.opportunity_id is not None and second.opportunity_id is not None
        accounts = {
            (await world.opportunity(o))["_parentaccountid_value"]
            for o in (first.opportunity_id, second.opportunity_id)
        }
        assert len(accounts) == 1 and await world.count("accounts") == 1
