"""The declarative mapping's validation (SPEC 13): every problem named by its JSON path, with
what is expected; CRM → Partner Center only on paths the connector's contract lets a partner
patch (microsoft/PowerPlatformConnectors, certified-connectors/PartnerCenterReferrals/
apiDefinition.swagger.json; reference dataverse-push-and-webhook-trust.md §3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.crm_mapping import DEFAULT_ACCOUNT_MATCH, CrmMapping, load_mapping
from shared.errors import SettingsError

SPEC_EXAMPLE = {
    "fields": {"notes": {"direction": "pc_to_crm"}, "close_date": {"direction": "off"}},
    "extra": [
        {"referral": "customerProfile.size", "crm": "cr1a2_companysize", "direction": "pc_to_crm",
         "values": {"1to50employees": 100000000, "51to250employees": 100000001}},
        {"referral": "details.notes", "crm": "cr1a2_partnernotes", "direction": "both"},
    ],
    "defaults": {
        "opportunity": {"cr1a2_region": "EMEA"},
        "lead": {"leadsourcecode": 8},
        "account": {"customertypecode": 3},
        "contact": {},
    },
    "account_match": ["name", "address1_postalcode"],
    "country": {"lookup": {"column": "cr1a2_countryid", "table": "cr1a2_countries",
                           "code_column": "cr1a2_isocode"}},
}  # fmt: skip


def problems(mapping: object) -> str:
    with pytest.raises(SettingsError) as raised:
        load_mapping(text=json.dumps(mapping))
    return str(raised.value)


def test_the_spec_example_loads() -> None:
    mapping = load_mapping(text=json.dumps(SPEC_EXAMPLE))

    assert mapping.direction_of("notes") == "pc_to_crm"
    assert mapping.direction_of("close_date") == "off"
    assert mapping.direction_of("name") == "both"
    assert [e.patch_path for e in mapping.extra] == ["/customerProfile/size", "/details/notes"]
    assert mapping.defaults.for_table("lead") == {"leadsourcecode": 8}
    assert mapping.country is not None and mapping.country.lookup.code_column == "cr1a2_isocode"


def test_no_mapping_is_the_built_in_behaviour() -> None:
    mapping = load_mapping()

    assert mapping == CrmMapping() and not mapping.customised
    assert mapping.account_match == DEFAULT_ACCOUNT_MATCH
    assert mapping.direction_of("solutions") == "crm_to_pc"  # SPEC 4.1


def test_every_problem_is_named_by_its_json_path() -> None:
    said = problems({
        "fields": {"notes": {"direction": "sideways"}, "colour": {}},
        "extra": [{"referral": "details.notes", "crm": "Bad Name"}],
        "surprise": True,
    })  # fmt: skip

    assert "$.fields.notes.direction: Input should be 'both', 'pc_to_crm'" in said
    assert "(got 'sideways')" in said
    assert "$.fields.colour: unknown key" in said
    assert "$.extra[0].crm: expected a Dataverse logical name" in said
    assert "$.surprise: unknown key" in said


def test_a_one_way_field_cannot_be_turned_around() -> None:
    said = problems({"fields": {"solutions": {"direction": "pc_to_crm"}}})

    assert "$.fields.solutions.direction: Input should be 'crm_to_pc', 'on_create' or 'off'" in said


def test_an_extra_field_towards_partner_center_needs_a_patchable_path() -> None:
    said = problems({"extra": [{"referral": "customerProfile.size", "crm": "cr1a2_size"}]})

    assert "$.extra[0]: direction 'both' writes 'customerProfile.size' to Partner Center" in said
    assert "/details/notes" in said  # the paths it may use are listed
    # One way, from Partner Center, any path will do.
    one_way = {"referral": "customerProfile.size", "crm": "cr1a2_size", "direction": "pc_to_crm"}
    assert load_mapping(text=json.dumps({"extra": [one_way]})).extra[0].to_crm


def test_a_value_map_must_be_one_to_one() -> None:
    size = {"referral": "customerProfile.size", "crm": "cr1a2_size", "direction": "pc_to_crm"}
    said = problems({"extra": [{**size, "values": {"small": 1, "tiny": 1}}]})

    assert "$.extra[0].values: not one to one: 'small' and 'tiny' both map to 1" in said


def test_a_column_mapped_twice_is_refused() -> None:
    twice = {"referral": "customerProfile.size", "crm": "cr1a2_size", "direction": "pc_to_crm"}

    assert "column(s) mapped twice: cr1a2_size" in problems({"extra": [twice, twice]})


def test_a_default_lookup_must_be_an_odata_bind() -> None:
    said = problems({"defaults": {"opportunity": {"ownerid@odata.bind": "teams(1)"}}})

    assert "$.defaults.opportunity: 'ownerid@odata.bind': a lookup is bound as" in said


def test_an_empty_account_match_is_refused() -> None:
    assert "$.account_match: expected at least one account column" in problems(
        {"account_match": []}
    )


def test_invalid_json_says_where() -> None:
    with pytest.raises(SettingsError, match="not valid JSON at line 1, column 12"):
        load_mapping(text='{"fields": }')


def test_not_an_object_is_refused() -> None:
    with pytest.raises(SettingsError, match=r"\$: expected a JSON object, got list"):
        load_mapping(text="[]")


def test_the_file_is_read_and_an_unreadable_one_named(tmp_path: Path) -> None:
    file = tmp_path / "mapping.json"
    file.write_text(json.dumps({"fields": {"name": {"direction": "off"}}}), encoding="utf-8")

    assert load_mapping(file=str(file)).direction_of("name") == "off"
    with pytest.raises(SettingsError, match=r"CRM_MAPPING_FILE \(.*missing.json\): cannot be read"):
        load_mapping(file=str(tmp_path / "missing.json"))


def test_text_and_file_together_are_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not both"):
        load_mapping(text="{}", file=str(tmp_path / "mapping.json"))
