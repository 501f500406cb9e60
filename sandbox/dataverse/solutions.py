"""Publishers, solutions and their components: the ``publishers``, ``solutions`` and
``solutioncomponents`` tables, the ``MSCRM.SolutionUniqueName`` header and the
``AddSolutionComponent`` action.

Microsoft's docs followed:

* learn.microsoft.com/power-apps/developer/data-platform/reference/entities/publisher and
  .../entities/solution, .../entities/solutioncomponent: the columns kept here.
* learn.microsoft.com/power-apps/developer/data-platform/webapi/compose-http-requests-handle-
  errors ("Other headers": ``MSCRM.SolutionUniqueName`` names the unmanaged solution a new
  solution component joins) and create-update-entity-definitions-using-web-api (its examples
  send the header with POST EntityDefinitions).
* learn.microsoft.com/power-apps/developer/data-platform/webapi/reference/addsolutioncomponent:
  ``ComponentId``, ``ComponentType``, ``SolutionUniqueName``, ``AddRequiredComponents``,
  ``DoNotIncludeSubcomponents`` → ``AddSolutionComponentResponse`` ``{"id": ...}``.
* learn.microsoft.com/power-platform/alm/solution-concepts-alm and .../create-solutions-alm:
  a new org has the "Default", "Active" and "Basic" (Common Data Services Default Solution)
  solutions and a default publisher per org; a publisher's prefix is 2-8 letters or digits,
  starts with a letter and is not "mscrm"; its option value prefix is 10000-99999.

Solution components are rows the service makes (the header, ``AddSolutionComponent``, an
import); a POST to ``solutioncomponents`` is refused (UNCERTAIN: Dataverse's wording).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from sandbox.dataverse.errors import INVALID_ARGUMENT, DataverseFault, duplicate_record
from sandbox.dataverse.schema import (
    ACTIVE_STATES,
    Column,
    Kind,
    OneToMany,
    Schema,
    Table,
    add_system_columns,
    metadata_id,
)
from sandbox.dataverse.store import Record, Row, Store

HEADER = "MSCRM.SolutionUniqueName"
_NAMESPACE = uuid.UUID("5b0cf3c4-1f6e-4d0f-8a7e-3b2a9c1d4e51")

# componenttype values (learn.microsoft.com .../reference/entities/solutioncomponent)
ENTITY, ATTRIBUTE, OPTION_SET, RELATIONSHIP, ROLE, SAVED_QUERY, SYSTEM_FORM = (
    1,
    2,
    9,
    10,
    20,
    26,
    60,
)
COMPONENT_TYPES = {
    ENTITY: "Entity",
    ATTRIBUTE: "Attribute",
    OPTION_SET: "Option Set",
    RELATIONSHIP: "Relationship",
    ROLE: "Role",
    SAVED_QUERY: "Saved Query",
    SYSTEM_FORM: "System Form",
}
_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9]{1,7}$")
ORGANIZATION = "org1a2b3c"  # the sandbox org's unique name, in its default publisher's name


def seed_id(*names: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(names)))


def _string(name: str, length: int = 256, *, read_only: bool = False) -> Column:
    return Column(name, Kind.STRING, max_length=length, read_only=read_only)


def add_tables(schema: Schema) -> None:
    publisher = Table("publisher", "publishers", "publisherid", "friendlyname")
    add_system_columns(publisher, ACTIVE_STATES)
    for column in (
        _string("uniquename"),
        _string("friendlyname"),
        Column("description", Kind.MEMO, max_length=2000),
        _string("customizationprefix", 8),
        Column("customizationoptionvalueprefix", Kind.INTEGER, minimum=10000, maximum=99999),
        Column("isreadonly", Kind.BOOLEAN, read_only=True),
    ):
        publisher.add(column)
    solution = Table("solution", "solutions", "solutionid", "friendlyname")
    add_system_columns(solution, ACTIVE_STATES)
    for column in (
        _string("uniquename"),
        _string("friendlyname"),
        _string("version"),
        Column("description", Kind.MEMO, max_length=2000),
        Column("ismanaged", Kind.BOOLEAN, read_only=True),
        Column("isvisible", Kind.BOOLEAN, read_only=True),
        Column("installedon", Kind.DATETIME, read_only=True),
        Column("publisherid", Kind.LOOKUP, targets={"publisherid": "publishers"}),
    ):
        solution.add(column)
    # The lookup gives publishers a collection named by the relationship (UNCERTAIN: the
    # documented SchemaName is publisher_solution).
    solution.columns["publisherid"].collections["publisherid"] = "publisher_solution"
    component = Table("solutioncomponent", "solutioncomponents", "solutioncomponentid", "objectid")
    add_system_columns(component, ACTIVE_STATES)
    for column in (
        Column("componenttype", Kind.PICKLIST, options=dict(COMPONENT_TYPES)),
        Column("objectid", Kind.UNIQUEIDENTIFIER),
        Column(
            "rootcomponentbehavior",
            Kind.PICKLIST,
            options={0: "Include Subcomponents", 1: "Do not include subcomponents", 2: "Shell"},
        ),
        Column("ismetadata", Kind.BOOLEAN),
        Column("solutionid", Kind.LOOKUP, targets={"solutionid": "solutions"}),
    ):
        component.add(column)
    component.columns["solutionid"].collections["solutionid"] = "solution_solutioncomponent"
    for table in (publisher, solution, component):
        schema.tables[table.entity_set] = table


# (uniquename, friendlyname, prefix, option value prefix)
PUBLISHERS = (
    (f"DefaultPublisher{ORGANIZATION}", f"Default Publisher for {ORGANIZATION}", "new", 10000),
    # UNCERTAIN: new orgs name the Common Data Service default publisher after a random prefix.
    ("Cr7f5e3", "CDS Default Publisher", "cr7f5", 10001),
    ("MicrosoftCorporation", "MicrosoftCorporation", "msdyn", 19235),
)
# (uniquename, friendlyname, publisher uniquename, visible)
SOLUTIONS = (
    ("Default", "Default Solution", PUBLISHERS[0][0], False),
    ("Active", "Active Solution", PUBLISHERS[0][0], False),
    ("Basic", "Common Data Services Default Solution", PUBLISHERS[1][0], True),
)


def seed(store: Store) -> None:
    for unique, friendly, prefix, option in PUBLISHERS:
        record = store.create(
            "publishers",
            {
                "publisherid": seed_id("publisher", unique),
                "uniquename": unique,
                "friendlyname": friendly,
                "customizationprefix": prefix,
                "customizationoptionvalueprefix": option,
            },
        )
        record.values["isreadonly"] = unique == "MicrosoftCorporation"
    for unique, friendly, publisher, visible in SOLUTIONS:
        record = store.create(
            "solutions",
            {
                "solutionid": seed_id("solution", unique),
                "uniquename": unique,
                "friendlyname": friendly,
                "version": "1.0",
                "publisherid@odata.bind": f"/publishers({seed_id('publisher', publisher)})",
            },
        )
        record.values["isvisible"] = visible


def find(store: Store, entity_set: str, uniquename: str) -> Record | None:
    wanted = uniquename.casefold()
    return next(
        (
            r
            for r in store.tables[entity_set].values()
            if str(r.values.get("uniquename") or "").casefold() == wanted
        ),
        None,
    )


def unmanaged(store: Store, uniquename: str) -> Record:
    """The unmanaged solution components may join, or the error Dataverse answers.

    UNCERTAIN: the docs do not give the code of an unknown or managed solution name; the
    emulator answers 404 0x80040217 (ObjectDoesNotExist) for an unknown one and 400
    0x80040203 (InvalidArgument) for a managed one."""
    solution = find(store, "solutions", uniquename)
    if solution is None:
        raise DataverseFault(
            404, "0x80040217", f"No solution with the unique name '{uniquename}' exists."
        )
    if solution.values.get("ismanaged"):
        raise DataverseFault(
            400,
            INVALID_ARGUMENT,
            f"The solution '{uniquename}' is managed; components can only be added to an "
            "unmanaged solution.",
        )
    return solution


def requested(request: Request, store: Store) -> Record | None:
    """The solution the request's ``MSCRM.SolutionUniqueName`` header names (checked before the
    write), or None without the header."""
    name = request.headers.get(HEADER)
    return unmanaged(store, name) if name else None


def add(
    store: Store,
    solution: Record,
    component_type: int,
    object_id: str,
    *,
    behavior: int = 0,
) -> str:
    """Put a component into ``solution``; a component already there keeps its row (its id)."""
    solution_id = solution.values["solutionid"]
    object_id = object_id.lower()
    for row in store.tables["solutioncomponents"].values():
        values = row.values
        if (
            values.get("_solutionid_value") == solution_id
            and values.get("objectid") == object_id
            and values.get("componenttype") == component_type
        ):
            return str(values["solutioncomponentid"])
    record = store.create(
        "solutioncomponents",
        {
            "componenttype": component_type,
            "objectid": object_id,
            "rootcomponentbehavior": behavior,
            "ismetadata": component_type in (ENTITY, ATTRIBUTE, OPTION_SET, RELATIONSHIP),
            "solutionid@odata.bind": f"/solutions({solution_id})",
        },
    )
    return str(record.values["solutioncomponentid"])


def join(request: Request, store: Store, component_type: int, object_id: str) -> None:
    """After a write: the new component joins the header's solution, if the request names one."""
    solution = requested(request, store)
    if solution is not None:
        add(store, solution, component_type, object_id)


def components(store: Store, solution: Record) -> list[Row]:
    solution_id = solution.values["solutionid"]
    return [
        r.values
        for r in store.tables["solutioncomponents"].values()
        if r.values.get("_solutionid_value") == solution_id
    ]


def add_solution_component(store: Store, body: Row) -> str:
    """The ``AddSolutionComponent`` action; the id of the solution component row."""
    name = body.get("SolutionUniqueName")
    component_id = body.get("ComponentId")
    component_type = body.get("ComponentType")
    if (
        not isinstance(name, str)
        or not isinstance(component_id, str)
        or not isinstance(component_type, int)
        or component_type not in COMPONENT_TYPES
    ):
        raise DataverseFault(
            400,
            "0x80048d19",
            "AddSolutionComponent needs ComponentId (a guid), ComponentType (one of "
            f"{sorted(COMPONENT_TYPES)}) and SolutionUniqueName.",
        )
    solution = unmanaged(store, name)
    if component_type != OPTION_SET and target(store, component_type, component_id) is None:
        # UNCERTAIN: the wording; global choices (9) are not emulated, so any id is taken.
        raise DataverseFault(
            404,
            "0x80040217",
            f"No {COMPONENT_TYPES[component_type]} component with the id {component_id} exists.",
        )
    behavior = 1 if body.get("DoNotIncludeSubcomponents") else 0
    return add(store, solution, component_type, component_id, behavior=behavior)


def check_publisher(store: Store, body: Row) -> None:
    """What Dataverse checks of a new publisher beyond the column types."""
    unique = body.get("uniquename")
    prefix = body.get("customizationprefix")
    option = body.get("customizationoptionvalueprefix")
    if not isinstance(unique, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", unique):
        raise DataverseFault(
            400,
            INVALID_ARGUMENT,
            "A publisher needs a uniquename of letters, digits and underscores.",
        )
    if find(store, "publishers", unique) is not None:
        raise duplicate_record()
    if not isinstance(prefix, str) or not _PREFIX.match(prefix) or prefix.lower() == "mscrm":
        # UNCERTAIN: Dataverse's code for an invalid prefix; 0x80040203 InvalidArgument.
        raise DataverseFault(
            400,
            INVALID_ARGUMENT,
            f"The customization prefix '{prefix}' is not valid: it must be 2 to 8 letters or "
            "digits, start with a letter, and not be 'mscrm'.",
        )
    if isinstance(option, bool) or not isinstance(option, int) or not 10000 <= option <= 99999:
        raise DataverseFault(
            400,
            INVALID_ARGUMENT,
            f"The option value prefix {option!r} is not valid: it must be from 10000 to 99999.",
        )


def check_solution(store: Store, body: Row) -> None:
    unique = body.get("uniquename")
    if not isinstance(unique, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", unique):
        raise DataverseFault(
            400, INVALID_ARGUMENT, "A solution needs a uniquename of letters, digits and _."
        )
    if find(store, "solutions", unique) is not None:
        raise duplicate_record()
    if not body.get("publisherid@odata.bind"):
        raise DataverseFault(
            400, INVALID_ARGUMENT, "A solution needs its publisher (publisherid@odata.bind)."
        )
    version = body.get("version")
    if not isinstance(version, str) or not re.match(r"^\d+(\.\d+){1,3}$", version):
        raise DataverseFault(
            400,
            INVALID_ARGUMENT,
            f"The version '{version}' is not valid: use major.minor[.build[.revision]].",
        )


@dataclass(frozen=True)
class Target:
    """What a solution component's ``objectid`` names: a table, one of its columns, a
    relationship (by its lookup), or a row (role, view, form)."""

    table: Table | None = None
    column: Column | None = None
    relationship: OneToMany | None = None
    row: Record | None = None


_ROW_SETS = {ROLE: "roles", SAVED_QUERY: "savedqueries", SYSTEM_FORM: "systemforms"}


def target(store: Store, component_type: int, object_id: str) -> Target | None:
    schema = store.schema
    if component_type in _ROW_SETS:
        row = store.find(_ROW_SETS[component_type], object_id)
        return None if row is None else Target(row=row)
    for table in schema.tables.values():
        if component_type == ENTITY and metadata_id(table.logical_name) == object_id:
            return Target(table=table)
        if component_type == ATTRIBUTE:
            for column in table.columns.values():
                if metadata_id(table.logical_name, column.name) == object_id:
                    return Target(table=table, column=column)
        if component_type == RELATIONSHIP:
            for relation in schema.one_to_many(table).values():
                if metadata_id("relationship", relation.schema_name) == object_id:
                    referencing = schema.table(relation.entity_set)
                    return Target(table=referencing, relationship=relation)
    return None


def _describe(store: Store, values: Row) -> dict[str, Any]:
    kind = values["componenttype"]
    found = target(store, kind, values["objectid"])
    described: dict[str, Any] = {"type": COMPONENT_TYPES.get(kind, str(kind))}
    if found is not None and found.row is not None:
        row = found.row.values
        table = row.get("objecttypecode") or row.get("returnedtypecode")
        if table:
            described["table"] = table
        described["name"] = row.get("name")
    elif found is not None and found.table is not None:
        described["table"] = found.table.logical_name
        if found.column is not None:
            described["name"] = found.column.name
        if found.relationship is not None:
            described["name"] = found.relationship.schema_name
    return described


def stats(store: Store) -> dict[str, list[dict[str, Any]]]:
    """Per solution (unique name), what its components are: for ``/_emulator/stats``."""
    names = {
        r.values["solutionid"]: r.values["uniquename"] for r in store.tables["solutions"].values()
    }
    found: dict[str, list[dict[str, Any]]] = {}
    for row in store.tables["solutioncomponents"].values():
        name = names.get(row.values.get("_solutionid_value"))
        if name is not None and name not in ("Default", "Active"):
            found.setdefault(name, []).append(_describe(store, row.values))
    return found
