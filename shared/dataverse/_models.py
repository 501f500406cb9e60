"""Payload models: what the client returns besides plain rows, and the metadata it sends."""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from typing import Any, Literal, Self, TypeAlias
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

Row: TypeAlias = dict[str, Any]
"""A row as the Web API returns it: column names (lookups as ``_x_value``), ``@odata.etag``."""

LANGUAGE_CODE = 1033  # labels are sent in English (US)


def etag_of(row: Row) -> str | None:
    """The row's ``@odata.etag`` (reference 4.3: opaque, compare for equality only)."""
    value = row.get("@odata.etag")
    return value if isinstance(value, str) else None


class OpportunityState(IntEnum):
    """``statecode`` of an opportunity (reference section 8.1)."""

    OPEN = 0
    WON = 1
    LOST = 2


class OpportunityStatus(IntEnum):
    """``statuscode`` of an opportunity (reference section 8.1; SPEC 4.3 maps them)."""

    IN_PROGRESS = 1
    ON_HOLD = 2
    WON = 3
    CANCELED = 4
    OUT_SOLD = 5


class _Wire(BaseModel):
    model_config = ConfigDict(populate_by_name=True, frozen=True, extra="ignore")


class WhoAmI(_Wire):
    """``GET WhoAmI`` (reference 1.1): the application user, its business unit and org."""

    user_id: UUID = Field(alias="UserId")
    business_unit_id: UUID = Field(alias="BusinessUnitId")
    organization_id: UUID = Field(alias="OrganizationId")


class Currency(_Wire):
    """A ``transactioncurrencies`` row."""

    id: UUID = Field(alias="transactioncurrencyid")
    iso_code: str = Field(alias="isocurrencycode")
    name: str | None = Field(default=None, alias="currencyname")
    symbol: str | None = Field(default=None, alias="currencysymbol")
    precision: int | None = Field(default=None, alias="currencyprecision")
    exchange_rate: float | None = Field(default=None, alias="exchangerate")


class ColumnMetadata(_Wire):
    """One attribute of ``EntityDefinitions(...)/Attributes``."""

    logical_name: str = Field(alias="LogicalName")
    schema_name: str | None = Field(default=None, alias="SchemaName")
    metadata_id: str | None = Field(default=None, alias="MetadataId")
    attribute_type: str | None = Field(default=None, alias="AttributeType")
    is_custom: bool = Field(default=False, alias="IsCustomAttribute")
    max_length: int | None = Field(default=None, alias="MaxLength")
    format: str | None = Field(default=None, alias="Format")
    targets: list[str] | None = Field(default=None, alias="Targets")


class TableMetadata(_Wire):
    """An ``EntityDefinitions`` entry, with its columns when they were expanded."""

    logical_name: str = Field(alias="LogicalName")
    schema_name: str | None = Field(default=None, alias="SchemaName")
    metadata_id: str | None = Field(default=None, alias="MetadataId")
    entity_set_name: str = Field(alias="EntitySetName")
    primary_id_attribute: str = Field(alias="PrimaryIdAttribute")
    primary_name_attribute: str | None = Field(default=None, alias="PrimaryNameAttribute")
    is_custom: bool = Field(default=False, alias="IsCustomEntity")
    change_tracking_enabled: bool | None = Field(default=None, alias="ChangeTrackingEnabled")
    columns: list[ColumnMetadata] = Field(default_factory=list, alias="Attributes")

    def column(self, logical_name: str) -> ColumnMetadata | None:
        return next((c for c in self.columns if c.logical_name == logical_name), None)


class RelationshipMetadata(_Wire):
    """A ``OneToManyRelationshipMetadata`` of ``EntityDefinitions(...)/OneToManyRelationships``:
    ``referenced_navigation_property_name`` is the collection-valued navigation property on the
    "one" side (``$expand`` and deep insert use it; reference 4.5 says read it, don't guess)."""

    schema_name: str = Field(alias="SchemaName")
    metadata_id: str | None = Field(default=None, alias="MetadataId")
    referenced_entity: str = Field(alias="ReferencedEntity")
    referencing_entity: str = Field(alias="ReferencingEntity")
    referencing_attribute: str | None = Field(default=None, alias="ReferencingAttribute")
    referenced_navigation_property_name: str = Field(alias="ReferencedEntityNavigationPropertyName")
    referencing_navigation_property_name: str | None = Field(
        default=None, alias="ReferencingEntityNavigationPropertyName"
    )


class LocalizedLabel(_Wire):
    """One translation of a metadata ``Label``."""

    label: str = Field(alias="Label")
    language_code: int | None = Field(default=None, alias="LanguageCode")


class MetadataLabel(_Wire):
    """A metadata ``Label``: every translation, and ``UserLocalizedLabel``, the one in the
    calling user's language."""

    localized_labels: list[LocalizedLabel] = Field(default_factory=list, alias="LocalizedLabels")
    user_localized_label: LocalizedLabel | None = Field(default=None, alias="UserLocalizedLabel")

    @property
    def text(self) -> str:
        """The user's label, else the English (1033) one, else the first, else ``""``."""
        if self.user_localized_label is not None:
            return self.user_localized_label.label
        english = [x for x in self.localized_labels if x.language_code == LANGUAGE_CODE]
        found = english or self.localized_labels
        return found[0].label if found else ""


class OptionMetadata(_Wire):
    """One option of a choice column: the integer written to rows and its label."""

    value: StrictInt = Field(alias="Value")
    label: MetadataLabel | None = Field(default=None, alias="Label")


class OptionSetMetadata(_Wire):
    options: list[OptionMetadata] = Field(default_factory=list, alias="Options")

    def as_dict(self) -> dict[int, str]:
        return {o.value: o.label.text if o.label else "" for o in self.options}


class ChoiceColumnMetadata(_Wire):
    """A ``PicklistAttributeMetadata`` (or state / status attribute) read with
    ``$expand=OptionSet($select=Options)``. ``OptionSet`` is a navigation property, so plain
    ``/Attributes`` listings never carry it."""

    logical_name: str = Field(alias="LogicalName")
    option_set: OptionSetMetadata | None = Field(default=None, alias="OptionSet")
    global_option_set: OptionSetMetadata | None = Field(default=None, alias="GlobalOptionSet")

    def options(self) -> dict[int, str]:
        """Value → label. A choice made from a global choice may come with only
        ``GlobalOptionSet`` (UNCERTAIN: the reference does not cover metadata), so both count."""
        found = self.option_set or self.global_option_set
        return found.as_dict() if found is not None else {}


def label(text: str) -> dict[str, Any]:
    """A metadata ``Label`` in one language."""
    return {
        "@odata.type": "Microsoft.Dynamics.CRM.Label",
        "LocalizedLabels": [
            {
                "@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel",
                "Label": text,
                "LanguageCode": LANGUAGE_CODE,
            }
        ],
    }


ColumnKind = Literal[
    "string", "memo", "integer", "money", "decimal", "boolean", "choice", "date", "datetime"
]
_METADATA_TYPE: dict[str, str] = {
    "string": "StringAttributeMetadata",
    "memo": "MemoAttributeMetadata",
    "integer": "IntegerAttributeMetadata",
    "money": "MoneyAttributeMetadata",
    "decimal": "DecimalAttributeMetadata",
    "boolean": "BooleanAttributeMetadata",
    "choice": "PicklistAttributeMetadata",
    "date": "DateTimeAttributeMetadata",
    "datetime": "DateTimeAttributeMetadata",
}


class ColumnDefinition(BaseModel):
    """A custom column to create (``cosell schema apply``); ``schema_name`` carries the prefix."""

    model_config = ConfigDict(frozen=True)

    schema_name: str
    display_name: str
    kind: ColumnKind
    description: str = ""
    max_length: int | None = None
    options: Mapping[int, str] | None = None  # choice values and labels (SPEC 4.2)
    required: bool = False

    @model_validator(mode="after")
    def _options_fit_the_kind(self) -> Self:
        # A choice column is created with its options (Dataverse would number options sent
        # without values, and a choice without any cannot hold a value), and only a choice has
        # them: catch both here rather than as a 400 from the metadata API.
        if self.kind == "choice":
            if not self.options:
                raise ValueError("a choice column needs its options (value → label)")
            for value, text in self.options.items():
                if isinstance(value, bool) or not -(2**31) <= value < 2**31:
                    raise ValueError(f"choice value {value!r} is not a 32-bit integer")
                if not text.strip():
                    raise ValueError(f"choice value {value} needs a label")
        elif self.options is not None:
            raise ValueError(f"only choice columns take options, not {self.kind} columns")
        return self

    @property
    def logical_name(self) -> str:
        return self.schema_name.lower()

    def to_metadata(self) -> dict[str, Any]:
        """The ``AttributeMetadata`` body. UNCERTAIN: shapes follow the public metadata types;
        the reference does not document them."""
        body: dict[str, Any] = {
            "@odata.type": f"Microsoft.Dynamics.CRM.{_METADATA_TYPE[self.kind]}",
            "SchemaName": self.schema_name,
            "DisplayName": label(self.display_name),
            "Description": label(self.description or self.display_name),
            "RequiredLevel": {
                "Value": "ApplicationRequired" if self.required else "None",
                "CanBeChanged": True,
            },
        }
        if self.kind == "string":
            body["MaxLength"] = self.max_length or 100
            body["FormatName"] = {"Value": "Text"}
        elif self.kind == "memo":
            body["MaxLength"] = self.max_length or 2000
            body["Format"] = "TextArea"
        elif self.kind == "integer":
            body["Format"] = "None"
        elif self.kind == "money":
            body["PrecisionSource"] = 2
        elif self.kind == "boolean":
            body["DefaultValue"] = False
            body["OptionSet"] = {
                "@odata.type": "Microsoft.Dynamics.CRM.BooleanOptionSetMetadata",
                "TrueOption": {"Value": 1, "Label": label("Yes")},
                "FalseOption": {"Value": 0, "Label": label("No")},
                "OptionSetType": "Boolean",
            }
        elif self.kind == "choice":
            body["OptionSet"] = {
                "@odata.type": "Microsoft.Dynamics.CRM.OptionSetMetadata",
                "IsGlobal": False,
                "OptionSetType": "Picklist",
                "Options": [
                    {"Value": value, "Label": label(text)}
                    for value, text in sorted((self.options or {}).items())
                ],
            }
        elif self.kind in ("date", "datetime"):
            date_only = self.kind == "date"
            body["Format"] = "DateOnly" if date_only else "DateAndTime"
            body["DateTimeBehavior"] = {"Value": "DateOnly" if date_only else "UserLocal"}
        return body


class TableDefinition(BaseModel):
    """A custom table to create, with its primary name column."""

    model_config = ConfigDict(frozen=True)

    schema_name: str
    display_name: str
    display_collection_name: str
    primary_name: ColumnDefinition
    description: str = ""
    entity_set_name: str | None = None

    @property
    def logical_name(self) -> str:
        return self.schema_name.lower()

    def to_metadata(self) -> dict[str, Any]:
        primary = {**self.primary_name.to_metadata(), "IsPrimaryName": True}
        body: dict[str, Any] = {
            "@odata.type": "Microsoft.Dynamics.CRM.EntityMetadata",
            "SchemaName": self.schema_name,
            "DisplayName": label(self.display_name),
            "DisplayCollectionName": label(self.display_collection_name),
            "Description": label(self.description or self.display_name),
            "OwnershipType": "UserOwned",
            "IsActivity": False,
            "HasActivities": False,
            "HasNotes": False,
            "Attributes": [primary],
        }
        if self.entity_set_name:
            body["EntitySetName"] = self.entity_set_name
        return body


class LookupDefinition(BaseModel):
    """A lookup column, created as a one-to-many relationship (e.g. solution → opportunity)."""

    model_config = ConfigDict(frozen=True)

    schema_name: str  # the lookup column, e.g. cosell_OpportunityId
    display_name: str
    referenced_table: str  # logical name of the "one" side, e.g. opportunity
    referenced_key: str  # its primary key, e.g. opportunityid
    referencing_table: str  # logical name of the "many" side, e.g. cosell_solution
    relationship_schema_name: str
    # The collection-valued navigation property on the "one" side (e.g. opportunity ->
    # cosell_opportunity_cosell_solutions); None leaves Dataverse's default, the relationship's
    # SchemaName (reference 4.5 says to read navigation names from metadata).
    referenced_navigation_property_name: str | None = None

    @property
    def logical_name(self) -> str:
        return self.schema_name.lower()

    def to_metadata(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "@odata.type": "Microsoft.Dynamics.CRM.OneToManyRelationshipMetadata",
            "SchemaName": self.relationship_schema_name,
            "ReferencedEntity": self.referenced_table,
            "ReferencedAttribute": self.referenced_key,
            "ReferencingEntity": self.referencing_table,
            # UNCERTAIN (reference 4.5): the navigation property defaults to the lookup's
            # SchemaName (mixed case); SPEC 4.1 writes `cosell_opportunityid@odata.bind`, so the
            # lower-case logical name is asked for explicitly.
            "ReferencingEntityNavigationPropertyName": self.logical_name,
            "Lookup": {
                "@odata.type": "Microsoft.Dynamics.CRM.LookupAttributeMetadata",
                "SchemaName": self.schema_name,
                "DisplayName": label(self.display_name),
                "RequiredLevel": {"Value": "None", "CanBeChanged": True},
            },
        }
        if self.referenced_navigation_property_name:
            body["ReferencedEntityNavigationPropertyName"] = (
                self.referenced_navigation_property_name
            )
        return body
