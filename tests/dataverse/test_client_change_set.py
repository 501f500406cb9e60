"""``create_in_change_set``: rows that bind to each other, made in one atomic ``$batch``."""

from __future__ import annotations

import uuid

import httpx
import pytest

from shared.crm_schema import opportunity_solutions
from shared.dataverse import (
    AlreadyExists,
    Create,
    DataverseClient,
    Expand,
    NotFound,
    content_id,
)

OPPORTUNITY_SOLUTIONS = opportunity_solutions()  # the default prefix, as the emulator seeds it

ACCOUNT = uuid.UUID("6f3c1a2b-0000-4000-8000-0000000000c1")
OPPORTUNITY = uuid.UUID("1d2e3f40-0000-4000-8000-0000000000c2")


def new_customer_and_deal(**opportunity: object) -> list[Create]:
    return [
        Create("accounts", {"name": "Contoso", "address1_country": "DE"}, row_id=ACCOUNT),
        Create(
            "opportunities",
            {
                "name": "Co-sell: Contoso ERP",
                "parentaccountid@odata.bind": content_id(0),
                "customerid_account@odata.bind": content_id(0),
                OPPORTUNITY_SOLUTIONS: [
                    {"cosell_name": "SOL-1", "cosell_solutionidentifier": "SOL-1"}
                ],
                **opportunity,
            },
            row_id=OPPORTUNITY,
            select=["modifiedon", "name"],
            expand=[Expand(OPPORTUNITY_SOLUTIONS, ["modifiedon"])],
        ),
    ]


async def test_a_new_account_and_its_opportunity_are_made_in_one_request_with_both_lookups(
    client: DataverseClient, control: httpx.AsyncClient
) -> None:
    account, opportunity = await client.create_in_change_set(new_customer_and_deal())

    assert account["accountid"] == str(ACCOUNT)
    assert opportunity["name"] == "Co-sell: Contoso ERP" and opportunity["@odata.etag"]
    assert len(opportunity[OPPORTUNITY_SOLUTIONS]) == 1
    row = await client.get(
        "opportunities", OPPORTUNITY, select=["_customerid_value", "_parentaccountid_value"]
    )
    assert row["_customerid_value"] == str(ACCOUNT)
    assert row["_parentaccountid_value"] == str(ACCOUNT)
    requests = (await control.get("stats")).json()["requests"]
    assert {route: n for route, n in requests.items() if "$batch" in route} == {
        "POST /api/data/v9.2/$batch": 1
    }


async def test_a_failing_row_leaves_nothing_behind(client: DataverseClient) -> None:
    await client.create("opportunities", {"name": "Taken"}, row_id=OPPORTUNITY)

    with pytest.raises(AlreadyExists):
        await client.create_in_change_set(new_customer_and_deal())

    with pytest.raises(NotFound):
        await client.get("accounts", ACCOUNT)


async def test_content_id_numbers_the_rows_from_one() -> None:
    assert [content_id(i) for i in range(3)] == ["$1", "$2", "$3"]
