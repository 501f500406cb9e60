"""Solution export and import over the emulator's Web API (issue 17): ``ExportSolution``,
``ImportSolution``, ``ImportSolutionAsync`` with its system job and import job; a managed
export of one emulator imported into another, fresh one. Each test names the
learn.microsoft.com page it follows."""

from __future__ import annotations

import asyncio
import base64
import io
import zipfile
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from sandbox.dataverse import create_app
from tests.dataverse.conftest import API, TOKEN, URL
from tests.dataverse.test_emulator_solutions import make_solution

HEADER = {"MSCRM.SolutionUniqueName": "cosellsync"}
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}


def _clients(app: Starlette) -> tuple[httpx.AsyncClient, httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    return (
        httpx.AsyncClient(transport=transport, base_url=API, headers=HEADERS),
        httpx.AsyncClient(transport=transport, base_url=URL + "/_emulator/"),
    )


@pytest.fixture
async def source() -> AsyncIterator[httpx.AsyncClient]:
    """A bare org (``create_app(custom_schema=False)``) where the solution is built."""
    api, control = _clients(create_app(token=TOKEN, custom_schema=False))
    async with api, control:
        yield api


@pytest.fixture
async def target() -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Another bare org, the one the solution is imported into."""
    api, control = _clients(create_app(token=TOKEN, custom_schema=False))
    async with api, control:
        yield api, control


def _label(text: str) -> dict[str, object]:
    return {"LocalizedLabels": [{"Label": text, "LanguageCode": 1033}]}


async def build_solution(http: httpx.AsyncClient) -> dict[str, str]:
    """What ``cosell schema apply --solution cosellsync`` puts into a solution: a table with a
    choice, a column on opportunity, a lookup, the form section, a view and a security role."""
    await make_solution(http)
    table = await http.post(
        "EntityDefinitions",
        json={
            "SchemaName": "cosell_Solution",
            "DisplayName": _label("Solution"),
            "DisplayCollectionName": _label("Solutions"),
            "Attributes": [
                {
                    "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
                    "SchemaName": "cosell_Name",
                    "IsPrimaryName": True,
                    "MaxLength": 200,
                },
                {
                    "@odata.type": "Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
                    "SchemaName": "cosell_Stage",
                    "OptionSet": {
                        "Options": [
                            {"Value": 105000000, "Label": _label("Draft")},
                            {"Value": 105000001, "Label": _label("Shared")},
                        ]
                    },
                },
            ],
        },
        headers=HEADER,
    )
    assert table.status_code == 204, table.text
    column = await http.post(
        "EntityDefinitions(LogicalName='opportunity')/Attributes",
        json={
            "@odata.type": "Microsoft.Dynamics.CRM.MemoAttributeMetadata",
            "SchemaName": "cosell_Notes",
            "MaxLength": 4000,
        },
        headers=HEADER,
    )
    assert column.status_code == 204, column.text
    lookup = await http.post(
        "RelationshipDefinitions",
        json={
            "SchemaName": "cosell_opportunity_cosell_solution",
            "ReferencedEntity": "opportunity",
            "ReferencingEntity": "cosell_solution",
            "ReferencingEntityNavigationPropertyName": "cosell_opportunityid",
            "ReferencedEntityNavigationPropertyName": "cosell_opportunity_solutions",
            "Lookup": {"SchemaName": "cosell_OpportunityId"},
        },
        headers=HEADER,
    )
    assert lookup.status_code == 204, lookup.text
    form = (
        await http.get(
            "systemforms", params={"$filter": "objecttypecode eq 'opportunity' and type eq 2"}
        )
    ).json()["value"][0]
    formxml = form["formxml"].replace(
        "</tabs>",
        '<tab name="cosell" id="{22222222-2222-4222-8222-222222222222}" IsUserDefined="1">'
        '<labels><label description="Co-sell" languagecode="1033" /></labels><columns>'
        '<column width="100%"><sections><section name="cosell_section" '
        'id="{33333333-3333-4333-8333-333333333333}" IsUserDefined="1"><labels><label '
        'description="Co-sell" languagecode="1033" /></labels><rows><row><cell '
        'id="{44444444-4444-4444-8444-444444444444}"><labels><label description="Notes" '
        'languagecode="1033" /></labels><control id="cosell_notes" '
        'classid="{E0DECE4B-6FC8-4a8f-A065-082708572369}" datafieldname="cosell_notes" />'
        "</cell></row></rows></section></sections></column></columns></tab></tabs>",
        1,
    )
    patched = await http.patch(
        f"systemforms({form['formid']})", json={"formxml": formxml}, headers=HEADER
    )
    assert patched.status_code == 204
    publish = "<importexportxml><entities><entity>opportunity</entity></entities></importexportxml>"
    assert (await http.post("PublishXml", json={"ParameterXml": publish})).status_code == 204
    view = await http.post(
        "savedqueries",
        json={
            "name": "Co-sell Opportunities",
            "returnedtypecode": "opportunity",
            "querytype": 0,
            "fetchxml": '<fetch><entity name="opportunity"><attribute name="name" /><filter>'
            '<condition attribute="cosell_notes" operator="not-null" /></filter></entity></fetch>',
            "layoutxml": '<grid name="resultset" object="3" jump="name" select="1" icon="1" '
            'preview="1"><row name="result" id="opportunityid"><cell name="name" width="300" />'
            "</row></grid>",
        },
        headers=HEADER,
    )
    assert view.status_code == 204, view.text
    unit = (await http.get("businessunits")).json()["value"][0]["businessunitid"]
    role = await http.post(
        "roles",
        json={"name": "Co-sell Sync", "businessunitid@odata.bind": f"/businessunits({unit})"},
        headers=HEADER,
    )
    assert role.status_code == 204, role.text
    role_id = role.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    wanted = "name eq 'prvReadOpportunity' or name eq 'prvCreatecosell_Solution'"
    found = (await http.get("privileges", params={"$filter": wanted})).json()["value"]
    assert len(found) == 2
    added = await http.post(
        f"roles({role_id})/Microsoft.Dynamics.CRM.AddPrivilegesRole",
        json={
            "Privileges": [
                {"PrivilegeId": p["privilegeid"], "Depth": "Global", "BusinessUnitId": unit}
                for p in found
            ]
        },
    )
    assert added.status_code == 204
    return {"formid": form["formid"], "formxml": formxml, "roleid": role_id}


async def export(http: httpx.AsyncClient, *, managed: bool) -> str:
    response = await http.post(
        "ExportSolution", json={"SolutionName": "cosellsync", "Managed": managed}
    )
    assert response.status_code == 200, response.text
    file: str = response.json()["ExportSolutionFile"]
    return file


async def test_an_export_has_the_layout_of_a_solution_file(source: httpx.AsyncClient) -> None:
    """webapi/reference/exportsolution (SolutionName, Managed → ExportSolutionFile, base64) and
    model-driven-apps/customization-xml-reference: the zip holds [Content_Types].xml,
    solution.xml (SolutionManifest: UniqueName, Version, Managed, Publisher, RootComponents)
    and customizations.xml (Entities with attributes, forms and views, Roles,
    EntityRelationships)."""
    await build_solution(source)
    archive = zipfile.ZipFile(io.BytesIO(base64.b64decode(await export(source, managed=True))))
    assert set(archive.namelist()) == {"[Content_Types].xml", "solution.xml", "customizations.xml"}
    manifest = archive.read("solution.xml").decode()
    for part in (
        "<UniqueName>cosellsync</UniqueName>",
        "<Version>1.0.0.0</Version>",
        "<Managed>1</Managed>",
        "<CustomizationPrefix>cosell</CustomizationPrefix>",
        "<CustomizationOptionValuePrefix>10500</CustomizationOptionValuePrefix>",
        '<RootComponent type="1" schemaName="cosell_solution" behavior="0" />',
    ):
        assert part in manifest, part
    customizations = archive.read("customizations.xml").decode()
    for part in (
        "<Type>picklist</Type>",
        '<option value="105000001">',
        "<Type>ntext</Type>",
        '<EntityRelationship Name="cosell_opportunity_cosell_solution">',
        'name="cosell_section"',
        '<RolePrivilege name="prvReadOpportunity" level="Global" />',
        "<savedquery>",
    ):
        assert part in customizations, part
    unmanaged = zipfile.ZipFile(io.BytesIO(base64.b64decode(await export(source, managed=False))))
    assert "<Managed>0</Managed>" in unmanaged.read("solution.xml").decode()


async def test_exporting_an_unknown_or_managed_solution_is_refused(
    source: httpx.AsyncClient,
) -> None:
    """webapi/reference/exportsolution and power-platform/alm/solution-concepts-alm (a managed
    solution cannot be exported)."""
    unknown = await source.post("ExportSolution", json={"SolutionName": "nope", "Managed": False})
    assert unknown.status_code == 404
    system = await source.post("ExportSolution", json={"SolutionName": "Default", "Managed": False})
    assert system.status_code == 400


async def test_a_managed_export_imports_into_a_fresh_org_and_works_there(
    source: httpx.AsyncClient, target: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    """webapi/reference/importsolutionasync (→ AsyncOperationId, ImportJobKey),
    reference/entities/importjob (progress rising to 100, startedon, completedon, data) and
    reference/entities/asyncoperation (statecode 3, statuscode 30 Succeeded);
    power-platform/alm/solution-concepts-alm: the imported solution is managed, its table
    works as one made in the org, its form, view and role are there."""
    built = await build_solution(source)
    file = await export(source, managed=True)
    api, control = target
    assert (await control.put("customization", json={"import_delay_ms": 15})).status_code == 200
    job_id = "5d7f0a1e-2b3c-4d5e-8f60-718293a4b5c6"
    started = await api.post(
        "ImportSolutionAsync",
        json={
            "CustomizationFile": file,
            "OverwriteUnmanagedCustomizations": True,
            "PublishWorkflows": True,
            "ImportJobId": job_id,
        },
    )
    assert started.status_code == 200, started.text
    operation_id = started.json()["AsyncOperationId"]
    assert started.json()["ImportJobKey"]
    seen: list[float] = []
    for _ in range(500):
        job = await api.get(f"importjobs({job_id})", params={"$select": "progress,completedon"})
        assert job.status_code == 200, job.text
        seen.append(job.json()["progress"])
        if job.json()["completedon"]:
            break
        await asyncio.sleep(0.005)
    assert seen[-1] == 100
    assert any(0 < p < 100 for p in seen), seen
    assert seen == sorted(seen)
    operation = (await api.get(f"asyncoperations({operation_id})")).json()
    assert (operation["statecode"], operation["statuscode"]) == (3, 30)
    job = (await api.get(f"importjobs({job_id})")).json()
    assert job["solutionname"] == "cosellsync" and job["startedon"]
    assert 'result="success"' in job["data"]
    solution = (
        await api.get(
            "solutions", params={"$filter": "uniquename eq 'cosellsync'", "$expand": "publisherid"}
        )
    ).json()["value"][0]
    assert solution["ismanaged"] is True
    assert solution["publisherid"]["customizationprefix"] == "cosell"
    # The imported table takes rows through the data API, lookup and choice included.
    opportunity = await api.post(
        "opportunities", json={"name": "Contoso", "cosell_notes": "from import"}
    )
    assert opportunity.status_code == 204, opportunity.text
    opportunity_id = opportunity.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    row = await api.post(
        "cosell_solutions",
        json={
            "cosell_name": "SOL-1",
            "cosell_stage": 105000001,
            "cosell_opportunityid@odata.bind": f"/opportunities({opportunity_id})",
        },
    )
    assert row.status_code == 204, row.text
    refused = await api.post("cosell_solutions", json={"cosell_name": "SOL-2", "cosell_stage": 7})
    assert refused.status_code == 400
    expanded = await api.get(
        f"opportunities({opportunity_id})",
        params={"$expand": "cosell_opportunity_solutions($select=cosell_name)"},
    )
    assert [s["cosell_name"] for s in expanded.json()["cosell_opportunity_solutions"]] == ["SOL-1"]
    choice = await api.get(
        "EntityDefinitions(LogicalName='cosell_solution')/Attributes(LogicalName='cosell_stage')"
        "/Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
        params={"$select": "LogicalName", "$expand": "OptionSet($select=Options)"},
    )
    options = choice.json()["OptionSet"]["Options"]
    assert [(o["Value"], o["Label"]["UserLocalizedLabel"]["Label"]) for o in options] == [
        (105000000, "Draft"),
        (105000001, "Shared"),
    ]
    # The form arrives published, the view and the role with their contents.
    form = (await api.get(f"systemforms({built['formid']})", params={"$select": "formxml"})).json()
    assert 'name="cosell_section"' in form["formxml"]
    views = await api.get("savedqueries", params={"$filter": "name eq 'Co-sell Opportunities'"})
    view_id = views.json()["value"][0]["savedqueryid"]
    listed = await api.get("opportunities", params={"savedQuery": view_id})
    assert [r["name"] for r in listed.json()["value"]] == ["Contoso"]
    held = await api.get(
        f"roles({built['roleid']})/Microsoft.Dynamics.CRM.RetrieveRolePrivilegesRole()"
    )
    assert sorted(p["PrivilegeName"].lower() for p in held.json()["RolePrivileges"]) == [
        "prvcreatecosell_solution",
        "prvreadopportunity",
    ]
    components = await api.get(
        "solutioncomponents", params={"$filter": f"_solutionid_value eq {solution['solutionid']}"}
    )
    assert {c["componenttype"] for c in components.json()["value"]} >= {1, 10, 20, 26, 60}
    # A managed solution cannot be customized further nor exported.
    more = await api.post(
        "EntityDefinitions(LogicalName='account')/Attributes",
        json={
            "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
            "SchemaName": "cosell_X",
        },
        headers=HEADER,
    )
    assert more.status_code == 400
    assert (
        await api.post("ExportSolution", json={"SolutionName": "cosellsync", "Managed": True})
    ).status_code == 400


async def test_the_synchronous_import_answers_when_done(
    source: httpx.AsyncClient, target: tuple[httpx.AsyncClient, httpx.AsyncClient]
) -> None:
    """webapi/reference/importsolution: no return value (204) once imported; the import job
    named by ImportJobId reads 100 % done."""
    await build_solution(source)
    file = await export(source, managed=False)
    api, _ = target
    job_id = "6e8f1b2c-3d4e-4f50-9a61-8293a4b5c6d7"
    done = await api.post("ImportSolution", json={"CustomizationFile": file, "ImportJobId": job_id})
    assert done.status_code == 204, done.text
    assert (await api.get(f"importjobs({job_id})")).json()["progress"] == 100
    solution = (await api.get("solutions", params={"$filter": "uniquename eq 'cosellsync'"})).json()
    assert solution["value"][0]["ismanaged"] is False
    assert (await api.get("cosell_solutions")).status_code == 200


async def test_a_file_that_is_not_a_solution_fails_the_job_with_the_reason(
    target: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """webapi/reference/importsolutionasync and reference/entities/asyncoperation: a failed
    import ends with statuscode 31 (Failed) and a message saying why; the synchronous
    ImportSolution answers the error."""
    api, _ = target
    not_zip = base64.b64encode(b"this is not a zip").decode()
    started = await api.post("ImportSolutionAsync", json={"CustomizationFile": not_zip})
    assert started.status_code == 200
    operation_id = started.json()["AsyncOperationId"]
    for _ in range(200):
        operation = (await api.get(f"asyncoperations({operation_id})")).json()
        if operation["statecode"] == 3:
            break
        await asyncio.sleep(0.005)
    assert (operation["statecode"], operation["statuscode"]) == (3, 31)
    assert "not a zip archive" in operation["message"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("[Content_Types].xml", "<Types />")
        archive.writestr("customizations.xml", "<ImportExportXml />")
    no_manifest = base64.b64encode(buffer.getvalue()).decode()
    failed = await api.post("ImportSolution", json={"CustomizationFile": no_manifest})
    assert failed.status_code == 400
    assert "solution.xml" in failed.json()["error"]["message"]
    missing = await api.post("ImportSolution", json={})
    assert missing.status_code == 400
    assert (await api.get("solutions", params={"$filter": "ismanaged eq true"})).json()[
        "value"
    ] == []


async def test_importing_needs_the_import_privilege(
    target: tuple[httpx.AsyncClient, httpx.AsyncClient],
) -> None:
    """troubleshoot/power-platform/dataverse/user-permissions/client-errors: without
    prvImportCustomization the import is refused (0x80040220) before it starts."""
    api, control = target
    await control.put("customization", json={"missing_privileges": ["prvImportCustomization"]})
    refused = await api.post("ImportSolutionAsync", json={"CustomizationFile": ""})
    assert refused.status_code == 403
    assert "prvImportCustomization" in refused.json()["error"]["message"]
    assert (await api.get("importjobs")).json()["value"] == []
