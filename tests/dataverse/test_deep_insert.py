"""Deep insert (reference 4.1): an incoming referral's opportunity, account, contact and solutions
created in ONE request, all or nothing, through the client and in raw HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from sandbox.dataverse import Emulator
from shared.crm_schema import opportunity_solutions
from shared.dataverse import (
    AlreadyExists,
    DataverseClient,
    Expand,
    InvalidRequest,
    NotFound,
    bind,
    lookup,
)

OPPORTUNITY_SOLUTIONS = opportunity_solutions()  # the default prefix, as the emulator seeds it

OPPORTUNITY = uuid.UUID("1d2e3f40-0000-4000-8000-000000000010")
ACCOUNT = uuid.UUID("6f3c1a2b-0000-4000-8000-000000000001")
CONTACT = uuid.UUID("8a1d2c3e-0000-4000-8000-000000000002")
SOLUTION_1 = uuid.UUID("5a1e0000-0000-4000-8000-000000000001")
SOLUTION_2 = uuid.UUID("5a1e0000-0000-4000-8000-000000000002")
TABLES = ("opportunities", "accounts", "contacts", "cosell_solutions")


def referral_body(**overrides: Any) -> dict[str, Any]:
    """What the engine sends for a new referral: the opportunity with a new account, a new
    contact of that account, and two solutions, every id chosen by the caller."""
    body: dict[str, Any] = {
        "name": "Co-sell: Contoso ERP rollout",
        "estimatedvalue": 125000.0,
        "cosell_referralid": "REF-1",
        "cosell_syncwithpartnercenter": True,
        "parentaccountid": {
            "accountid": str(ACCOUNT),
            "name": "Contoso",
            "address1_city": "Redmond",
        },
        "parentcontactid": {
            "contactid": str(CONTACT),
            "firstname": "Ada",
            "lastname": "Example",
            "parentcustomerid_account@odata.bind": bind("accounts", ACCOUNT),
        },
        OPPORTUNITY_SOLUTIONS: [
            {
                "cosell_solutionid": str(SOLUTION_1),
                "cosell_name": "ERP",
                "cosell_solutionidentifier": "SOL-1",
            },
            {"cosell_name": "CRM", "cosell_solutionidentifier": "SOL-2"},
        ],
    }
    body.update(overrides)
    return body


def counts(emulator: Emulator) -> dict[str, int]:
    return {name: emulator.store.count(name) for name in TABLES}


NOTHING = dict.fromkeys(TABLES, 0)


async def test_one_request_creates_the_opportunity_account_contact_and_solutions(
    client: DataverseClient, emulator: Emulator
) -> None:
    row = await client.create("opportunities", referral_body(), row_id=OPPORTUNITY)

    stats = emulator.stats()
    assert stats["total_requests"] == 1
    assert stats["requests"] == {"POST /api/data/v9.2/opportunities": 1}
    # Only the parent comes back (reference 4.1).
    assert row["opportunityid"] == str(OPPORTUNITY)
    assert OPPORTUNITY_SOLUTIONS not in row
    assert counts(emulator) == dict.fromkeys(TABLES, 1) | {"cosell_solutions": 2}
    store = emulator.store
    opportunity = store.get("opportunities", str(OPPORTUNITY))
    assert opportunity.values["_parentaccountid_value"] == str(ACCOUNT)
    assert opportunity.values["_parentcontactid_value"] == str(CONTACT)
    assert opportunity.targets["parentaccountid"] == "accounts"
    contact = store.get("contacts", str(CONTACT))
    assert contact.values["fullname"] == "Ada Example"
    assert contact.values["_parentcustomerid_value"] == str(ACCOUNT)
    assert store.get("accounts", str(ACCOUNT)).values["address1_city"] == "Redmond"
    solutions = store.tables["cosell_solutions"]
    assert str(SOLUTION_1) in solutions
    assert {s.values["cosell_solutionidentifier"] for s in solutions.values()} == {"SOL-1", "SOL-2"}
    for solution in solutions.values():
        assert solution.values["_cosell_opportunityid_value"] == str(OPPORTUNITY)
        assert solution.targets["cosell_opportunityid"] == "opportunities"


async def test_the_created_solutions_read_back_through_the_collection_expand(
    client: DataverseClient,
) -> None:
    await client.create("opportunities", referral_body(), row_id=OPPORTUNITY)

    row = await client.get(
        "opportunities",
        OPPORTUNITY,
        select=["name"],
        expand=[
            Expand("parentcontactid", ["fullname"]),
            Expand(OPPORTUNITY_SOLUTIONS, ["cosell_solutionidentifier"], orderby=["cosell_name"]),
        ],
    )

    assert row["parentcontactid"]["fullname"] == "Ada Example"
    assert [s["cosell_solutionidentifier"] for s in row[OPPORTUNITY_SOLUTIONS]] == [
        "SOL-2",  # CRM
        "SOL-1",  # ERP
    ]


async def test_a_nested_account_that_already_exists_fails_like_a_duplicate_and_creates_nothing(
    client: DataverseClient, emulator: Emulator
) -> None:
    await client.create("accounts", {"name": "Contoso (existing)"}, row_id=ACCOUNT)
    with pytest.raises(AlreadyExists) as plain:
        await client.create("accounts", {"name": "again"}, row_id=ACCOUNT)

    with pytest.raises(AlreadyExists) as deep:
        await client.create("opportunities", referral_body(), row_id=OPPORTUNITY)

    assert (deep.value.status, deep.value.code) == (plain.value.status, plain.value.code)
    assert counts(emulator) == NOTHING | {"accounts": 1}
    assert emulator.store.get("accounts", str(ACCOUNT)).values["name"] == "Contoso (existing)"


async def test_a_failing_solution_after_the_parent_was_stored_removes_every_row(
    client: DataverseClient, emulator: Emulator
) -> None:
    # The second solution repeats the first one's id: it fails after the opportunity, account,
    # contact and first solution exist, and all of them must go again.
    body = referral_body(
        **{
            OPPORTUNITY_SOLUTIONS: [
                {"cosell_solutionid": str(SOLUTION_1), "cosell_name": "ERP"},
                {"cosell_solutionid": str(SOLUTION_1), "cosell_name": "ERP again"},
            ]
        }
    )

    with pytest.raises(AlreadyExists):
        await client.create("opportunities", body, row_id=OPPORTUNITY)

    assert counts(emulator) == NOTHING


async def test_a_nested_row_reusing_the_parents_id_is_a_duplicate_not_an_overwrite(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    response = await http.post(
        "accounts",
        json={
            "accountid": str(ACCOUNT),
            "name": "Parent",
            "parentaccountid": {"accountid": str(ACCOUNT), "name": "Child"},
        },
    )

    assert response.status_code == 412
    assert response.json()["error"]["code"] == "0x80040237"
    assert emulator.store.count("accounts") == 0


@pytest.mark.parametrize(
    ("change", "status"),
    [
        # unknown column in a solution
        ({OPPORTUNITY_SOLUTIONS: [{"cosell_name": "ERP", "nosuchcolumn": 1}]}, 400),
        # a wrong literal in the nested account
        ({"parentaccountid": {"accountid": str(ACCOUNT), "numberofemployees": "many"}}, 400),
        # a bind to the wrong table inside the nested contact
        (
            {
                "parentcontactid": {
                    "lastname": "Example",
                    "parentcustomerid_account@odata.bind": "/contacts(" + str(CONTACT) + ")",
                }
            },
            400,
        ),
        # a bind that is not a reference at all
        (
            {
                "parentcontactid": {
                    "lastname": "X",
                    "parentcustomerid_account@odata.bind": "Contoso",
                }
            },
            400,
        ),
        # a bind to a row that does not exist (404, as for a plain create)
        (
            {
                "parentcontactid": {
                    "lastname": "X",
                    "parentcustomerid_account@odata.bind": bind("accounts", uuid.uuid4()),
                }
            },
            404,
        ),
        # the collection must be an array of objects
        ({OPPORTUNITY_SOLUTIONS: {"cosell_name": "ERP"}}, 400),
        ({OPPORTUNITY_SOLUTIONS: ["ERP"]}, 400),
        # a child cannot name another parent: the array already links it
        (
            {
                OPPORTUNITY_SOLUTIONS: [
                    {
                        "cosell_name": "ERP",
                        **lookup("cosell_opportunityid", "opportunities", uuid.uuid4()),
                    }
                ]
            },
            400,
        ),
        # an invalid column of the opportunity itself
        ({"closeprobability": 101}, 400),
    ],
)
async def test_any_invalid_part_fails_the_whole_request_and_leaves_no_row(
    http: httpx.AsyncClient, emulator: Emulator, change: dict[str, Any], status: int
) -> None:
    response = await http.post("opportunities", json=referral_body(**change))

    assert response.status_code == status, response.text
    assert response.json()["error"]["code"]
    assert counts(emulator) == NOTHING


async def test_the_client_raises_invalid_request_for_an_unknown_nested_column(
    client: DataverseClient, emulator: Emulator
) -> None:
    body = referral_body(**{OPPORTUNITY_SOLUTIONS: [{"cosell_name": "ERP", "nosuch": 1}]})

    with pytest.raises(InvalidRequest) as raised:
        await client.create("opportunities", body, row_id=OPPORTUNITY)

    assert raised.value.status == 400
    assert "nosuch" in raised.value.message
    assert counts(emulator) == NOTHING


async def test_binding_an_existing_account_while_deep_inserting_the_contact(
    client: DataverseClient, emulator: Emulator
) -> None:
    await client.create("accounts", {"name": "Contoso"}, row_id=ACCOUNT)
    body = referral_body(**lookup("parentaccountid", "accounts", ACCOUNT))
    del body["parentaccountid"]

    await client.create("opportunities", body, row_id=OPPORTUNITY)

    assert counts(emulator) == {
        "opportunities": 1,
        "accounts": 1,
        "contacts": 1,
        "cosell_solutions": 2,
    }
    opportunity = emulator.store.get("opportunities", str(OPPORTUNITY)).values
    assert opportunity["_parentaccountid_value"] == str(ACCOUNT)
    assert opportunity["_parentcontactid_value"] == str(CONTACT)
    contact = emulator.store.get("contacts", str(CONTACT)).values
    assert contact["_parentcustomerid_value"] == str(ACCOUNT)


async def test_without_prefer_only_the_parent_uri_comes_back(http: httpx.AsyncClient) -> None:
    response = await http.post("opportunities", json=referral_body(opportunityid=str(OPPORTUNITY)))

    assert response.status_code == 204
    assert response.headers["OData-EntityId"].endswith(f"/opportunities({OPPORTUNITY})")
    assert response.content == b""


async def test_return_representation_answers_the_parent_and_can_expand_the_new_children(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post(
        "opportunities",
        params={
            "$select": "name",
            "$expand": f"{OPPORTUNITY_SOLUTIONS}($select=cosell_solutionidentifier;"
            "$orderby=cosell_solutionidentifier)",
        },
        json=referral_body(opportunityid=str(OPPORTUNITY)),
        headers={"Prefer": "return=representation"},
    )

    assert response.status_code == 201
    body = response.json()
    assert body["opportunityid"] == str(OPPORTUNITY)
    assert body["name"] == "Co-sell: Contoso ERP rollout"
    assert [s["cosell_solutionidentifier"] for s in body[OPPORTUNITY_SOLUTIONS]] == [
        "SOL-1",
        "SOL-2",
    ]


async def test_deep_insert_nests_at_any_depth_and_rolls_back_at_any_depth(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    # An account with its contacts (the standard relationship contact_customer_accounts)
    # inside the opportunity; the second contact is invalid, so nothing stays.
    bad: dict[str, Any] = {
        "name": "Deal",
        "parentaccountid": {
            "name": "Contoso",
            "contact_customer_accounts": [{"lastname": "One"}, {"lastname": 7}],
        },
    }
    assert (await http.post("opportunities", json=bad)).status_code == 400
    assert counts(emulator) == NOTHING

    good = {**bad, "parentaccountid": {**bad["parentaccountid"]}}
    good["parentaccountid"]["contact_customer_accounts"] = [
        {"lastname": "One"},
        {"lastname": "Two"},
    ]
    assert (await http.post("opportunities", json=good)).status_code == 204
    [account] = emulator.store.tables["accounts"].values()
    account_id = account.values["accountid"]
    assert sorted(
        c.values["lastname"]
        for c in emulator.store.tables["contacts"].values()
        if c.values["_parentcustomerid_value"] == account_id
    ) == ["One", "Two"]


async def test_patch_of_an_existing_row_refuses_a_collection_array_and_changes_nothing(
    client: DataverseClient, emulator: Emulator
) -> None:
    created = await client.create("opportunities", {"name": "Deal"}, row_id=OPPORTUNITY)

    with pytest.raises(InvalidRequest):
        await client.update(
            "opportunities",
            OPPORTUNITY,
            {"name": "Changed", OPPORTUNITY_SOLUTIONS: [{"cosell_name": "ERP"}]},
        )

    stored = emulator.store.get("opportunities", str(OPPORTUNITY))
    assert stored.values["name"] == "Deal"
    assert stored.etag == created["@odata.etag"]
    assert emulator.store.count("cosell_solutions") == 0


async def test_an_upsert_that_creates_the_row_may_deep_insert(
    client: DataverseClient, emulator: Emulator
) -> None:
    _, created = await client.upsert(
        "opportunities",
        OPPORTUNITY,
        {"name": "Deal", OPPORTUNITY_SOLUTIONS: [{"cosell_name": "ERP"}]},
    )

    assert created
    [solution] = emulator.store.tables["cosell_solutions"].values()
    assert solution.values["_cosell_opportunityid_value"] == str(OPPORTUNITY)


async def test_a_failed_deep_insert_can_be_repeated_with_the_same_ids(
    client: DataverseClient, emulator: Emulator
) -> None:
    broken = referral_body(**{OPPORTUNITY_SOLUTIONS: [{"cosell_name": "ERP", "nosuch": 1}]})
    with pytest.raises(InvalidRequest):
        await client.create("opportunities", broken, row_id=OPPORTUNITY)

    await client.create("opportunities", referral_body(), row_id=OPPORTUNITY)

    assert counts(emulator) == dict.fromkeys(TABLES, 1) | {"cosell_solutions": 2}
    with pytest.raises(NotFound):
        await client.get("cosell_solutions", uuid.uuid4())


async def test_a_bind_may_point_at_the_account_the_same_deep_insert_creates(
    client: DataverseClient, emulator: Emulator
) -> None:
    body = referral_body(**{"customerid_account@odata.bind": bind("accounts", ACCOUNT)})

    await client.create("opportunities", body, row_id=OPPORTUNITY)

    opportunity = emulator.store.get("opportunities", str(OPPORTUNITY)).values
    assert opportunity["_customerid_value"] == opportunity["_parentaccountid_value"] == str(ACCOUNT)


async def test_an_org_that_refuses_such_a_bind_answers_404_and_creates_nothing(
    client: DataverseClient, emulator: Emulator
) -> None:
    emulator.store.binds_to_nested_rows = False  # the other reading of an UNCERTAIN point
    body = referral_body(**{"customerid_account@odata.bind": bind("accounts", ACCOUNT)})

    with pytest.raises(NotFound) as refused:
        await client.create("opportunities", body, row_id=OPPORTUNITY)

    assert str(ACCOUNT) in str(refused.value)
    assert counts(emulator) == NOTHING
