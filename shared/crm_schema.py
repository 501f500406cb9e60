"""Every custom column, table and choice of SPEC 4.1, declared once for a publisher prefix.

``crm_schema(prefix)`` is what ``cosell schema apply`` creates and ``cosell schema check``
compares, what the sync reads and writes (``shared.sync.mapping.Columns``), what the poll filters
on, the custom tables' primary keys the Dataverse client is given, and what the sandbox emulator
seeds. ``CRM_COLUMN_PREFIX`` (``Settings.crm_column_prefix``) is the prefix; nothing else names a
custom column. Pure and stdlib only, so every layer may import it.

    schema = crm_schema("cosell_")
    schema.help_needed.logical_name       # "cosell_helpneeded"
    schema.solution.entity_set            # "cosell_solutions"
    schema.solution_opportunity.collection  # "cosell_opportunity_cosell_solutions"
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Literal

DEFAULT_PREFIX = "cosell_"
MEMO_MAX = 1_048_576  # the largest multiline text column Dataverse allows

Kind = Literal["text", "memo", "bool", "choice", "lookup"]
# Dataverse's AttributeType of each kind (the emulator's column kinds carry the same names).
ATTRIBUTE_TYPE: dict[Kind, str] = {
    "text": "String",
    "memo": "Memo",
    "bool": "Boolean",
    "choice": "Picklist",
    "lookup": "Lookup",
}


@dataclass(frozen=True)
class Option:
    """One option of a choice column: the integer the sync reads and writes, and its label."""

    value: int
    label: str


# SPEC 4.2: the labels are Partner Center's assistanceRequestCode values, which the sync maps
# the options to (shared.sync.mapping.HELP_CODE_BY_CHOICE).
HELP_NEEDED_OPTIONS: tuple[Option, ...] = (
    Option(100000000, "WorkloadSpecificValueProposition"),
    Option(100000001, "CustomerTechnicalArchitecture"),
    Option(100000002, "ProofOfConceptOrDemo"),
    Option(100000003, "QuotesOrLicensing"),
    Option(100000004, "PostSalesCustomerSuccess"),
    Option(100000005, "GeneralOrOther"),
)
# SPEC 4.1 sync control.
SYNC_STATUS_OPTIONS: tuple[Option, ...] = (
    Option(1, "Synced"),
    Option(2, "Error"),
    Option(3, "Pending"),
)


@dataclass(frozen=True)
class Column:
    """A custom column on ``table`` (a logical name: ``opportunity``, ``cosell_solution``)."""

    table: str
    schema_name: str  # with the prefix, e.g. cosell_HelpNeeded
    display_name: str
    kind: Kind
    max_length: int | None = None  # text and memo
    options: tuple[Option, ...] = ()  # choice

    @property
    def logical_name(self) -> str:
        """The name used in the Web API: the schema name in lower case (reference 4.5)."""
        return self.schema_name.lower()

    @property
    def attribute_type(self) -> str:
        return ATTRIBUTE_TYPE[self.kind]

    @property
    def labels(self) -> dict[int, str]:
        """A choice's options as value → label."""
        return {option.value: option.label for option in self.options}


@dataclass(frozen=True)
class Table:
    """A custom table: its primary name column comes with it; ``columns`` are added after."""

    schema_name: str
    entity_set: str
    display_name: str
    display_collection_name: str
    description: str
    primary_name: Column
    columns: tuple[Column, ...]

    @property
    def logical_name(self) -> str:
        return self.schema_name.lower()

    @property
    def primary_key(self) -> str:
        # Dataverse names a custom table's key column <logical name>id.
        return f"{self.logical_name}id"


@dataclass(frozen=True)
class Lookup:
    """A lookup column and the one-to-many relationship that creates it."""

    column: Column  # on the referencing ("many") table
    referenced_table: str  # logical name of the "one" side
    referenced_set: str  # its entity set
    referenced_key: str  # its primary key
    relationship_schema_name: str
    # The collection-valued navigation property the relationship gives the referenced table.
    collection: str

    @property
    def logical_name(self) -> str:
        return self.column.logical_name

    @property
    def value_name(self) -> str:
        """The lookup as read: ``_<name>_value`` (reference 2.1)."""
        return f"_{self.column.logical_name}_value"

    @property
    def bind_name(self) -> str:
        """The lookup as written: ``<name>@odata.bind`` (reference 4.1)."""
        return f"{self.column.logical_name}@odata.bind"


@dataclass(frozen=True)
class CrmSchema:
    """The custom schema for one publisher prefix. Columns of the standard tables are fields
    named for what they hold; ``columns``, ``tables`` and ``lookups`` list everything in
    creation order."""

    prefix: str
    # opportunity (SPEC 4.1)
    help_needed: Column
    visible_to_microsoft: Column
    referral_id: Column
    referral_link: Column
    microsoft_crm_id: Column
    referral_program: Column
    sync_with_partner_center: Column
    sync_status: Column
    audit: Column
    # lead: the referral a Marketplace lead was made from (SPEC 4.5)
    lead_referral_id: Column
    lead_referral_link: Column
    # custom tables
    solution: Table
    solution_identifier: Column  # on solution: the Partner Center solution id
    solution_detail: Table
    solution_opportunity: Lookup  # solution → opportunity

    @property
    def opportunity_columns(self) -> tuple[Column, ...]:
        return (
            self.help_needed,
            self.visible_to_microsoft,
            self.referral_id,
            self.referral_link,
            self.microsoft_crm_id,
            self.referral_program,
            self.sync_with_partner_center,
            self.sync_status,
            self.audit,
        )

    @property
    def lead_columns(self) -> tuple[Column, ...]:
        return (self.lead_referral_id, self.lead_referral_link)

    @property
    def tables(self) -> tuple[Table, ...]:
        return (self.solution, self.solution_detail)

    @property
    def lookups(self) -> tuple[Lookup, ...]:
        return (self.solution_opportunity,)

    @property
    def columns(self) -> tuple[Column, ...]:
        """Every custom column, primary names and lookups included."""
        in_tables = [c for t in self.tables for c in (t.primary_name, *t.columns)]
        return (
            *self.opportunity_columns,
            *self.lead_columns,
            *in_tables,
            *(lookup.column for lookup in self.lookups),
        )

    @property
    def primary_keys(self) -> dict[str, str]:
        """Entity set → primary key column of each custom table."""
        return {table.entity_set: table.primary_key for table in self.tables}


@cache
def crm_schema(prefix: str = DEFAULT_PREFIX) -> CrmSchema:
    """The custom schema with ``prefix`` (a validated ``CRM_COLUMN_PREFIX``, ending in ``_``)."""
    if not prefix.endswith("_"):
        raise ValueError(f"a publisher prefix ends with '_': {prefix!r}")

    def column(
        table: str, name: str, display: str, kind: Kind, max_length: int | None = None
    ) -> Column:
        return Column(table, f"{prefix}{name}", display, kind, max_length=max_length)

    def text(table: str, name: str, display: str, length: int) -> Column:
        return Column(table, f"{prefix}{name}", display, "text", max_length=length)

    def choice(name: str, display: str, options: tuple[Option, ...]) -> Column:
        return Column("opportunity", f"{prefix}{name}", display, "choice", options=options)

    solution_name = f"{prefix}solution"
    detail_name = f"{prefix}solutiondetail"
    identifier = "SolutionIdentifier", "Solution identifier", 100
    solution_identifier = text(solution_name, *identifier)
    solution = Table(
        schema_name=f"{prefix}Solution",
        entity_set=f"{prefix}solutions",
        display_name="Co-sell solution",
        display_collection_name="Co-sell solutions",
        description="A Partner Center solution attached to an opportunity",
        primary_name=text(solution_name, "Name", "Name", 200),
        columns=(solution_identifier,),
    )
    detail = Table(
        schema_name=f"{prefix}SolutionDetail",
        entity_set=f"{prefix}solutiondetails",
        display_name="Co-sell solution detail",
        display_collection_name="Co-sell solution details",
        description="The partner's catalogue of Partner Center solutions",
        primary_name=text(detail_name, "Name", "Name", 200),
        columns=(
            text(detail_name, *identifier),
            text(detail_name, "Type", "Type", 100),
            text(detail_name, "PublisherName", "Publisher name", 200),
        ),
    )
    # Dataverse names the opportunity's collection after the relationship's SchemaName unless
    # told otherwise; ``cosell schema apply`` asks for that name explicitly and the sync expands
    # and deep-inserts through it (reference 2.4, 4.1, 4.5).
    relationship = f"{prefix}opportunity_{solution.entity_set}"
    return CrmSchema(
        prefix=prefix,
        help_needed=choice("HelpNeeded", "Help needed", HELP_NEEDED_OPTIONS),
        visible_to_microsoft=column(
            "opportunity", "VisibleToMicrosoft", "Visible to Microsoft", "bool"
        ),
        referral_id=text("opportunity", "ReferralId", "Referral ID", 100),
        referral_link=text("opportunity", "ReferralLink", "Referral link", 500),
        microsoft_crm_id=text("opportunity", "MicrosoftCrmId", "Microsoft CRM ID", 100),
        referral_program=text("opportunity", "ReferralProgram", "Referral program", 100),
        sync_with_partner_center=column(
            "opportunity", "SyncWithPartnerCenter", "Sync with Partner Center", "bool"
        ),
        sync_status=choice("SyncStatus", "Sync status", SYNC_STATUS_OPTIONS),
        audit=column("opportunity", "Audit", "Co-sell audit", "memo", max_length=MEMO_MAX),
        lead_referral_id=text("lead", "ReferralId", "Referral ID", 100),
        lead_referral_link=text("lead", "ReferralLink", "Referral link", 500),
        solution=solution,
        solution_identifier=solution_identifier,
        solution_detail=detail,
        solution_opportunity=Lookup(
            column=column(solution_name, "OpportunityId", "Opportunity", "lookup"),
            referenced_table="opportunity",
            referenced_set="opportunities",
            referenced_key="opportunityid",
            relationship_schema_name=relationship,
            collection=relationship,
        ),
    )


def opportunity_solutions(prefix: str = DEFAULT_PREFIX) -> str:
    """The opportunity's collection of solution rows, for ``$expand`` and deep insert."""
    return crm_schema(prefix).solution_opportunity.collection


def primary_keys(prefix: str = DEFAULT_PREFIX) -> dict[str, str]:
    """Entity set → primary key of the custom tables (for ``DataverseClient(primary_keys=…)``)."""
    return crm_schema(prefix).primary_keys
