"""The declarative mapping end to end (SPEC 13, issue 14): the mapping is given through the
environment of ``python -m sandbox up`` (``SandboxStack.from_environ``, the route the launcher
takes), the customer's own columns are created through the Dataverse emulator's metadata API
(``EntityDefinitions(LogicalName='…')/Attributes``) before any referral arrives, and then only
Microsoft, the sellers and Dynamics 365 act: the host syncs by itself, by signed webhook, the
5-second poll timer and the queue.

What Microsoft's connector leaves to editing its "[Customize] Create or get details from
Dynamics 365" flow (learn.microsoft.com/partner-center/referrals/connector-customize: values
for required opportunity and lead fields, the customer account search criteria, what a new
account gets) is data here, in one mapping the whole module shares.

Not here: the lookup-based ``country`` (built and tested separately).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import date
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from sandbox.stack import PORT_VARIABLES, SandboxStack
from shared.dataverse import ColumnDefinition, eq
from shared.partner_center import Referral
from shared.settings import setting_names
from tests.e2e.story import Sandbox, customer, eventually, open_sandbox, unique

pytestmark = pytest.mark.asyncio(loop_scope="module")

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

STAGES = {"Qualify": 100000000, "Develop": 100000001, "Propose": 100000002, "Close": 100000003}
MAPPING: dict[str, Any] = {
    "fields": {"close_date": {"direction": "off"}},
    "extra": [
        # Both ways: /salesStage is a path the connector lets a partner patch.
        {"referral": "salesStage", "crm": "cr1a2_salesstage", "direction": "both",
         "values": STAGES},
    ],
    # The connector's "required fields" customisation: a business-required column of the
    # customer's own on each row the product creates.
    "defaults": {
        "opportunity": {"cr1a2_region": "EMEA"},
        "lead": {"cr1a2_region": "EMEA"},
        "account": {"cr1a2_region": "EMEA"},
    },
    # One account per customer name, wherever its address is.
    "account_match": ["name"],
}  # fmt: skip
# What a user would put in the environment of `python -m sandbox up`.
ENVIRONMENT = {
    **{variable: "0" for variable, _ in PORT_VARIABLES.values()},
    "CRM_MAPPING": json.dumps(MAPPING),
    "SYNC_COSELL_ONLY": "false",  # marketplace leads become Dataverse leads (SPEC 4.5)
}
# The customer's columns, as an admin adds them (RequiredLevel ApplicationRequired, i.e.
# "Business required").
COLUMNS = [
    ("opportunity", ColumnDefinition(schema_name="cr1a2_SalesStage", display_name="Sales stage",
                                     kind="choice", options={v: k for k, v in STAGES.items()})),
    *[(table, ColumnDefinition(schema_name="cr1a2_Region", display_name="Region",
                               kind="string", required=True))
      for table in ("opportunity", "lead", "account")],
]  # fmt: skip
# A marketplace lead as Microsoft sends it (bench/families/leads.py, tests/sync/test_leads.py).
MARKETPLACE_LEAD: dict[str, Any] = {
    "type": "Independent",
    "qualification": "SalesQualified",
    "inviteContext": {"invitedBy": {"organizationId": "msft"}},
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox(storage_connection_string: str) -> AsyncIterator[Sandbox]:
    async with open_sandbox(ENVIRONMENT, storage_connection_string) as opened:
        # The environment reached the app.
        assert opened.stack.app_settings().mapping.account_match == ("name",)
        for table, column in COLUMNS:
            await opened.crm.create_column(table, column)
        yield opened


async def test_sandbox_up_passes_app_settings_through_but_keeps_its_own_wiring() -> None:
    """SPEC 9 + 13: the environment of ``python -m sandbox up`` chooses app settings such as the
    mapping, but cannot point the sandbox at real services or storage."""
    stack = SandboxStack.from_environ(
        {**ENVIRONMENT, "DATAVERSE_URL": "https://contoso.crm.dynamics.com",
         "AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountName=contoso"}
    )  # fmt: skip

    assert stack.overrides == {"CRM_MAPPING": json.dumps(MAPPING), "SYNC_COSELL_ONLY": "false"}
    stack.check_settings()  # a valid mapping passes the start-up check


async def test_an_extra_choice_column_syncs_both_ways_through_its_value_map(
    sandbox: Sandbox,
) -> None:
    """SPEC 13 ``extra`` with ``values``: referral ``salesStage`` ↔ a choice column of the
    customer's own, merged three ways like built-in fields. Microsoft's text value arrives as
    its choice value; the seller's choice goes to Partner Center as its text (poll), a partner's
    edit in Partner Center comes back as a choice (webhook)."""
    referral_id = await sandbox.microsoft_sends(
        salesStage="Qualify", customerProfile=customer(unique("Stage Ltd"))
    )
    row = await eventually(lambda: sandbox.opportunity_for(referral_id), "opportunity created")
    assert row["cr1a2_salesstage"] == STAGES["Qualify"]
    opportunity_id = row["opportunityid"]

    await sandbox.crm.update("opportunities", opportunity_id,
                             {"cr1a2_salesstage": STAGES["Propose"]})  # fmt: skip

    async def stage_in_partner_center() -> str | None:
        stage = (await sandbox.referral(referral_id)).to_wire().get("salesStage")
        return stage if stage == "Propose" else None

    await eventually(stage_in_partner_center, "salesStage 'Propose' in Partner Center")

    await sandbox.partner_edits(referral_id, salesStage="Close")

    async def stage_in_crm() -> int | None:
        stage = (await sandbox.opportunity(opportunity_id)).get("cr1a2_salesstage")
        return stage if stage == STAGES["Close"] else None

    await eventually(stage_in_crm, "the 'Close' choice on the opportunity")


async def test_required_columns_are_filled_on_a_new_opportunity_and_account_never_later(
    sandbox: Sandbox,
) -> None:
    """SPEC 13 ``defaults`` (the connector's "required opportunity fields" and what a new
    account gets): set when the product creates the row, never on update — neither when the
    referral changes later nor when another referral finds the account. The column is
    "Business required" (RequiredLevel ApplicationRequired), which Dataverse leaves to its apps'
    forms and does not enforce on Web API writes (learn.microsoft.com/power-apps/developer/
    data-platform/entity-attribute-metadata, "Column requirement level"; UNCERTAIN: not in
    reference/), so the emulator accepts rows without it and what shows the default is the
    value itself."""
    name = unique("Region Ltd")
    referral_id = await sandbox.microsoft_sends(customerProfile=customer(name))
    row = await eventually(lambda: sandbox.opportunity_for(referral_id), "opportunity created")
    opportunity_id, account_id = row["opportunityid"], row["_parentaccountid_value"]
    account = await sandbox.crm.get("accounts", account_id)
    assert (row["cr1a2_region"], account["cr1a2_region"]) == ("EMEA", "EMEA")

    # The seller knows better; Partner Center then changes the deal.
    await sandbox.crm.update("opportunities", opportunity_id, {"cr1a2_region": "APAC"})
    await sandbox.crm.update("accounts", account_id, {"cr1a2_region": "APAC"})
    await sandbox.partner_edits(referral_id, details__dealValue=333000)

    async def value_in_crm() -> dict[str, Any] | None:
        current = await sandbox.opportunity(opportunity_id)
        return current if current.get("estimatedvalue") == 333000 else None

    assert (await eventually(value_in_crm, "the new deal value in CRM"))["cr1a2_region"] == "APAC"

    second = await sandbox.microsoft_sends(name="Second deal", customerProfile=customer(name))
    other = await eventually(lambda: sandbox.opportunity_for(second), "second opportunity")
    assert other["_parentaccountid_value"] == account_id
    assert other["cr1a2_region"] == "EMEA"  # a new opportunity: the default
    assert (await sandbox.crm.get("accounts", account_id))["cr1a2_region"] == "APAC"


async def test_a_required_column_is_filled_on_a_new_lead_and_not_on_its_qualified_deal(
    sandbox: Sandbox,
) -> None:
    """SPEC 13 ``defaults.lead`` (the connector's "required lead fields") with
    ``SYNC_COSELL_ONLY=false`` (SPEC 4.5): Microsoft's marketplace lead becomes a Dataverse lead
    with the default. The seller then changes it and qualifies the lead into an opportunity of
    their own, flagged for sync: the referral is accepted, the lead keeps the seller's value
    and the seller's opportunity gets no opportunity default (the product did not create it)."""
    name = unique("Lead Ltd")
    referral_id = await sandbox.microsoft_sends(
        name=f"{name} - marketplace", customerProfile=customer(name), **MARKETPLACE_LEAD
    )

    async def lead_made() -> dict[str, Any] | None:
        return await sandbox.crm.first("leads", filter=eq("cosell_referralid", referral_id))

    lead = await eventually(lead_made, "a Dataverse lead for the marketplace lead")
    assert lead["cr1a2_region"] == "EMEA"
    assert lead["companyname"] == name

    lead_id, opportunity_id = lead["leadid"], str(uuid.uuid4())
    await sandbox.crm.update("leads", lead_id, {"cr1a2_region": "APAC"})
    await sandbox.crm.create(
        "opportunities",
        {"name": f"{name} - qualified", "estimatedvalue": 5000,
         "originatingleadid@odata.bind": f"/leads({lead_id})",
         "cosell_syncwithpartnercenter": True},
        row_id=opportunity_id,
    )  # fmt: skip
    await sandbox.crm.update(
        "leads",
        lead_id,
        {"statecode": 1, "statuscode": 3,
         "qualifyingopportunityid@odata.bind": f"/opportunities({opportunity_id})"},
    )  # fmt: skip

    async def accepted() -> bool:
        return str((await sandbox.referral(referral_id)).status) == "Active"

    await eventually(accepted, "the lead's referral accepted")
    opportunity = await sandbox.opportunity(opportunity_id)
    assert opportunity["cosell_referralid"] == referral_id
    assert opportunity.get("cr1a2_region") is None
    assert (await sandbox.crm.get("leads", lead_id))["cr1a2_region"] == "APAC"


async def test_an_account_is_matched_by_name_alone(sandbox: Sandbox) -> None:
    """SPEC 13 ``account_match: ["name"]`` (the connector's customer account search criteria,
    name + postal code by default): the same customer at another postal code is the same
    account; with the default rule it would be a second one."""
    name = unique("Northwind Ltd")
    first = await sandbox.microsoft_sends(customerProfile=customer(name, "10115"))
    moved = await sandbox.microsoft_sends(
        name="Munich deal", customerProfile=customer(name, "80331", "Munich")
    )

    rows = []
    for referral_id in (first, moved):
        rows.append(await eventually(partial(sandbox.opportunity_for, referral_id), "created"))

    assert {row["_parentaccountid_value"] for row in rows} == {rows[0]["_parentaccountid_value"]}
    accounts = [a async for a in sandbox.crm.list_rows("accounts", filter=eq("name", name))]
    assert len(accounts) == 1


async def test_fifty_concurrent_referrals_for_one_new_customer_make_one_account(
    sandbox: Sandbox,
) -> None:
    """SPEC 13 ``account_match`` with SPEC 4.5 "no duplicates ever": the derived account id
    follows the match columns, so 50 referrals for one new customer (each at its own postal
    code), sent at once and synced by the host concurrently, make exactly one account, and
    every opportunity is bound to it."""
    name = unique("Tailspin Ltd")
    referral_ids = await asyncio.gather(
        *(
            sandbox.microsoft_sends(
                name=f"{name} - deal {number}",
                customerProfile=customer(name, f"{20000 + number}"),
            )
            for number in range(50)
        )
    )

    async def all_created() -> list[dict[str, Any]] | None:
        rows = [
            row
            async for row in sandbox.crm.list_rows(
                "opportunities", select=["name", "cosell_referralid", "_parentaccountid_value"]
            )
            if row.get("cosell_referralid") in referral_ids and str(row["name"]).startswith("✔ ")
        ]
        return rows if len(rows) == len(referral_ids) else None

    rows = await eventually(all_created, "50 opportunities created", within_s=90)

    accounts = [a async for a in sandbox.crm.list_rows("accounts", filter=eq("name", name))]
    assert len(accounts) == 1
    assert {row["_parentaccountid_value"] for row in rows} == {accounts[0]["accountid"]}


async def test_a_field_switched_off_is_never_written_either_way(sandbox: Sandbox) -> None:
    """SPEC 13 ``fields.close_date.direction: off``: the close date is not written on creation,
    nor from Partner Center to CRM, nor back; the deal value changed in the same edit shows that
    each sync ran."""
    referral_id = await sandbox.microsoft_sends(customerProfile=customer(unique("Off Ltd")))
    row = await eventually(lambda: sandbox.opportunity_for(referral_id), "opportunity created")
    opportunity_id = row["opportunityid"]
    assert row.get("estimatedclosedate") is None  # Microsoft's is 2027-03-31

    await sandbox.partner_edits(
        referral_id, details__closingDateTime="2028-01-31T00:00:00Z", details__dealValue=99000
    )

    async def value_in_crm() -> dict[str, Any] | None:
        current = await sandbox.opportunity(opportunity_id)
        return current if current.get("estimatedvalue") == 99000 else None

    assert (await eventually(value_in_crm, "deal value 99000 in CRM")).get(
        "estimatedclosedate"
    ) is None

    await sandbox.crm.update(
        "opportunities",
        opportunity_id,
        {"estimatedclosedate": "2029-05-01", "estimatedvalue": 77000},
    )

    async def value_in_partner_center() -> Referral | None:
        referral = await sandbox.referral(referral_id)
        return referral if referral.details and referral.details.deal_value == 77000 else None

    referral = await eventually(value_in_partner_center, "deal value 77000 in Partner Center")
    assert referral.details is not None and referral.details.closing_date_time is not None
    assert referral.details.closing_date_time.date() == date(2028, 1, 31)
    assert (await sandbox.opportunity(opportunity_id))["estimatedclosedate"] == "2029-05-01"


async def test_a_broken_mapping_stops_sandbox_up_naming_its_json_path() -> None:
    """SPEC 13 "validated at start-up (a wrong entry fails naming its JSON path)": what a user
    sees who starts ``python -m sandbox up`` with a wrong direction word — the app's settings
    message on standard error, exit status 1, no ``ready``, and nothing started (it fails
    before Azurite would take seconds)."""
    environ = {k: v for k, v in os.environ.items() if k not in setting_names()}
    environ |= {variable: "0" for variable, _ in PORT_VARIABLES.values()}
    environ["CRM_MAPPING"] = json.dumps({"fields": {"notes": {"direction": "sideways"}}})
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sandbox", "up",
        cwd=ROOT, env=environ, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()

    assert process.returncode == 1
    assert "ready" not in out.decode().splitlines()
    errors = err.decode()
    assert "sandbox: could not start: invalid app settings" in errors
    assert "CRM_MAPPING: $.fields.notes.direction:" in errors
    assert "'both', 'pc_to_crm', 'crm_to_pc', 'on_create' or 'off' (got 'sideways')" in errors
    assert "Traceback" not in errors
    assert time.monotonic() - started < 30
