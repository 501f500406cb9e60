"""Collection-valued navigation properties in ``$expand`` (reference 2.4): an opportunity read with
its ``cosell_solutions`` rows in one request, through the client and in raw HTTP."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from sandbox.dataverse import Emulator
from sandbox.dataverse.schema import Schema
from shared.crm_schema import opportunity_solutions
from shared.dataverse import (
    ColumnDefinition,
    DataverseClient,
    Expand,
    InvalidRequest,
    LookupDefinition,
    TableDefinition,
    eq,
    lookup,
    ne,
    startswith,
)

OPPORTUNITY_SOLUTIONS = opportunity_solutions()  # the default prefix, as the emulator seeds it

OPPORTUNITY = uuid.UUID("1d2e3f40-0000-4000-8000-000000000010")
OTHER = uuid.UUID("1d2e3f40-0000-4000-8000-000000000020")
EMPTY = uuid.UUID("1d2e3f40-0000-4000-8000-000000000030")
ACCOUNT = uuid.UUID("6f3c1a2b-0000-4000-8000-000000000001")


def _solution(n: int) -> uuid.UUID:
    return uuid.UUID(f"5a1e0000-0000-4000-8000-{n:012d}")


@pytest.fixture
async def deals(client: DataverseClient) -> dict[str, list[str]]:
    """Three opportunities: one with three solutions, one with one, one with none; plus a
    solution linked to nothing. Returns the solution ids per opportunity."""
    await client.create("accounts", {"name": "Contoso"}, row_id=ACCOUNT)
    for row_id, name in ((OPPORTUNITY, "Contoso ERP"), (OTHER, "Fabrikam CRM"), (EMPTY, "None")):
        await client.create(
            "opportunities",
            {"name": name, **lookup("parentaccountid", "accounts", ACCOUNT)},
            row_id=row_id,
        )
    linked: dict[str, list[str]] = {str(OPPORTUNITY): [], str(OTHER): []}
    for n, (parent, identifier) in enumerate(
        (
            (OPPORTUNITY, "SOL-100-B"),
            (OPPORTUNITY, "SOL-200-A"),
            (OPPORTUNITY, "SOL-101-C"),
            (OTHER, "SOL-100-X"),
            (None, "SOL-100-ORPHAN"),
        ),
        start=1,
    ):
        body: dict[str, Any] = {
            "cosell_name": f"Solution {n}",
            "cosell_solutionidentifier": identifier,
        }
        if parent is not None:
            body.update(lookup("cosell_opportunityid", "opportunities", parent))
            linked[str(parent)].append(str(_solution(n)))
        await client.create("cosell_solutions", body, row_id=_solution(n))
    return linked


def test_the_engine_name_is_the_emulator_relationship() -> None:
    schema = Schema()
    opportunity = schema.tables["opportunities"]

    relation = schema.collection(opportunity, OPPORTUNITY_SOLUTIONS)

    assert OPPORTUNITY_SOLUTIONS == "cosell_opportunity_cosell_solutions"
    assert relation is not None
    assert (relation.entity_set, relation.column.name) == (
        "cosell_solutions",
        "cosell_opportunityid",
    )


async def test_get_expands_exactly_the_linked_solutions_with_their_etags(
    client: DataverseClient, emulator: Emulator, deals: dict[str, list[str]]
) -> None:
    before = emulator.stats()["total_requests"]

    row = await client.get(
        "opportunities",
        OPPORTUNITY,
        select=["name"],
        expand=[
            Expand("parentaccountid", ["name"]),
            Expand(OPPORTUNITY_SOLUTIONS, ["cosell_solutionidentifier"]),
        ],
    )

    assert emulator.stats()["total_requests"] == before + 1
    assert row["parentaccountid"]["name"] == "Contoso"
    solutions = row[OPPORTUNITY_SOLUTIONS]
    assert sorted(s["cosell_solutionid"] for s in solutions) == sorted(deals[str(OPPORTUNITY)])
    for solution in solutions:
        stored = emulator.store.get("cosell_solutions", solution["cosell_solutionid"])
        assert solution["@odata.etag"] == stored.etag
        assert set(solution) == {"@odata.etag", "cosell_solutionid", "cosell_solutionidentifier"}


async def test_nested_filter_orderby_and_top_apply_to_the_expanded_rows(
    client: DataverseClient, deals: dict[str, list[str]]
) -> None:
    row = await client.get(
        "opportunities",
        OPPORTUNITY,
        select=["name"],
        expand=[
            Expand(
                OPPORTUNITY_SOLUTIONS,
                ["cosell_solutionidentifier", "cosell_name"],
                filter=startswith("cosell_solutionidentifier", "SOL-1"),
                orderby=["cosell_solutionidentifier desc"],
                top=1,
            )
        ],
    )

    # SOL-100-B and SOL-101-C match (not SOL-200-A, not the other deal's SOL-100-X); desc, top 1.
    assert [s["cosell_solutionidentifier"] for s in row[OPPORTUNITY_SOLUTIONS]] == ["SOL-101-C"]

    everything = await client.get(
        "opportunities",
        OPPORTUNITY,
        select=["name"],
        expand=[
            Expand(
                OPPORTUNITY_SOLUTIONS,
                ["cosell_solutionidentifier"],
                filter=ne("cosell_solutionidentifier", "SOL-200-A"),
                orderby=["cosell_solutionidentifier asc"],
            )
        ],
    )
    assert [s["cosell_solutionidentifier"] for s in everything[OPPORTUNITY_SOLUTIONS]] == [
        "SOL-100-B",
        "SOL-101-C",
    ]


async def test_a_row_without_solutions_expands_to_an_empty_array(
    client: DataverseClient, deals: dict[str, list[str]]
) -> None:
    row = await client.get(
        "opportunities", EMPTY, select=["name"], expand=[Expand(OPPORTUNITY_SOLUTIONS)]
    )

    assert row[OPPORTUNITY_SOLUTIONS] == []


async def test_the_raw_request_of_the_brief_answers_the_row_with_both_expansions(
    http: httpx.AsyncClient, deals: dict[str, list[str]]
) -> None:
    response = await http.get(
        f"opportunities({OPPORTUNITY})?$select=name&$expand=parentaccountid($select=name),"
        "cosell_opportunity_cosell_solutions($select=cosell_solutionidentifier;"
        "$filter=cosell_solutionidentifier ne 'SOL-200-A';$orderby=cosell_solutionidentifier;"
        "$top=5)"
    )

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "Contoso ERP"
    assert body["parentaccountid"]["accountid"] == str(ACCOUNT)
    assert [s["cosell_solutionidentifier"] for s in body[OPPORTUNITY_SOLUTIONS]] == [
        "SOL-100-B",
        "SOL-101-C",
    ]


async def test_list_rows_expands_each_row_its_own_solutions_in_one_request(
    client: DataverseClient, emulator: Emulator, deals: dict[str, list[str]]
) -> None:
    before = emulator.stats()["total_requests"]

    rows = [
        row
        async for row in client.list_rows(
            "opportunities",
            select=["name"],
            orderby=["name asc"],
            expand=[Expand(OPPORTUNITY_SOLUTIONS, ["cosell_solutionidentifier"])],
        )
    ]

    assert emulator.stats()["total_requests"] == before + 1
    by_id = {
        r["opportunityid"]: sorted(s["cosell_solutionid"] for s in r[OPPORTUNITY_SOLUTIONS])
        for r in rows
    }
    assert by_id == {
        str(OPPORTUNITY): sorted(deals[str(OPPORTUNITY)]),
        str(OTHER): deals[str(OTHER)],
        str(EMPTY): [],
    }


async def test_a_filter_literal_with_quotes_semicolons_and_parentheses_stays_a_literal(
    client: DataverseClient,
) -> None:
    await client.create("opportunities", {"name": "Deal"}, row_id=OPPORTUNITY)
    tricky = "O'Brien; (EU), $top=0"
    for name in (tricky, "Plain"):
        await client.create(
            "cosell_solutions",
            {"cosell_name": name, **lookup("cosell_opportunityid", "opportunities", OPPORTUNITY)},
        )

    row = await client.get(
        "opportunities",
        OPPORTUNITY,
        select=["name"],
        expand=[Expand(OPPORTUNITY_SOLUTIONS, ["cosell_name"], filter=eq("cosell_name", tricky))],
    )

    assert [s["cosell_name"] for s in row[OPPORTUNITY_SOLUTIONS]] == [tricky]


async def test_nested_expand_inside_a_collection_reaches_back_to_the_parent(
    client: DataverseClient, deals: dict[str, list[str]]
) -> None:
    row = await client.get(
        "opportunities",
        OTHER,
        select=["name"],
        expand=[
            Expand(
                OPPORTUNITY_SOLUTIONS,
                ["cosell_name"],
                expand=[Expand("cosell_opportunityid", ["name"])],
            )
        ],
    )

    [solution] = row[OPPORTUNITY_SOLUTIONS]
    assert solution["cosell_opportunityid"]["name"] == "Fabrikam CRM"


async def test_a_standard_lookup_gives_its_target_the_collection_named_by_its_relationship(
    client: DataverseClient, deals: dict[str, list[str]]
) -> None:
    """opportunity.parentaccountid gives account the collection ``opportunity_parent_account``,
    the standard relationship's SchemaName (shared/reference dataverse-push-and-webhook-trust.md
    §4; learn.microsoft.com power-apps/developer/data-platform/webapi/web-api-navigation-
    properties), not a name made up from the lookup."""
    account = await client.get(
        "accounts",
        ACCOUNT,
        select=["name"],
        expand=[Expand("opportunity_parent_account", ["name"], orderby=["name asc"])],
    )

    assert [o["name"] for o in account["opportunity_parent_account"]] == [
        "Contoso ERP",
        "Fabrikam CRM",
        "None",
    ]


async def test_a_relationship_created_through_metadata_is_expandable_by_its_name(
    client: DataverseClient,
) -> None:
    await client.create_table(
        TableDefinition(
            schema_name="cosell_Note",
            display_name="Co-sell note",
            display_collection_name="Co-sell notes",
            primary_name=ColumnDefinition(
                schema_name="cosell_Name", display_name="Name", kind="string", max_length=200
            ),
        )
    )
    for relationship, navigation in (
        ("cosell_opportunity_cosell_note", None),  # Dataverse's default: the SchemaName
        ("cosell_account_cosell_note", "cosell_account_notes"),
    ):
        referenced = relationship.split("_")[1]
        await client.create_lookup(
            LookupDefinition(
                schema_name=f"cosell_{referenced.title()}Id",
                display_name=referenced.title(),
                referenced_table=referenced,
                referenced_key=f"{referenced}id",
                referencing_table="cosell_note",
                relationship_schema_name=relationship,
                referenced_navigation_property_name=navigation,
            )
        )
    await client.create("accounts", {"name": "Contoso"}, row_id=ACCOUNT)
    await client.create("opportunities", {"name": "Deal"}, row_id=OPPORTUNITY)
    await client.create(
        "cosell_notes",
        {
            "cosell_name": "Call back",
            **lookup("cosell_opportunityid", "opportunities", OPPORTUNITY),
            **lookup("cosell_accountid", "accounts", ACCOUNT),
        },
    )

    opportunity = await client.get(
        "opportunities",
        OPPORTUNITY,
        expand=[Expand("cosell_opportunity_cosell_note", ["cosell_name"])],
    )
    account = await client.get(
        "accounts", ACCOUNT, expand=[Expand("cosell_account_notes", ["cosell_name"])]
    )

    assert [n["cosell_name"] for n in opportunity["cosell_opportunity_cosell_note"]] == [
        "Call back"
    ]
    assert [n["cosell_name"] for n in account["cosell_account_notes"]] == ["Call back"]
    # ... and metadata names both, so `schema check` can read them (reference 4.5).
    names = {
        r.schema_name: r.referenced_navigation_property_name
        for r in await client.list_one_to_many("account")
    }
    assert names["cosell_account_cosell_note"] == "cosell_account_notes"


async def test_metadata_lists_the_solutions_relationship_under_the_engine_name(
    client: DataverseClient,
) -> None:
    relationships = await client.list_one_to_many("opportunity")

    [solutions] = [r for r in relationships if r.referencing_entity == "cosell_solution"]
    assert solutions.schema_name == OPPORTUNITY_SOLUTIONS
    assert solutions.referenced_navigation_property_name == OPPORTUNITY_SOLUTIONS
    assert solutions.referencing_attribute == "cosell_opportunityid"
    assert solutions.referencing_navigation_property_name == "cosell_opportunityid"
    # Standard lookups appear under their standard relationship names.
    assert {"lead_qualifying_opportunity", "Opportunity_Tasks"} <= {
        r.referenced_navigation_property_name for r in relationships
    }


@pytest.mark.parametrize(
    "expand",
    [
        "cosell_opportunity_cosell_solutions($skip=1)",  # not allowed nested (reference 2.4)
        "cosell_opportunity_cosell_solutions($select=nosuchcolumn)",
        "cosell_opportunity_cosell_solutions($filter=nosuchcolumn eq 1)",
        "cosell_opportunity_cosell_solutions($orderby=nosuchcolumn)",
        "cosell_opportunity_cosell_solutions($top=-1)",
        "cosell_opportunity_cosell_solutions($top=1;$top=2)",
        "cosell_opportunity_cosell_solutions($select=cosell_name",
        "parentaccountid($filter=name eq 'x')",  # single-valued: only $select/$expand
        "cosell_opportunity_cosell_solution",  # the singular is not the relationship's name
        ",".join(["parentaccountid"] * 16),  # more than 15 $expand (reference 2.4)
    ],
)
async def test_bad_expansions_get_400(
    http: httpx.AsyncClient, deals: dict[str, list[str]], expand: str
) -> None:
    response = await http.get(f"opportunities({OPPORTUNITY})", params={"$expand": expand})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "0x80060888"


async def test_the_client_raises_invalid_request_for_an_option_the_server_refuses(
    client: DataverseClient, deals: dict[str, list[str]]
) -> None:
    with pytest.raises(InvalidRequest):
        await client.get("opportunities", OPPORTUNITY, expand=[Expand("parentaccountid", top=1)])


def test_expand_renders_nested_options_and_keeps_the_old_form() -> None:
    assert str(Expand("parentaccountid")) == "parentaccountid"
    assert str(Expand("parentaccountid", ["name", "websiteurl"])) == (
        "parentaccountid($select=name,websiteurl)"
    )
    assert str(
        Expand(
            OPPORTUNITY_SOLUTIONS,
            ["cosell_solutionidentifier"],
            filter=eq("cosell_name", "O'Brien"),
            orderby=["cosell_name desc"],
            top=50,
            expand=[Expand("cosell_opportunityid", ["name"])],
        )
    ) == (
        "cosell_opportunity_cosell_solutions($select=cosell_solutionidentifier;"
        "$filter=cosell_name eq 'O''Brien';$orderby=cosell_name desc;$top=50;"
        "$expand=cosell_opportunityid($select=name))"
    )


@pytest.mark.parametrize(
    ("expand", "error"),
    [
        (Expand("bad name"), ValueError),
        (Expand(OPPORTUNITY_SOLUTIONS, ["a;b"]), ValueError),
        (Expand(OPPORTUNITY_SOLUTIONS, orderby=["name; drop"]), ValueError),
        (Expand(OPPORTUNITY_SOLUTIONS, top=-1), ValueError),
        (Expand(OPPORTUNITY_SOLUTIONS, filter="name eq 'x'"), TypeError),  # type: ignore[arg-type]
        (Expand(OPPORTUNITY_SOLUTIONS, expand=[Expand("x)")]), ValueError),
    ],
)
def test_expand_validates_names_options_and_filters(expand: Expand, error: type[Exception]) -> None:
    with pytest.raises(error):
        str(expand)


async def test_more_than_15_expands_are_refused_before_sending(client: DataverseClient) -> None:
    nested = Expand("parentaccountid", expand=[Expand("primarycontactid")] * 15)

    with pytest.raises(ValueError, match="15"):
        await client.get("opportunities", OPPORTUNITY, expand=[nested])
