"""``cosell mapping check``: the declarative mapping (SPEC 13) against the live Dataverse metadata.

``load_mapping`` already refused what the JSON alone can tell (unknown keys, directions, value
maps that are not one to one, CRM → Partner Center paths a partner may not patch). What only the
org can tell is checked here, read-only: the columns exist on their tables, their types fit what
the sync writes (a choice gets one of its options, a money column a number, a date column a
date), the tables behind ``@odata.bind`` lookups and the lookup country exist and are among the
lookup's targets, and a bound row exists. One PASS/FAIL line per entry, named by its JSON path,
with the fix; exit status 1 when anything fails.

Metadata is read once per table (``EntityDefinitions`` with ``Attributes``), once per choice
column (its options are a navigation property, see ``DataverseClient.get_choice_options``) and
once per entity set a lookup names (``EntityDefinitions?$filter=EntitySetName eq '…'``).
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import Enum
from typing import Any, Literal

from pydantic import BaseModel

from shared.cli._context import Context
from shared.cli._output import CheckStatus
from shared.cli._parser import add_command, add_group
from shared.crm_mapping import DEFAULT_ACCOUNT_MATCH, CrmMapping, DefaultValue, ExtraField
from shared.crm_mapping import Table as MappedTable
from shared.dataverse import (
    ColumnMetadata,
    DataverseClient,
    DataverseError,
    NotFound,
    TableMetadata,
    eq,
)
from shared.partner_center import Referral

# What a column holds, by Dataverse ``AttributeType`` (DateTime columns with Format DateOnly
# hold dates): the sync writes only these kinds of value.
ValueKind = Literal["text", "number", "whole number", "yes/no", "choice", "date", "lookup", "id"]
KIND_BY_ATTRIBUTE_TYPE: dict[str, ValueKind] = {
    "String": "text",
    "Memo": "text",
    "Integer": "whole number",
    "BigInt": "whole number",
    "Money": "number",
    "Decimal": "number",
    "Double": "number",
    "Boolean": "yes/no",
    "Picklist": "choice",
    "State": "choice",
    "Status": "choice",
    "DateTime": "date",
    "Lookup": "lookup",
    "Customer": "lookup",
    "Owner": "lookup",
    "Uniqueidentifier": "id",
}
# The metadata cast that reads a choice column's options, by AttributeType.
CHOICE_KIND_BY_ATTRIBUTE_TYPE: dict[str, Literal["choice", "state", "status"]] = {
    "Picklist": "choice",
    "State": "state",
    "Status": "status",
}
# Which referral values a column kind takes without a value map.
ACCEPTS: dict[ValueKind, frozenset[str]] = {
    "text": frozenset({"text"}),
    "number": frozenset({"number"}),
    "whole number": frozenset({"number"}),
    "yes/no": frozenset({"yes/no"}),
    "date": frozenset({"date"}),
    "choice": frozenset(),  # only through a value map (or integer referral values)
    "lookup": frozenset(),
    "id": frozenset(),
}
TABLES: tuple[MappedTable, ...] = ("opportunity", "lead", "account", "contact")
_BIND = re.compile(r"^/(?P<set>[a-z][a-z0-9_]*)\((?P<id>[0-9a-fA-F-]{36})\)$")
_GUID = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")
_CREATE_IT = (
    "create it in the maker portal (`cosell schema apply` creates only the app's own columns)"
)


@dataclass(frozen=True)
class Check:
    """One line of the report: the mapping entry (its JSON path), what was found, the fix."""

    entry: str
    status: CheckStatus
    detail: str
    fix: str | None = None
    column: str | None = None  # "table.column" the entry is about

    def row(self) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "column": self.column,
            "status": self.status,
            "detail": self.detail,
            "fix": self.fix,
        }


def _pass(entry: str, detail: str, column: str | None = None) -> Check:
    return Check(entry, "pass", detail, column=column)


def _fail(entry: str, detail: str, fix: str, column: str | None = None) -> Check:
    return Check(entry, "fail", detail, fix, column)


@dataclass
class Metadata:
    """The metadata the checks read, each piece once."""

    dataverse: DataverseClient
    _tables: dict[str, TableMetadata | None] = field(default_factory=dict)
    _entity_sets: dict[str, str | None] = field(default_factory=dict)
    _options: dict[tuple[str, str], dict[int, str]] = field(default_factory=dict)

    async def table(self, logical_name: str) -> TableMetadata | None:
        if logical_name not in self._tables:
            self._tables[logical_name] = await self.dataverse.find_table(logical_name)
        return self._tables[logical_name]

    async def logical_name_of(self, entity_set: str) -> str | None:
        """The table whose ``EntitySetName`` is ``entity_set``, or None."""
        if entity_set not in self._entity_sets:
            found = None
            async for row in self.dataverse.list_rows(
                "EntityDefinitions",
                select=["LogicalName", "EntitySetName"],
                filter=eq("EntitySetName", entity_set),
            ):
                found = str(row["LogicalName"])
                break
            self._entity_sets[entity_set] = found
        return self._entity_sets[entity_set]

    async def options(self, table: str, column: ColumnMetadata) -> dict[int, str]:
        key = (table, column.logical_name)
        if key not in self._options:
            kind = CHOICE_KIND_BY_ATTRIBUTE_TYPE[column.attribute_type or "Picklist"]
            self._options[key] = await self.dataverse.get_choice_options(
                table, column.logical_name, kind=kind
            )
        return self._options[key]


def kind_of(column: ColumnMetadata) -> ValueKind | None:
    return KIND_BY_ATTRIBUTE_TYPE.get(column.attribute_type or "")


def _type_name(column: ColumnMetadata) -> str:
    name = column.attribute_type or "?"
    return f"{name} ({column.format})" if name == "DateTime" and column.format else name


def _list_options(options: dict[int, str], limit: int = 8) -> str:
    shown = [f"{value} {text}".strip() for value, text in sorted(options.items())[:limit]]
    more = len(options) - limit
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "") if shown else "(none)"


def value_problem(
    column: ColumnMetadata, value: DefaultValue, options: dict[int, str] | None
) -> str | None:
    """Why ``value`` cannot be written to ``column`` (None when it fits)."""
    if value is None:
        return None  # an explicit empty value fits every column
    kind = kind_of(column)
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "text":
        if not isinstance(value, str):
            return f"{value!r} is not text"
        if column.max_length is not None and len(value) > column.max_length:
            return f"{len(value)} characters, the column holds {column.max_length}"
        return None
    if kind == "number":
        return None if is_number else f"{value!r} is not a number"
    if kind == "whole number":
        whole = is_number and float(value).is_integer()
        return None if whole else f"{value!r} is not a whole number"
    if kind == "yes/no":
        return None if isinstance(value, bool) else f"{value!r} is not true or false"
    if kind == "choice":
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{value!r} is not a choice value (an integer)"
        if options is not None and value not in options:
            return f"{value} is not one of its options"
        return None
    if kind == "date":
        return None if isinstance(value, str) and _is_date(value, column) else _bad_date(value)
    if kind == "id":
        return None if isinstance(value, str) and _GUID.match(value) else f"{value!r} is no GUID"
    if kind == "lookup":
        return "a lookup is set by binding a row"
    return f"the sync cannot write a {_type_name(column)} column"


def _is_date(text: str, column: ColumnMetadata) -> bool:
    try:
        if column.format == "DateOnly":
            date.fromisoformat(text)
            return len(text) == 10
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return False
    # Edm.DateTimeOffset needs its offset; a bare date is read as midnight UTC.
    return parsed.tzinfo is not None or len(text) == 10


def _bad_date(value: object) -> str:
    return f"{value!r} is not an ISO date (2025-06-30, or 2025-06-30T12:00:00Z)"


def _fix_for(column: ColumnMetadata, options: dict[int, str] | None) -> str:
    kind = kind_of(column)
    if kind == "choice":
        return f"use one of its options: {_list_options(options or {})}"
    if kind == "text":
        limit = f" of at most {column.max_length} characters" if column.max_length else ""
        return f"give text{limit}"
    if kind == "date":
        return "give an ISO date such as 2025-06-30" + (
            "" if column.format == "DateOnly" else " or 2025-06-30T12:00:00Z"
        )
    if kind == "lookup":
        return (
            f"bind it instead: '{column.logical_name}@odata.bind': '/<entity set>(<GUID>)', "
            "e.g. '/teams(…)'"
        )
    readable = {"yes/no": "true or false", "whole number": "a whole number", "id": "a GUID"}
    return f"give {readable.get(kind, 'a number')}" if kind else "map another column"


# -- the referral side of an extra field --------------------------------------------------------


def referral_value_kind(path: str) -> str | None:
    """What the referral holds at ``path`` (``text``, ``number``, ``yes/no``, ``date``,
    ``object`` or ``list``), from the typed Partner Center model; None for a path the model does
    not declare (unknown properties round-trip, so it may still exist)."""
    model: type[BaseModel] = Referral
    parts = path.split(".")
    for index, part in enumerate(parts):
        info = next((f for n, f in model.model_fields.items() if (f.alias or n) == part), None)
        if info is None:
            return None
        leaves = _leaf_types(info.annotation)
        nested = [t for t in leaves if isinstance(t, type) and issubclass(t, BaseModel)]
        if index < len(parts) - 1:
            if not nested:
                return None
            model = nested[0]
            continue
        return _kind_of_types(leaves)
    return None


def _leaf_types(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _leaf_types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for a in typing.get_args(annotation) for t in _leaf_types(a)]
    return [annotation]


def _kind_of_types(leaves: list[Any]) -> str | None:
    leaves = [t for t in leaves if t is not type(None)]
    for leaf in leaves:
        origin = typing.get_origin(leaf)
        if leaf is list or origin is list:
            return "list"
        if isinstance(leaf, type) and issubclass(leaf, BaseModel):
            return "object"
    if any(t is bool for t in leaves):
        return "yes/no"
    if any(t is datetime or t is date for t in leaves):
        return "date"
    if any(t in (int, float) for t in leaves):
        return "number"
    if any(t is str or (isinstance(t, type) and issubclass(t, Enum)) for t in leaves):
        return "text"
    return None


# -- the checks --------------------------------------------------------------------------------


async def check_extra(meta: Metadata, index: int, extra: ExtraField) -> Check:
    entry = f"$.extra[{index}]"
    name = f"opportunity.{extra.crm}"
    opportunity = await meta.table("opportunity")
    column = opportunity.column(extra.crm) if opportunity is not None else None
    if column is None:
        return _fail(
            entry,
            f"{extra.referral} → {name}: no such column",
            f"{_CREATE_IT}, or correct $.extra[{index}].crm",
            name,
        )
    kind = kind_of(column)
    found = f"{extra.referral} → {name} ({_type_name(column)}, {extra.direction})"
    options = await meta.options("opportunity", column) if kind == "choice" else None
    if extra.values is not None:
        bad = {
            key: problem
            for key, choice in extra.values.items()
            if (problem := value_problem(column, choice, options)) is not None
        }
        if bad:
            listed = "; ".join(f"{key!r} → {problem}" for key, problem in bad.items())
            return _fail(
                entry,
                f"{found}: values {listed}",
                f"in $.extra[{index}].values, " + _fix_for(column, options),
                name,
            )
        return _pass(entry, f"{found}: every value of the map fits{_written_back(extra)}", name)
    referral = referral_value_kind(extra.referral)
    if kind == "choice":
        if referral == "number":
            return _pass(entry, f"{found}: referral numbers are written as choice values", name)
        return _fail(
            entry,
            f"{found}: a choice column takes only its option values",
            f'add "values" mapping each referral value to one of: {_list_options(options or {})}',
            name,
        )
    if kind is None or not ACCEPTS[kind]:
        return _fail(
            entry,
            f"{found}: the sync cannot write a {_type_name(column)} column",
            "map it to a text, number, date, yes/no or choice column",
            name,
        )
    if referral is None:
        return Check(
            entry,
            "warn",
            f"{found}: {extra.referral} is not a documented referral field, so its type is "
            "unknown; its values are written as found",
            f"check the spelling of $.extra[{index}].referral",
            name,
        )
    if referral not in ACCEPTS[kind]:
        return _fail(
            entry,
            f"{found}: {extra.referral} holds {_a(referral)}, the column takes {_a(kind)}",
            f'map it to a {_column_kinds(referral)} column, or add a "values" map',
            name,
        )
    return _pass(entry, f"{found}: {referral} to {kind}{_written_back(extra)}", name)


def _written_back(extra: ExtraField) -> str:
    if not extra.to_partner_center:
        return ""
    return f"; written back to {extra.patch_path}, which a partner may patch"


def _a(kind: str) -> str:
    return {"object": "an object", "list": "a list", "yes/no": "yes/no values"}.get(kind, kind)


def _column_kinds(referral: str) -> str:
    return {
        "text": "String or Memo",
        "number": "Money, Decimal, Double or Integer",
        "date": "DateTime",
        "yes/no": "Boolean",
    }.get(referral, "text, number, date or yes/no")


async def check_default(meta: Metadata, table_name: str, key: str, value: DefaultValue) -> Check:
    entry = f"$.defaults.{table_name}.{key}"
    table = await meta.table(table_name)
    if table is None:
        return _fail(entry, f"Dataverse has no {table_name} table", "check DATAVERSE_URL")
    if key.endswith("@odata.bind"):
        return await _check_bind(meta, entry, table, key.removesuffix("@odata.bind"), value)
    name = f"{table_name}.{key}"
    column = table.column(key)
    if column is None:
        return _fail(entry, f"{name}: no such column", f"{_CREATE_IT}, or correct the name", name)
    options = await meta.options(table_name, column) if kind_of(column) == "choice" else None
    problem = value_problem(column, value, options)
    if problem is not None:
        return _fail(
            entry, f"{name} ({_type_name(column)}): {problem}", _fix_for(column, options), name
        )
    return _pass(entry, f"{name} ({_type_name(column)}) = {value!r}", name)


async def _check_bind(
    meta: Metadata, entry: str, table: TableMetadata, navigation: str, value: DefaultValue
) -> Check:
    name = f"{table.logical_name}.{navigation}"
    column, target_in_name = _lookup_column(table, navigation)
    if column is None:
        plain = table.column(navigation)
        if plain is not None:
            return _fail(
                entry,
                f"{name} is a {_type_name(plain)} column, not a lookup",
                f"set it without '@odata.bind': \"{navigation}\": <value>",
                name,
            )
        return _fail(
            entry, f"{name}: no such lookup column", f"{_CREATE_IT}, or correct the name", name
        )
    match = _BIND.match(str(value))
    assert match is not None  # load_mapping checked the shape
    entity_set, row_id = match.group("set"), match.group("id")
    target = await meta.logical_name_of(entity_set)
    targets = sorted({target_in_name} if target_in_name else set(column.targets or []))
    if target is None:
        return _fail(
            entry,
            f"{name} binds to /{entity_set}, and no table has that entity set",
            await _bind_fix(meta, targets),
            name,
        )
    if targets and not {target, entity_set} & set(targets):
        return _fail(
            entry,
            f"{name} points at {', '.join(targets)}, not {target}",
            await _bind_fix(meta, targets),
            name,
        )
    looked_up = await meta.table(target)
    try:
        select = [looked_up.primary_id_attribute] if looked_up is not None else None
        await meta.dataverse.get(entity_set, row_id, select=select)
    except NotFound:
        return _fail(
            entry,
            f"{name} → /{entity_set}({row_id}): no such row",
            f"bind an existing row of {entity_set}",
            name,
        )
    except DataverseError as exc:  # e.g. the app user may not read that table
        return Check(entry, "warn", f"{name}: the bound row cannot be read: {exc}", None, name)
    return _pass(entry, f"{name} → {target} /{entity_set}({row_id}) exists", name)


async def _bind_fix(meta: Metadata, targets: list[str]) -> str:
    """Bind through the entity set of one of the lookup's target tables."""
    sets = []
    for target in targets:
        table = await meta.table(target)
        sets.append(f"/{table.entity_set_name}(<GUID>)" if table is not None else target)
    if not sets:
        return "bind a row of the table the lookup points at, by its entity set (EntitySetName)"
    return f"bind a row of its target table: {' or '.join(sets)}"


def _lookup_column(
    table: TableMetadata, navigation: str
) -> tuple[ColumnMetadata | None, str | None]:
    """The lookup a navigation property sets: its own name, or a polymorphic lookup's
    ``<column>_<target table>`` (``customerid_account``); with that target, if named."""
    column = table.column(navigation)
    if column is not None:
        return (column, None) if kind_of(column) == "lookup" else (None, None)
    for candidate in table.columns:
        prefix = candidate.logical_name + "_"
        if kind_of(candidate) == "lookup" and navigation.startswith(prefix):
            target = navigation.removeprefix(prefix)
            if target in (candidate.targets or []):
                return candidate, target
    return None, None


async def check_account_match(meta: Metadata, index: int, column_name: str) -> Check:
    entry = f"$.account_match[{index}]"
    name = f"account.{column_name}"
    account = await meta.table("account")
    column = account.column(column_name) if account is not None else None
    if column is None:
        return _fail(
            entry,
            f"{name}: no such column",
            f"name an account column, e.g. {', '.join(DEFAULT_ACCOUNT_MATCH)}",
            name,
        )
    return _pass(entry, f"{name} ({_type_name(column)}) identifies an account", name)


async def check_country(meta: Metadata, mapping: CrmMapping) -> list[Check]:
    assert mapping.country is not None
    lookup = mapping.country.lookup
    entry = "$.country.lookup"
    target = await meta.logical_name_of(lookup.table)
    checks: list[Check] = []
    if target is None:
        checks.append(
            _fail(
                f"{entry}.table",
                f"no table has the entity set {lookup.table}",
                "name the country table's entity set (EntitySetName, usually a plural)",
            )
        )
    else:
        checks.append(_pass(f"{entry}.table", f"/{lookup.table} is the {target} table"))
    account = await meta.table("account")
    name = f"account.{lookup.column}"
    column = account.column(lookup.column) if account is not None else None
    targets = set(column.targets or []) if column is not None else set()
    if column is None:
        checks.append(_fail(f"{entry}.column", f"{name}: no such column", _CREATE_IT, name))
    elif kind_of(column) != "lookup":
        checks.append(
            _fail(
                f"{entry}.column",
                f"{name} is a {_type_name(column)} column, not a lookup",
                'for a text country leave out "country" and set CRM_COUNTRY_FIELD',
                name,
            )
        )
    elif target is not None and targets and not targets & {target, lookup.table}:
        checks.append(
            _fail(
                f"{entry}.column",
                f"{name} points at {', '.join(sorted(targets))}, not {target}",
                f"name the lookup of account that points at {target}",
                name,
            )
        )
    else:
        checks.append(_pass(f"{entry}.column", f"{name} is a lookup to {target or lookup.table}"))
    code = f"{target or lookup.table}.{lookup.code_column}"
    table = await meta.table(target) if target is not None else None
    code_column = table.column(lookup.code_column) if table is not None else None
    if target is None:
        checks.append(_fail(f"{entry}.code_column", f"{code}: its table is missing", "see .table"))
    elif code_column is None:
        checks.append(
            _fail(
                f"{entry}.code_column",
                f"{code}: no such column",
                "name the column holding the ISO 3166 two-letter code",
                code,
            )
        )
    elif kind_of(code_column) != "text":
        checks.append(
            _fail(
                f"{entry}.code_column",
                f"{code} is a {_type_name(code_column)} column",
                "the ISO code is read and matched as text: name a String column",
                code,
            )
        )
    else:
        checks.append(_pass(f"{entry}.code_column", f"{code} (String) holds the ISO code", code))
    return checks


async def check_setting_column(
    meta: Metadata, setting: str, table_name: str, column_name: str, kinds: set[ValueKind]
) -> Check:
    name = f"{table_name}.{column_name}"
    table = await meta.table(table_name)
    column = table.column(column_name) if table is not None else None
    if column is None:
        return _fail(
            setting, f"{name}: no such column", f"set {setting} to a column of {table_name}"
        )
    kind = kind_of(column)
    if kind not in kinds:
        wanted = " or ".join(sorted(kinds))
        return _fail(
            setting,
            f"{name} is a {_type_name(column)} column, the sync writes {wanted}",
            f"set {setting} to a {wanted} column of {table_name}",
            name,
        )
    return _pass(setting, f"{name} ({_type_name(column)})", name)


async def check_mapping(
    dataverse: DataverseClient,
    mapping: CrmMapping,
    *,
    deal_value_field: str,
    country_field: str,
) -> list[Check]:
    """Every entry of ``mapping`` against the live metadata, and the built-in columns the
    settings name (``CRM_DEAL_VALUE_FIELD``; ``CRM_COUNTRY_FIELD`` unless the country is a
    lookup)."""
    meta = Metadata(dataverse)
    checks = [
        await check_setting_column(
            meta, "CRM_DEAL_VALUE_FIELD", "opportunity", deal_value_field, {"number"}
        )
    ]
    if mapping.country is None:
        checks.append(
            await check_setting_column(
                meta, "CRM_COUNTRY_FIELD", "account", country_field, {"text"}
            )
        )
    for name, rule in mapping.fields:
        if rule is not None:
            checks.append(
                _pass(
                    f"$.fields.{name}",
                    f"direction {rule.direction} (nothing to check in Dataverse)",
                )
            )
    for index, extra in enumerate(mapping.extra):
        checks.append(await check_extra(meta, index, extra))
    for table_name in TABLES:
        for key, value in mapping.defaults.for_table(table_name).items():
            checks.append(await check_default(meta, table_name, key, value))
    if mapping.account_match != DEFAULT_ACCOUNT_MATCH:
        for index, column in enumerate(mapping.account_match):
            checks.append(await check_account_match(meta, index, column))
    if mapping.country is not None:
        checks += await check_country(meta, mapping)
    return checks


def add_parser(commands: Any) -> None:
    group = add_group(commands, "mapping", help="check the declarative mapping (SPEC 13)")
    add_command(
        group,
        "check",
        help="compare CRM_MAPPING / CRM_MAPPING_FILE with the live Dataverse metadata",
        examples=(
            "cosell mapping check",
            "cosell --settings-file local.settings.json mapping check --json",
        ),
        notes="One PASS/FAIL line per mapping entry, named by its JSON path, with the fix. "
        "Read-only. Exit status 1 when any entry fails.",
        handler=check,
    )


def _source(ctx: Context) -> str | None:
    settings = ctx.settings
    if settings.crm_mapping_file is not None:
        return f"CRM_MAPPING_FILE ({settings.crm_mapping_file})"
    return "CRM_MAPPING" if settings.crm_mapping is not None else None


async def check(ctx: Context) -> int:
    settings, out = ctx.settings, ctx.out
    source = _source(ctx)
    checks = await check_mapping(
        await ctx.dataverse(),
        settings.mapping,
        deal_value_field=settings.crm_deal_value_field,
        country_field=settings.crm_country_field,
    )
    failed = [c for c in checks if c.status == "fail"]
    warned = [c for c in checks if c.status == "warn"]
    ok = not failed
    if out.json_mode:
        out.json(
            {
                "mapping": source,
                "ok": ok,
                "passed": len(checks) - len(failed) - len(warned),
                "warnings": len(warned),
                "failed": len(failed),
                "checks": [c.row() for c in checks],
            }
        )
        return 0 if ok else 1
    if source is None:
        out.line(
            "No CRM_MAPPING or CRM_MAPPING_FILE: the built-in mapping of SPEC 4.1 applies; "
            "checking the columns it uses."
        )
    else:
        out.line(f"Mapping from {source} against {settings.dataverse_url}:")
    for item in checks:
        out.check(item.status, item.entry, item.detail, item.fix)
    out.line()
    summary = f"{len(checks) - len(failed) - len(warned)} passed"
    summary += f", {len(warned)} warnings" if warned else ""
    out.line(f"mapping check: {summary}, {len(failed)} failed")
    return 0 if ok else 1
