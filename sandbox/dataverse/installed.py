"""An org where the app's customisations are installed: what ``create_app()`` (the app's schema
seeded) holds besides the columns and tables, as ``cosell schema apply`` leaves a bare org — the
"Microsoft Partner Center" section and subgrid on the opportunity main form, the two views and the
two roles with their privileges (``shared.crm_solution.components``, declared once for both).

A bare org (``create_app(custom_schema=False)``) has none of it, for ``schema apply`` to make.
"""

from __future__ import annotations

from sandbox.dataverse import forms, privileges, roles, views
from sandbox.dataverse.store import Store
from shared.crm_solution import components
from shared.crm_solution.form_xml import add_section


def seed(store: Store) -> None:
    prefix = store.schema.column_prefix
    solution_table = store.schema.by_logical_name(components.custom_tables(prefix)[0])
    assert solution_table is not None  # the app's schema is seeded
    default = views.view_id(solution_table.logical_name, "active")
    form = store.find("systemforms", forms.OPPORTUNITY_MAIN_FORM_ID)
    assert form is not None
    section = components.form_section(prefix, solutions_view_id=f"{{{default}}}")
    form.values["formxml"] = add_section(form.values["formxml"], section)
    for spec in components.views(prefix):
        store.create(
            "savedqueries",
            {
                "savedqueryid": views.view_id(spec.table, spec.name),
                "name": spec.name,
                "description": spec.description,
                "returnedtypecode": spec.table,
                "querytype": views.PUBLIC_VIEW,
                "fetchxml": spec.fetchxml,
                "layoutxml": spec.layoutxml,
                "isdefault": False,
            },
        )
    unit = store.caller.business_unit_id
    for role_spec in components.roles(prefix):
        role = store.create(
            "roles",
            {
                "name": role_spec.name,
                "description": role_spec.description,
                "businessunitid@odata.bind": f"/businessunits({unit})",
            },
        )
        granted = []
        for name, depth in role_spec.privileges:
            privilege = privileges.by_name(store, name)
            assert privilege is not None, name
            granted.append({"PrivilegeId": privilege.values["privilegeid"], "Depth": depth})
        roles.add_privileges(store, role, {"Privileges": granted})
