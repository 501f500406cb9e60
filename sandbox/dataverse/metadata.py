"""The metadata endpoints ``cosell schema check|apply`` need: read tables and columns, read a
choice column's options, create a column, a table, or a lookup (a one-to-many relationship).

UNCERTAIN: the reference documents no metadata request or response bodies beyond the
``EntityDefinitions`` query of its section 3.1; these follow the public ``EntityMetadata`` /
``AttributeMetadata`` / ``PicklistAttributeMetadata`` / ``OneToManyRelationshipMetadata`` shapes,
and answer a duplicate name like a duplicate row (412, DuplicateRecord).

A choice column's options are a navigation property (``OptionSet``) of the derived attribute
types, so, as in Dataverse, they are not in ``/Attributes`` listings: they are read through a cast
to the attribute's type with ``$expand``::

    GET EntityDefinitions(LogicalName='opportunity')/Attributes(LogicalName='cosell_helpneeded')
        /Microsoft.Dynamics.CRM.PicklistAttributeMetadata
        ?$select=LogicalName&$expand=OptionSet($select=Options)

Each option carries ``Value`` and ``Label`` (``LocalizedLabels`` and ``UserLocalizedLabel``, the
label in the caller's language: 1033 here); status reasons also carry ``State``.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sandbox.dataverse import definitions, solutions
from sandbox.dataverse.api import json_response, no_content, read_body
from sandbox.dataverse.definitions import LANGUAGE_CODE, TYPES
from sandbox.dataverse.errors import DataverseFault, query_error
from sandbox.dataverse.metadata_query import filter_definitions, select_properties
from sandbox.dataverse.odata import split_top_level
from sandbox.dataverse.schema import (
    Column,
    Kind,
    OneToMany,
    Schema,
    Table,
    metadata_id,
)
from sandbox.dataverse.state import Emulator

_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
# A table by its primary key (MetadataId) or its alternate key (LogicalName), metadata_query.py
_TABLE_KEY = rf"\((?:LogicalName='(?P<name>[a-z0-9_]+)'|(?P<table_id>{_GUID}))\)"
ENTITY = re.compile(rf"^EntityDefinitions(?:{_TABLE_KEY})?$")
# .../Attributes, one attribute (by either key), and a cast of either to a derived type
ATTRIBUTES = re.compile(
    rf"^EntityDefinitions{_TABLE_KEY}/Attributes"
    rf"(?:\((?:LogicalName='(?P<attribute>[a-z0-9_]+)'|(?P<attribute_id>{_GUID}))\))?"
    r"(?:/Microsoft\.Dynamics\.CRM\.(?P<cast>[A-Za-z]+AttributeMetadata))?$"
)
_EXPAND_ITEM = re.compile(r"^(?P<name>[A-Za-z]+)(?:\((?P<options>.*)\))?$")
_OPTION_SET_TYPES = {Kind.PICKLIST: "Picklist", Kind.STATE: "State", Kind.STATUS: "Status"}
RELATIONSHIPS = re.compile(rf"^EntityDefinitions{_TABLE_KEY}/OneToManyRelationships$")
_TYPE_NAMES = {
    Kind.UNIQUEIDENTIFIER: "UniqueIdentifierAttributeMetadata",
    Kind.STATE: "StateAttributeMetadata",
    Kind.STATUS: "StatusAttributeMetadata",
    Kind.LOOKUP: "LookupAttributeMetadata",
    Kind.DATEONLY: "DateTimeAttributeMetadata",
    **{kind: name for name, kind in TYPES.items()},
}


# A cast of the Attributes collection keeps the attributes of these kinds (empty: all of them).
_CAST_KINDS: dict[str, frozenset[Kind]] = {
    "AttributeMetadata": frozenset(),
    "EnumAttributeMetadata": frozenset(_OPTION_SET_TYPES),
    "StateAttributeMetadata": frozenset({Kind.STATE}),
    "StatusAttributeMetadata": frozenset({Kind.STATUS}),
    "LookupAttributeMetadata": frozenset({Kind.LOOKUP}),
    "DateTimeAttributeMetadata": frozenset({Kind.DATETIME, Kind.DATEONLY}),
    **{name: frozenset({kind}) for name, kind in TYPES.items() if kind is not Kind.DATETIME},
}


def attribute_json(schema: Schema, table: Table, column: Column) -> dict[str, Any]:
    kind = column.kind
    body: dict[str, Any] = {
        "@odata.type": f"#Microsoft.Dynamics.CRM.{_TYPE_NAMES[kind]}",
        "MetadataId": metadata_id(table.logical_name, column.name),
        "LogicalName": column.name,
        "SchemaName": column.name,
        "EntityLogicalName": table.logical_name,
        "AttributeType": "DateTime" if kind is Kind.DATEONLY else kind.value,
        "IsCustomAttribute": "_" in column.name.removeprefix("address1_")
        and not column.name.startswith("msdyn_"),
        "IsPrimaryId": column.name == table.primary_key,
        "IsPrimaryName": column.name == table.primary_name,
        "IsValidForCreate": not column.read_only,
        "IsValidForUpdate": not column.read_only and column.name != table.primary_key,
    }
    if column.max_length is not None:
        body["MaxLength"] = column.max_length
    if kind in (Kind.DATEONLY, Kind.DATETIME):
        body["Format"] = "DateOnly" if kind is Kind.DATEONLY else "DateAndTime"
    if kind is Kind.LOOKUP:
        # LookupAttributeMetadata.Targets lists the logical names of the tables the lookup can
        # point at, e.g. ["account", "contact"] for customerid (learn.microsoft.com:
        # .../reference/lookupattributemetadata, "Targets"), not their entity sets.
        targets = (schema.table(entity_set) for entity_set in column.targets.values())
        body["Targets"] = sorted({t.logical_name for t in targets if t is not None})
    # No OptionSet here: it is a navigation property of the choice types, read with a cast and
    # $expand (module docstring), as in Dataverse.
    return body


def label_json(text: str, *ids: str) -> dict[str, Any]:
    """A metadata ``Label``: its translations and ``UserLocalizedLabel``, the caller's one."""
    if not text:
        return {"LocalizedLabels": [], "UserLocalizedLabel": None}
    localized = {
        "Label": text,
        "LanguageCode": LANGUAGE_CODE,
        "IsManaged": False,
        "MetadataId": metadata_id("label", *ids),
        "HasChanged": None,
    }
    return {"LocalizedLabels": [localized], "UserLocalizedLabel": dict(localized)}


def option_set_json(table: Table, column: Column) -> dict[str, Any]:
    """The local ``OptionSetMetadata`` of a choice, state or status column."""
    options: list[dict[str, Any]] = []
    for value, text in sorted((column.options or {}).items()):
        ids = (table.logical_name, column.name, str(value))
        option: dict[str, Any] = {
            "Value": value,
            "Label": label_json(text, *ids),
            "Description": label_json("", *ids),
            "Color": None,
            "IsManaged": False,
            "ExternalValue": None,
            "MetadataId": None,
            "HasChanged": None,
        }
        if column.kind is Kind.STATUS:
            option["@odata.type"] = "#Microsoft.Dynamics.CRM.StatusOptionMetadata"
            option["State"] = table.status_states.get(value)
        options.append(option)
    return {
        "MetadataId": metadata_id(table.logical_name, column.name, "optionset"),
        "Name": f"{table.logical_name}_{column.name}",
        "IsGlobal": False,
        "OptionSetType": _OPTION_SET_TYPES[column.kind],
        "Options": options,
    }


def cast_attribute_json(
    schema: Schema,
    table: Table,
    column: Column,
    cast: str,
    select: str | None,
    expand: str | None,
) -> dict[str, Any]:
    """``Attributes(LogicalName='x')/Microsoft.Dynamics.CRM.<cast>`` with ``$select`` and
    ``$expand`` of ``OptionSet`` / ``GlobalOptionSet`` (nested ``$select`` only)."""
    actual = _TYPE_NAMES[column.kind]
    if cast not in (actual, "AttributeMetadata", "EnumAttributeMetadata"):
        # UNCERTAIN: OData answers a cast to a type the entity is not with 404; the reference
        # does not say what Dataverse's message is.
        raise DataverseFault(
            404,
            "0x80040217",
            f"The attribute {column.name} of {table.logical_name} is a {actual}, not a {cast}.",
        )
    if cast == "EnumAttributeMetadata" and column.kind not in _OPTION_SET_TYPES:
        raise DataverseFault(
            404, "0x80040217", f"The attribute {column.name} is a {actual}, not a {cast}."
        )
    body = select_properties(attribute_json(schema, table, column), select)
    for item in split_top_level(expand or ""):
        match = _EXPAND_ITEM.match(item)
        name = match.group("name") if match else item
        if (
            match is None
            or name not in ("OptionSet", "GlobalOptionSet")
            or (column.kind not in _OPTION_SET_TYPES or cast == "AttributeMetadata")
        ):
            raise query_error(
                f"Could not find a navigation property named '{name}' on type "
                f"'Microsoft.Dynamics.CRM.{cast}'."
            )
        nested: str | None = None
        for option in split_top_level(match.group("options") or "", ";"):
            key, _, value = option.partition("=")
            if key.strip() != "$select":
                raise query_error(
                    f"The emulator takes only $select inside $expand={name}(...), not {key}."
                )
            nested = value
        # Every option set of the emulator is local: GlobalOptionSet is null (a choice made from
        # a global choice would have it, and OptionSet too).
        body[name] = (
            select_properties(option_set_json(table, column), nested)
            if name == "OptionSet"
            else None
        )
    return body


def relationship_json(schema: Schema, relation: OneToMany) -> dict[str, Any]:
    """A ``OneToManyRelationshipMetadata``: how a caller reads a collection-valued navigation
    property's name instead of guessing it (reference 4.5)."""
    referenced = schema.table(relation.referenced_set)
    referencing = schema.table(relation.entity_set)
    assert referenced is not None and referencing is not None
    return {
        "@odata.type": "#Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata",
        "MetadataId": metadata_id("relationship", relation.schema_name),
        "SchemaName": relation.schema_name,
        "ReferencedEntity": referenced.logical_name,
        "ReferencedAttribute": referenced.primary_key,
        "ReferencingEntity": referencing.logical_name,
        "ReferencingAttribute": relation.column.name,
        "ReferencedEntityNavigationPropertyName": relation.name,
        "ReferencingEntityNavigationPropertyName": relation.navigation,
    }


def entity_json(schema: Schema, table: Table, *, attributes: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "MetadataId": metadata_id(table.logical_name),
        "LogicalName": table.logical_name,
        "SchemaName": table.logical_name,
        "EntitySetName": table.entity_set,
        "PrimaryIdAttribute": table.primary_key,
        "PrimaryNameAttribute": table.primary_name,
        "IsCustomEntity": table.custom,
        # Private tables are internal to the platform; every table the emulator has is public.
        "IsPrivate": False,
        "ChangeTrackingEnabled": True,
        "IsOptimisticConcurrencyEnabled": True,
    }
    if attributes:
        body["Attributes"] = [attribute_json(schema, table, c) for c in table.columns.values()]
    return body


class MetadataApi:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    def base_url(self, request: Request) -> str:
        return str(request.base_url).rstrip("/") + "/api/data/v9.2/"

    def _table(self, match: re.Match[str]) -> Table:
        """The table a path names by ``LogicalName='x'`` or by its ``MetadataId``."""
        schema = self.emulator.store.schema
        name, table_id = match.group("name"), match.group("table_id")
        table = (
            schema.by_logical_name(name)
            if name
            else next(
                (t for t in schema.tables.values() if metadata_id(t.logical_name) == table_id),
                None,
            )
        )
        if table is None:
            raise DataverseFault(
                404,
                "0x80040217",
                f"Could not find an entity with the name {name}."
                if name
                else f"Could not find an entity with MetadataId {table_id}.",
            )
        return table

    def _column(self, table: Table, match: re.Match[str]) -> Column:
        name, column_id = match.group("attribute"), match.group("attribute_id")
        column = (
            table.columns.get(name)
            if name
            else next(
                (
                    c
                    for c in table.columns.values()
                    if metadata_id(table.logical_name, c.name) == column_id
                ),
                None,
            )
        )
        if column is None:
            raise DataverseFault(
                404, "0x80040217", f"Could not find attribute {name or column_id}."
            )
        return column

    async def handle(self, request: Request, path: str) -> Response | None:
        params = request.query_params
        schema = self.emulator.store.schema
        if path == "RelationshipDefinitions" and request.method == "POST":
            return await self.create_lookup(request)
        if (match := RELATIONSHIPS.match(path)) and request.method == "GET":
            table = self._table(match)
            relations = sorted(schema.one_to_many(table).values(), key=lambda r: r.name)
            return json_response({"value": [relationship_json(schema, r) for r in relations]})
        if match := ATTRIBUTES.match(path):
            table = self._table(match)
            one = bool(match.group("attribute") or match.group("attribute_id"))
            cast = match.group("cast")
            if request.method == "GET" and one:
                column = self._column(table, match)
                if cast:
                    return json_response(
                        cast_attribute_json(
                            schema,
                            table,
                            column,
                            cast,
                            params.get("$select"),
                            params.get("$expand"),
                        )
                    )
                return json_response(attribute_json(schema, table, column))
            if request.method == "GET":
                return json_response({"value": self._attributes(table, cast, params)})
            if request.method == "POST" and not one and not cast:
                return await self.create_column(request, table)
            return None
        if match := ENTITY.match(path):
            keyed = bool(match.group("name") or match.group("table_id"))
            expand = "Attributes" in (params.get("$expand") or "")
            if request.method == "GET" and keyed:
                body = entity_json(schema, self._table(match), attributes=expand)
                return json_response(select_properties(body, params.get("$select")))
            if request.method == "GET":
                return json_response({"value": self._list(request, expand)})
            if request.method == "POST" and not keyed:
                return await self.create_table(request)
        return None

    def _attributes(self, table: Table, cast: str | None, params: Any) -> list[dict[str, Any]]:
        """``.../Attributes`` and its cast to a derived type, which keeps only the attributes of
        that type: Microsoft's Python SDK reads every choice column of a table before each write
        with ``Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$select=LogicalName
        &$expand=OptionSet($select=Options)`` (shared/reference
        dataverse-push-and-webhook-trust.md §4)."""
        schema = self.emulator.store.schema
        select, expand = params.get("$select"), params.get("$expand")
        if cast is None:
            items = [attribute_json(schema, table, c) for c in table.columns.values()]
            items = filter_definitions(items, params.get("$filter"), "AttributeMetadata")
            return [select_properties(item, select) for item in items]
        kinds = _CAST_KINDS.get(cast)
        if kinds is None:
            raise DataverseFault(
                404, "0x80060888", f"The type 'Microsoft.Dynamics.CRM.{cast}' is not emulated."
            )
        columns = [c for c in table.columns.values() if not kinds or c.kind in kinds]
        # Filter on the full definitions, then render each through the cast ($select, $expand).
        full = [attribute_json(schema, table, c) for c in columns]
        kept = {
            item["LogicalName"] for item in filter_definitions(full, params.get("$filter"), cast)
        }
        return [
            cast_attribute_json(schema, table, c, cast, select, expand)
            for c in columns
            if c.name in kept
        ]

    def _list(self, request: Request, expand: bool) -> list[dict[str, Any]]:
        schema = self.emulator.store.schema
        params = request.query_params
        items = [entity_json(schema, t, attributes=expand) for t in schema.tables.values()]
        items = filter_definitions(items, params.get("$filter"), "EntityMetadata")
        return [select_properties(item, params.get("$select")) for item in items]

    async def create_column(self, request: Request, table: Table) -> Response:
        store = self.emulator.store
        body = await read_body(request, table.entity_set)
        solution = solutions.requested(request, store)  # an unknown solution changes nothing
        column = definitions.create_column(store, table, body)
        column_id = metadata_id(table.logical_name, column.name)
        if solution is not None:
            solutions.add(store, solution, solutions.ATTRIBUTE, column_id)
        return no_content(
            {
                "OData-EntityId": f"{self.base_url(request)}EntityDefinitions(LogicalName="
                f"'{table.logical_name}')/Attributes({column_id})"
            }
        )

    async def create_table(self, request: Request) -> Response:
        store = self.emulator.store
        body = await read_body(request, "EntityDefinitions")
        solution = solutions.requested(request, store)
        table = definitions.create_table(store, body)
        table_id = metadata_id(table.logical_name)
        if solution is not None:
            solutions.add(store, solution, solutions.ENTITY, table_id)
        return no_content(
            {"OData-EntityId": f"{self.base_url(request)}EntityDefinitions({table_id})"}
        )

    async def create_lookup(self, request: Request) -> Response:
        store = self.emulator.store
        body = await read_body(request, "RelationshipDefinitions")
        solution = solutions.requested(request, store)
        relationship = definitions.create_lookup(store, body)
        relationship_id = metadata_id("relationship", relationship)
        if solution is not None:
            solutions.add(store, solution, solutions.RELATIONSHIP, relationship_id)
        return no_content(
            {
                "OData-EntityId": f"{self.base_url(request)}RelationshipDefinitions("
                f"{relationship_id})"
            }
        )
