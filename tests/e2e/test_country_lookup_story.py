"""The lookup-based country end to end (SPEC 13 ``country``, issue 14): the mapping comes
through the environment of ``python -m sandbox up`` (``SandboxStack.from_environ``), the
customer's country table and the account's lookup to it are made through the Dataverse
emulator's metadata API before anything syncs (``tests/country_table.py``), and then the host
syncs by itself: webhook, the 5-second poll, the queue.

Microsoft's connector takes only a text column for the account's country code; an organisation
whose country is a lookup adds a helper column and fills it in its "[Customize] Create or get
details from Dynamics 365" flow (learn.microsoft.com/partner-center/connector-dynamics,
"Customer account country code field name"). Here the ISO code is read from and written
through the looked-up table's code column, and validated like the text column (SPEC 4.6).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from sandbox.stack import PORT_VARIABLES
from tests.country_table import BY_NAME_ID, GERMANY_ID, LOOKUP, NAVIGATION, add_country_table
from tests.e2e.story import Sandbox, customer, eventually, open_sandbox, unique

pytestmark = pytest.mark.asyncio(loop_scope="module")

ENVIRONMENT = {
    **{variable: "0" for variable, _ in PORT_VARIABLES.values()},
    "CRM_MAPPING": json.dumps({"country": {"lookup": LOOKUP}}),
}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sandbox(storage_connection_string: str) -> AsyncIterator[Sandbox]:
    async with (
        open_sandbox(ENVIRONMENT, storage_connection_string) as opened,
        httpx.AsyncClient(base_url=opened.stack.dataverse_url, timeout=10) as metadata,
    ):
        assert opened.stack.app_settings().mapping.country is not None  # reached the app
        await add_country_table(opened.crm, metadata)
        yield opened


async def test_a_referral_country_binds_the_new_account_to_its_country_row(
    sandbox: Sandbox,
) -> None:
    """Microsoft's referral (country "DE") makes an account whose country lookup points at the
    row with code DE; the text column is not written."""
    referral_id = await sandbox.microsoft_sends(customerProfile=customer(unique("Lookup Ltd")))
    row = await eventually(lambda: sandbox.opportunity_for(referral_id), "opportunity created")

    account = await sandbox.crm.get("accounts", row["_parentaccountid_value"])
    assert account["_cr1a2_countryid_value"] == GERMANY_ID
    assert account.get("address1_country") is None


async def seller_opportunity(sandbox: Sandbox, country_row: str) -> tuple[str, str]:
    """A seller's flagged opportunity, valid but for its account's country lookup."""
    crm = sandbox.crm
    account_id, contact_id, opportunity_id = (str(uuid.uuid4()) for _ in range(3))
    await crm.create("accounts", {"name": unique("Fabrikam Ltd"), "address1_postalcode": "10115",
                                  f"{NAVIGATION}@odata.bind": f"/cr1a2_countries({country_row})"},
                     row_id=account_id)  # fmt: skip
    await crm.create("contacts", {"firstname": "Ben", "lastname": "Example",
                                  "emailaddress1": f"ben.{uuid.uuid4().hex[:8]}@example.com"},
                     row_id=contact_id)  # fmt: skip
    body: dict[str, Any] = {
        "name": unique("Fabrikam - data platform"),
        "estimatedvalue": 50000,
        "estimatedclosedate": "2027-06-30",
        "parentaccountid@odata.bind": f"/accounts({account_id})",
        "customerid_account@odata.bind": f"/accounts({account_id})",
        "parentcontactid@odata.bind": f"/contacts({contact_id})",
        "cosell_syncwithpartnercenter": True,
        "cosell_visibletomicrosoft": True,
    }
    await crm.create("opportunities", body, row_id=opportunity_id)
    await crm.create("cosell_solutions", {"cosell_name": "SOL-12345-ABC",
                                          "cosell_solutionidentifier": "SOL-12345-ABC",
                                          "cosell_opportunityid@odata.bind":
                                              f"/opportunities({opportunity_id})"})  # fmt: skip
    return account_id, opportunity_id


async def test_a_non_iso_country_row_is_refused_and_a_valid_one_syncs(sandbox: Sandbox) -> None:
    """The seller's account points at a country row whose code is "Germany" (not ISO 3166):
    the poll's sync refuses it with the usual ✖, sync status Error and an audit line naming the
    country, and creates no referral. The seller points the account at the DE row; the poll
    sees the account change (issue 13, class 8) and the referral is created with country DE."""
    account_id, opportunity_id = await seller_opportunity(sandbox, BY_NAME_ID)

    async def refused() -> dict[str, Any] | None:
        row = await sandbox.opportunity(opportunity_id)
        return row if row.get("cosell_syncstatus") == 2 else None

    row = await eventually(refused, "the opportunity refused")
    assert row["name"].startswith("✖ ") and "country" in row["cosell_audit"].lower()
    assert not row.get("cosell_referralid")

    await sandbox.crm.update(
        "accounts", account_id, {f"{NAVIGATION}@odata.bind": f"/cr1a2_countries({GERMANY_ID})"}
    )

    async def linked() -> str | None:
        return (await sandbox.opportunity(opportunity_id)).get("cosell_referralid") or None

    referral = await sandbox.referral(await eventually(linked, "the referral created"))
    profile = referral.customer_profile
    assert profile is not None and profile.address is not None
    assert profile.address.country == "DE"
