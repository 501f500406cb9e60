"""The ``privileges`` table: what a security role can grant.

learn.microsoft.com/power-apps/developer/data-platform/reference/entities/privilege (columns
``name``, ``accessright``, ``canbebasic`` … ``canbeglobal``) and
learn.microsoft.com/power-platform/admin/security-roles-privileges: a table's privileges are
``prv<Verb><SchemaName>`` with the verbs Create, Read, Write, Delete, Append, AppendTo, Assign
and Share (``prvReadOpportunity``); some tables use another name (``savedquery`` → ``Query``:
``prvCreateQuery``; ``systemuser`` → ``User``; the activities → ``Activity``). The
customization privileges are not bound to one table (``prvCreateEntity``,
``prvImportCustomization``, ``prvExportCustomization``, ``prvReadCustomization``; PublishXml
needs ``prvReadCustomization`` and the form and view read privileges, learn.microsoft.com
previous-versions/dynamicscrm-2016/developers-guide/gg334695 "PublishXml message privileges").

Standard privileges have fixed ids (the same in every emulator, as Dataverse's are the same in
every org); a custom table's privileges get new ids where the table is created (UNCERTAIN: named
``prv<Verb><SchemaName>``, e.g. ``prvReadcosell_Solution``), so a role imported from another
org finds them by name.
"""

from __future__ import annotations

import uuid

from sandbox.dataverse.schema import ACTIVE_STATES, Column, Kind, Schema, Table, add_system_columns
from sandbox.dataverse.store import Record, Store

_NAMESPACE = uuid.UUID("9d3c7a10-5e2b-4c8f-b1a4-7e6f5d4c3b22")

# The AccessRights value of each verb (learn.microsoft.com .../reference/entities/privilege,
# accessright).
VERBS = {
    "Create": 32,
    "Read": 1,
    "Write": 2,
    "Delete": 65536,
    "Append": 4,
    "AppendTo": 16,
    "Assign": 524288,
    "Share": 262144,
}
_ORGANIZATION_VERBS = ("Create", "Read", "Write", "Delete", "Append", "AppendTo")
# logical name -> (privilege name part, object type code, user-owned)
STANDARD: dict[str, tuple[str, int, bool]] = {
    "account": ("Account", 1, True),
    "contact": ("Contact", 2, True),
    "opportunity": ("Opportunity", 3, True),
    "lead": ("Lead", 4, True),
    "systemuser": ("User", 8, False),
    "businessunit": ("BusinessUnit", 10, False),
    "privilege": ("Privilege", 1023, False),
    "role": ("Role", 1036, False),
    "systemform": ("SystemForm", 1030, False),
    "savedquery": ("Query", 1039, False),
    "task": ("Activity", 4212, True),
    "sdkmessage": ("SdkMessage", 4606, False),
    "sdkmessagefilter": ("SdkMessageFilter", 4607, False),
    "sdkmessageprocessingstep": ("SdkMessageProcessingStep", 4608, False),
    "sdkmessageprocessingstepimage": ("SdkMessageProcessingStepImage", 4615, False),
    "serviceendpoint": ("ServiceEndpoint", 4618, False),
    "asyncoperation": ("AsyncOperation", 4700, False),
    "solution": ("Solution", 7100, False),
    "publisher": ("Publisher", 7101, False),
    "solutioncomponent": ("SolutionComponent", 7103, False),
    "importjob": ("ImportJob", 9107, False),
    "transactioncurrency": ("TransactionCurrency", 9105, False),
}
# Privileges bound to no table: name -> the object type code the denial message names
# (UNCERTAIN: Dataverse's message for these; 0 and the entity 'none' here, except the metadata
# ones, which name the Entity (9800) and Attribute (9808) metadata tables).
MISCELLANEOUS: dict[str, tuple[int, str]] = {
    "prvCreateEntity": (9800, "entity"),
    "prvReadEntity": (9800, "entity"),
    "prvWriteEntity": (9800, "entity"),
    "prvDeleteEntity": (9800, "entity"),
    "prvCreateAttribute": (9808, "attribute"),
    "prvReadAttribute": (9808, "attribute"),
    "prvWriteAttribute": (9808, "attribute"),
    "prvDeleteAttribute": (9808, "attribute"),
    "prvReadCustomization": (0, "none"),
    "prvImportCustomization": (0, "none"),
    "prvExportCustomization": (0, "none"),
}
FIRST_CUSTOM_OTC = 10000


def privilege_id(name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, name.lower()))


def add_tables(schema: Schema) -> None:
    table = Table("privilege", "privileges", "privilegeid", "name")
    add_system_columns(table, ACTIVE_STATES)
    table.add(Column("name", Kind.STRING, max_length=100))
    table.add(Column("accessright", Kind.INTEGER, minimum=0, maximum=2**31 - 1))
    for depth in ("basic", "local", "deep", "global"):
        table.add(Column(f"canbe{depth}", Kind.BOOLEAN))
    # which table the privilege is about (the emulator's; Dataverse keeps it in
    # privilegeobjecttypecodes)
    table.add(Column("objecttypecode", Kind.STRING, max_length=100, read_only=True))
    schema.tables[table.entity_set] = table


def _create(
    store: Store, name: str, right: int, logical: str, *, fixed: bool, user_owned: bool
) -> None:
    body = {
        "name": name,
        "accessright": right,
        "canbebasic": user_owned,
        "canbelocal": user_owned,
        "canbedeep": user_owned,
        "canbeglobal": True,
    }
    if fixed:
        body["privilegeid"] = privilege_id(name)
    record = store.create("privileges", body)
    record.values["objecttypecode"] = logical


def seed(store: Store) -> None:
    for logical, (part, _, user_owned) in STANDARD.items():
        verbs = VERBS if user_owned else {v: VERBS[v] for v in _ORGANIZATION_VERBS}
        for verb, right in verbs.items():
            _create(store, f"prv{verb}{part}", right, logical, fixed=True, user_owned=user_owned)
    for name in MISCELLANEOUS:
        _create(store, name, 0, "none", fixed=True, user_owned=False)
    # The app's seeded custom tables (create_app(custom_schema=True)) have theirs too.
    for table in store.schema.tables.values():
        if table.custom:
            table_privileges(store, table, table.logical_name)


def table_privileges(store: Store, table: Table, schema_name: str) -> None:
    """The eight privileges Dataverse creates with a custom (user-owned) table."""
    for verb, right in VERBS.items():
        name = f"prv{verb}{schema_name}"
        if by_name(store, name) is None:
            _create(store, name, right, table.logical_name, fixed=False, user_owned=True)


def by_name(store: Store, name: str) -> Record | None:
    wanted = name.casefold()
    return next(
        (
            r
            for r in store.tables["privileges"].values()
            if str(r.values.get("name")).casefold() == wanted
        ),
        None,
    )


def object_type_code(store: Store, logical: str) -> int:
    """The table's ObjectTypeCode: documented ones for the standard tables, 10000 and up for
    custom tables in the order they are in the schema (as Dataverse numbers new tables)."""
    if logical in STANDARD:
        return STANDARD[logical][1]
    custom = [
        t.logical_name for t in store.schema.tables.values() if t.logical_name not in STANDARD
    ]
    return FIRST_CUSTOM_OTC + custom.index(logical) if logical in custom else 0
