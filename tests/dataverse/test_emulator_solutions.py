"""The emulator's customization side over HTTP (issue 17): publishers, solutions and their
components, forms and publishing, security roles and privileges, missing privileges. Views and
FetchXML are in test_emulator_views.py, export and import in test_emulator_solution_files.py.
Each test names the learn.microsoft.com page whose behaviour it checks."""

from __future__ import annotations

import httpx

from sandbox.dataverse import Emulator
from sandbox.dataverse.metadata import metadata_id

HEADER_COSELL = {"MSCRM.SolutionUniqueName": "cosellsync"}
PUBLISH = "<importexportxml><entities><entity>{}</entity></entities></importexportxml>"


async def make_solution(http: httpx.AsyncClient, name: str = "cosellsync") -> str:
    """A publisher and an unmanaged solution of it, as ``cosell schema apply`` makes them."""
    publisher = await http.post(
        "publishers",
        json={
            "uniquename": "cosell",
            "friendlyname": "Co-sell",
            "customizationprefix": "cosell",
            "customizationoptionvalueprefix": 10500,
        },
    )
    assert publisher.status_code == 204, publisher.text
    publisher_id = publisher.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    solution = await http.post(
        "solutions",
        json={
            "uniquename": name,
            "friendlyname": "Co-sell Sync",
            "version": "1.0.0.0",
            "publisherid@odata.bind": f"/publishers({publisher_id})",
        },
    )
    assert solution.status_code == 204, solution.text
    return solution.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")


async def partner_table(
    http: httpx.AsyncClient, headers: dict[str, str] | None = None
) -> httpx.Response:
    """POST EntityDefinitions of a small custom table, ``cosell_partner`` ("Partners")."""
    return await http.post(
        "EntityDefinitions",
        json={
            "SchemaName": "cosell_Partner",
            "DisplayCollectionName": {
                "LocalizedLabels": [{"Label": "Partners", "LanguageCode": 1033}]
            },
            "Attributes": [
                {
                    "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
                    "SchemaName": "cosell_Name",
                    "IsPrimaryName": True,
                    "MaxLength": 100,
                }
            ],
        },
        headers=headers or {},
    )


async def components(http: httpx.AsyncClient, solution_id: str) -> list[dict[str, object]]:
    found = await http.get(
        "solutioncomponents",
        params={
            "$filter": f"_solutionid_value eq {solution_id}",
            "$select": "componenttype,objectid,rootcomponentbehavior",
        },
    )
    assert found.status_code == 200, found.text
    rows: list[dict[str, object]] = found.json()["value"]
    return rows


async def test_a_new_org_has_the_default_publishers_and_solutions(http: httpx.AsyncClient) -> None:
    """power-platform/alm/solution-concepts-alm ("Default solution", "Common Data Services
    Default Solution") and reference/entities/publisher: every org has its default publisher
    (prefix "new") and the Default, Active and Basic solutions, none of them managed."""
    publishers = await http.get("publishers", params={"$select": "uniquename,customizationprefix"})
    by_name = {p["uniquename"]: p for p in publishers.json()["value"]}
    assert by_name["DefaultPublisherorg1a2b3c"]["customizationprefix"] == "new"
    assert "MicrosoftCorporation" in by_name
    solutions = await http.get(
        "solutions",
        params={
            "$select": "uniquename,ismanaged,version",
            "$expand": "publisherid($select=customizationprefix)",
        },
    )
    assert solutions.status_code == 200, solutions.text
    rows = {s["uniquename"]: s for s in solutions.json()["value"]}
    assert {"Default", "Active", "Basic"} <= set(rows)
    assert rows["Default"]["ismanaged"] is False
    assert rows["Default"]["publisherid"]["customizationprefix"] == "new"
    assert "@odata.etag" in rows["Basic"]


async def test_a_publisher_needs_a_valid_prefix_and_option_value_prefix(
    http: httpx.AsyncClient,
) -> None:
    """power-platform/alm/create-solutions-alm and reference/entities/publisher: the prefix is
    2-8 letters or digits starting with a letter and not "mscrm"; the option value prefix is
    10000-99999; the unique name is unique."""
    base = {"uniquename": "acme", "friendlyname": "Acme", "customizationoptionvalueprefix": 20000}
    for prefix in ("a", "toolongprefix", "1abc", "ab_c", "mscrm"):
        refused = await http.post("publishers", json={**base, "customizationprefix": prefix})
        assert refused.status_code == 400, prefix
        assert refused.json()["error"]["code"] == "0x80040203"
        assert "prefix" in refused.json()["error"]["message"]
    for option in (9999, 100000):
        refused = await http.post(
            "publishers",
            json={**base, "customizationprefix": "acme", "customizationoptionvalueprefix": option},
        )
        assert refused.status_code == 400
    created = await http.post("publishers", json={**base, "customizationprefix": "acme"})
    assert created.status_code == 204, created.text
    again = await http.post("publishers", json={**base, "customizationprefix": "acme2"})
    assert again.status_code == 412
    assert again.json()["error"]["code"] == "0x80040237"


async def test_a_solution_made_through_the_api_is_unmanaged(http: httpx.AsyncClient) -> None:
    """reference/entities/solution: ``ismanaged`` is read-only (a solution made in the org is
    unmanaged; only an import of a managed file makes a managed one), ``publisherid`` is its
    publisher, expandable."""
    publisher = await http.get("publishers", params={"$filter": "customizationprefix eq 'new'"})
    publisher_id = publisher.json()["value"][0]["publisherid"]
    created = await http.post(
        "solutions",
        json={
            "uniquename": "sneaky",
            "friendlyname": "Sneaky",
            "version": "1.0.0.0",
            "ismanaged": True,
            "publisherid@odata.bind": f"/publishers({publisher_id})",
        },
        headers={"Prefer": "return=representation"},
    )
    assert created.status_code == 201, created.text
    assert created.json()["ismanaged"] is False
    assert created.json()["_publisherid_value"] == publisher_id
    bad_version = await http.post(
        "solutions",
        json={
            "uniquename": "other",
            "version": "one",
            "publisherid@odata.bind": f"/publishers({publisher_id})",
        },
    )
    assert bad_version.status_code == 400


async def test_the_solution_header_adds_each_new_component_to_that_solution(
    http: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    """webapi/compose-http-requests-handle-errors ("MSCRM.SolutionUniqueName") and
    webapi/create-update-entity-definitions-using-web-api: a table, column or relationship made
    with the header joins that unmanaged solution as a solution component whose objectid is its
    MetadataId (reference/entities/solutioncomponent: componenttype 1 Entity, 2 Attribute,
    10 Relationship)."""
    solution_id = await make_solution(http)
    header = {"MSCRM.SolutionUniqueName": "cosellsync"}
    table = await partner_table(http, header)
    assert table.status_code == 204, table.text
    column = await http.post(
        "EntityDefinitions(LogicalName='opportunity')/Attributes",
        json={
            "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
            "SchemaName": "cosell_Region",
            "MaxLength": 50,
        },
        headers=header,
    )
    assert column.status_code == 204, column.text
    lookup = await http.post(
        "RelationshipDefinitions",
        json={
            "SchemaName": "cosell_opportunity_cosell_partner",
            "ReferencedEntity": "opportunity",
            "ReferencingEntity": "cosell_partner",
            "Lookup": {"SchemaName": "cosell_OpportunityId"},
        },
        headers=header,
    )
    assert lookup.status_code == 204, lookup.text
    rows = await components(http, solution_id)
    assert {(r["componenttype"], r["objectid"]) for r in rows} == {
        (1, metadata_id("cosell_partner")),
        (2, metadata_id("opportunity", "cosell_region")),
        (10, metadata_id("relationship", "cosell_opportunity_cosell_partner")),
    }
    stats = (await control.get("stats")).json()
    assert stats["solutions"]["cosellsync"] == [
        {"type": "Entity", "table": "cosell_partner"},
        {"type": "Attribute", "table": "opportunity", "name": "cosell_region"},
        {
            "type": "Relationship",
            "table": "cosell_partner",
            "name": "cosell_opportunity_cosell_partner",
        },
    ]


async def test_an_unknown_solution_in_the_header_changes_nothing(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    """webapi/compose-http-requests-handle-errors: the header names an existing unmanaged
    solution; another name is an error (UNCERTAIN code: 404 ObjectDoesNotExist here) and the
    column is not created."""
    refused = await http.post(
        "EntityDefinitions(LogicalName='account')/Attributes",
        json={
            "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
            "SchemaName": "cosell_Region",
        },
        headers={"MSCRM.SolutionUniqueName": "nosuchsolution"},
    )
    assert refused.status_code == 404
    assert "nosuchsolution" in refused.json()["error"]["message"]
    assert "cosell_region" not in emulator.store.table("accounts").columns


async def test_add_solution_component_answers_the_component_id_once(
    http: httpx.AsyncClient,
) -> None:
    """webapi/reference/addsolutioncomponent: ComponentId, ComponentType, SolutionUniqueName,
    AddRequiredComponents, DoNotIncludeSubcomponents → AddSolutionComponentResponse ``id``;
    adding a component that is already there gives the same row."""
    solution_id = await make_solution(http)
    body = {
        "ComponentId": metadata_id("opportunity"),
        "ComponentType": 1,
        "SolutionUniqueName": "cosellsync",
        "AddRequiredComponents": False,
        "DoNotIncludeSubcomponents": True,
    }
    first = await http.post("AddSolutionComponent", json=body)
    assert first.status_code == 200, first.text
    again = await http.post("AddSolutionComponent", json=body)
    assert again.json()["id"] == first.json()["id"]
    rows = await components(http, solution_id)
    assert rows == [
        {
            "@odata.etag": rows[0]["@odata.etag"],
            "solutioncomponentid": first.json()["id"],
            "componenttype": 1,
            "objectid": metadata_id("opportunity"),
            "rootcomponentbehavior": 1,
        }
    ]
    unknown = await http.post("AddSolutionComponent", json={**body, "SolutionUniqueName": "nope"})
    assert unknown.status_code == 404
    missing = await http.post(
        "AddSolutionComponent", json={**body, "ComponentId": metadata_id("nosuchtable")}
    )
    assert missing.status_code == 404
    posted = await http.post(
        "solutioncomponents", json={"componenttype": 1, "objectid": metadata_id("account")}
    )
    assert posted.status_code == 400


async def test_a_form_edit_is_unpublished_until_publish_xml_names_its_table(
    http: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    """model-driven-apps/customize-entity-forms (changes take effect once published),
    dotnet/api/microsoft.crm.sdk.messages.retrieveunpublishedrequest (Retrieve returns the
    published record, RetrieveUnpublished the pending one) and webapi/reference/publishxml
    (ParameterXml ``<importexportxml><entities><entity>…``)."""
    main = await http.get(
        "systemforms",
        params={
            "$filter": "objecttypecode eq 'opportunity' and type eq 2",
            "$select": "formid,name,formxml",
        },
    )
    assert [f["name"] for f in main.json()["value"]] == ["Opportunity"]
    form = main.json()["value"][0]
    assert form["formxml"].startswith("<form")
    types = await http.get("systemforms", params={"$filter": "objecttypecode eq 'opportunity'"})
    assert sorted(f["type"] for f in types.json()["value"]) == [2, 7]
    edited = form["formxml"].replace(
        "</tabs>",
        '<tab name="cosell" id="{11111111-1111-4111-8111-111111111111}"><columns /></tab></tabs>',
        1,
    )
    assert edited != form["formxml"]
    patched = await http.patch(f"systemforms({form['formid']})", json={"formxml": edited})
    assert patched.status_code == 204, patched.text
    published = await http.get(f"systemforms({form['formid']})", params={"$select": "formxml"})
    assert published.json()["formxml"] == form["formxml"]
    pending = await http.get(
        f"systemforms({form['formid']})/Microsoft.Dynamics.CRM.RetrieveUnpublished()"
    )
    assert pending.json()["formxml"] == edited
    other = await http.post(
        "PublishXml",
        json={"ParameterXml": PUBLISH.format("account")},
    )
    assert other.status_code == 204
    still = await http.get(f"systemforms({form['formid']})", params={"$select": "formxml"})
    assert still.json()["formxml"] == form["formxml"]
    done = await http.post(
        "PublishXml",
        json={"ParameterXml": PUBLISH.format("opportunity")},
    )
    assert done.status_code == 204
    now = await http.get(f"systemforms({form['formid']})", params={"$select": "formxml"})
    assert now.json()["formxml"] == edited
    assert (await control.get("stats")).json()["publishes"] == 2
    bad = await http.post("PublishXml", json={"ParameterXml": "<entities>"})
    assert bad.status_code == 400


async def test_publish_all_xml_publishes_every_pending_form(http: httpx.AsyncClient) -> None:
    """webapi/reference/publishallxml: publishes all changes to solution components."""
    forms = (await http.get("systemforms", params={"$filter": "type eq 2"})).json()["value"]
    for form in forms:
        response = await http.patch(
            f"systemforms({form['formid']})", json={"description": "changed"}
        )
        assert response.status_code == 204
    assert (await http.post("PublishAllXml", json={})).status_code == 204
    after = (await http.get("systemforms", params={"$filter": "type eq 2"})).json()["value"]
    assert {f["description"] for f in after} == {"changed"}


async def test_a_form_edit_with_the_header_joins_the_solution(http: httpx.AsyncClient) -> None:
    """webapi/compose-http-requests-handle-errors: ``MSCRM.SolutionUniqueName`` on the form's
    update adds the form (componenttype 60) to the solution."""
    solution_id = await make_solution(http)
    form = (await http.get("systemforms", params={"$filter": "type eq 7"})).json()["value"][0]
    response = await http.patch(
        f"systemforms({form['formid']})",
        json={"name": "Quick"},
        headers={"MSCRM.SolutionUniqueName": "cosellsync"},
    )
    assert response.status_code == 204
    assert [(r["componenttype"], r["objectid"]) for r in await components(http, solution_id)] == [
        (60, form["formid"])
    ]


async def test_a_role_holds_the_privileges_added_to_it(http: httpx.AsyncClient) -> None:
    """webapi/reference/addprivilegesrole, .../retrieveroleprivilegesrole and
    .../roleprivilege (PrivilegeId, Depth, BusinessUnitId, PrivilegeName); reference/entities/
    role: a role needs its business unit; adding a held privilege again changes its depth."""
    unit = (await http.get("businessunits")).json()["value"]
    assert [u["_parentbusinessunitid_value"] for u in unit] == [None]
    unit_id = unit[0]["businessunitid"]
    orphan = await http.post("roles", json={"name": "No unit"})
    assert orphan.status_code == 400
    created = await http.post(
        "roles",
        json={"name": "Co-sell Sync", "businessunitid@odata.bind": f"/businessunits({unit_id})"},
    )
    assert created.status_code == 204, created.text
    role_id = created.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    found = await http.get(
        "privileges",
        params={
            "$filter": "name eq 'prvReadOpportunity' or name eq 'prvWriteOpportunity'",
            "$select": "name",
        },
    )
    ids = {p["name"]: p["privilegeid"] for p in found.json()["value"]}
    assert set(ids) == {"prvReadOpportunity", "prvWriteOpportunity"}
    add = f"roles({role_id})/Microsoft.Dynamics.CRM.AddPrivilegesRole"
    body = {
        "Privileges": [
            {
                "PrivilegeId": ids["prvReadOpportunity"],
                "Depth": "Global",
                "BusinessUnitId": unit_id,
            },
            {
                "PrivilegeId": ids["prvWriteOpportunity"],
                "Depth": "Basic",
                "BusinessUnitId": unit_id,
            },
        ]
    }
    assert (await http.post(add, json=body)).status_code == 204
    deeper = {
        "Privileges": [
            {"PrivilegeId": ids["prvWriteOpportunity"], "Depth": "Deep", "BusinessUnitId": unit_id}
        ]
    }
    assert (await http.post(add, json=deeper)).status_code == 204
    held = await http.get(f"roles({role_id})/Microsoft.Dynamics.CRM.RetrieveRolePrivilegesRole()")
    assert held.status_code == 200, held.text
    assert sorted((p["PrivilegeName"], p["Depth"]) for p in held.json()["RolePrivileges"]) == [
        ("prvReadOpportunity", "Global"),
        ("prvWriteOpportunity", "Deep"),
    ]
    assert {p["BusinessUnitId"] for p in held.json()["RolePrivileges"]} == {unit_id}
    unknown = {
        "Privileges": [{"PrivilegeId": "00000000-0000-4000-8000-000000000001", "Depth": "Global"}]
    }
    assert (await http.post(add, json=unknown)).status_code == 404
    replace = f"roles({role_id})/Microsoft.Dynamics.CRM.ReplacePrivilegesRole"
    only = {"Privileges": [{"PrivilegeId": ids["prvReadOpportunity"], "Depth": "Local"}]}
    assert (await http.post(replace, json=only)).status_code == 204
    held = await http.get(f"roles({role_id})/Microsoft.Dynamics.CRM.RetrieveRolePrivilegesRole()")
    assert [(p["PrivilegeName"], p["Depth"]) for p in held.json()["RolePrivileges"]] == [
        ("prvReadOpportunity", "Local")
    ]


async def test_a_new_table_comes_with_its_privileges(http: httpx.AsyncClient) -> None:
    """power-platform/admin/security-roles-privileges: a table has Create, Read, Write, Delete,
    Append, Append To, Assign and Share privileges (UNCERTAIN naming for a custom table:
    prv<Verb><SchemaName>)."""
    response = await partner_table(http)
    assert response.status_code == 204, response.text
    found = await http.get("privileges", params={"$filter": "contains(name,'cosell_Partner')"})
    assert sorted(p["name"] for p in found.json()["value"]) == sorted(
        f"prv{verb}cosell_Partner"
        for verb in ("Create", "Read", "Write", "Delete", "Append", "AppendTo", "Assign", "Share")
    )


async def test_a_missing_privilege_is_a_403_naming_it(
    http: httpx.AsyncClient, control: httpx.AsyncClient, emulator: Emulator
) -> None:
    """troubleshoot/power-platform/dataverse/user-permissions/client-errors ("Principal user is
    missing privilege on OTC for entity", -2147220960 = 0x80040220): the message names the
    caller, its business unit, the privilege and its id, the object type code and the table."""
    lacking = await control.put(
        "customization",
        json={"missing_privileges": ["prvCreateEntity", "prvCreateQuery", "prvReadOpportunity"]},
    )
    assert lacking.status_code == 200
    refused = await http.post("EntityDefinitions", json={"SchemaName": "cosell_Thing"})
    assert refused.status_code == 403
    error = refused.json()["error"]
    caller = emulator.store.caller
    privilege = await http.get("privileges", params={"$filter": "name eq 'prvCreateEntity'"})
    privilege_id = privilege.json()["value"][0]["privilegeid"]
    assert error["code"] == "0x80040220"
    assert error["message"] == (
        f"Principal user (Id={caller.user_id}, type=8, roleCount=1, "
        f"businessUnitId={caller.business_unit_id}) is missing prvCreateEntity privilege "
        f"(Id={privilege_id}) on OTC=9800 for entity 'entity'."
    )
    read = await http.get("opportunities")
    assert read.status_code == 403
    assert "missing prvReadOpportunity privilege" in read.json()["error"]["message"]
    assert "on OTC=3 for entity 'opportunity'" in read.json()["error"]["message"]
    view = await http.post("savedqueries", json={"name": "x"})
    assert "prvCreateQuery" in view.json()["error"]["message"]
    assert (await http.get("accounts")).status_code == 200
    await control.post("reset")
    assert (await http.get("opportunities")).status_code == 200
    assert (await control.get("customization")).json()["missing_privileges"] == []


async def test_reset_returns_the_system_tables_to_their_seed(
    http: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    """The sandbox's control API (SPEC 9): reset gives a fresh org, seeded publishers,
    solutions, forms, views, privileges and its root business unit included."""
    before = (await control.get("stats")).json()["rows"]
    await make_solution(http)
    form = (await http.get("systemforms")).json()["value"][0]
    await http.patch(f"systemforms({form['formid']})", json={"name": "Changed"})
    await control.post("reset")
    after = (await control.get("stats")).json()["rows"]
    assert after == before
    assert (await control.get("customization")).json()["unpublished_forms"] == []


async def test_a_new_form_with_the_header_joins_the_solution(http: httpx.AsyncClient) -> None:
    """reference/entities/systemform (objecttypecode, type, formxml) and webapi/compose-http-
    requests-handle-errors: a form created with the solution header is a component (60) of it;
    a form of a table the org lacks is refused."""
    solution_id = await make_solution(http)
    body = {
        "name": "Co-sell",
        "objecttypecode": "opportunity",
        "type": 6,
        "formxml": "<form><tabs /></form>",
    }
    stranger = await http.post("systemforms", json={**body, "objecttypecode": "nosuch"})
    assert stranger.status_code == 400
    created = await http.post("systemforms", json=body, headers=HEADER_COSELL)
    assert created.status_code == 204, created.text
    form_id = created.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    assert [(r["componenttype"], r["objectid"]) for r in await components(http, solution_id)] == [
        (60, form_id)
    ]
