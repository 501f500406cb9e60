"""The emulator's table and column definitions, and validation of write payloads.

Only what the sync touches is modelled: the columns of the reference's section 8 for the standard
tables, the custom columns and tables of SPEC 4.1 (``shared.crm_schema`` for the emulator's
prefix), and the system columns every row carries. The schema is mutable because the metadata API
(create column / create table) extends it.
"""

from __future__ import annotations

import copy
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from enum import StrEnum
from functools import cache
from typing import Any

from sandbox.dataverse.errors import DataverseFault, payload_error
from shared import crm_schema as crm

_METADATA_NAMESPACE = uuid.UUID("0c5e3f0e-6a4b-4f65-9a51-8d0f3f6a7b21")
GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def metadata_id(*names: str) -> str:
    """The MetadataId of a table (its logical name), a column (table, column) or a relationship
    ("relationship", SchemaName): stable, so the same definition has the same id in every
    emulator, as a solution import keeps the ids of what it brings."""
    return str(uuid.uuid5(_METADATA_NAMESPACE, "/".join(names)))


class Kind(StrEnum):
    """Attribute types, named like Dataverse's ``AttributeType`` values."""

    UNIQUEIDENTIFIER = "Uniqueidentifier"
    STRING = "String"
    MEMO = "Memo"
    INTEGER = "Integer"
    BIGINT = "BigInt"
    MONEY = "Money"
    DECIMAL = "Decimal"
    DOUBLE = "Double"  # floating point, e.g. account.address1_latitude
    BOOLEAN = "Boolean"
    PICKLIST = "Picklist"
    STATE = "State"
    STATUS = "Status"
    DATEONLY = "DateOnly"  # AttributeType DateTime with DateOnly format; kept apart for checks
    DATETIME = "DateTime"
    LOOKUP = "Lookup"


EDM_TYPE = {
    Kind.UNIQUEIDENTIFIER: "Edm.Guid",
    Kind.STRING: "Edm.String",
    Kind.MEMO: "Edm.String",
    Kind.INTEGER: "Edm.Int32",
    Kind.BIGINT: "Edm.Int64",
    Kind.MONEY: "Edm.Decimal",
    Kind.DECIMAL: "Edm.Decimal",
    Kind.DOUBLE: "Edm.Double",
    Kind.BOOLEAN: "Edm.Boolean",
    Kind.PICKLIST: "Edm.Int32",
    Kind.STATE: "Edm.Int32",
    Kind.STATUS: "Edm.Int32",
    Kind.DATEONLY: "Edm.Date",
    Kind.DATETIME: "Edm.DateTimeOffset",
    Kind.LOOKUP: "Edm.Guid",
}

NUMERIC = frozenset({Kind.INTEGER, Kind.BIGINT, Kind.MONEY, Kind.DECIMAL, Kind.DOUBLE})
CHOICE = frozenset({Kind.PICKLIST, Kind.STATE, Kind.STATUS})


@dataclass
class Column:
    """One attribute. Lookups name their navigation properties and target entity sets."""

    name: str
    kind: Kind
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None
    # choice value -> label (UserLocalizedLabel, read through the PicklistAttributeMetadata cast
    # in metadata.py); writes are checked against the values
    options: dict[int, str] | None = None
    read_only: bool = False
    # navigation property -> target entity set; several entries for polymorphic lookups
    # (customerid_account / customerid_contact, reference section 4.5)
    targets: dict[str, str] = field(default_factory=dict)
    # single-valued navigation property -> the name of the collection-valued navigation property
    # the relationship gives the target table (ReferencedEntityNavigationPropertyName, 4.5);
    # unnamed ones follow ``collection_name``'s rule
    collections: dict[str, str] = field(default_factory=dict)
    # single-valued navigation property -> the relationship's SchemaName, when it differs from
    # the collection-valued navigation property's name
    relationships: dict[str, str] = field(default_factory=dict)

    @property
    def wire_name(self) -> str:
        """Lookups are read as ``_<name>_value`` (reference section 2.1)."""
        return f"_{self.name}_value" if self.kind is Kind.LOOKUP else self.name


@dataclass
class Table:
    """One entity: its logical name, entity set, keys and columns."""

    logical_name: str
    entity_set: str
    primary_key: str
    primary_name: str
    columns: dict[str, Column] = field(default_factory=dict)
    custom: bool = False
    status_states: dict[int, int] = field(default_factory=dict)  # statuscode -> its statecode
    # SchemaName as created (``cosell_Solution``); empty: the logical name (standard tables)
    schema_name: str = ""
    # DisplayName and DisplayCollectionName as created (for views and solution files)
    display_name: str = ""
    display_collection_name: str = ""

    def add(self, column: Column) -> None:
        self.columns[column.name] = column

    def by_wire_name(self, wire: str) -> Column | None:
        """The column read under ``wire`` (``name`` or ``_lookup_value``)."""
        if wire.startswith("_") and wire.endswith("_value"):
            column = self.columns.get(wire[1:-6])
            return column if column is not None and column.kind is Kind.LOOKUP else None
        column = self.columns.get(wire)
        return None if column is None or column.kind is Kind.LOOKUP else column

    def navigation(self, nav: str) -> tuple[Column, str] | None:
        """The lookup column and target entity set of a single-valued navigation property."""
        for column in self.columns.values():
            if column.kind is Kind.LOOKUP and nav in column.targets:
                return column, column.targets[nav]
        return None


@dataclass(frozen=True)
class OneToMany:
    """A collection-valued navigation property: the rows of ``entity_set`` whose lookup
    ``column`` (written through ``navigation``) points at a row of ``referenced_set``."""

    name: str
    referenced_set: str
    entity_set: str
    column: Column
    navigation: str

    @property
    def schema_name(self) -> str:
        """The relationship's SchemaName (the collection's name unless one was given)."""
        return self.column.relationships.get(self.navigation, self.name)


def collection_name(referencing: Table, column: Column, navigation: str) -> str:
    """The collection-valued navigation property a lookup gives its target table.

    A name the relationship declares wins: the standard relationships' SchemaNames
    (``standard.RELATIONSHIPS``, e.g. ``opportunity_parent_account``), the app's own
    (``cosell_opportunity_cosell_solutions`` from ``shared.crm_schema``), or
    ReferencedEntityNavigationPropertyName from the metadata API. Otherwise (the lookups to
    ``systemuser``) the emulator's rule is
    ``<referencing logical name>_<single-valued navigation property>``, e.g.
    ``account_createdby``. UNCERTAIN: Dataverse names those by their SchemaName too
    (``lk_accountbase_createdby`` …); code that runs against Dataverse must use a declared name
    or read it from metadata.
    """
    return column.collections.get(navigation) or f"{referencing.logical_name}_{navigation}"


def _string(name: str, length: int = 100, *, read_only: bool = False) -> Column:
    return Column(name, Kind.STRING, max_length=length, read_only=read_only)


def _memo(name: str, length: int = 2000) -> Column:
    return Column(name, Kind.MEMO, max_length=length)


def _money(name: str, *, read_only: bool = False) -> Column:
    # Money range of the opportunity columns (reference section 4.6).
    return Column(name, Kind.MONEY, minimum=-1e12, maximum=1e12, read_only=read_only)


def _choice(name: str, options: dict[int, str]) -> Column:
    return Column(name, Kind.PICKLIST, options=dict(options))


def _lookup(name: str, **targets: str) -> Column:
    return Column(name, Kind.LOOKUP, targets=targets or {name: ""})


Labels = tuple[dict[int, str], dict[int, str]]  # statecode labels, statuscode labels


def add_system_columns(
    table: Table, states: dict[int, tuple[int, ...]], labels: Labels | None = None
) -> None:
    table.add(Column(table.primary_key, Kind.UNIQUEIDENTIFIER))
    table.add(Column("createdon", Kind.DATETIME, read_only=True))
    table.add(Column("modifiedon", Kind.DATETIME, read_only=True))
    table.add(Column("versionnumber", Kind.BIGINT, read_only=True))
    table.add(Column("ownerid", Kind.LOOKUP, read_only=True, targets={"ownerid": "systemusers"}))
    table.add(
        Column("createdby", Kind.LOOKUP, read_only=True, targets={"createdby": "systemusers"})
    )
    table.add(
        Column("modifiedby", Kind.LOOKUP, read_only=True, targets={"modifiedby": "systemusers"})
    )
    state_labels, status_labels = labels or ACTIVE_LABELS
    table.add(
        Column("statecode", Kind.STATE, options={v: state_labels.get(v, str(v)) for v in states})
    )
    statuses = {s: status_labels.get(s, str(s)) for reasons in states.values() for s in reasons}
    table.add(Column("statuscode", Kind.STATUS, options=statuses))
    # StatusOptionMetadata.State: the statecode each status reason belongs to
    table.status_states = {s: state for state, reasons in states.items() for s in reasons}


# statecode -> its status reasons, the first being the default (reference section 8).
OPPORTUNITY_STATES: dict[int, tuple[int, ...]] = {0: (1, 2), 1: (3,), 2: (4, 5)}
LEAD_STATES: dict[int, tuple[int, ...]] = {0: (1, 2), 1: (3,), 2: (4, 5, 6, 7)}
ACTIVE_STATES: dict[int, tuple[int, ...]] = {0: (1,), 1: (2,)}
# The labels of those statecode and statuscode values (reference 8.1, 8.3, 8.4, 8.5).
OPPORTUNITY_LABELS: Labels = (
    {0: "Open", 1: "Won", 2: "Lost"},
    {1: "In Progress", 2: "On Hold", 3: "Won", 4: "Canceled", 5: "Out-Sold"},
)
LEAD_LABELS: Labels = (
    {0: "Open", 1: "Qualified", 2: "Disqualified"},
    {
        1: "New",
        2: "Contacted",
        3: "Qualified",
        4: "Lost",
        5: "Cannot Contact",
        6: "No Longer Interested",
        7: "Canceled",
    },
)
ACTIVE_LABELS: Labels = ({0: "Active", 1: "Inactive"}, {1: "Active", 2: "Inactive"})


def _address(table: Table) -> None:
    for part, length in (
        ("line1", 250),
        ("line2", 250),
        ("city", 80),
        ("stateorprovince", 50),
        ("postalcode", 20),
        ("country", 80),
    ):
        table.add(_string(f"address1_{part}", length))


def _opportunity(prefix: str | None) -> Table:
    t = Table("opportunity", "opportunities", "opportunityid", "name")
    add_system_columns(t, OPPORTUNITY_STATES, OPPORTUNITY_LABELS)
    for column in (
        _string("name", 300),
        _memo("description", 2000),
        _money("estimatedvalue"),
        Column("isrevenuesystemcalculated", Kind.BOOLEAN),
        Column("estimatedclosedate", Kind.DATEONLY),
        Column("actualclosedate", Kind.DATEONLY),
        _money("actualvalue"),
        _money("budgetamount"),
        Column("closeprobability", Kind.INTEGER, minimum=0, maximum=100),
        _string("stepname", 200),
        _choice("salesstage", {0: "Qualify", 1: "Develop", 2: "Propose", 3: "Close"}),
        _choice(
            "msdyn_forecastcategory",
            {
                100000001: "Pipeline",
                100000002: "Best case",
                100000003: "Committed",
                100000004: "Omitted",
                100000005: "Won",
                100000006: "Lost",
            },
        ),
        _choice("opportunityratingcode", {1: "Hot", 2: "Warm", 3: "Cold"}),
        # The reference names only 0 and 4; 1-3 are the standard labels of the column.
        _choice(
            "purchasetimeframe",
            {0: "Immediate", 1: "This Quarter", 2: "Next Quarter", 3: "This Year", 4: "Unknown"},
        ),
        Column("exchangerate", Kind.DECIMAL, read_only=True),
        _lookup("customerid", customerid_account="accounts", customerid_contact="contacts"),
        _lookup("parentaccountid", parentaccountid="accounts"),
        _lookup("parentcontactid", parentcontactid="contacts"),
        _lookup("transactioncurrencyid", transactioncurrencyid="transactioncurrencies"),
        _lookup("originatingleadid", originatingleadid="leads"),
    ):
        t.add(column)
    if prefix is not None:
        for declared in crm.crm_schema(prefix).opportunity_columns:
            t.add(_custom(declared))
    return t


def _account() -> Table:
    t = Table("account", "accounts", "accountid", "name")
    add_system_columns(t, ACTIVE_STATES)
    for column in (
        _string("name", 160),
        _string("accountnumber", 20),
        _string("websiteurl", 200),
        _string("telephone1", 50),
        _string("emailaddress1", 100),
        _memo("description", 2000),
        Column("numberofemployees", Kind.INTEGER, minimum=0, maximum=1e9),
        _money("revenue"),
        _lookup("parentaccountid", parentaccountid="accounts"),
        _lookup("primarycontactid", primarycontactid="contacts"),
        _lookup("transactioncurrencyid", transactioncurrencyid="transactioncurrencies"),
        # Columns of Microsoft's Web API examples (learn.microsoft.com, power-apps/developer/
        # data-platform/webapi/create-entity-web-api, "Basic create"; standard option labels).
        Column("creditonhold", Kind.BOOLEAN),
        _money("creditlimit"),
        _choice("accountcategorycode", {1: "Preferred Customer", 2: "Standard"}),
        Column("address1_latitude", Kind.DOUBLE, minimum=-90, maximum=90),
        Column("address1_longitude", Kind.DOUBLE, minimum=-180, maximum=180),
    ):
        t.add(column)
    _address(t)
    return t


def _contact() -> Table:
    t = Table("contact", "contacts", "contactid", "fullname")
    add_system_columns(t, ACTIVE_STATES)
    for column in (
        _string("firstname", 50),
        _string("lastname", 50),
        _string("fullname", 160, read_only=True),
        _string("emailaddress1", 100),
        _string("telephone1", 50),
        _string("mobilephone", 50),
        _string("jobtitle", 100),
        _memo("description", 2000),
        # The Web API basic operations sample updates a contact's annualincome and jobtitle.
        _money("annualincome"),
        Column("birthdate", Kind.DATEONLY),
        _lookup(
            "parentcustomerid",
            parentcustomerid_account="accounts",
            parentcustomerid_contact="contacts",
        ),
    ):
        t.add(column)
    _address(t)
    return t


def _lead(prefix: str | None) -> Table:
    t = Table("lead", "leads", "leadid", "fullname")
    add_system_columns(t, LEAD_STATES, LEAD_LABELS)
    for column in (
        _string("subject", 300),
        _string("firstname", 50),
        _string("lastname", 50),
        _string("fullname", 160, read_only=True),
        _string("companyname", 100),
        _string("emailaddress1", 100),
        _string("telephone1", 50),
        _string("jobtitle", 100),
        _string("websiteurl", 200),
        _memo("description", 2000),
        _money("estimatedamount"),
        Column("estimatedclosedate", Kind.DATEONLY),
        _lookup("parentaccountid", parentaccountid="accounts"),
        _lookup("parentcontactid", parentcontactid="contacts"),
        _lookup("qualifyingopportunityid", qualifyingopportunityid="opportunities"),
        _lookup("transactioncurrencyid", transactioncurrencyid="transactioncurrencies"),
    ):
        t.add(column)
    if prefix is not None:
        for declared in crm.crm_schema(prefix).lead_columns:
            t.add(_custom(declared))
    _address(t)
    return t


def _currency() -> Table:
    t = Table(
        "transactioncurrency", "transactioncurrencies", "transactioncurrencyid", "currencyname"
    )
    add_system_columns(t, ACTIVE_STATES)
    for column in (
        _string("isocurrencycode", 5),
        _string("currencyname", 100),
        _string("currencysymbol", 10),
        Column("currencyprecision", Kind.INTEGER, minimum=0, maximum=4),
        Column("exchangerate", Kind.DECIMAL, minimum=0.0000000001, maximum=100000000000),
    ):
        t.add(column)
    return t


_KINDS = {"text": Kind.STRING, "memo": Kind.MEMO, "bool": Kind.BOOLEAN, "choice": Kind.PICKLIST}


def _custom(column: crm.Column) -> Column:
    """A column of the app's schema, as ``cosell schema apply`` creates it."""
    options = column.labels if column.kind == "choice" else None
    return Column(
        column.logical_name, _KINDS[column.kind], max_length=column.max_length, options=options
    )


def _custom_table(table: crm.Table) -> Table:
    t = Table(
        table.logical_name,
        table.entity_set,
        table.primary_key,
        table.primary_name.logical_name,
        custom=True,
    )
    add_system_columns(t, ACTIVE_STATES)
    for column in (table.primary_name, *table.columns):
        t.add(_custom(column))
    return t


def _custom_tables(prefix: str) -> list[Table]:
    schema = crm.crm_schema(prefix)
    tables = {t.logical_name: _custom_table(t) for t in schema.tables}
    for relation in schema.lookups:
        name = relation.logical_name
        lookup = _lookup(name, **{name: relation.referenced_set})
        # The relationship `cosell schema apply` creates; the engine expands and deep-inserts it.
        lookup.collections[name] = relation.collection
        tables[relation.column.table].add(lookup)
    return list(tables.values())


def _systemuser() -> Table:
    # Only so owner/createdby lookups and $expand have a target; not listed as a data set.
    t = Table("systemuser", "systemusers", "systemuserid", "fullname")
    add_system_columns(t, ACTIVE_STATES)
    t.add(_string("fullname", 200, read_only=True))
    return t


@cache
def _base(prefix: str | None) -> dict[str, Table]:
    """Built once per prefix; each emulator deep-copies one (the metadata API mutates its copy)."""
    from sandbox.dataverse import standard as standard_tables  # it builds on this module

    standard = [_opportunity(prefix), _account(), _contact(), _lead(prefix)]
    standard += [_currency(), _systemuser(), standard_tables.task_table()]
    standard_tables.name_relationships(standard)
    custom = _custom_tables(prefix) if prefix is not None else []
    return {t.entity_set: t for t in standard + custom}


class Schema:
    """All tables by entity set name; a fresh copy per emulator (the metadata API mutates it).

    The app's custom columns and tables (``shared.crm_schema``) carry ``column_prefix``.
    ``custom_schema=False`` is an org without this app's solution: the standard tables only, no
    custom columns on opportunity and lead and no solution tables, so ``cosell schema apply``
    can be run against it."""

    def __init__(
        self, *, custom_schema: bool = True, column_prefix: str = crm.DEFAULT_PREFIX
    ) -> None:
        self.custom_schema = custom_schema
        self.column_prefix = column_prefix
        base = _base(column_prefix if custom_schema else None)
        self.tables: dict[str, Table] = copy.deepcopy(base)

    def table(self, entity_set: str) -> Table | None:
        return self.tables.get(entity_set)

    def by_logical_name(self, logical_name: str) -> Table | None:
        return next((t for t in self.tables.values() if t.logical_name == logical_name), None)

    def one_to_many(self, table: Table) -> dict[str, OneToMany]:
        """``table``'s collection-valued navigation properties: one per lookup (and per target
        navigation property of a polymorphic lookup) of any table that can point at it.
        Computed on each call because the metadata API adds lookups."""
        found: dict[str, OneToMany] = {}
        for referencing in self.tables.values():
            for column in referencing.columns.values():
                if column.kind is not Kind.LOOKUP:
                    continue
                for navigation, target in column.targets.items():
                    if target == table.entity_set:
                        name = collection_name(referencing, column, navigation)
                        found[name] = OneToMany(
                            name, target, referencing.entity_set, column, navigation
                        )
        return found

    def collection(self, table: Table, name: str) -> OneToMany | None:
        """The collection-valued navigation property ``name`` of ``table``, if it has one."""
        if table.navigation(name) is not None or name in table.columns:
            return None  # single-valued navigation properties and columns come first
        return self.one_to_many(table).get(name)


def not_declared(table: Table, name: str) -> DataverseFault:
    """The 400 Dataverse answers for a property the type does not declare (reference 7.3)."""
    return payload_error(
        table.entity_set,
        f"The property '{name}' does not exist on type "
        f"'Microsoft.Dynamics.CRM.{table.logical_name}'. Make sure to only use property names "
        "that are defined by the type or mark the type as open type.",
    )


def coerce(table: Table, column: Column, value: Any) -> Any:
    """The stored form of ``value`` written to ``column``, or the 400 Dataverse would answer."""
    if value is None:
        return None
    kind = column.kind

    def wrong() -> DataverseFault:
        return payload_error(
            table.entity_set,
            f"Cannot convert the literal '{value}' to the expected type '{EDM_TYPE[kind]}'.",
        )

    if kind in (Kind.STRING, Kind.MEMO):
        if not isinstance(value, str):
            raise wrong()
        if column.max_length is not None and len(value) > column.max_length:
            # Overlong strings are a validation error, not a payload error (reference 4.6, 7.3).
            raise DataverseFault(
                400,
                "0x80044331",
                f"A validation error occurred. The length of the '{column.name}' attribute of "
                f"the '{table.logical_name}' entity exceeded the maximum allowed length of "
                f"'{column.max_length}'.",
            )
        return value
    if kind is Kind.BOOLEAN:
        if not isinstance(value, bool):
            raise wrong()
        return value
    if kind in NUMERIC or kind in CHOICE:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise wrong()
        if kind in CHOICE or kind in (Kind.INTEGER, Kind.BIGINT):
            if isinstance(value, float) and not value.is_integer():
                raise wrong()
            value = int(value)
        if column.options is not None and value not in column.options:
            # UNCERTAIN (reference 7.3): 0x8004431A for a choice value out of range.
            raise DataverseFault(
                400,
                "0x8004431A",
                f"{column.name} value {value} is not a valid option for "
                f"{table.logical_name}.{column.name}.",
            )
        if (column.minimum is not None and value < column.minimum) or (
            column.maximum is not None and value > column.maximum
        ):
            raise DataverseFault(
                400,
                "0x80044331",
                f"A validation error occurred. The value {value} of '{column.name}' on record "
                f"of type '{table.logical_name}' is outside the valid range.",
            )
        return value
    if kind is Kind.DATEONLY:
        if not isinstance(value, str) or not _DATE.match(value):
            raise wrong()
        try:
            date.fromisoformat(value)
        except ValueError:
            raise wrong() from None
        return value
    if kind is Kind.DATETIME:
        if not isinstance(value, str):
            raise wrong()
        parsed = parse_datetime(value)
        if parsed is None:
            raise wrong()
        return format_datetime(parsed)
    if kind is Kind.UNIQUEIDENTIFIER:
        if not isinstance(value, str) or not GUID.match(value):
            raise wrong()
        return value.lower()
    raise wrong()


def parse_datetime(text: str) -> datetime | None:
    """An Edm.DateTimeOffset; a value without an offset is refused (reference 4.6)."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(UTC)


def format_datetime(value: datetime) -> str:
    """UTC with a ``Z``; milliseconds only when there are any (``modifiedon`` has none)."""
    value = value.astimezone(UTC)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")
