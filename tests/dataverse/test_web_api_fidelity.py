"""The emulator against Microsoft's published Web API examples and rules (issue 15, "Emulator
gaps real clients hit"), in raw HTTP as the docs write them. Each test names the
learn.microsoft.com page (under ``power-apps/developer/data-platform/``) it follows; the facts
are summarised in shared/reference ``dataverse-push-and-webhook-trust.md`` §4.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from sandbox.dataverse import Emulator
from sandbox.dataverse.metadata import metadata_id


def _id_of(response: httpx.Response) -> str:
    match = re.search(r"\(([0-9a-f-]{36})\)$", response.headers["OData-EntityId"])
    assert match is not None, response.headers
    return match.group(1)


async def test_the_basic_create_example_of_the_docs_is_accepted(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    """webapi/create-entity-web-api, "Basic create": the account with ``creditonhold``,
    ``address1_latitude``, ``revenue`` and ``accountcategorycode`` answers 204 with
    ``OData-EntityId``."""
    response = await http.post(
        "accounts",
        json={
            "name": "Sample Account",
            "creditonhold": False,
            "address1_latitude": 47.639583,
            "description": "This is the description of the sample account",
            "revenue": 5000000,
            "accountcategorycode": 1,
        },
    )
    assert response.status_code == 204, response.text
    row = emulator.store.get("accounts", _id_of(response)).values
    assert row["address1_latitude"] == 47.639583
    assert row["accountcategorycode"] == 1 and row["creditonhold"] is False


async def test_the_deep_insert_example_of_the_docs_creates_all_four_rows(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    """webapi/create-entity-web-api, "Create related table rows in one operation": an account
    with a new primary contact and, through the standard relationship
    ``opportunity_customer_accounts``, an opportunity that nests a task through
    ``Opportunity_Tasks``. The emulator used to call that collection
    ``opportunity_customerid_account`` and refused Microsoft's own example."""
    response = await http.post(
        "accounts",
        json={
            "name": "Sample Account",
            "primarycontactid": {"firstname": "John", "lastname": "Smith"},
            "opportunity_customer_accounts": [
                {
                    "name": "Opportunity associated to Sample Account",
                    "Opportunity_Tasks": [{"subject": "Task associated to opportunity"}],
                }
            ],
        },
    )
    assert response.status_code == 204, response.text
    account = emulator.store.get("accounts", _id_of(response)).values
    [contact] = emulator.store.tables["contacts"].values()
    [opportunity] = emulator.store.tables["opportunities"].values()
    [task] = emulator.store.tables["tasks"].values()
    assert account["_primarycontactid_value"] == contact.values["contactid"]
    assert contact.values["fullname"] == "John Smith"
    assert opportunity.values["_customerid_value"] == account["accountid"]
    assert opportunity.targets["customerid"] == "accounts"
    assert task.values["_regardingobjectid_value"] == opportunity.values["opportunityid"]

    expanded = await http.get(
        f"accounts({account['accountid']})",
        params={"$select": "name", "$expand": "opportunity_customer_accounts($select=name)"},
    )
    assert [o["name"] for o in expanded.json()["opportunity_customer_accounts"]] == [
        "Opportunity associated to Sample Account"
    ]


@pytest.mark.parametrize(
    ("referencing", "lookup", "collection"),
    [
        ("opportunities", "customerid_account", "opportunity_customer_accounts"),
        ("opportunities", "parentaccountid", "opportunity_parent_account"),
        ("contacts", "parentcustomerid_account", "contact_customer_accounts"),
        ("accounts", "parentaccountid", "account_parent_account"),
        ("leads", "parentaccountid", "lead_parent_account"),
    ],
)
async def test_standard_lookups_give_accounts_their_standard_collections(
    http: httpx.AsyncClient, referencing: str, lookup: str, collection: str
) -> None:
    """The collection-valued navigation property of a standard relationship is its SchemaName
    (webapi/web-api-navigation-properties; reference §4 lists these five)."""
    parent = _id_of(await http.post("accounts", json={"name": "Parent"}))
    body: dict[str, Any] = {f"{lookup}@odata.bind": f"/accounts({parent})"}
    body["subject" if referencing == "leads" else "name"] = "Child"
    if referencing == "contacts":
        body = {"lastname": "Child", f"{lookup}@odata.bind": f"/accounts({parent})"}
    assert (await http.post(referencing, json=body)).status_code == 204
    response = await http.get(f"accounts({parent})", params={"$expand": collection})
    assert response.status_code == 200, response.text
    assert len(response.json()[collection]) == 1


async def test_create_and_update_with_representation_say_the_preference_was_applied(
    http: httpx.AsyncClient,
) -> None:
    """webapi/create-entity-web-api, "Create with data returned": 201 with
    ``Preference-Applied: return=representation``; the same for a PATCH's 200
    (webapi/update-delete-entities-using-web-api, "Update with data returned")."""
    prefer = {"Prefer": "return=representation"}
    created = await http.post(
        "accounts", params={"$select": "name"}, json={"name": "Returned"}, headers=prefer
    )
    assert created.status_code == 201
    assert created.headers["Preference-Applied"] == "return=representation"
    updated = await http.patch(
        f"accounts({created.json()['accountid']})", json={"name": "Again"}, headers=prefer
    )
    assert updated.status_code == 200
    assert updated.headers["Preference-Applied"] == "return=representation"
    plain = await http.post("accounts", json={"name": "Plain"})
    assert plain.status_code == 204 and "Preference-Applied" not in plain.headers


async def test_a_conditional_get_asking_for_annotations_is_never_304(
    http: httpx.AsyncClient,
) -> None:
    """webapi/perform-conditional-operations-using-web-api: ``If-None-Match`` with the current
    ETag answers 304, but not when the request asks for annotations (or has ``$expand``):
    the answer is more than the row its ETag covers."""
    account = _id_of(await http.post("accounts", json={"name": "Cached"}))
    etag = (await http.get(f"accounts({account})")).json()["@odata.etag"]
    unchanged = await http.get(f"accounts({account})", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304
    annotated = await http.get(
        f"accounts({account})",
        headers={"If-None-Match": etag, "Prefer": 'odata.include-annotations="*"'},
    )
    assert annotated.status_code == 200
    assert annotated.json()["name"] == "Cached"


@pytest.mark.parametrize(
    ("path", "option"),
    [
        ("accounts", "$skip"),
        ("accounts", "$frobnicate"),
        ("accounts", "$apply"),
        ("accounts", "sql"),
        ("accounts({id})", "$filter"),
        ("accounts({id})", "$top"),
    ],
)
async def test_an_unknown_system_query_option_is_an_error_not_ignored(
    http: httpx.AsyncClient, path: str, option: str
) -> None:
    """An unknown system query option is refused (OData v4.01 URL Conventions, "System Query
    Options"; reference §4); Dataverse refuses ``$skip`` (webapi/query/page-results). The
    emulator used to ignore them, so ``?sql=SELECT ... WHERE ...`` returned every row."""
    account = _id_of(await http.post("accounts", json={"name": "Only one"}))
    await http.post("accounts", json={"name": "Another"})
    value = "SELECT name FROM account WHERE name = 'Only one'" if option == "sql" else "1"
    response = await http.get(path.format(id=account), params={option: value})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "0x80060888"
    assert option in response.json()["error"]["message"]


async def test_count_true_counts_the_matching_rows(http: httpx.AsyncClient) -> None:
    """webapi/query/count-rows: ``$count=true`` adds ``@odata.count`` (capped at 5000)."""
    for name in ("A", "B", "C"):
        await http.post("accounts", json={"name": name})
    response = await http.get(
        "accounts", params={"$count": "true", "$filter": "name ne 'B'", "$select": "name"}
    )
    assert response.status_code == 200
    assert response.json()["@odata.count"] == 2


async def test_the_picklist_cast_of_the_attribute_collection_lists_every_choice_column(
    http: httpx.AsyncClient,
) -> None:
    """webapi/query-metadata-web-api, casting to a derived type: the cast on the ``Attributes``
    collection keeps the choice columns, each with its ``OptionSet``; Microsoft's Python SDK
    sends exactly this request before every create or update (reference §4)."""
    response = await http.get(
        "EntityDefinitions(LogicalName='account')/Attributes/"
        "Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
        params={"$select": "LogicalName", "$expand": "OptionSet($select=Options)"},
    )
    assert response.status_code == 200, response.text
    by_name = {a["LogicalName"]: a for a in response.json()["value"]}
    assert "accountcategorycode" in by_name and "name" not in by_name
    options = by_name["accountcategorycode"]["OptionSet"]["Options"]
    assert {o["Value"]: o["Label"]["UserLocalizedLabel"]["Label"] for o in options} == {
        1: "Preferred Customer",
        2: "Standard",
    }
    assert all(
        a["@odata.type"] == "#Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
        for a in by_name.values()
    )


async def test_entity_definitions_by_metadata_id_and_filtered_on_other_properties(
    http: httpx.AsyncClient,
) -> None:
    """webapi/query-metadata-web-api: ``EntityDefinitions(<MetadataId>)`` is the primary key
    (``LogicalName='…'`` an alternate key), and ``$filter`` takes other EntityMetadata
    properties, e.g. ``IsPrivate eq false`` and ``startswith(LogicalName, 'cosell_')``."""
    by_name = (await http.get("EntityDefinitions(LogicalName='contact')")).json()
    by_id = await http.get(f"EntityDefinitions({by_name['MetadataId']})")
    assert by_id.status_code == 200 and by_id.json()["LogicalName"] == "contact"
    attributes = await http.get(
        f"EntityDefinitions({by_name['MetadataId']})/Attributes",
        params={"$filter": "LogicalName eq 'lastname'", "$select": "LogicalName"},
    )
    assert [a["LogicalName"] for a in attributes.json()["value"]] == ["lastname"]

    public = await http.get(
        "EntityDefinitions",
        params={
            "$filter": "IsPrivate eq false and (startswith(LogicalName, 'cosell_'))",
            "$select": "LogicalName",
        },
    )
    assert public.status_code == 200, public.text
    assert {t["LogicalName"] for t in public.json()["value"]} == {
        "cosell_solution",
        "cosell_solutiondetail",
    }
    assert set(public.json()["value"][0]) == {"LogicalName", "MetadataId"}

    unknown = await http.get("EntityDefinitions", params={"$filter": "Flavour eq 'x'"})
    assert unknown.status_code == 400
    missing = await http.get(f"EntityDefinitions({metadata_id('nosuchtable')})")
    assert missing.status_code == 404


async def test_create_multiple_answers_the_ids_and_is_all_or_nothing(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    """bulk-operations and webapi/reference/createmultipleresponse: ``CreateMultiple`` with
    ``Targets`` answers ``Ids``; on standard tables a bulk call is all or nothing, so one bad
    target creates no row."""
    url = "accounts/Microsoft.Dynamics.CRM.CreateMultiple"
    target = {"@odata.type": "Microsoft.Dynamics.CRM.account"}
    good = await http.post(
        url, json={"Targets": [{**target, "name": "One"}, {**target, "name": "Two"}]}
    )
    assert good.status_code == 200, good.text
    ids = good.json()["Ids"]
    assert [emulator.store.get("accounts", i).values["name"] for i in ids] == ["One", "Two"]

    bad = await http.post(url, json={"Targets": [{"name": "Three"}, {"name": 3}]})
    assert bad.status_code == 400
    wrong_type = await http.post(
        url, json={"Targets": [{"@odata.type": "Microsoft.Dynamics.CRM.contact", "name": "x"}]}
    )
    assert wrong_type.status_code == 400
    assert emulator.store.count("accounts") == 2


async def test_update_multiple_updates_every_target_or_none(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    """bulk-operations: ``UpdateMultiple`` (204) takes each target's primary key; a target that
    does not exist fails the whole request, and nothing changes."""
    first = _id_of(await http.post("accounts", json={"name": "First"}))
    second = _id_of(await http.post("accounts", json={"name": "Second"}))
    url = "accounts/Microsoft.Dynamics.CRM.UpdateMultiple"
    ok = await http.post(
        url,
        json={
            "Targets": [
                {"accountid": first, "telephone1": "1"},
                {"accountid": second, "telephone1": "2"},
            ]
        },
    )
    assert ok.status_code == 204, ok.text
    missing = "00000000-0000-0000-0000-0000000000ff"
    failed = await http.post(
        url,
        json={
            "Targets": [
                {"accountid": first, "telephone1": "changed"},
                {"accountid": missing, "telephone1": "x"},
            ]
        },
    )
    assert failed.status_code == 404
    assert emulator.store.get("accounts", first).values["telephone1"] == "1"
    assert emulator.store.find("accounts", missing) is None


async def test_metadata_writes_are_recorded_under_the_solution_they_name(
    http: httpx.AsyncClient, control: httpx.AsyncClient, emulator: Emulator
) -> None:
    """webapi/create-update-column-definitions-using-web-api: the examples send
    ``MSCRM.SolutionUniqueName`` so the new column lands in that solution; the emulator records
    it (``/_emulator/stats`` ``solutions``) so ``cosell schema apply --solution`` can be
    checked. The solution must exist first (webapi/reference/solution, publisher)."""
    publisher = await http.post(
        "publishers",
        json={
            "uniquename": "cosellpublisher",
            "friendlyname": "Co-sell Sync",
            "customizationprefix": "cosell",
            "customizationoptionvalueprefix": 10500,
        },
        headers={"Prefer": "return=representation"},
    )
    assert publisher.status_code == 201, publisher.text
    solution = await http.post(
        "solutions",
        json={
            "uniquename": "cosellsync",
            "friendlyname": "Co-sell Sync",
            "version": "1.0.0.0",
            "publisherid@odata.bind": f"/publishers({publisher.json()['publisherid']})",
        },
    )
    assert solution.status_code == 204, solution.text
    column = {
        "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
        "SchemaName": "cosell_Region",
        "MaxLength": 100,
    }
    response = await http.post(
        "EntityDefinitions(LogicalName='account')/Attributes",
        json=column,
        headers={"MSCRM.SolutionUniqueName": "cosellsync"},
    )
    assert response.status_code == 204, response.text
    plain = await http.post(
        "EntityDefinitions(LogicalName='account')/Attributes",
        json={**column, "SchemaName": "cosell_Other"},
    )
    assert plain.status_code == 204
    stats = (await control.get("stats")).json()
    assert stats["solutions"] == {
        "cosellsync": [{"type": "Attribute", "table": "account", "name": "cosell_region"}]
    }
