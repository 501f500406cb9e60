"""Business units, security roles and the privileges a role holds.

* learn.microsoft.com/power-apps/developer/data-platform/reference/entities/businessunit and
  .../entities/role: a role belongs to a business unit (``businessunitid@odata.bind`` is
  required); an org has one root business unit (no parent).
* learn.microsoft.com/power-apps/developer/data-platform/webapi/reference/addprivilegesrole
  (bound to ``role``; ``Privileges``: a collection of ``RolePrivilege`` — ``PrivilegeId``,
  ``Depth``, ``BusinessUnitId``), .../replaceprivilegesrole, .../retrieveroleprivilegesrole
  (``RetrieveRolePrivilegesRoleResponse.RolePrivileges``) and .../roleprivilege, whose
  ``Depth`` is a ``PrivilegeDepth`` (.../privilegedepth: Basic 0, Local 1, Deep 2, Global 3).

What a role holds is kept as rows of ``roleprivilegescollection`` (Dataverse's intersect table
``roleprivileges``: ``roleid``, ``privilegeid``, ``privilegedepthmask`` 1/2/4/8). Adding a
privilege the role holds already sets its depth (UNCERTAIN: Dataverse keeps the deeper one?
the docs do not say; the last one sent wins here).
"""

from __future__ import annotations

from typing import Any

from sandbox.dataverse import privileges
from sandbox.dataverse.errors import DataverseFault
from sandbox.dataverse.schema import ACTIVE_STATES, Column, Kind, Schema, Table, add_system_columns
from sandbox.dataverse.store import Record, Row, Store

DEPTHS = {"Basic": 0, "Local": 1, "Deep": 2, "Global": 3}
_MASKS = {0: 1, 1: 2, 2: 4, 3: 8}  # PrivilegeDepth -> privilegedepthmask
ROOT_BUSINESS_UNIT_NAME = "org1a2b3c"


def add_tables(schema: Schema) -> None:
    unit = Table("businessunit", "businessunits", "businessunitid", "name")
    add_system_columns(unit, ACTIVE_STATES)
    unit.add(Column("name", Kind.STRING, max_length=160))
    unit.add(
        Column(
            "parentbusinessunitid",
            Kind.LOOKUP,
            targets={"parentbusinessunitid": "businessunits"},
        )
    )
    unit.columns["parentbusinessunitid"].collections["parentbusinessunitid"] = (
        "business_unit_parent_business_unit"
    )
    role = Table("role", "roles", "roleid", "name")
    add_system_columns(role, ACTIVE_STATES)
    for column in (
        Column("name", Kind.STRING, max_length=100),
        Column("description", Kind.MEMO, max_length=2000),
        Column("ismanaged", Kind.BOOLEAN, read_only=True),
        Column("businessunitid", Kind.LOOKUP, targets={"businessunitid": "businessunits"}),
    ):
        role.add(column)
    role.columns["businessunitid"].collections["businessunitid"] = "business_unit_roles"
    held = Table("roleprivileges", "roleprivilegescollection", "roleprivilegeid", "roleprivilegeid")
    add_system_columns(held, ACTIVE_STATES)
    held.add(Column("roleid", Kind.LOOKUP, targets={"roleid": "roles"}))
    held.add(Column("privilegeid", Kind.LOOKUP, targets={"privilegeid": "privileges"}))
    held.add(Column("privilegedepthmask", Kind.INTEGER, minimum=1, maximum=8))
    for table in (unit, role, held):
        schema.tables[table.entity_set] = table


def seed(store: Store) -> None:
    store.create(
        "businessunits",
        {"businessunitid": store.caller.business_unit_id, "name": ROOT_BUSINESS_UNIT_NAME},
    )


def check_new_role(body: Row) -> None:
    if not body.get("businessunitid@odata.bind"):
        raise DataverseFault(
            400,
            "0x80040203",
            "A role needs the business unit it belongs to (businessunitid@odata.bind).",
        )


def _depth(value: Any) -> int:
    if isinstance(value, str) and value in DEPTHS:
        return DEPTHS[value]
    if isinstance(value, int) and not isinstance(value, bool) and value in _MASKS:
        return value
    raise DataverseFault(
        400,
        "0x80048d19",
        f"The Depth {value!r} is not a PrivilegeDepth (Basic, Local, Deep, Global).",
    )


def _privileges(store: Store, body: Row) -> list[tuple[Record, int]]:
    """The privileges and depths a request names, every one checked before any is added."""
    items = body.get("Privileges")
    if not isinstance(items, list):
        raise DataverseFault(400, "0x80048d19", "Privileges must be a collection of RolePrivilege.")
    found = []
    for item in items:
        if not isinstance(item, dict) or not isinstance(item.get("PrivilegeId"), str):
            raise DataverseFault(400, "0x80048d19", "Each RolePrivilege needs a PrivilegeId.")
        privilege = store.find("privileges", item["PrivilegeId"])
        if privilege is None:
            raise DataverseFault(
                404,
                "0x80040217",
                f"privilege With Id = {item['PrivilegeId']} Does Not Exist",
            )
        found.append((privilege, _depth(item.get("Depth", "Global"))))
    return found


def _held(store: Store, role_id: str) -> dict[str, Record]:
    """The role's roleprivileges rows by privilege id."""
    return {
        r.values["_privilegeid_value"]: r
        for r in store.tables["roleprivilegescollection"].values()
        if r.values.get("_roleid_value") == role_id
    }


def add_privileges(store: Store, role: Record, body: Row, *, replace: bool = False) -> None:
    """AddPrivilegesRole (or ReplacePrivilegesRole: the role then holds exactly these)."""
    role_id = role.values["roleid"]
    wanted = _privileges(store, body)
    with store.atomic():
        held = _held(store, role_id)
        if replace:
            keep = {p.values["privilegeid"] for p, _ in wanted}
            for privilege_id, row in held.items():
                if privilege_id not in keep:
                    store.delete("roleprivilegescollection", row.values["roleprivilegeid"])
        for privilege, depth in wanted:
            privilege_id = privilege.values["privilegeid"]
            mask = _MASKS[depth]
            if privilege_id in held:
                if held[privilege_id].values.get("privilegedepthmask") != mask:
                    store.update(
                        "roleprivilegescollection",
                        held[privilege_id].values["roleprivilegeid"],
                        {"privilegedepthmask": mask},
                        if_match="*",
                    )
                continue
            store.create(
                "roleprivilegescollection",
                {
                    "roleid@odata.bind": f"/roles({role_id})",
                    "privilegeid@odata.bind": f"/privileges({privilege_id})",
                    "privilegedepthmask": mask,
                },
            )


def role_privileges(store: Store, role: Record) -> list[dict[str, Any]]:
    """``RetrieveRolePrivilegesRoleResponse.RolePrivileges``."""
    names = {v: k for k, v in DEPTHS.items()}
    depth_of = {mask: depth for depth, mask in _MASKS.items()}
    out = []
    for privilege_id, row in sorted(_held(store, role.values["roleid"]).items()):
        privilege = store.find("privileges", privilege_id)
        out.append(
            {
                "PrivilegeId": privilege_id,
                "Depth": names[depth_of[row.values["privilegedepthmask"]]],
                "BusinessUnitId": role.values.get("_businessunitid_value"),
                "PrivilegeName": None if privilege is None else privilege.values["name"],
            }
        )
    return out


def grant_by_name(store: Store, role: Record, held: list[tuple[str, int]]) -> list[str]:
    """An imported role's privileges, matched by name in this org; the names not found."""
    missing = []
    items = []
    for name, depth in held:
        privilege = privileges.by_name(store, name)
        if privilege is None:
            missing.append(name)
            continue
        items.append({"PrivilegeId": privilege.values["privilegeid"], "Depth": depth})
    add_privileges(store, role, {"Privileges": items})
    return missing
