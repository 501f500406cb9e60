"""The declarative mapping the benchmark runs with (SPEC 13; issue 14: "remote calls per
changed field still ≤ 3 with three extra mapped fields, and the backfill row unchanged —
defaults ride in the same deep insert"): three extra fields and defaults on every row the
product creates, with the custom columns they need created through the metadata API."""

from __future__ import annotations

import json
from typing import Any

from shared.dataverse import ColumnDefinition, DataverseClient

STAGES = {"Qualify": 100000000, "Develop": 100000001, "Propose": 100000002, "Close": 100000003}
MAPPING: dict[str, Any] = {
    "extra": [
        {"referral": "salesStage", "crm": "bench_salesstage", "direction": "both",
         "values": STAGES},
        {"referral": "campaignId", "crm": "bench_campaign", "direction": "both"},
        {"referral": "customerProfile.size", "crm": "bench_companysize",
         "direction": "pc_to_crm"},
    ],
    "defaults": {
        "opportunity": {"bench_region": "EMEA"},
        "account": {"bench_segment": "Enterprise"},
        "contact": {"bench_source": "Co-sell"},
    },
}  # fmt: skip
# What Microsoft's referrals carry for the three extra fields.
REFERRAL_FIELDS: dict[str, Any] = {"salesStage": "Qualify", "campaignId": "CAMPAIGN-1"}
COMPANY_SIZE = "51to250employees"
# The opportunity columns the mapping fills on creation (three extra fields, one default).
MAPPED_COLUMNS = ("bench_salesstage", "bench_campaign", "bench_companysize", "bench_region")

_COLUMNS = (
    ("opportunity", ColumnDefinition(schema_name="bench_SalesStage", display_name="Stage",
                                     kind="choice", options={v: k for k, v in STAGES.items()})),
    ("opportunity", ColumnDefinition(schema_name="bench_Campaign", display_name="Campaign",
                                     kind="string")),
    ("opportunity", ColumnDefinition(schema_name="bench_CompanySize",
                                     display_name="Company size", kind="string")),
    ("opportunity", ColumnDefinition(schema_name="bench_Region", display_name="Region",
                                     kind="string")),
    ("account", ColumnDefinition(schema_name="bench_Segment", display_name="Segment",
                                 kind="string")),
    ("contact", ColumnDefinition(schema_name="bench_Source", display_name="Source",
                                 kind="string")),
)  # fmt: skip


def mapping_setting() -> str:
    """``CRM_MAPPING`` for the benchmark."""
    return json.dumps(MAPPING)


async def add_columns(dataverse: DataverseClient) -> None:
    """The customer's own columns the mapping names (``cosell schema apply`` makes none)."""
    for table, column in _COLUMNS:
        await dataverse.create_column(table, column)


def with_extra_fields(body: dict[str, Any]) -> dict[str, Any]:
    """Microsoft's referral body with values for the three extra fields."""
    profile = {**body["customerProfile"], "size": COMPANY_SIZE}
    return {**body, **REFERRAL_FIELDS, "customerProfile": profile}
