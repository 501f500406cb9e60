"""``cosell schema apply --solution`` and ``cosell solution export|import`` on bare emulators
(issue 17): the publisher and solution, the columns inside it, the opportunity form section and
subgrid, the views and the roles; then staging → production as a managed solution.

Requests follow learn.microsoft.com power-apps/developer/data-platform: ``MSCRM.SolutionUniqueName``
(webapi/create-update-column-definitions-using-web-api), ``AddSolutionComponent``, ``PublishXml``
(customize-entity-forms), ``savedQuery=`` (webapi/retrieve-and-execute-predefined-queries),
``AddPrivilegesRole`` / ``RetrieveRolePrivilegesRole`` (security-roles) and ``ExportSolution`` /
``ImportSolutionAsync`` (power-platform/alm/solution-async).
"""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.crm_schema import crm_schema
from shared.crm_solution import components
from shared.settings import get_settings
from tests.cli.conftest import (
    AUTH,
    BareDataverse,
    Sandbox,
    incoming_referral,
    serve_bare_dataverse,
)

SOLUTION = "CoSellSync"
API = "/api/data/v9.2/"
SCHEMA = crm_schema("cosell_")


def _get(url: str, path: str, **params: str) -> Any:
    response = httpx.get(f"{url}{API}{path}", params=params, headers=AUTH, timeout=10)
    response.raise_for_status()
    return response.json()


def _main_forms(url: str) -> list[dict[str, Any]]:
    rows = _get(
        url,
        "systemforms",
        **{
            "$select": "formid,name,formxml",
            "$filter": "objecttypecode eq 'opportunity' and type eq 2",
        },
    )
    return list(rows["value"])


def _view_id(url: str, name: str) -> str:
    rows = _get(url, "savedqueries", **{"$select": "savedqueryid", "$filter": f"name eq '{name}'"})
    assert len(rows["value"]) == 1, rows
    return str(rows["value"][0]["savedqueryid"])


def _applied(cosell: Any) -> Any:
    ran = cosell("schema", "apply", "--solution", SOLUTION, "--yes")
    assert ran.code == 0, ran.out + ran.err
    return ran


@pytest.fixture(scope="module")
def production() -> Iterator[BareDataverse]:
    """A second bare org: production, where only the managed solution file arrives."""
    with serve_bare_dataverse(29) as bare:
        yield bare


def test_apply_with_a_solution_on_a_bare_org_then_check_passes(
    bare_env: BareDataverse, cosell: Any
) -> None:
    before = cosell("schema", "check", "--solution", SOLUTION, "--json")
    ran = _applied(cosell)
    after = cosell("schema", "check", "--solution", SOLUTION, "--json")

    assert before.code == 1
    assert "+ publisher cosellpublisher (prefix cosell)" in ran.out
    assert f"+ unmanaged solution {SOLUTION}" in ran.out
    assert after.code == 0, after.out
    kinds = {(f["kind"], f["status"]) for f in after.json()["customizations"]}
    assert kinds == {
        ("solution", "ok"),
        ("form", "ok"),
        ("view", "ok"),
        ("role", "ok"),
        ("component", "ok"),
    }
    solution = _get(
        bare_env.url,
        "solutions",
        **{"$filter": f"uniquename eq '{SOLUTION}'", "$select": "solutionid,ismanaged"},
    )["value"][0]
    assert solution["ismanaged"] is False
    parts = _get(
        bare_env.url,
        "solutioncomponents",
        **{"$filter": f"_solutionid_value eq {solution['solutionid']}", "$select": "componenttype"},
    )["value"]
    types = {p["componenttype"] for p in parts}
    assert types >= {1, 2, 10, 20, 26, 60}  # tables, columns, relationship, roles, views, form


def test_the_form_holds_the_section_and_the_subgrid_and_the_rest_is_unchanged(
    bare_env: BareDataverse, cosell: Any
) -> None:
    (before,) = _main_forms(bare_env.url)

    _applied(cosell)

    (after,) = _main_forms(bare_env.url)  # published: the read returns the new XML
    xml = after["formxml"]
    section = components.form_section("cosell_")
    for field in section.fields:
        assert f'datafieldname="{field.column}"' in xml
    assert f"<RelationshipName>{section.subgrid.relationship}</RelationshipName>" in xml
    assert 'name="cosell_partnercenter"' in xml
    inserted = len(xml) - len(before["formxml"])
    start = next(i for i, (a, b) in enumerate(zip(xml, before["formxml"], strict=False)) if a != b)
    assert xml[:start] + xml[start + inserted :] == before["formxml"]


def test_views_return_the_right_rows(bare_env: BareDataverse, cosell: Any) -> None:
    _applied(cosell)
    rows = {
        "failed": {SCHEMA.sync_status.logical_name: 2, SCHEMA.audit.logical_name: "✖ country"},
        "synced": {
            SCHEMA.sync_status.logical_name: 1,
            SCHEMA.visible_to_microsoft.logical_name: True,
        },
        "quiet": {SCHEMA.visible_to_microsoft.logical_name: False},
    }
    for name, values in rows.items():
        created = httpx.post(
            f"{bare_env.url}{API}opportunities", json={"name": name, **values}, headers=AUTH
        )
        assert created.status_code == 204, created.text

    def names(view: str) -> set[str]:
        found = _get(bare_env.url, "opportunities", savedQuery=_view_id(bare_env.url, view))
        return {row["name"] for row in found["value"]}

    assert names("Co-sell: sync errors") == {"failed"}
    assert names("Co-sell: shared with Microsoft") == {"synced"}
    errors = _get(
        bare_env.url, "opportunities", savedQuery=_view_id(bare_env.url, "Co-sell: sync errors")
    )
    assert errors["value"][0][SCHEMA.audit.logical_name] == "✖ country"


def test_the_roles_hold_the_privileges_the_app_needs(bare_env: BareDataverse, cosell: Any) -> None:
    _applied(cosell)

    for spec in components.roles("cosell_"):
        role = _get(
            bare_env.url, "roles", **{"$filter": f"name eq '{spec.name}'", "$select": "roleid"}
        )
        (row,) = role["value"]
        held = _get(
            bare_env.url,
            f"roles({row['roleid']})/Microsoft.Dynamics.CRM.RetrieveRolePrivilegesRole()",
        )["RolePrivileges"]
        by_name = {p["PrivilegeName"].lower(): p["Depth"] for p in held}
        assert by_name == {name.lower(): depth for name, depth in spec.privileges}


def test_second_apply_has_nothing_to_do(bare_env: BareDataverse, cosell: Any) -> None:
    _applied(cosell)

    again = cosell("schema", "apply", "--solution", SOLUTION, "--json")  # no --yes needed

    assert again.code == 0, again.out + again.err
    assert again.json()["planned"] == [] and again.json()["steps_done"] == []


def test_what_if_prints_the_plan_and_changes_nothing(bare_env: BareDataverse, cosell: Any) -> None:
    ran = cosell("schema", "apply", "--solution", SOLUTION, "--what-if")

    assert ran.code == 0, ran.out + ran.err
    assert "+ view 'Co-sell: sync errors' on opportunity" in ran.out
    assert "+ security role 'Co-sell Sync'" in ran.out
    assert "what-if: nothing was changed" in ran.out
    assert cosell("schema", "check", "--solution", SOLUTION).code == 1
    assert (
        _get(bare_env.url, "solutions", **{"$filter": f"uniquename eq '{SOLUTION}'"})["value"] == []
    )


def test_without_yes_and_without_a_terminal_apply_asks_nothing_and_changes_nothing(
    bare_env: BareDataverse, cosell: Any
) -> None:
    ran = cosell("schema", "apply", "--solution", SOLUTION)

    assert ran.code == 1
    assert "nothing was changed" in ran.err
    assert (
        _get(bare_env.url, "solutions", **{"$filter": f"uniquename eq '{SOLUTION}'"})["value"] == []
    )


def test_a_form_it_cannot_read_is_left_untouched_and_reported(
    bare_env: BareDataverse, cosell: Any
) -> None:
    (form,) = _main_forms(bare_env.url)
    broken = "<form><header /></form>"  # no tabs: nowhere to put a section
    patched = httpx.patch(
        f"{bare_env.url}{API}systemforms({form['formid']})", json={"formxml": broken}, headers=AUTH
    )
    assert patched.is_success, patched.text
    httpx.post(
        f"{bare_env.url}{API}PublishXml",
        json={
            "ParameterXml": "<importexportxml><entities><entity>opportunity</entity>"
            "</entities></importexportxml>"
        },
        headers=AUTH,
    ).raise_for_status()

    ran = cosell("schema", "apply", "--solution", SOLUTION, "--yes")

    assert ran.code == 1
    assert "left untouched" in ran.out and "tabs" in ran.out
    assert _main_forms(bare_env.url)[0]["formxml"] == broken
    assert cosell("schema", "check").code == 1
    # the rest was applied
    assert _view_id(bare_env.url, "Co-sell: sync errors")


def test_export_managed_then_import_into_production_gives_a_working_org(
    bare_env: BareDataverse,
    production: BareDataverse,
    cli_env: Sandbox,
    cosell: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _applied(cosell)
    file = tmp_path / "CoSellSync_managed.zip"

    exported = cosell("solution", "export", "--managed", "--out", str(file))

    assert exported.code == 0, exported.out + exported.err
    with zipfile.ZipFile(io.BytesIO(file.read_bytes())) as archive:
        assert "<Managed>1</Managed>" in archive.read("solution.xml").decode()
    monkeypatch.setenv("DATAVERSE_URL", production.url)
    get_settings.cache_clear()
    httpx.post(f"{production.url}/_emulator/reset", timeout=10).raise_for_status()

    imported = cosell("solution", "import", str(file), "--yes")
    check = cosell("schema", "check", "--solution", SOLUTION, "--json")

    assert imported.code == 0, imported.out + imported.err
    assert f"Imported {SOLUTION}" in imported.out
    assert "solution import" in imported.err  # the progress bar
    assert check.code == 0, check.out
    solution = _get(production.url, "solutions", **{"$filter": f"uniquename eq '{SOLUTION}'"})
    assert solution["value"][0]["ismanaged"] is True
    # The demo's first step runs there: a referral from Microsoft becomes an opportunity with its
    # solution rows, through the imported columns and tables.
    referral_id = incoming_referral(cli_env.pc_url)
    synced = cosell("sync", "referral", referral_id, "--json")
    assert synced.code == 0, synced.out + synced.err
    rows = _get(
        production.url,
        "opportunities",
        **{
            "$filter": f"{SCHEMA.referral_id.logical_name} eq '{referral_id}'",
            "$expand": f"{SCHEMA.solution_opportunity.collection}"
            f"($select={SCHEMA.solution_identifier.logical_name})",
        },
    )["value"]
    assert len(rows) == 1
    assert rows[0][SCHEMA.solution_opportunity.collection]
    # ...and the other way: a seller flags an opportunity with a solution; it becomes a referral.
    shared = _flagged_opportunity(production.url)
    outgoing = cosell("sync", "opportunity", shared, "--json")
    assert outgoing.code == 0, outgoing.out + outgoing.err
    assert outgoing.json()["referral_id"]
    nothing = cosell("schema", "apply", "--solution", SOLUTION, "--what-if")
    assert nothing.code == 0 and "Nothing to do" in nothing.out
    # A managed solution changes by importing a new version: apply says so and changes nothing.
    view = _view_id(production.url, "Co-sell: shared with Microsoft")
    httpx.delete(f"{production.url}{API}savedqueries({view})", headers=AUTH).raise_for_status()
    refused = cosell("schema", "apply", "--solution", SOLUTION, "--yes")
    assert refused.code == 1
    assert f"solution {SOLUTION} is managed here" in refused.err


def _flagged_opportunity(url: str) -> str:
    """A seller's co-sell opportunity with a customer, a contact and a solution (as the demo's)."""
    account, contact, opportunity = (str(uuid.uuid4()) for _ in range(3))
    rows = (
        ("accounts", {"accountid": account, "name": "Fabrikam Ltd", "address1_country": "DE"}),
        (
            "contacts",
            {
                "contactid": contact,
                "firstname": "Ben",
                "lastname": "Example",
                "emailaddress1": "ben@example.com",
            },
        ),
        (
            "opportunities",
            {
                "opportunityid": opportunity,
                "name": "Fabrikam - analytics platform",
                "estimatedvalue": 90000,
                "estimatedclosedate": "2027-06-30",
                "parentaccountid@odata.bind": f"/accounts({account})",
                "parentcontactid@odata.bind": f"/contacts({contact})",
                SCHEMA.help_needed.logical_name: 100000001,
                SCHEMA.sync_with_partner_center.logical_name: True,
            },
        ),
        (
            SCHEMA.solution.entity_set,
            {
                SCHEMA.solution.primary_name.logical_name: "Analytics accelerator",
                SCHEMA.solution_identifier.logical_name: "SOL-12345-ABC",
                SCHEMA.solution_opportunity.bind_name: f"/opportunities({opportunity})",
            },
        ),
    )
    for entity_set, row in rows:
        created = httpx.post(f"{url}{API}{entity_set}", json=row, headers=AUTH, timeout=10)
        assert created.status_code == 204, created.text
    return opportunity


def test_importing_a_file_that_is_not_a_solution_says_why(
    bare_env: BareDataverse, cosell: Any, tmp_path: Path
) -> None:
    file = tmp_path / "notes.zip"
    with zipfile.ZipFile(file, "w") as archive:
        archive.writestr("readme.txt", "hello")

    ran = cosell("solution", "import", str(file), "--yes")

    assert ran.code == 1
    assert "the zip has no solution.xml" in ran.err


def test_a_missing_privilege_is_named_and_what_was_applied_is_said(
    bare_env: BareDataverse, cosell: Any
) -> None:
    deny = httpx.put(
        f"{bare_env.url}/_emulator/customization",
        json={"missing_privileges": ["prvCreateRole"]},
        timeout=10,
    )
    assert deny.is_success, deny.text

    ran = cosell("schema", "apply", "--solution", SOLUTION, "--yes")

    assert ran.code == 1
    assert "lacks the Dataverse privilege prvCreateRole" in ran.err
    assert "already applied:" in ran.err and "not applied:" in ran.err
    assert "security role 'Co-sell Sync'" in ran.err


def test_export_of_an_unknown_solution_says_how_to_make_it(
    bare_env: BareDataverse, cosell: Any, tmp_path: Path
) -> None:
    ran = cosell("solution", "export", "--out", str(tmp_path / "x.zip"))

    assert ran.code == 1
    assert "schema apply --solution CoSellSync" in ran.err
