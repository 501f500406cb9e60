"""The metadata endpoints ``cosell schema apply`` needs: read tables and columns, create a
column, a table, or a lookup (a one-to-many relationship).

UNCERTAIN: the reference documents no metadata request bodies; these follow the public
``EntityMetadata`` / ``AttributeMetadata`` / ``OneToManyRelationshipMetadata`` shapes, and answer a
duplicate name like a duplicate row (412, DuplicateRecord).
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from sandbox.dataverse.api import json_response, no_content, read_body
from sandbox.dataverse.errors import DataverseFault, duplicate_record, query_error
from sandbox.dataverse.schema import (
    ACTIVE_STATES,
    Column,
    Kind,
    OneToMany,
    Schema,
    Table,
    add_system_columns,
)

if TYPE_CHECKING:
    from sandbox.dataverse.app import Emulator

_NAMESPACE = uuid.UUID("0c5e3f0e-6a4b-4f65-9a51-8d0f3f6a7b21")
ENTITY = re.compile(r"^EntityDefinitions(?:\(LogicalName='(?P<name>[a-z0-9_]+)'\))?$")
ATTRIBUTES = re.compile(
    r"^EntityDefinitions\(LogicalName='(?P<name>[a-z0-9_]+)'\)/Attributes"
    r"(?:\(LogicalName='(?P<attribute>[a-z0-9_]+)'\))?$"
)
RELATIONSHIPS = re.compile(
    r"^EntityDefinitions\(LogicalName='(?P<name>[a-z0-9_]+)'\)/OneToManyRelationships$"
)
_FILTER = re.compile(r"^(LogicalName|EntitySetName|SchemaName) eq '([^']*)'$")
_CUSTOM_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{1,7}_[A-Za-z0-9_]+$")

_TYPES = {
    "StringAttributeMetadata": Kind.STRING,
    "MemoAttributeMetadata": Kind.MEMO,
    "IntegerAttributeMetadata": Kind.INTEGER,
    "BigIntAttributeMetadata": Kind.BIGINT,
    "MoneyAttributeMetadata": Kind.MONEY,
    "DecimalAttributeMetadata": Kind.DECIMAL,
    "BooleanAttributeMetadata": Kind.BOOLEAN,
    "PicklistAttributeMetadata": Kind.PICKLIST,
    "DateTimeAttributeMetadata": Kind.DATETIME,
}
_TYPE_NAMES = {
    Kind.UNIQUEIDENTIFIER: "UniqueIdentifierAttributeMetadata",
    Kind.STATE: "StateAttributeMetadata",
    Kind.STATUS: "StatusAttributeMetadata",
    Kind.LOOKUP: "LookupAttributeMetadata",
    Kind.DATEONLY: "DateTimeAttributeMetadata",
    **{kind: name for name, kind in _TYPES.items()},
}


def metadata_id(*names: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(names)))


def attribute_json(table: Table, column: Column) -> dict[str, Any]:
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
        body["Targets"] = sorted(set(column.targets.values()))
    if column.options is not None:
        body["OptionSet"] = {"Options": [{"Value": v} for v in sorted(column.options)]}
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


def entity_json(table: Table, *, attributes: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "MetadataId": metadata_id(table.logical_name),
        "LogicalName": table.logical_name,
        "SchemaName": table.logical_name,
        "EntitySetName": table.entity_set,
        "PrimaryIdAttribute": table.primary_key,
        "PrimaryNameAttribute": table.primary_name,
        "IsCustomEntity": table.custom,
        "ChangeTrackingEnabled": True,
        "IsOptimisticConcurrencyEnabled": True,
    }
    if attributes:
        body["Attributes"] = [attribute_json(table, c) for c in table.columns.values()]
    return body


def _label(body: dict[str, Any], key: str) -> str | None:
    labels = (body.get(key) or {}).get("LocalizedLabels") or []
    return labels[0].get("Label") if labels and isinstance(labels[0], dict) else None


def _column_from(body: dict[str, Any], entity_set: str) -> Column:
    type_name = (
        str(body.get("@odata.type", "")).removeprefix("#").removeprefix("Microsoft.Dynamics.CRM.")
    )
    kind = _TYPES.get(type_name)
    schema_name = body.get("SchemaName")
    if kind is None or not isinstance(schema_name, str) or not _CUSTOM_NAME.match(schema_name):
        raise DataverseFault(
            400,
            "0x80048d19",
            f"Cannot create the attribute on '{entity_set}': a supported @odata.type and a "
            "SchemaName with the publisher prefix (e.g. cosell_Name) are required; lookups are "
            "created through RelationshipDefinitions.",
        )
    format_name = str(body.get("Format") or (body.get("DateTimeBehavior") or {}).get("Value", ""))
    if kind is Kind.DATETIME and format_name == "DateOnly":
        kind = Kind.DATEONLY
    column = Column(schema_name.lower(), kind)
    if kind in (Kind.STRING, Kind.MEMO):
        column.max_length = int(body.get("MaxLength") or (100 if kind is Kind.STRING else 2000))
    if kind is Kind.PICKLIST:
        options = (body.get("OptionSet") or {}).get("Options") or []
        column.options = frozenset(int(o["Value"]) for o in options if "Value" in o)
    for bound in ("MinValue", "MaxValue"):
        if isinstance(body.get(bound), int | float):
            setattr(column, "minimum" if bound == "MinValue" else "maximum", body[bound])
    return column


class MetadataApi:
    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    def base_url(self, request: Request) -> str:
        return str(request.base_url).rstrip("/") + "/api/data/v9.2/"

    def _table(self, logical_name: str) -> Table:
        table = self.emulator.store.schema.by_logical_name(logical_name)
        if table is None:
            raise DataverseFault(
                404,
                "0x80040217",
                f"Could not find an entity with the name {logical_name}.",
            )
        return table

    async def handle(self, request: Request, path: str) -> Response | None:
        if path == "RelationshipDefinitions" and request.method == "POST":
            return await self.create_lookup(request)
        if (match := RELATIONSHIPS.match(path)) and request.method == "GET":
            table = self._table(match.group("name"))
            schema = self.emulator.store.schema
            relations = sorted(schema.one_to_many(table).values(), key=lambda r: r.name)
            return json_response({"value": [relationship_json(schema, r) for r in relations]})
        if match := ATTRIBUTES.match(path):
            table = self._table(match.group("name"))
            if request.method == "GET" and match.group("attribute"):
                column = table.columns.get(match.group("attribute") or "")
                if column is None:
                    raise DataverseFault(
                        404, "0x80040217", f"Could not find attribute {match.group('attribute')}."
                    )
                return json_response(attribute_json(table, column))
            if request.method == "GET":
                return json_response(
                    {"value": [attribute_json(table, c) for c in table.columns.values()]}
                )
            if request.method == "POST" and not match.group("attribute"):
                return await self.create_column(request, table)
            return None
        if match := ENTITY.match(path):
            name = match.group("name")
            expand = "Attributes" in (request.query_params.get("$expand") or "")
            if request.method == "GET" and name:
                return json_response(entity_json(self._table(name), attributes=expand))
            if request.method == "GET":
                return json_response({"value": self._list(request, expand)})
            if request.method == "POST" and not name:
                return await self.create_table(request)
        return None

    def _list(self, request: Request, expand: bool) -> list[dict[str, Any]]:
        tables = list(self.emulator.store.schema.tables.values())
        text = request.query_params.get("$filter")
        if text:
            match = _FILTER.match(text.strip())
            if match is None:
                raise query_error(
                    "The emulator filters EntityDefinitions only by "
                    "LogicalName/EntitySetName/SchemaName eq '...'."
                )
            field, value = match.groups()
            attr = {"LogicalName": "logical_name", "SchemaName": "logical_name"}.get(
                field, "entity_set"
            )
            tables = [t for t in tables if getattr(t, attr) == value.lower()]
        return [entity_json(t, attributes=expand) for t in tables]

    async def create_column(self, request: Request, table: Table) -> Response:
        column = _column_from(await read_body(request, table.entity_set), table.entity_set)
        if column.name in table.columns:
            raise duplicate_record()
        table.add(column)
        self.emulator.store.backfill_column(table, column)
        return no_content(
            {
                "OData-EntityId": f"{self.base_url(request)}EntityDefinitions(LogicalName="
                f"'{table.logical_name}')/Attributes("
                f"{metadata_id(table.logical_name, column.name)})"
            }
        )

    async def create_table(self, request: Request) -> Response:
        body = await read_body(request, "EntityDefinitions")
        schema_name = body.get("SchemaName")
        if not isinstance(schema_name, str) or not _CUSTOM_NAME.match(schema_name):
            raise DataverseFault(
                400, "0x80048d19", "A table needs a SchemaName with the publisher prefix."
            )
        logical = schema_name.lower()
        schema = self.emulator.store.schema
        if schema.by_logical_name(logical) is not None:
            raise duplicate_record()
        attributes = [a for a in body.get("Attributes") or [] if isinstance(a, dict)]
        primary = next((a for a in attributes if a.get("IsPrimaryName")), None)
        if primary is None:
            raise DataverseFault(
                400, "0x80048d19", "A table needs one attribute with IsPrimaryName true."
            )
        # UNCERTAIN: Dataverse derives the entity set name (a plural) itself; the emulator adds
        # "s" unless the request names one.
        entity_set = str(body.get("EntitySetName") or logical + "s")
        columns = [_column_from(a, entity_set) for a in attributes]
        table = Table(logical, entity_set, f"{logical}id", columns[attributes.index(primary)].name)
        table.custom = True
        add_system_columns(table, ACTIVE_STATES)
        for column in columns:
            table.add(column)
        schema.tables[entity_set] = table
        self.emulator.store.ensure_table(entity_set)
        return no_content(
            {"OData-EntityId": f"{self.base_url(request)}EntityDefinitions({metadata_id(logical)})"}
        )

    async def create_lookup(self, request: Request) -> Response:
        body = await read_body(request, "RelationshipDefinitions")
        schema = self.emulator.store.schema
        referenced = schema.by_logical_name(str(body.get("ReferencedEntity", "")))
        referencing = schema.by_logical_name(str(body.get("ReferencingEntity", "")))
        lookup = body.get("Lookup")
        lookup_name = lookup.get("SchemaName") if isinstance(lookup, dict) else None
        if (
            referenced is None
            or referencing is None
            or not isinstance(lookup_name, str)
            or not _CUSTOM_NAME.match(lookup_name)
        ):
            raise DataverseFault(
                400,
                "0x80048d19",
                "A OneToManyRelationshipMetadata needs ReferencedEntity, ReferencingEntity and a "
                "Lookup with a prefixed SchemaName.",
            )
        name = lookup_name.lower()
        if name in referencing.columns:
            raise duplicate_record()
        # UNCERTAIN (reference 4.5): the navigation property defaults to the lookup's SchemaName;
        # a client that wants the lower-case name sends ReferencingEntityNavigationPropertyName.
        nav = str(body.get("ReferencingEntityNavigationPropertyName") or lookup_name)
        relationship = str(body.get("SchemaName") or name)
        # UNCERTAIN (reference 4.5): the collection-valued navigation property on the referenced
        # table defaults to the relationship's SchemaName, as the client's LookupDefinition
        # assumes; ReferencedEntityNavigationPropertyName overrides it.
        collection = str(body.get("ReferencedEntityNavigationPropertyName") or relationship)
        column = Column(name, Kind.LOOKUP, targets={nav: referenced.entity_set})
        column.collections[nav] = collection
        column.relationships[nav] = relationship
        referencing.add(column)
        self.emulator.store.backfill_column(referencing, column)
        return no_content(
            {
                "OData-EntityId": f"{self.base_url(request)}RelationshipDefinitions("
                f"{metadata_id('relationship', relationship)})"
            }
        )
