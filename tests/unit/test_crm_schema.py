"""``shared.crm_schema``: one declaration of the custom schema, and the prefix drives every name."""

from __future__ import annotations

from dataclasses import fields

import pytest

from sandbox.dataverse.schema import Kind, Schema
from shared.cli.schema import wanted_schema
from shared.crm_schema import crm_schema, opportunity_solutions, primary_keys
from shared.sync.deal import Deal
from shared.sync.mapping import (
    HELP_CHOICE_BY_CODE,
    HELP_CODE_BY_CHOICE,
    SYNC_STATUS_CHOICE,
    Columns,
    new_opportunity,
)

STANDARD = {"opportunity", "lead"}


def test_every_custom_name_carries_the_prefix() -> None:
    schema = crm_schema("acme_")

    for column in schema.columns:
        assert column.logical_name.startswith("acme_"), column
        assert column.schema_name.startswith("acme_"), column
        assert column.table in STANDARD or column.table.startswith("acme_"), column
    for table in schema.tables:
        assert table.logical_name.startswith("acme_")
        assert table.entity_set.startswith("acme_")
        assert table.primary_key.startswith("acme_")
    lookup = schema.solution_opportunity
    assert lookup.relationship_schema_name == lookup.collection == "acme_opportunity_acme_solutions"
    assert (lookup.value_name, lookup.bind_name) == (
        "_acme_opportunityid_value",
        "acme_opportunityid@odata.bind",
    )
    assert opportunity_solutions("acme_") == "acme_opportunity_acme_solutions"
    assert primary_keys("acme_") == {
        "acme_solutions": "acme_solutionid",
        "acme_solutiondetails": "acme_solutiondetailid",
    }
    assert "cosell" not in repr(schema)


def test_the_default_prefix_gives_the_names_of_spec_4_1() -> None:
    schema = crm_schema()

    assert [c.logical_name for c in schema.opportunity_columns] == [
        "cosell_helpneeded",
        "cosell_visibletomicrosoft",
        "cosell_referralid",
        "cosell_referrallink",
        "cosell_microsoftcrmid",
        "cosell_referralprogram",
        "cosell_syncwithpartnercenter",
        "cosell_syncstatus",
        "cosell_audit",
    ]
    assert [c.logical_name for c in schema.lead_columns] == [
        "cosell_referralid",
        "cosell_referrallink",
    ]
    assert [t.entity_set for t in schema.tables] == ["cosell_solutions", "cosell_solutiondetails"]
    assert [c.logical_name for c in schema.solution_detail.columns] == [
        "cosell_solutionidentifier",
        "cosell_type",
        "cosell_publishername",
    ]
    assert schema.help_needed.attribute_type == "Picklist"
    assert schema.audit.attribute_type == "Memo"


def test_a_prefix_without_its_underscore_is_refused() -> None:
    with pytest.raises(ValueError, match="ends with '_'"):
        crm_schema("acme")


def test_choice_tables_come_from_the_option_declarations() -> None:
    schema = crm_schema()

    assert schema.help_needed.labels == HELP_CODE_BY_CHOICE
    assert HELP_CODE_BY_CHOICE[100000002] == "ProofOfConceptOrDemo"  # SPEC 4.2
    assert {code: value for value, code in HELP_CODE_BY_CHOICE.items()} == HELP_CHOICE_BY_CODE
    assert SYNC_STATUS_CHOICE == {"synced": 1, "error": 2, "pending": 3}
    assert set(SYNC_STATUS_CHOICE.values()) == set(schema.sync_status.labels)


def test_every_mapping_column_and_select_uses_the_prefix() -> None:
    columns = Columns(prefix="acme_")
    names = {
        name: getattr(columns, name)
        for name in dir(Columns)
        if isinstance(getattr(Columns, name), property)
        and name not in {"opportunity_select", "account_select"}
    }
    assert names and all(v.startswith("acme_") for v in names.values()), names
    custom_selects = [c for c in columns.opportunity_select if "_" in c and "acme_" in c]
    assert len(custom_selects) == len(crm_schema("acme_").opportunity_columns)
    assert not [c for c in columns.opportunity_select if "cosell" in c]
    assert {f.name for f in fields(Columns)} == {"prefix", "deal_value", "country", "mapping"}


def test_a_misspelt_column_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        Columns().helpneded  # type: ignore[attr-defined]  # noqa: B018


def test_a_new_opportunity_is_written_with_the_prefix() -> None:
    deal = Deal(name="Deal", referral_id="r-1", help_needed="GeneralOrOther", program="Co-sell")

    body = new_opportunity(deal, columns=Columns(prefix="acme_"), account_id="a")

    custom = {k: v for k, v in body.items() if k.startswith("acme_")}
    assert custom["acme_helpneeded"] == 100000005
    assert custom["acme_syncstatus"] == SYNC_STATUS_CHOICE["synced"]
    assert custom["acme_syncwithpartnercenter"] is True
    assert not [k for k in body if "cosell" in k]


def test_the_emulator_seeds_what_schema_apply_would_create() -> None:
    seeded = Schema(column_prefix="acme_")

    for item in wanted_schema("acme_"):
        table = seeded.by_logical_name(item.table)
        assert table is not None, item.table
        if item.kind == "table":
            assert table.custom
            continue
        column = table.columns[item.name]
        assert column.kind.value == item.attribute_type, item.name
    solution = seeded.by_logical_name("acme_solution")
    opportunity = seeded.table("opportunities")
    assert solution is not None and opportunity is not None
    assert solution.entity_set == "acme_solutions"
    assert solution.primary_key == "acme_solutionid"
    assert seeded.collection(opportunity, "acme_opportunity_acme_solutions") is not None
    assert opportunity.columns["acme_syncstatus"].options == {1: "Synced", 2: "Error", 3: "Pending"}
    assert opportunity.columns["acme_audit"].kind is Kind.MEMO
    assert not [c for t in seeded.tables.values() for c in t.columns if c.startswith("cosell")]
