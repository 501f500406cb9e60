"""Read what a Dataverse environment holds of the solution: publisher, solution and its
components, the opportunity main forms, the views and the roles with their privileges. Read-only;
``plan.py`` decides what is missing."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.crm_schema import crm_schema
from shared.crm_solution import components as wanted
from shared.dataverse import (
    ComponentType,
    DataverseClient,
    Privilege,
    Publisher,
    Role,
    SavedQuery,
    Solution,
    SystemForm,
)

ComponentKey = tuple[int, str]  # (componenttype, a label: "opportunity", "opportunity.x")


@dataclass
class RoleFound:
    role: Role
    privileges: dict[str, str]  # privilege name, lower case → depth


@dataclass
class Survey:
    prefix: str
    solution_name: str | None
    publisher: Publisher | None = None
    solution: Solution | None = None
    in_solution: set[str] = field(default_factory=set)  # object ids (lower case)
    forms: list[SystemForm] = field(default_factory=list)
    solutions_view_id: str | None = None  # the solution table's default view, for the subgrid
    views: dict[str, SavedQuery] = field(default_factory=dict)  # opportunity views by name
    business_unit: str = ""
    roles: dict[str, RoleFound] = field(default_factory=dict)
    privileges: dict[str, Privilege] = field(default_factory=dict)  # lower-case name
    # Components the solution should hold that exist, with their metadata id.
    metadata_ids: dict[ComponentKey, str] = field(default_factory=dict)


async def survey(dataverse: DataverseClient, prefix: str, solution_name: str | None) -> Survey:
    api = dataverse.customizations
    found = Survey(prefix, solution_name)
    if solution_name:
        found.publisher = await api.find_publisher(prefix=wanted.publisher(prefix).prefix)
        found.solution = await api.find_solution(solution_name)
        if found.solution is not None:
            components = await api.list_solution_components(found.solution.id)
            found.in_solution = {c.object_id.lower() for c in components}
        await _metadata_ids(dataverse, prefix, found)
    found.forms = await api.list_main_forms("opportunity")
    schema = crm_schema(prefix)
    if await dataverse.find_table(schema.solution.logical_name) is not None:
        defaults = [v for v in await api.list_views(schema.solution.logical_name) if v.is_default]
        found.solutions_view_id = defaults[0].id if defaults else None
    found.views = {v.name: v for v in await api.list_views("opportunity")}
    found.business_unit = await api.root_business_unit()
    specs = wanted.roles(prefix)
    found.privileges = await api.find_privileges(sorted({n for s in specs for n in s.names}))
    names_by_id = {p.id.lower(): name for name, p in found.privileges.items()}
    for spec in specs:
        role = await api.find_role(spec.name, business_unit=found.business_unit)
        if role is None:
            continue
        held = {}
        for granted in await api.list_role_privileges(role.id):
            name = (granted.name or names_by_id.get(granted.privilege_id.lower(), "")).lower()
            if name:
                held[name] = granted.depth
        found.roles[spec.name] = RoleFound(role, held)
    return found


async def _metadata_ids(dataverse: DataverseClient, prefix: str, found: Survey) -> None:
    """The metadata ids of the tables, columns and relationship the solution should hold."""
    schema = crm_schema(prefix)
    columns = {"opportunity": schema.opportunity_columns, "lead": schema.lead_columns}
    for table_name, table_columns in columns.items():
        table = await dataverse.find_table(table_name)
        if table is None:
            continue
        if table.metadata_id:
            found.metadata_ids[(ComponentType.ENTITY, table_name)] = table.metadata_id
        for column in table_columns:
            meta = table.column(column.logical_name)
            if meta is not None and meta.metadata_id:
                key = (ComponentType.ATTRIBUTE, f"{table_name}.{column.logical_name}")
                found.metadata_ids[key] = meta.metadata_id
    for custom in schema.tables:
        table = await dataverse.find_table(custom.logical_name)
        if table is not None and table.metadata_id:
            found.metadata_ids[(ComponentType.ENTITY, custom.logical_name)] = table.metadata_id
    lookup = schema.solution_opportunity
    for relation in await dataverse.list_one_to_many("opportunity"):
        same = relation.schema_name.lower() == lookup.relationship_schema_name.lower()
        if same and relation.metadata_id:
            found.metadata_ids[(ComponentType.RELATIONSHIP, lookup.relationship_schema_name)] = (
                relation.metadata_id
            )
