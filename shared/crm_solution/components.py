"""What the Co-sell Sync solution holds beyond the columns and tables of ``shared.crm_schema``:
its publisher, the opportunity form section and subgrid, two views and two security roles, for
one ``CRM_COLUMN_PREFIX``. Pure and declared once, like ``crm_schema``: ``cosell schema apply
--solution`` creates these, ``cosell schema check`` compares with them and the sandbox's
Dataverse emulator seeds an org that has them.

Microsoft's connector leaves the form section, the subgrid and the security role to the admin
(shared/reference dynamics-cosell-connector.md §4); these are what its docs ask for by hand.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Literal
from xml.sax.saxutils import quoteattr

from shared.crm_schema import CrmSchema, crm_schema
from shared.crm_solution.form_xml import FormField, FormSection, Subgrid

Depth = Literal["Basic", "Local", "Deep", "Global"]
# The object type code of opportunity, which a view's layout XML names (grid object="3").
OPPORTUNITY_TYPE_CODE = 3


@dataclass(frozen=True)
class PublisherSpec:
    unique_name: str
    friendly_name: str
    prefix: str  # customizationprefix: CRM_COLUMN_PREFIX without its "_"
    option_value_prefix: int  # 10000-99999


@dataclass(frozen=True)
class ViewSpec:
    table: str  # returnedtypecode
    name: str
    description: str
    fetchxml: str
    layoutxml: str


@dataclass(frozen=True)
class RoleSpec:
    name: str
    description: str
    privileges: tuple[tuple[str, Depth], ...]  # privilege name, depth

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.privileges)


def publisher(prefix: str) -> PublisherSpec:
    bare = prefix.rstrip("_")
    # A fixed option value prefix per publisher prefix, so staging and production agree
    # (Dataverse asks for one in 10000-99999; the app's own choices carry explicit values).
    option_prefix = 10000 + zlib.crc32(bare.encode()) % 90000
    return PublisherSpec(f"{bare}publisher", "Co-sell Sync", bare, option_prefix)


def form_section(prefix: str, *, solutions_view_id: str | None = None) -> FormSection:
    """The "Microsoft Partner Center" section: the fields a seller needs to share a deal (the
    connector's form section, reference dynamics-cosell-connector.md §4) and the subgrid of the
    opportunity's solutions, which validation requires before sharing."""
    schema = crm_schema(prefix)
    fields = (
        FormField(
            schema.sync_with_partner_center.logical_name, "Sync with Partner Center", "toggle"
        ),
        FormField(schema.referral_id.logical_name, "Referral ID", "text"),
        FormField(schema.referral_link.logical_name, "Referral link", "url"),
        FormField(schema.referral_program.logical_name, "Program", "text"),
        FormField(schema.microsoft_crm_id.logical_name, "Microsoft CRM ID", "text"),
        FormField(schema.visible_to_microsoft.logical_name, "Visible to Microsoft", "toggle"),
        FormField(schema.help_needed.logical_name, "Help needed", "choice"),
        FormField(schema.sync_status.logical_name, "Sync status", "choice"),
        FormField(schema.audit.logical_name, "Co-sell audit", "memo"),
    )
    subgrid = Subgrid(
        name=f"{prefix}solutions_subgrid",
        label="Microsoft Solutions",
        target_table=schema.solution.logical_name,
        relationship=schema.solution_opportunity.relationship_schema_name,
        view_id=solutions_view_id,
    )
    return FormSection(f"{prefix}partnercenter", "Microsoft Partner Center", fields, subgrid)


def _fetch(columns: tuple[str, ...], conditions: tuple[tuple[str, str], ...]) -> str:
    attributes = "".join(f"<attribute name={quoteattr(c)} />" for c in (*columns, "opportunityid"))
    filters = "".join(
        f'<condition attribute={quoteattr(c)} operator="eq" value={quoteattr(v)} />'
        for c, v in conditions
    )
    return (
        '<fetch version="1.0" output-format="xml-platform" mapping="logical" distinct="false">'
        f'<entity name="opportunity">{attributes}'
        '<order attribute="modifiedon" descending="true" />'
        f'<filter type="and">{filters}</filter></entity></fetch>'
    )


def _layout(columns: tuple[str, ...]) -> str:
    cells = "".join(f'<cell name={quoteattr(c)} width="150" />' for c in columns)
    return (
        f'<grid name="resultset" object="{OPPORTUNITY_TYPE_CODE}" jump="name" select="1" '
        f'icon="1" preview="1"><row name="result" id="opportunityid">{cells}</row></grid>'
    )


def views(prefix: str) -> tuple[ViewSpec, ...]:
    """Public opportunity views (learn.microsoft.com customize-entity-views): the deals whose
    sync failed, with the audit line that says why, and the deals visible to Microsoft."""
    s = crm_schema(prefix)
    errors = ("name", s.audit.logical_name, s.referral_id.logical_name, "modifiedon")
    shared = ("name", s.referral_id.logical_name, s.sync_status.logical_name, "estimatedvalue")
    return (
        ViewSpec(
            "opportunity",
            "Co-sell: sync errors",
            "Opportunities whose last co-sell sync failed; the audit says why.",
            _fetch(errors, ((s.sync_status.logical_name, "2"),)),
            _layout(errors),
        ),
        ViewSpec(
            "opportunity",
            "Co-sell: shared with Microsoft",
            "Opportunities visible to Microsoft sellers through Partner Center.",
            _fetch(shared, ((s.visible_to_microsoft.logical_name, "1"),)),
            _layout(shared),
        ),
    )


def _privileges(table: str, verbs: tuple[str, ...], depth: Depth) -> tuple[tuple[str, Depth], ...]:
    return tuple((f"prv{verb}{table}", depth) for verb in verbs)


ALL_VERBS = ("Create", "Read", "Write", "Append", "AppendTo")


def roles(prefix: str) -> tuple[RoleSpec, ...]:
    """The application user's role and the sellers' one (reference dataverse-web-api.md §1.3:
    give the app user a custom role with only the privileges it needs; change tracking needs
    organisation-level Read on the tables it tracks, hence Global).

    The app reads and writes opportunities, accounts, contacts and leads (it creates the
    customer of a new referral and a lead for a Marketplace lead), replaces an opportunity's
    solution rows, reads the catalogue and currencies, and closes opportunities (WinOpportunity
    creates an opportunityclose activity, covered by the Activity privileges). Privileges of a
    custom table carry its schema name (UNCERTAIN: Dataverse's naming for custom tables;
    ``find_privileges`` matches without case)."""
    s: CrmSchema = crm_schema(prefix)
    solution, detail = s.solution.schema_name, s.solution_detail.schema_name
    app: list[tuple[str, Depth]] = []
    for table in ("Opportunity", "Account", "Contact", "Lead"):
        app += _privileges(table, ALL_VERBS, "Global")
    app += _privileges(solution, (*ALL_VERBS, "Delete"), "Global")
    app += _privileges(detail, ("Read",), "Global")
    app += _privileges("TransactionCurrency", ("Read",), "Global")
    app += _privileges("Activity", ("Create", "Read", "Append"), "Global")
    seller: list[tuple[str, Depth]] = [
        *_privileges(solution, ("Create", "Write", "Delete", "Append", "AppendTo"), "Basic"),
        *_privileges(solution, ("Read",), "Local"),
        *_privileges(detail, ("Read",), "Global"),
    ]
    return (
        RoleSpec(
            "Co-sell Sync",
            "The Co-sell Sync application user: exactly the privileges the sync needs.",
            tuple(app),
        ),
        RoleSpec(
            "Co-sell seller",
            "Sellers who attach Microsoft solutions to their opportunities and read the catalogue.",
            tuple(seller),
        ),
    )


def custom_tables(prefix: str) -> tuple[str, ...]:
    """The tables whose forms and views a publish covers, besides opportunity."""
    s = crm_schema(prefix)
    return (s.solution.logical_name, s.solution_detail.logical_name)
