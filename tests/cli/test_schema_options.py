"""``cosell schema check|apply``: choice options (SPEC 4.1, 4.2) and a bare org with the default
``cosell_`` prefix (``create_app(custom_schema=False)``)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from sandbox.dataverse import emulator_of
from shared.crm_schema import opportunity_solutions
from tests.cli.conftest import AUTH, BareDataverse, Sandbox

OPPORTUNITY_SOLUTIONS = opportunity_solutions()  # the default prefix, as the emulator seeds it

HELP_NEEDED = {
    100000000: "WorkloadSpecificValueProposition",
    100000001: "CustomerTechnicalArchitecture",
    100000002: "ProofOfConceptOrDemo",
    100000003: "QuotesOrLicensing",
    100000004: "PostSalesCustomerSuccess",
    100000005: "GeneralOrOther",
}


def _options(sandbox: Sandbox, column: str) -> dict[int, str]:
    """The live option dict of an opportunity choice column in the running emulator; tests
    change it in place to stand for an org whose administrator edited the choice (the next
    ``cli_env`` reset rebuilds it)."""
    table = emulator_of(sandbox.dataverse_app).store.schema.table("opportunities")
    assert table is not None
    options = table.columns[column].options
    assert options is not None
    return options


def _item(ran: Any, name: str) -> dict[str, Any]:
    return next(i for i in ran.json()["items"] if i["name"] == name)


def test_check_compares_the_options_of_both_choice_columns(cli_env: Sandbox, cosell: Any) -> None:
    ran = cosell("schema", "check", "--json")

    assert ran.code == 0, ran.out
    help_needed, sync_status = _item(ran, "cosell_helpneeded"), _item(ran, "cosell_syncstatus")
    assert help_needed["status"] == sync_status["status"] == "ok"
    assert help_needed["options"] == {"missing": {}, "different": {}, "extra": {}}
    assert sync_status["options"] == {"missing": {}, "different": {}, "extra": {}}


def test_check_reports_a_missing_and_a_relabelled_option(cli_env: Sandbox, cosell: Any) -> None:
    help_needed = _options(cli_env, "cosell_helpneeded")
    del help_needed[100000003]
    help_needed[100000001] = "Licensing"
    del _options(cli_env, "cosell_syncstatus")[3]

    text = cosell("schema", "check")
    ran = cosell("schema", "check", "--json")

    assert text.code == ran.code == 1
    assert "missing option 100000003 QuotesOrLicensing" in text.out
    assert (
        "option 100000001 is labelled 'Licensing', the sync needs 'CustomerTechnicalArchitecture'"
        in text.out
    )
    assert "missing option 3 Pending" in text.out
    assert "0 column(s) or table(s) missing, 2 differ" in text.out
    item = _item(ran, "cosell_helpneeded")
    assert item["status"] == "differs"
    assert item["options"]["missing"] == {"100000003": "QuotesOrLicensing"}
    assert item["options"]["different"] == {
        "100000001": {"found": "Licensing", "needed": "CustomerTechnicalArchitecture"}
    }
    assert _item(ran, "cosell_syncstatus")["options"]["missing"] == {"3": "Pending"}


def test_readable_labels_and_extra_options_pass_but_extras_are_listed(
    cli_env: Sandbox, cosell: Any
) -> None:
    help_needed = _options(cli_env, "cosell_helpneeded")
    help_needed[100000002] = "Proof of concept or demo"  # same name, made readable
    help_needed[100000006] = "Other"

    ran = cosell("schema", "check", "--json")

    assert ran.code == 0, ran.out
    item = _item(ran, "cosell_helpneeded")
    assert item["status"] == "ok"
    assert item["options"]["extra"] == {"100000006": "Other"}
    assert "extra option 100000006 'Other'" in item["detail"]


def test_apply_reports_a_wrong_option_and_leaves_the_column_alone(
    cli_env: Sandbox, cosell: Any
) -> None:
    del _options(cli_env, "cosell_helpneeded")[100000005]

    ran = cosell("schema", "apply", "--yes")
    as_json = cosell("schema", "apply", "--yes", "--json")

    assert ran.code == as_json.code == 1
    assert "Nothing to do" in ran.out
    assert "! opportunity.cosell_helpneeded missing option 100000005 GeneralOrOther" in ran.out
    assert "left unchanged" in ran.out
    assert as_json.json()["created"] == []
    assert [row["name"] for row in as_json.json()["differs"]] == ["cosell_helpneeded"]
    assert 100000005 not in _options(cli_env, "cosell_helpneeded")


# -- a bare org with the default prefix -----------------------------------------------------------


def test_apply_on_a_bare_org_creates_the_schema_then_check_passes_and_apply_is_idempotent(
    bare_env: BareDataverse, cosell: Any
) -> None:
    before = cosell("schema", "check", "--json")
    first = cosell("schema", "apply", "--yes")
    after = cosell("schema", "check", "--json")
    second = cosell("schema", "apply", "--yes", "--json")

    assert before.code == 1
    missing = {i["name"] for i in before.json()["items"] if i["status"] == "missing"}
    assert missing >= {
        "cosell_helpneeded",
        "cosell_syncstatus",
        "cosell_audit",
        "cosell_solution",
        "cosell_solutiondetail",
        "cosell_opportunityid",
    }
    assert first.code == 0, first.out + first.err
    assert "+ column opportunity.cosell_helpneeded (Picklist)" in first.out
    assert "+ table cosell_solution" in first.out
    assert after.code == 0, after.out
    assert _item(after, "cosell_helpneeded")["options"] == {
        "missing": {},
        "different": {},
        "extra": {},
    }
    assert second.code == 0
    assert second.json()["planned"] == second.json()["created"] == []


def test_applied_choices_keep_their_options_and_labels(
    bare_env: BareDataverse, cosell: Any
) -> None:
    assert cosell("schema", "apply", "--yes").code == 0
    base = f"{bare_env.url}/api/data/v9.2/EntityDefinitions(LogicalName='opportunity')"

    options = {}
    for column in ("cosell_helpneeded", "cosell_syncstatus"):
        response = httpx.get(
            f"{base}/Attributes(LogicalName='{column}')"
            "/Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
            params={"$select": "LogicalName", "$expand": "OptionSet($select=Options)"},
            headers=AUTH,
            timeout=10,
        )
        assert response.status_code == 200, response.text
        options[column] = {
            o["Value"]: o["Label"]["UserLocalizedLabel"]["Label"]
            for o in response.json()["OptionSet"]["Options"]
        }

    assert options["cosell_helpneeded"] == HELP_NEEDED
    assert options["cosell_syncstatus"] == {1: "Synced", 2: "Error", 3: "Pending"}


def test_applied_lookup_gives_opportunities_the_solutions_collection_the_engine_expands(
    bare_env: BareDataverse, cosell: Any
) -> None:
    assert cosell("schema", "apply", "--yes").code == 0
    api = f"{bare_env.url}/api/data/v9.2"
    opportunity = str(uuid.uuid4())
    created = httpx.post(
        f"{api}/opportunities",
        headers=AUTH,
        json={
            "opportunityid": opportunity,
            "name": "Deal",
            "cosell_helpneeded": 100000002,
            "cosell_syncstatus": 3,
        },
        timeout=10,
    )
    assert created.status_code == 204, created.text
    solution = httpx.post(
        f"{api}/cosell_solutions",
        headers=AUTH,
        json={
            "cosell_name": "Contoso ERP",
            "cosell_solutionidentifier": "SOL-12345-ABC",
            "cosell_opportunityid@odata.bind": f"/opportunities({opportunity})",
        },
        timeout=10,
    )
    assert solution.status_code == 204, solution.text

    read = httpx.get(
        f"{api}/opportunities({opportunity})",
        params={
            "$select": "name",
            "$expand": f"{OPPORTUNITY_SOLUTIONS}($select=cosell_solutionidentifier)",
        },
        headers=AUTH,
        timeout=10,
    )
    relationships = httpx.get(
        f"{api}/EntityDefinitions(LogicalName='opportunity')/OneToManyRelationships",
        headers=AUTH,
        timeout=10,
    )

    assert read.status_code == 200, read.text
    solutions = read.json()[OPPORTUNITY_SOLUTIONS]
    assert [s["cosell_solutionidentifier"] for s in solutions] == ["SOL-12345-ABC"]
    relation = next(
        r
        for r in relationships.json()["value"]
        if r["ReferencingEntity"] == "cosell_solution"
        and r["ReferencingAttribute"] == "cosell_opportunityid"
    )
    assert relation["ReferencedEntityNavigationPropertyName"] == OPPORTUNITY_SOLUTIONS
    assert relation["ReferencingEntityNavigationPropertyName"] == "cosell_opportunityid"


def test_check_reports_a_lookup_whose_collection_the_engine_cannot_expand(
    cli_env: Sandbox, cosell: Any
) -> None:
    # A lookup made by hand under another relationship name (reference 4.5: the collection's
    # name comes from the relationship, so it is read from metadata).
    solutions = emulator_of(cli_env.dataverse_app).store.schema.table("cosell_solutions")
    assert solutions is not None
    lookup = solutions.columns["cosell_opportunityid"]
    lookup.collections["cosell_opportunityid"] = "cosell_opportunity_solutions"

    ran = cosell("schema", "check", "--json")

    assert ran.code == 1
    item = _item(ran, "cosell_opportunityid")
    assert item["status"] == "differs"
    assert item["detail"] == (
        "opportunity reaches its rows as 'cosell_opportunity_solutions', "
        f"the sync expands '{OPPORTUNITY_SOLUTIONS}'"
    )
