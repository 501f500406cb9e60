"""Choice options through the metadata API (read with the PicklistAttributeMetadata cast, kept on
create) and the bare emulator (``create_app(custom_schema=False)``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from starlette.applications import Starlette

from sandbox.dataverse import create_app, emulator_of
from shared.dataverse import (
    ColumnDefinition,
    DataverseClient,
    InvalidRequest,
    NotFound,
    TableDefinition,
)
from shared.retry import RetryPolicy
from tests.dataverse.conftest import API, TOKEN, URL, no_wait

HELP_NEEDED = {  # SPEC 4.2
    100000000: "WorkloadSpecificValueProposition",
    100000001: "CustomerTechnicalArchitecture",
    100000002: "ProofOfConceptOrDemo",
    100000003: "QuotesOrLicensing",
    100000004: "PostSalesCustomerSuccess",
    100000005: "GeneralOrOther",
}
OPPORTUNITY = "EntityDefinitions(LogicalName='opportunity')"
PICKLIST = "Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
OPTIONS = {"$select": "LogicalName", "$expand": "OptionSet($select=Options)"}


def _picklist(table: str, column: str) -> str:
    return f"EntityDefinitions(LogicalName='{table}')/Attributes(LogicalName='{column}')/{PICKLIST}"


def _values(body: dict[str, Any]) -> dict[int, str]:
    return {
        o["Value"]: o["Label"]["UserLocalizedLabel"]["Label"] for o in body["OptionSet"]["Options"]
    }


def _choice(schema_name: str, options: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "@odata.type": f"Microsoft.Dynamics.CRM.{PICKLIST.rsplit('.', 1)[1]}",
        "SchemaName": schema_name,
        "OptionSet": {
            "@odata.type": "Microsoft.Dynamics.CRM.OptionSetMetadata",
            "Options": options,
        },
    }


def _option(value: int | None, text: str) -> dict[str, Any]:
    label = {"LocalizedLabels": [{"Label": text, "LanguageCode": 1033}]}
    return {"Label": label} if value is None else {"Value": value, "Label": label}


# -- emulator -------------------------------------------------------------------------------------


async def test_the_picklist_cast_returns_the_options_with_their_labels(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get(_picklist("opportunity", "cosell_helpneeded"), params=OPTIONS)

    assert response.status_code == 200, response.text
    body = response.json()
    # $select keeps LogicalName (and MetadataId, always returned); OptionSet is expanded
    assert set(body) - {"@odata.type"} == {"LogicalName", "MetadataId", "OptionSet"}
    assert set(body["OptionSet"]) == {"MetadataId", "Options"}
    assert _values(body) == HELP_NEEDED
    option = body["OptionSet"]["Options"][0]
    assert option["Label"]["LocalizedLabels"][0]["LanguageCode"] == 1033


async def test_status_options_carry_their_state_and_standard_choices_their_labels(
    http: httpx.AsyncClient,
) -> None:
    status = await http.get(
        f"{OPPORTUNITY}/Attributes(LogicalName='statuscode')"
        "/Microsoft.Dynamics.CRM.StatusAttributeMetadata",
        params=OPTIONS,
    )
    stage = await http.get(_picklist("opportunity", "salesstage"), params=OPTIONS)

    states = {o["Value"]: o["State"] for o in status.json()["OptionSet"]["Options"]}
    assert states == {1: 0, 2: 0, 3: 1, 4: 2, 5: 2}  # reference 8.1
    assert _values(status.json())[5] == "Out-Sold"
    assert _values(stage.json()) == {0: "Qualify", 1: "Develop", 2: "Propose", 3: "Close"}


async def test_attribute_listings_carry_no_option_set(http: httpx.AsyncClient) -> None:
    one = await http.get(f"{OPPORTUNITY}/Attributes(LogicalName='cosell_helpneeded')")
    without_expand = await http.get(_picklist("opportunity", "cosell_helpneeded"))
    listed = await http.get(f"{OPPORTUNITY}/Attributes")

    assert one.json()["AttributeType"] == "Picklist"
    assert "OptionSet" not in one.json()
    assert "OptionSet" not in without_expand.json()
    assert all("OptionSet" not in a for a in listed.json()["value"])


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        (_picklist("opportunity", "cosell_referralid"), OPTIONS, 404),  # a String, not a Picklist
        (_picklist("opportunity", "nosuchcolumn"), OPTIONS, 404),
        (_picklist("nosuchtable", "cosell_helpneeded"), OPTIONS, 404),
        (_picklist("opportunity", "cosell_helpneeded"), {"$expand": "Targets"}, 400),
        (_picklist("opportunity", "cosell_helpneeded"), {"$expand": "OptionSet($top=1)"}, 400),
    ],
)
async def test_the_cast_refuses_other_types_unknown_names_and_unknown_expansions(
    http: httpx.AsyncClient, path: str, params: dict[str, str], status: int
) -> None:
    response = await http.get(path, params=params)

    assert response.status_code == status, response.text
    assert "error" in response.json()


async def test_a_created_choice_keeps_its_options_and_labels(http: httpx.AsyncClient) -> None:
    created = await http.post(
        f"{OPPORTUNITY}/Attributes",
        json=_choice(
            "cosell_Priority",
            [_option(100000000, "Low"), _option(None, "High"), _option(7, "Urgent")],
        ),
    )
    read = await http.get(_picklist("opportunity", "cosell_priority"), params=OPTIONS)
    valid = await http.post("opportunities", json={"name": "Deal", "cosell_priority": 7})
    invalid = await http.post("opportunities", json={"name": "Deal", "cosell_priority": 3})

    assert created.status_code == 204, created.text
    # an option sent without a Value is numbered from the default prefix (reference 4.6)
    assert _values(read.json()) == {100000000: "Low", 100000001: "High", 7: "Urgent"}
    assert valid.status_code == 204, valid.text
    assert (invalid.status_code, invalid.json()["error"]["code"]) == (400, "0x8004431A")


@pytest.mark.parametrize(
    "body",
    [
        {
            "@odata.type": f"Microsoft.Dynamics.CRM.{PICKLIST.rsplit('.', 1)[1]}",
            "SchemaName": "cosell_None",
        },
        _choice("cosell_Twice", [_option(1, "One"), _option(1, "Uno")]),
        _choice("cosell_Text", [{"Value": "1", "Label": _option(1, "One")["Label"]}]),
    ],
    ids=["no-option-set", "duplicate-value", "non-integer-value"],
)
async def test_a_choice_without_valid_options_is_refused(
    http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    response = await http.post(f"{OPPORTUNITY}/Attributes", json=body)

    assert response.status_code == 400, response.text
    assert "Cannot create the choice column" in response.json()["error"]["message"]


# -- client ---------------------------------------------------------------------------------------


async def test_client_reads_the_options_of_choice_state_and_status_columns(
    client: DataverseClient,
) -> None:
    assert await client.get_choice_options("opportunity", "cosell_helpneeded") == HELP_NEEDED
    assert await client.get_choice_options("opportunity", "cosell_syncstatus") == {
        1: "Synced",
        2: "Error",
        3: "Pending",
    }
    assert await client.get_choice_options("opportunity", "statecode", kind="state") == {
        0: "Open",
        1: "Won",
        2: "Lost",
    }
    assert (await client.get_choice_options("lead", "statuscode", kind="status"))[3] == "Qualified"


async def test_client_choice_created_with_its_options_reads_them_back(
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
    await client.create_column(
        "cosell_note",
        ColumnDefinition(
            schema_name="cosell_Stage",
            display_name="Stage",
            kind="choice",
            options={100000001: "Later", 100000000: "First"},
        ),
    )

    options = await client.get_choice_options("cosell_note", "cosell_stage")

    assert options == {100000000: "First", 100000001: "Later"}


async def test_client_choice_options_errors(client: DataverseClient) -> None:
    with pytest.raises(NotFound):
        await client.get_choice_options("opportunity", "nosuchcolumn")
    with pytest.raises(NotFound):  # a String column cast to a Picklist
        await client.get_choice_options("opportunity", "name")
    with pytest.raises(ValueError, match="not a Dataverse property name"):
        await client.get_choice_options("opportunity", "x')/Attributes(LogicalName='y")
    with pytest.raises(ValueError, match="not a Dataverse property name"):
        await client.get_choice_options("opportunity entity", "statecode")


async def test_client_choice_options_read_the_labels_dataverse_sends(
    client: DataverseClient,
) -> None:
    """UserLocalizedLabel wins; without it the 1033 label; a global choice's GlobalOptionSet."""
    body = {
        "LogicalName": "x_choice",
        "OptionSet": None,
        "GlobalOptionSet": {
            "Options": [
                {
                    "Value": 1,
                    "Label": {
                        "LocalizedLabels": [
                            {"Label": "Eins", "LanguageCode": 1031},
                            {"Label": "One", "LanguageCode": 1033},
                        ],
                        "UserLocalizedLabel": None,
                    },
                },
                {"Value": 2, "Label": {"LocalizedLabels": [], "UserLocalizedLabel": None}},
                {
                    "Value": 3,
                    "Label": {
                        "LocalizedLabels": [{"Label": "Three", "LanguageCode": 1033}],
                        "UserLocalizedLabel": {"Label": "Drei", "LanguageCode": 1031},
                    },
                },
            ]
        },
    }
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json=body)

    async with DataverseClient(
        URL, token=TOKEN, transport=httpx.MockTransport(answer)
    ) as dataverse:
        options = await dataverse.get_choice_options("account", "x_choice")

    assert options == {1: "One", 2: "", 3: "Drei"}
    [request] = seen
    assert request.url.path.endswith(
        "/Attributes(LogicalName='x_choice')/Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
    )
    assert request.url.params["$select"] == "LogicalName"
    assert request.url.params["$expand"] == (
        "OptionSet($select=Options),GlobalOptionSet($select=Options)"
    )


def test_column_definition_validates_choice_options() -> None:
    with pytest.raises(ValidationError, match="needs its options"):
        ColumnDefinition(schema_name="cosell_A", display_name="A", kind="choice")
    with pytest.raises(ValidationError, match="only choice columns"):
        ColumnDefinition(schema_name="cosell_A", display_name="A", kind="string", options={1: "x"})
    with pytest.raises(ValidationError, match="needs a label"):
        ColumnDefinition(schema_name="cosell_A", display_name="A", kind="choice", options={1: " "})
    with pytest.raises(ValidationError, match="32-bit"):
        ColumnDefinition(
            schema_name="cosell_A", display_name="A", kind="choice", options={2**31: "x"}
        )


# -- the bare emulator ----------------------------------------------------------------------------


@pytest.fixture
def bare() -> Starlette:
    return create_app(token=TOKEN, custom_schema=False)


@pytest.fixture
async def bare_http(bare: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=bare),
        base_url=API,
        headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"},
    ) as raw:
        yield raw


async def test_a_bare_emulator_has_the_standard_tables_only(
    bare: Starlette, bare_http: httpx.AsyncClient
) -> None:
    tables = (await bare_http.get("EntityDefinitions")).json()["value"]
    opportunity = (await bare_http.get(f"{OPPORTUNITY}/Attributes")).json()["value"]
    lead = (await bare_http.get("EntityDefinitions(LogicalName='lead')/Attributes")).json()["value"]
    write = await bare_http.post("opportunities", json={"name": "Deal", "cosell_syncstatus": 1})
    solutions = await bare_http.get("cosell_solutions")

    names = {t["LogicalName"] for t in tables}
    assert {"opportunity", "account", "contact", "lead", "transactioncurrency"} <= names
    assert not {"cosell_solution", "cosell_solutiondetail"} & names
    assert not [a for a in opportunity + lead if a["LogicalName"].startswith("cosell_")]
    assert write.status_code == 400, write.text
    assert solutions.status_code == 404
    # currencies are seeded as in any org
    currencies = (await bare_http.get("transactioncurrencies")).json()["value"]
    assert currencies
    assert emulator_of(bare).custom_schema is False


async def test_reset_returns_each_emulator_to_the_schema_it_started_with(
    bare: Starlette, bare_http: httpx.AsyncClient, app: Starlette, http: httpx.AsyncClient
) -> None:
    column = _choice("cosell_SyncStatus", [_option(1, "Synced")])
    assert (await bare_http.post(f"{OPPORTUNITY}/Attributes", json=column)).status_code == 204

    emulator_of(bare).reset()
    emulator_of(app).reset()

    gone = await bare_http.get(f"{OPPORTUNITY}/Attributes(LogicalName='cosell_syncstatus')")
    kept = await http.get(f"{OPPORTUNITY}/Attributes(LogicalName='cosell_syncstatus')")
    assert gone.status_code == 404
    assert kept.status_code == 200


async def test_the_client_sees_a_bare_org_as_missing_the_custom_columns(bare: Starlette) -> None:
    async with DataverseClient(
        URL,
        token=TOKEN,
        transport=httpx.ASGITransport(app=bare),
        retry_policy=RetryPolicy(sleep=no_wait),
    ) as dataverse:
        table = await dataverse.get_table("opportunity")
        solution = await dataverse.find_table("cosell_solution")
        with pytest.raises(NotFound):
            await dataverse.get_choice_options("opportunity", "cosell_helpneeded")
        with pytest.raises(InvalidRequest):
            await dataverse.create("opportunities", {"name": "Deal", "cosell_helpneeded": 1})

    assert table.column("cosell_helpneeded") is None
    assert solution is None
