"""Creating tables, columns and lookups from their metadata definitions: what ``POST
EntityDefinitions``, ``POST EntityDefinitions(...)/Attributes`` and ``POST
RelationshipDefinitions`` do (``metadata.py``), and what a solution import does with the
definitions its file brings (``import_job.py``), so an imported table is the same as one made
through the metadata API.

learn.microsoft.com/power-apps/developer/data-platform/webapi/create-update-entity-definitions-
using-web-api and .../create-update-column-definitions-using-web-api (the ``EntityMetadata`` and
``AttributeMetadata`` bodies), .../create-update-entity-relationships-using-web-api
(``OneToManyRelationshipMetadata`` with its ``Lookup``). A new table comes with its privileges
(``privileges.table_privileges``) and its default public view (``views.default_view``), as
Dataverse creates them.

UNCERTAIN (see metadata.py): a duplicate name is answered like a duplicate row (412).
"""

from __future__ import annotations

import re
from typing import Any

from sandbox.dataverse import privileges, views
from sandbox.dataverse.errors import DataverseFault, duplicate_record
from sandbox.dataverse.schema import ACTIVE_STATES, Column, Kind, Table, add_system_columns
from sandbox.dataverse.store import Store

LANGUAGE_CODE = 1033  # the emulator's one language (English, US)
# Dataverse numbers an option created without a Value from the publisher's option-value prefix
# + 4 digits; the default prefix 10000 gives 100000000 (reference 4.6; UNCERTAIN for others).
FIRST_CUSTOM_OPTION = 100_000_000
CUSTOM_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]{1,7}_[A-Za-z0-9_]+$")

TYPES = {
    "StringAttributeMetadata": Kind.STRING,
    "MemoAttributeMetadata": Kind.MEMO,
    "IntegerAttributeMetadata": Kind.INTEGER,
    "BigIntAttributeMetadata": Kind.BIGINT,
    "MoneyAttributeMetadata": Kind.MONEY,
    "DecimalAttributeMetadata": Kind.DECIMAL,
    "DoubleAttributeMetadata": Kind.DOUBLE,
    "BooleanAttributeMetadata": Kind.BOOLEAN,
    "PicklistAttributeMetadata": Kind.PICKLIST,
    "DateTimeAttributeMetadata": Kind.DATETIME,
}


def label_text(body: dict[str, Any], key: str) -> str | None:
    """The text of a ``Label`` sent in a create request: its 1033 translation, else the first."""
    labels = [x for x in (body.get(key) or {}).get("LocalizedLabels") or [] if isinstance(x, dict)]
    english = [x for x in labels if x.get("LanguageCode") == LANGUAGE_CODE]
    text = (english or labels or [{}])[0].get("Label")
    return text if isinstance(text, str) else None


def options_from(body: dict[str, Any], entity_set: str) -> dict[int, str]:
    """A new choice column's options with their labels, as ``option_set_json`` reads them back."""

    def refuse(detail: str) -> DataverseFault:
        return DataverseFault(
            400, "0x80048d19", f"Cannot create the choice column on '{entity_set}': {detail}"
        )

    option_set = body.get("OptionSet")
    if not isinstance(option_set, dict):
        raise refuse(
            "a PicklistAttributeMetadata needs an OptionSet with its Options (global choices, "
            "GlobalOptionSet@odata.bind, are not emulated)."
        )
    options: dict[int, str] = {}
    for option in option_set.get("Options") or []:
        if not isinstance(option, dict):
            raise refuse("each option must be an OptionMetadata object.")
        value = option.get("Value")
        if value is None:
            value = max([FIRST_CUSTOM_OPTION - 1, *options]) + 1
        if isinstance(value, bool) or not isinstance(value, int) or not -(2**31) <= value < 2**31:
            raise refuse(f"the option value {value!r} is not an Edm.Int32.")
        if value in options:
            raise refuse(f"the option value {value} is used twice.")
        options[value] = label_text(option, "Label") or ""
    return options


def column_from(body: dict[str, Any], entity_set: str) -> Column:
    type_name = (
        str(body.get("@odata.type", "")).removeprefix("#").removeprefix("Microsoft.Dynamics.CRM.")
    )
    kind = TYPES.get(type_name)
    schema_name = body.get("SchemaName")
    if kind is None or not isinstance(schema_name, str) or not CUSTOM_NAME.match(schema_name):
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
        column.options = options_from(body, entity_set)
    for bound in ("MinValue", "MaxValue"):
        if isinstance(body.get(bound), int | float):
            setattr(column, "minimum" if bound == "MinValue" else "maximum", body[bound])
    return column


def create_column(store: Store, table: Table, body: dict[str, Any]) -> Column:
    column = column_from(body, table.entity_set)
    if column.name in table.columns:
        raise duplicate_record()
    table.add(column)
    store.backfill_column(table, column)
    return column


def create_table(store: Store, body: dict[str, Any]) -> Table:
    schema_name = body.get("SchemaName")
    if not isinstance(schema_name, str) or not CUSTOM_NAME.match(schema_name):
        raise DataverseFault(
            400, "0x80048d19", "A table needs a SchemaName with the publisher prefix."
        )
    logical = schema_name.lower()
    schema = store.schema
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
    columns = [column_from(a, entity_set) for a in attributes]
    table = Table(logical, entity_set, f"{logical}id", columns[attributes.index(primary)].name)
    table.custom = True
    table.schema_name = schema_name
    table.display_name = label_text(body, "DisplayName") or schema_name
    table.display_collection_name = label_text(body, "DisplayCollectionName") or entity_set
    add_system_columns(table, ACTIVE_STATES)
    for column in columns:
        table.add(column)
    schema.tables[entity_set] = table
    store.ensure_table(entity_set)
    privileges.table_privileges(store, table, schema_name)
    views.default_view(
        store,
        table,
        table.display_collection_name,
        privileges.object_type_code(store, logical),
    )
    return table


def create_lookup(store: Store, body: dict[str, Any]) -> str:
    """A one-to-many relationship: its lookup column on the referencing table; its SchemaName."""
    schema = store.schema
    referenced = schema.by_logical_name(str(body.get("ReferencedEntity", "")))
    referencing = schema.by_logical_name(str(body.get("ReferencingEntity", "")))
    lookup = body.get("Lookup")
    lookup_name = lookup.get("SchemaName") if isinstance(lookup, dict) else None
    if (
        referenced is None
        or referencing is None
        or not isinstance(lookup_name, str)
        or not CUSTOM_NAME.match(lookup_name)
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
    store.backfill_column(referencing, column)
    return relationship
