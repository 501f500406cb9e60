"""``cosell mapping check`` (SPEC 10, 13) and the mapping's extra columns in ``cosell schema
check``, against the Dataverse emulator. The customer's own columns and tables are created the way
an administrator's tooling would, through the emulator's metadata API (``EntityDefinitions``,
``RelationshipDefinitions``), and the mapping is given as ``CRM_MAPPING``."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest

from shared.dataverse import ColumnDefinition, LookupDefinition, TableDefinition
from shared.settings import get_settings
from tests.cli.conftest import AUTH, Sandbox

API = "/api/data/v9.2/"
COMPANY_SIZE = {100000000: "1-50 employees", 100000001: "51-250 employees"}
REGION_ID = "5d2b1c8e-0f3a-4c6b-9a1d-000000000001"


def _post(sandbox: Sandbox, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{sandbox.dataverse_url}{API}{path}", json=body, headers=AUTH)
    assert response.status_code in (201, 204), response.text
    return response.json() if response.content else {}


def _column(sandbox: Sandbox, table: str, column: ColumnDefinition) -> None:
    _post(sandbox, f"EntityDefinitions(LogicalName='{table}')/Attributes", column.to_metadata())


def _table(sandbox: Sandbox, schema_name: str, entity_set: str) -> None:
    primary = ColumnDefinition(schema_name="cr1a2_Name", display_name="Name", kind="string")
    definition = TableDefinition(
        schema_name=schema_name,
        display_name=schema_name,
        display_collection_name=entity_set,
        entity_set_name=entity_set,
        primary_name=primary,
    )
    _post(sandbox, "EntityDefinitions", definition.to_metadata())


def _lookup(sandbox: Sandbox, schema_name: str, *, on: str, to: str) -> None:
    definition = LookupDefinition(
        schema_name=schema_name,
        display_name=schema_name,
        referenced_table=to,
        referenced_key=f"{to}id",
        referencing_table=on,
        relationship_schema_name=f"{to}_{on}_{schema_name.lower()}",
    )
    _post(sandbox, "RelationshipDefinitions", definition.to_metadata())


def _org_with_the_customers_columns(sandbox: Sandbox) -> None:
    """What the customer's administrator made for the mapping below: a company size choice, a
    partner notes memo and a money column on opportunity, a region table (one row) with a
    lookup from opportunity, and a country table with an ISO code column and an account lookup."""
    _column(
        sandbox,
        "opportunity",
        ColumnDefinition(
            schema_name="cr1a2_CompanySize",
            display_name="Company size",
            kind="choice",
            options=COMPANY_SIZE,
        ),
    )
    _column(
        sandbox,
        "opportunity",
        ColumnDefinition(schema_name="cr1a2_PartnerNotes", display_name="Notes", kind="memo"),
    )
    _column(
        sandbox,
        "opportunity",
        ColumnDefinition(schema_name="cr1a2_ListValue", display_name="List value", kind="money"),
    )
    _table(sandbox, "cr1a2_Region", "cr1a2_regions")
    _post(sandbox, "cr1a2_regions", {"cr1a2_regionid": REGION_ID, "cr1a2_name": "EMEA"})
    _lookup(sandbox, "cr1a2_RegionId", on="opportunity", to="cr1a2_region")
    _table(sandbox, "cr1a2_Country", "cr1a2_countries")
    _column(
        sandbox,
        "cr1a2_country",
        ColumnDefinition(schema_name="cr1a2_IsoCode", display_name="ISO", kind="string"),
    )
    _lookup(sandbox, "cr1a2_CountryId", on="account", to="cr1a2_country")


GOOD_MAPPING: dict[str, Any] = {
    "fields": {"notes": {"direction": "pc_to_crm"}, "close_date": {"direction": "off"}},
    "extra": [
        {
            "referral": "customerProfile.size",
            "crm": "cr1a2_companysize",
            "direction": "pc_to_crm",
            "values": {"1to50employees": 100000000, "51to250employees": 100000001},
        },
        {"referral": "details.notes", "crm": "cr1a2_partnernotes", "direction": "both"},
        {"referral": "details.dealValue", "crm": "cr1a2_listvalue", "direction": "pc_to_crm"},
    ],
    "defaults": {
        "opportunity": {
            "opportunityratingcode": 2,
            "cr1a2_regionid@odata.bind": f"/cr1a2_regions({REGION_ID})",
        },
        "lead": {"companyname": "Unknown"},
        "account": {"accountnumber": "CS-NEW"},
        "contact": {"jobtitle": "Buyer"},
    },
    "account_match": ["name", "address1_city"],
    "country": {
        "lookup": {
            "column": "cr1a2_countryid",
            "table": "cr1a2_countries",
            "code_column": "cr1a2_isocode",
        }
    },
}


def _use(monkeypatch: pytest.MonkeyPatch, mapping: dict[str, Any]) -> None:
    monkeypatch.setenv("CRM_MAPPING", json.dumps(mapping))
    get_settings.cache_clear()


def _checks(ran: Any) -> dict[str, dict[str, Any]]:
    return {c["entry"]: c for c in ran.json()["checks"]}


def test_without_a_mapping_it_says_so_and_checks_the_built_in_columns(
    cli_env: Sandbox, cosell: Any
) -> None:
    ran = cosell("mapping", "check")

    assert ran.code == 0, ran.out
    assert "No CRM_MAPPING or CRM_MAPPING_FILE" in ran.out
    assert "[PASS] CRM_DEAL_VALUE_FIELD: opportunity.estimatedvalue (Money)" in ran.out
    assert "[PASS] CRM_COUNTRY_FIELD: account.address1_country (String)" in ran.out
    assert "0 failed" in ran.out


def test_a_built_in_column_setting_naming_no_column_fails(
    cli_env: Sandbox, cosell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_DEAL_VALUE_FIELD", "cr1a2_dealvalue")

    ran = cosell("mapping", "check")

    assert ran.code == 1
    assert "[FAIL] CRM_DEAL_VALUE_FIELD: opportunity.cr1a2_dealvalue: no such column" in ran.out


def test_a_good_mapping_passes_on_every_entry(
    cli_env: Sandbox, cosell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _org_with_the_customers_columns(cli_env)
    _use(monkeypatch, GOOD_MAPPING)

    text = cosell("mapping", "check")
    ran = cosell("mapping", "check", "--json")

    assert text.code == ran.code == 0, text.out
    assert "[FAIL]" not in text.out and "[WARN]" not in text.out
    checks = _checks(ran)
    assert set(checks) == {
        "CRM_DEAL_VALUE_FIELD",  # CRM_COUNTRY_FIELD gives way to the lookup country
        "$.fields.notes",
        "$.fields.close_date",
        "$.extra[0]",
        "$.extra[1]",
        "$.extra[2]",
        "$.defaults.opportunity.opportunityratingcode",
        "$.defaults.opportunity.cr1a2_regionid@odata.bind",
        "$.defaults.lead.companyname",
        "$.defaults.account.accountnumber",
        "$.defaults.contact.jobtitle",
        "$.account_match[0]",
        "$.account_match[1]",
        "$.country.lookup.table",
        "$.country.lookup.column",
        "$.country.lookup.code_column",
    }
    assert {c["status"] for c in checks.values()} == {"pass"}
    assert text.out.count("[PASS]") == len(checks)
    assert "written back to /details/notes" in checks["$.extra[1]"]["detail"]
    assert (
        "cr1a2_region /cr1a2_regions"
        in checks["$.defaults.opportunity.cr1a2_regionid@odata.bind"]["detail"]
    )


def test_wrong_entries_fail_with_the_fix(
    cli_env: Sandbox, cosell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _org_with_the_customers_columns(cli_env)
    missing_team = str(uuid.uuid4())
    _use(
        monkeypatch,
        {
            "extra": [
                {"referral": "customerProfile.size", "crm": "cr1a2_size", "direction": "off"},
                {"referral": "customerProfile.name", "crm": "cr1a2_listvalue", "direction": "off"},
                {
                    "referral": "customerProfile.size",
                    "crm": "cr1a2_companysize",
                    "direction": "pc_to_crm",
                    "values": {"1to50employees": 100000000, "huge": 100000009},
                },
            ],
            "defaults": {
                "opportunity": {
                    "opportunityratingcode": 9,
                    "cr1a2_regionid@odata.bind": f"/cr1a2_teams({missing_team})",
                }
            },
        },
    )

    text = cosell("mapping", "check")
    ran = cosell("mapping", "check", "--json")

    assert text.code == ran.code == 1
    checks = _checks(ran)
    missing = checks["$.extra[0]"]
    assert missing["status"] == "fail"
    assert "opportunity.cr1a2_size: no such column" in missing["detail"]
    assert "maker portal" in missing["fix"] and "$.extra[0].crm" in missing["fix"]
    wrong_type = checks["$.extra[1]"]
    assert wrong_type["status"] == "fail"
    assert "customerProfile.name holds text, the column takes number" in wrong_type["detail"]
    assert "String or Memo" in wrong_type["fix"]
    choice = checks["$.extra[2]"]
    assert choice["status"] == "fail"
    assert "'huge' → 100000009 is not one of its options" in choice["detail"]
    assert "100000000 1-50 employees, 100000001 51-250 employees" in choice["fix"]
    rating = checks["$.defaults.opportunity.opportunityratingcode"]
    assert rating["status"] == "fail" and "1 Hot, 2 Warm, 3 Cold" in rating["fix"]
    bind = checks["$.defaults.opportunity.cr1a2_regionid@odata.bind"]
    assert bind["status"] == "fail"
    assert "no table has that entity set" in bind["detail"]
    assert bind["fix"] == "bind a row of its target table: /cr1a2_regions(<GUID>)"
    # The readable form: one FAIL line per entry, each followed by its fix.
    assert text.out.count("[FAIL]") == 5
    assert "[FAIL] $.extra[0]: customerProfile.size → opportunity.cr1a2_size" in text.out
    assert "       fix: " in text.out
    assert "mapping check: 2 passed, 5 failed" in text.out


def test_a_default_lookup_to_a_missing_row_or_the_wrong_table_fails(
    cli_env: Sandbox, cosell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _org_with_the_customers_columns(cli_env)
    absent = "5d2b1c8e-0f3a-4c6b-9a1d-000000000099"
    _use(
        monkeypatch,
        {
            "defaults": {
                "opportunity": {"cr1a2_regionid@odata.bind": f"/cr1a2_regions({absent})"},
                "account": {"cr1a2_countryid@odata.bind": f"/cr1a2_regions({REGION_ID})"},
                "contact": {"jobtitle@odata.bind": f"/cr1a2_regions({REGION_ID})"},
            }
        },
    )

    checks = _checks(cosell("mapping", "check", "--json"))

    row = checks["$.defaults.opportunity.cr1a2_regionid@odata.bind"]
    assert row["status"] == "fail" and "no such row" in row["detail"]
    target = checks["$.defaults.account.cr1a2_countryid@odata.bind"]
    assert target["status"] == "fail"
    assert "points at cr1a2_country, not cr1a2_region" in target["detail"]
    assert "/cr1a2_countries(<GUID>)" in target["fix"]
    plain = checks["$.defaults.contact.jobtitle@odata.bind"]
    assert plain["status"] == "fail" and "not a lookup" in plain["detail"]


def test_a_country_lookup_without_its_table_or_code_column_fails(
    cli_env: Sandbox, cosell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _org_with_the_customers_columns(cli_env)
    _use(
        monkeypatch,
        {
            "country": {
                "lookup": {
                    "column": "cr1a2_countryid",
                    "table": "cr1a2_countries",
                    "code_column": "cr1a2_code",
                }
            }
        },
    )

    checks = _checks(cosell("mapping", "check", "--json"))

    assert checks["$.country.lookup.table"]["status"] == "pass"
    assert checks["$.country.lookup.column"]["status"] == "pass"
    code = checks["$.country.lookup.code_column"]
    assert code["status"] == "fail" and "cr1a2_country.cr1a2_code: no such column" in code["detail"]


def test_json_output_has_one_finding_per_entry(
    cli_env: Sandbox, cosell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(monkeypatch, {"account_match": ["name", "cr1a2_taxid"]})

    ran = cosell("mapping", "check", "--json")

    assert ran.code == 1
    document = ran.json()
    assert document["mapping"] == "CRM_MAPPING"
    assert document["ok"] is False
    assert (document["passed"], document["warnings"], document["failed"]) == (3, 0, 1)
    assert set(document["checks"][0]) == {"entry", "column", "status", "detail", "fix"}
    taxid = _checks(ran)["$.account_match[1]"]
    assert taxid == {
        "entry": "$.account_match[1]",
        "column": "account.cr1a2_taxid",
        "status": "fail",
        "detail": "account.cr1a2_taxid: no such column",
        "fix": "name an account column, e.g. name, address1_postalcode",
    }


def test_schema_check_names_a_missing_extra_column(
    cli_env: Sandbox, cosell: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(
        monkeypatch,
        {
            "extra": [
                {
                    "referral": "customerProfile.size",
                    "crm": "cr1a2_companysize",
                    "direction": "pc_to_crm",
                }
            ]
        },
    )

    text = cosell("schema", "check")
    ran = cosell("schema", "check", "--json")

    assert text.code == ran.code == 1
    assert "opportunity.cr1a2_companysize: column not found (the mapping's $.extra[0]" in text.out
    assert "`cosell schema apply` does not create it" in text.out
    assert "create the mapping's extra column(s) cr1a2_companysize yourself" in text.out
    assert "run `cosell schema apply`" not in text.out  # the app's own schema is complete
    item = next(i for i in ran.json()["items"] if i["name"] == "cr1a2_companysize")
    assert (item["kind"], item["status"]) == ("extra", "missing")

    _org_with_the_customers_columns(cli_env)
    assert cosell("schema", "check").code == 0


def test_lookup_targets_are_logical_names(cli_env: Sandbox) -> None:
    """``LookupAttributeMetadata.Targets`` lists the logical names of the tables a lookup can
    point at, e.g. ``["account", "contact"]`` for a Customer column (Microsoft Learn, Web API
    reference: LookupAttributeMetadata EntityType, property Targets; and "Query table
    definitions using the Web API"), not their entity set names."""
    response = httpx.get(
        f"{cli_env.dataverse_url}{API}EntityDefinitions(LogicalName='opportunity')",
        params={"$expand": "Attributes"},
        headers=AUTH,
    )
    attributes = {a["LogicalName"]: a for a in response.json()["Attributes"]}

    assert attributes["customerid"]["Targets"] == ["account", "contact"]
    assert attributes["transactioncurrencyid"]["Targets"] == ["transactioncurrency"]
