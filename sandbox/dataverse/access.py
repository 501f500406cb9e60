"""The privilege a request needs, and the 403 Dataverse answers when the caller lacks it.

learn.microsoft.com/troubleshoot/power-platform/dataverse/user-permissions/client-errors
('Error: "Principal user is missing privilege on OTC for entity"', error code -2147220960 =
0x80040220) and learn.microsoft.com/power-apps/developer/data-platform/org-service/web-service-
error-codes (0x80040220 PrivilegeDenied). The message reads "Principal user (Id=<caller>,
type=8, roleCount=1, businessUnitId=<bu>) is missing <prv> privilege (Id=<privilege id>) on
OTC=<n> for entity '<logical name>'."

Which privilege: the table privileges by method (GET Read, POST Create, PATCH Write, DELETE
Delete), the metadata writes prvCreateEntity / prvCreateAttribute (UNCERTAIN: a relationship
adds a lookup column, so RelationshipDefinitions needs prvCreateAttribute here), PublishXml
prvReadCustomization and the form and view read privileges (PublishAllXml also prvWriteQuery:
the docs' "PublishXml/PublishAllXml message privileges" pages), ExportSolution
prvExportCustomization, ImportSolution(Async) prvImportCustomization, the role actions
prvWriteRole and AddSolutionComponent prvWriteSolution (UNCERTAIN).

The sandbox makes its operator lack privileges through ``PUT /_emulator/customization``
(``{"missing_privileges": ["prvCreateEntity"]}``); a reset gives them back.
"""

from __future__ import annotations

import re

from sandbox.dataverse import privileges
from sandbox.dataverse.errors import DataverseFault
from sandbox.dataverse.schema import Table
from sandbox.dataverse.store import Store

PRIVILEGE_DENIED = "0x80040220"
_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_SET = re.compile(rf"^(?P<set>[A-Za-z_][A-Za-z0-9_]*)(?:\((?P<id>{_GUID})\))?(?P<rest>/.*)?$")
_VERBS = {"GET": "Read", "POST": "Create", "PATCH": "Write", "PUT": "Write", "DELETE": "Delete"}
ACTIONS: dict[str, tuple[str, ...]] = {
    "PublishXml": ("prvReadCustomization", "prvReadSystemForm", "prvReadQuery"),
    "PublishAllXml": ("prvReadCustomization", "prvReadSystemForm", "prvReadQuery", "prvWriteQuery"),
    "ExportSolution": ("prvExportCustomization",),
    "ImportSolution": ("prvImportCustomization",),
    "ImportSolutionAsync": ("prvImportCustomization",),
    "AddSolutionComponent": ("prvWriteSolution",),
}
_ROLE_ACTIONS = {
    "/Microsoft.Dynamics.CRM.AddPrivilegesRole": "prvWriteRole",
    "/Microsoft.Dynamics.CRM.ReplacePrivilegesRole": "prvWriteRole",
    "/Microsoft.Dynamics.CRM.RetrieveRolePrivilegesRole()": "prvReadRole",
}


def table_privilege(table: Table, verb: str) -> str:
    part = privileges.STANDARD.get(table.logical_name, (table.schema_name or table.logical_name,))[
        0
    ]
    return f"prv{verb}{part}"


def required(store: Store, method: str, path: str) -> tuple[str, ...]:
    """The privileges ``method path`` needs (those the emulator checks)."""
    if path in ACTIONS:
        return ACTIONS[path] if method == "POST" else ()
    if path.startswith("EntityDefinitions"):
        if method != "POST":
            return ()
        return ("prvCreateAttribute",) if path.endswith("/Attributes") else ("prvCreateEntity",)
    if path == "RelationshipDefinitions":
        return ("prvCreateAttribute",) if method == "POST" else ()
    match = _SET.match(path)
    if match is None:
        return ()
    table = store.schema.table(match.group("set"))
    if table is None:
        return ()
    rest = match.group("rest")
    if rest:
        if table.entity_set == "roles" and rest in _ROLE_ACTIONS:
            return (_ROLE_ACTIONS[rest],)
        if rest.endswith("/$ref"):
            return (table_privilege(table, "Write"),)
        return (table_privilege(table, "Read"),)
    verb = _VERBS.get(method)
    return (table_privilege(table, verb),) if verb else ()


def check(store: Store, missing: set[str], method: str, path: str) -> None:
    """403 for the first privilege ``method path`` needs that the caller lacks."""
    if not missing:
        return
    lacking = {m.casefold() for m in missing}
    for name in required(store, method, path):
        if name.casefold() in lacking:
            raise denied(store, name)


def denied(store: Store, name: str) -> DataverseFault:
    record = privileges.by_name(store, name)
    privilege_id = privileges.privilege_id(name) if record is None else record.values["privilegeid"]
    shown = name if record is None else str(record.values["name"])
    logical = None if record is None else record.values.get("objecttypecode")
    if shown in privileges.MISCELLANEOUS:
        otc, logical = privileges.MISCELLANEOUS[shown]
    else:
        logical = str(logical or "none")
        otc = privileges.object_type_code(store, logical)
    caller = store.caller
    return DataverseFault(
        403,
        PRIVILEGE_DENIED,
        f"Principal user (Id={caller.user_id}, type=8, roleCount=1, "
        f"businessUnitId={caller.business_unit_id}) is missing {shown} privilege "
        f"(Id={privilege_id}) on OTC={otc} for entity '{logical}'.",
    )
