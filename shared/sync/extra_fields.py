"""The mapping's ``extra`` fields (SPEC 13): a referral JSON path ↔ an opportunity column.

Each is a Deal field of its own, ``extra.<column>``, merged three ways like the built-in ones
(``merge.py``) with the direction the mapping gives it. Its canonical value is the referral's:
a choice column's value goes through the mapping's ``values`` (referral value → choice value,
and back). A value the other side has no counterpart for is never written as something else:
a referral value without a choice is one Dataverse cannot hold (the pair says so, like an
unknown currency), a choice without a referral value one Partner Center is not sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from shared.crm_mapping import CrmMapping, ExtraField
from shared.sync.merge import OWNERSHIP, Flow

PREFIX = "extra."
UNMAPPED = "unmapped"  # key of the CRM value no referral value maps to: {"unmapped": 100000007}


def name_of(extra: ExtraField) -> str:
    """The Deal field name of an extra mapping (``extra.cr1a2_companysize``)."""
    return PREFIX + extra.crm


def ownership(mapping: CrmMapping) -> dict[str, Flow]:
    """Each Deal field's flow for the merge: SPEC 4.1's, narrowed by the mapping's ``fields``,
    and the mapping's extra fields."""
    flows = dict(OWNERSHIP)
    for name in mapping.fields.model_fields_set:
        flows[name] = Flow(mapping.direction_of(name))
    return flows | {name_of(e): Flow(e.direction) for e in mapping.extra}


def from_referral(wire: Mapping[str, Any], mapping: CrmMapping) -> dict[str, Any]:
    """The extra fields' values in a referral's JSON (None where the path is absent)."""
    return {e.crm: _at(wire, e.referral) for e in mapping.extra}


def from_opportunity(row: Mapping[str, Any], mapping: CrmMapping) -> dict[str, Any]:
    """The extra fields' canonical values in an opportunity row (choices mapped back)."""
    values: dict[str, Any] = {}
    for extra in mapping.extra:
        raw = row.get(extra.crm)
        if extra.values is None or raw is None:
            values[extra.crm] = raw
            continue
        back = {choice: key for key, choice in extra.values.items()}
        values[extra.crm] = back.get(raw, {UNMAPPED: raw})
    return values


def crm_column_value(extra: ExtraField, value: Any) -> Any:
    """What to write into the column for a canonical value (a choice through ``values``)."""
    if extra.values is None or value is None:
        return value
    return extra.values[value]


def crm_columns(
    mapping: CrmMapping, values: Mapping[str, Any], names: Iterable[str]
) -> dict[str, Any]:
    """The opportunity columns for the extra fields ``names`` (Deal field names) to write."""
    wanted = set(names)
    return {
        e.crm: crm_column_value(e, values.get(e.crm))
        for e in mapping.extra
        if name_of(e) in wanted and not unmapped(values.get(e.crm))
    }


def cannot_hold(mapping: CrmMapping, pc_values: Mapping[str, Any]) -> dict[str, str]:
    """Extra fields whose Partner Center value has no choice in the column, with why."""
    refused: dict[str, str] = {}
    for index, extra in enumerate(mapping.extra):
        value = pc_values.get(extra.crm)
        if extra.values is not None and value is not None and value not in extra.values:
            refused[name_of(extra)] = (
                f"{extra.referral} {value!r} has no choice value in {extra.crm} "
                f"(add it to CRM_MAPPING $.extra[{index}].values)"
            )
    return refused


def partner_center_refuses(mapping: CrmMapping, crm_values: Mapping[str, Any]) -> dict[str, str]:
    """Extra fields whose CRM choice has no referral value, with why (not sent)."""
    refused: dict[str, str] = {}
    for index, extra in enumerate(mapping.extra):
        value = crm_values.get(extra.crm)
        if isinstance(value, dict) and UNMAPPED in value:
            refused[name_of(extra)] = (
                f"{extra.crm} not sent to Partner Center: its choice {value[UNMAPPED]} has no "
                f"referral value (add it to CRM_MAPPING $.extra[{index}].values)"
            )
    return refused


def patch_path(mapping: CrmMapping, name: str) -> str | None:
    """The JSON Patch path of the extra field ``name``, if it is one."""
    for extra in mapping.extra:
        if name_of(extra) == name:
            return extra.patch_path
    return None


def unmapped(value: Any) -> bool:
    """A CRM choice no referral value maps to (see ``from_opportunity``)."""
    return isinstance(value, dict) and UNMAPPED in value


def creation_columns(
    mapping: CrmMapping, values: Mapping[str, Any], *, without: Iterable[str] = ()
) -> dict[str, Any]:
    """The extra columns of an opportunity the product creates from a referral: every extra
    field that may flow to Dataverse, but those ``without`` names (Dataverse cannot hold them)."""
    names = [name_of(e) for e in mapping.extra if e.to_crm]
    return crm_columns(mapping, values, [n for n in names if n not in set(without)])


def _at(document: Mapping[str, Any], dotted: str) -> Any:
    node: Any = document
    for part in dotted.split("."):
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node
