"""What an unmanaged solution holds, gathered for ``ExportSolution`` (``solution_file.write``
makes the zip of it).

learn.microsoft.com/power-platform/alm/solution-concepts-alm and .../alm/organize-solutions:
a table added with its subcomponents (rootcomponentbehavior 0) brings its columns, lookups,
forms and views; one added without them, or as the table of a column, form or view only, comes
as a shell (behavior 2) with just those. UNCERTAIN: a real export of a table with its
subcomponents lists every attribute; the emulator writes the custom ones (what an import needs).
"""

from __future__ import annotations

from sandbox.dataverse import solutions
from sandbox.dataverse.roles import DEPTHS
from sandbox.dataverse.schema import Column, Kind, OneToMany, Table, collection_name
from sandbox.dataverse.solution_model import (
    Attribute,
    Entity,
    Form,
    Relationship,
    Role,
    SolutionFile,
    View,
)
from sandbox.dataverse.store import Record, Store

_TYPES = {
    Kind.STRING: "nvarchar",
    Kind.MEMO: "ntext",
    Kind.INTEGER: "int",
    Kind.BIGINT: "bigint",
    Kind.MONEY: "money",
    Kind.DECIMAL: "decimal",
    Kind.DOUBLE: "float",
    Kind.BOOLEAN: "bit",
    Kind.PICKLIST: "picklist",
    Kind.DATETIME: "datetime",
    Kind.DATEONLY: "datetime",
}
_MASK_DEPTHS = {1: "Basic", 2: "Local", 4: "Deep", 8: "Global"}


def _custom_column(table: Table, column: Column) -> bool:
    return (
        column.kind is not Kind.LOOKUP
        and column.name != table.primary_key
        and "_" in column.name.removeprefix("address1_")
        and not column.name.startswith("msdyn_")
    )


def _attribute(table: Table, column: Column) -> Attribute:
    return Attribute(
        column.name,
        _TYPES[column.kind],
        date_only=column.kind is Kind.DATEONLY,
        max_length=column.max_length,
        minimum=column.minimum,
        maximum=column.maximum,
        options=dict(column.options or {}),
        primary_name=column.name == table.primary_name,
    )


def collect(store: Store, solution: Record, *, managed: bool) -> SolutionFile:
    """What ``solution`` holds, as a solution file (for ExportSolution)."""
    publisher = store.get("publishers", solution.values["_publisherid_value"]).values
    found = SolutionFile(
        unique_name=str(solution.values["uniquename"]),
        friendly_name=str(solution.values.get("friendlyname") or solution.values["uniquename"]),
        version=str(solution.values.get("version") or "1.0.0.0"),
        managed=managed,
        description=str(solution.values.get("description") or ""),
        publisher={
            "uniquename": str(publisher["uniquename"]),
            "friendlyname": str(publisher.get("friendlyname") or publisher["uniquename"]),
            "prefix": str(publisher.get("customizationprefix") or ""),
            "optionvalueprefix": str(publisher.get("customizationoptionvalueprefix") or 10000),
        },
    )
    entities: dict[str, Entity] = {}

    def entity(table: Table, behavior: int) -> Entity:
        if table.logical_name not in entities:
            entities[table.logical_name] = Entity(
                table.logical_name,
                table.schema_name or table.logical_name,
                table.entity_set,
                table.display_name or table.logical_name,
                table.display_collection_name or table.entity_set,
                table.custom,
                behavior,
            )
        found_entity = entities[table.logical_name]
        found_entity.behavior = min(found_entity.behavior, behavior)
        return found_entity

    relationships: dict[str, Relationship] = {}
    rows: dict[int, dict[str, Record]] = {}
    for values in solutions.components(store, solution):
        kind, object_id = values["componenttype"], values["objectid"]
        target = solutions.target(store, kind, object_id)
        if target is None:
            continue
        if target.row is not None:
            rows.setdefault(kind, {})[object_id] = target.row
        elif target.relationship is not None and target.table is not None:
            relationships[target.relationship.schema_name] = _relationship(store, target)
        elif target.column is not None and target.table is not None:
            item = entity(target.table, 2)
            if all(a.name != target.column.name for a in item.attributes):
                item.attributes.append(_attribute(target.table, target.column))
        elif target.table is not None:
            table = target.table
            item = entity(table, int(values.get("rootcomponentbehavior") or 0))
            if item.behavior == 0:
                _with_subcomponents(store, table, item, relationships, rows)
    found.relationships = list(relationships.values())
    for form in rows.get(solutions.SYSTEM_FORM, {}).values():
        values = form.values
        form_table = store.schema.by_logical_name(str(values.get("objecttypecode")))
        if form_table is not None:
            entity(form_table, 2)
        found.forms.append(
            Form(
                values["formid"],
                str(values.get("objecttypecode")),
                str(values.get("name") or ""),
                int(values.get("type") or 2),
                str(values.get("formxml") or ""),
                str(values.get("description") or ""),
                int(values.get("formactivationstate") or 1),
            )
        )
    for view in rows.get(solutions.SAVED_QUERY, {}).values():
        values = view.values
        view_table = store.schema.by_logical_name(str(values.get("returnedtypecode")))
        if view_table is not None:
            entity(view_table, 2)
        found.views.append(
            View(
                values["savedqueryid"],
                str(values.get("returnedtypecode")),
                str(values.get("name") or ""),
                int(values.get("querytype") or 0),
                str(values.get("fetchxml") or ""),
                str(values.get("layoutxml") or ""),
                bool(values.get("isdefault")),
                str(values.get("description") or ""),
            )
        )
    for role in rows.get(solutions.ROLE, {}).values():
        found.roles.append(_role(store, role))
    found.entities = list(entities.values())
    return found


def _with_subcomponents(
    store: Store,
    table: Table,
    item: Entity,
    relationships: dict[str, Relationship],
    rows: dict[int, dict[str, Record]],
) -> None:
    """A table added with its subcomponents brings its custom columns, its custom lookups, and
    (a custom table) its forms and views."""
    for column in table.columns.values():
        wanted = _custom_column(table, column) or (
            table.custom and column.name == table.primary_name
        )
        if wanted and all(a.name != column.name for a in item.attributes):
            item.attributes.append(_attribute(table, column))
    for column in table.columns.values():
        if column.kind is not Kind.LOOKUP or "_" not in column.name:
            continue  # the system lookups (ownerid, createdby …) come with every table
        for navigation, target_set in column.targets.items():
            name = collection_name(table, column, navigation)
            relation = OneToMany(name, target_set, table.entity_set, column, navigation)
            target = solutions.Target(table=table, relationship=relation)
            relationships[relation.schema_name] = _relationship(store, target)
    if table.custom:
        for entity_set, kind, key in (
            ("systemforms", solutions.SYSTEM_FORM, "objecttypecode"),
            ("savedqueries", solutions.SAVED_QUERY, "returnedtypecode"),
        ):
            for record in store.tables[entity_set].values():
                if record.values.get(key) == table.logical_name:
                    rows.setdefault(kind, {})[
                        record.values[store.table(entity_set).primary_key]
                    ] = record


def _relationship(store: Store, target: solutions.Target) -> Relationship:
    relation = target.relationship
    assert relation is not None and target.table is not None
    referenced = store.table(relation.referenced_set)
    return Relationship(
        relation.schema_name,
        referenced.logical_name,
        target.table.logical_name,
        relation.column.name,
        relation.navigation,
        relation.name,
    )


def _role(store: Store, role: Record) -> Role:
    role_id = role.values["roleid"]
    held = []
    for row in store.tables["roleprivilegescollection"].values():
        if row.values.get("_roleid_value") != role_id:
            continue
        privilege = store.find("privileges", row.values["_privilegeid_value"])
        if privilege is not None:
            depth = _MASK_DEPTHS.get(row.values.get("privilegedepthmask") or 8, "Global")
            held.append((str(privilege.values["name"]), DEPTHS[depth]))
    return Role(role_id, str(role.values.get("name") or ""), sorted(held))
