"""Solutions, forms, views and security roles: the customisation side of the Web API.

``DataverseClient.customizations`` is this operation group (as Azure SDK management clients
group operations, ``client.virtual_machines.list()``). Every request is the Web API's own, from
learn.microsoft.com power-apps/developer/data-platform:

* publishers and solutions are rows (``webapi/reference/publisher``, ``.../solution``); metadata
  created with the ``MSCRM.SolutionUniqueName`` header lands in that solution, anything else is
  added with the ``AddSolutionComponent`` action;
* forms are ``systemforms`` rows whose ``formxml`` is edited and then published with
  ``PublishXml`` (``customize-entity-forms``, ``webapi/reference/publishxml``);
* views are ``savedqueries`` rows with FetchXML and layout XML (``customize-entity-views``);
* roles are ``roles`` rows; privileges are added with the bound ``AddPrivilegesRole`` action and
  read with ``RetrieveRolePrivilegesRole`` (``security-roles``);
* ``ExportSolution`` returns the solution file; ``ImportSolutionAsync`` starts an import whose
  ``asyncoperations`` and ``importjobs`` rows report its state and progress
  (``alm/solution-async``).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Sequence
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from pydantic import Field

from shared.dataverse._exceptions import NotFound
from shared.dataverse._models import _Wire
from shared.dataverse._odata import Filter, any_of, eq, query_params, row_path

if TYPE_CHECKING:
    from shared.dataverse._client import DataverseClient

SOLUTION_HEADER = "MSCRM.SolutionUniqueName"
Depth = Literal["Basic", "Local", "Deep", "Global"]
DEPTH_ORDER: dict[str, int] = {"Basic": 0, "Local": 1, "Deep": 2, "Global": 3}


class ComponentType(IntEnum):
    """``solutioncomponent.componenttype`` (webapi/reference/solutioncomponent)."""

    ENTITY = 1
    ATTRIBUTE = 2
    RELATIONSHIP = 10
    ROLE = 20
    SAVED_QUERY = 26
    SYSTEM_FORM = 60


def depth_covers(held: str | None, needed: str) -> bool:
    """A privilege held at ``held`` depth gives at least ``needed`` (Basic < Local < Deep <
    Global, the PrivilegeDepth enum)."""
    return held is not None and DEPTH_ORDER.get(held, -1) >= DEPTH_ORDER[needed]


MAIN_FORM = 2  # systemform.type
ACTIVE_FORM = 1  # systemform.formactivationstate
PUBLIC_VIEW = 0  # savedquery.querytype


class Publisher(_Wire):
    id: str = Field(alias="publisherid")
    unique_name: str = Field(alias="uniquename")
    prefix: str | None = Field(default=None, alias="customizationprefix")


class Solution(_Wire):
    id: str = Field(alias="solutionid")
    unique_name: str = Field(alias="uniquename")
    version: str | None = None
    is_managed: bool = Field(default=False, alias="ismanaged")
    publisher_id: str | None = Field(default=None, alias="_publisherid_value")


class SolutionComponent(_Wire):
    component_type: int = Field(alias="componenttype")
    object_id: str = Field(alias="objectid")


class SystemForm(_Wire):
    id: str = Field(alias="formid")
    name: str | None = None
    formxml: str | None = None


class SavedQuery(_Wire):
    id: str = Field(alias="savedqueryid")
    name: str
    fetchxml: str | None = None
    layoutxml: str | None = None
    is_default: bool | None = Field(default=None, alias="isdefault")


class Role(_Wire):
    id: str = Field(alias="roleid")
    name: str


class Privilege(_Wire):
    id: str = Field(alias="privilegeid")
    name: str


class RolePrivilege(_Wire):
    privilege_id: str = Field(alias="PrivilegeId")
    depth: str = Field(alias="Depth")
    name: str | None = Field(default=None, alias="PrivilegeName")


class AsyncOperation(_Wire):
    state: int | None = Field(default=None, alias="statecode")
    status: int | None = Field(default=None, alias="statuscode")
    message: str | None = None
    friendly_message: str | None = Field(default=None, alias="friendlymessage")

    @property
    def finished(self) -> bool:
        return self.state == 3  # Completed (webapi/reference/asyncoperation)

    @property
    def succeeded(self) -> bool:
        return self.status == 30


class ImportJob(_Wire):
    progress: float | None = None
    completed_on: str | None = Field(default=None, alias="completedon")
    solution_name: str | None = Field(default=None, alias="solutionname")
    data: str | None = None


class Customizations:
    """The customisation requests of one ``DataverseClient`` (its transport, retries, token)."""

    def __init__(self, client: DataverseClient) -> None:
        self._client = client

    async def _rows(
        self, entity_set: str, *, select: Sequence[str], filter: Filter | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        async for row in self._client.list_rows(entity_set, select=select, filter=filter):
            yield row

    async def _post(
        self, path: str, body: dict[str, Any], *, solution: str | None = None
    ) -> dict[str, Any]:
        headers = {SOLUTION_HEADER: solution} if solution else None
        response = await self._client._send("POST", path, json=body, headers=headers)
        if response.status_code == 204 or not response.content:
            return {}
        return self._client._json(response)

    async def _create(
        self, entity_set: str, body: dict[str, Any], key: str, *, solution: str | None = None
    ) -> str:
        headers = {"Prefer": "return=representation"}
        if solution:
            headers[SOLUTION_HEADER] = solution
        response = await self._client._send(
            "POST", entity_set, json=body, headers=headers, params={"$select": key}
        )
        return str(self._client._json(response)[key])

    # -- publishers and solutions ---------------------------------------------------------------

    async def find_publisher(self, *, prefix: str) -> Publisher | None:
        """The publisher whose ``customizationprefix`` is ``prefix`` (without the ``_``)."""
        async for row in self._rows(
            "publishers",
            select=["publisherid", "uniquename", "customizationprefix"],
            filter=eq("customizationprefix", prefix),
        ):
            return Publisher.model_validate(row)
        return None

    async def create_publisher(
        self, *, unique_name: str, friendly_name: str, prefix: str, option_value_prefix: int
    ) -> str:
        return await self._create(
            "publishers",
            {
                "uniquename": unique_name,
                "friendlyname": friendly_name,
                "customizationprefix": prefix,
                "customizationoptionvalueprefix": option_value_prefix,
                "description": "Publisher of the Co-sell Sync customisations",
            },
            "publisherid",
        )

    async def find_solution(self, unique_name: str) -> Solution | None:
        async for row in self._rows(
            "solutions",
            select=["solutionid", "uniquename", "version", "ismanaged", "_publisherid_value"],
            filter=eq("uniquename", unique_name),
        ):
            return Solution.model_validate(row)
        return None

    async def create_solution(
        self, *, unique_name: str, friendly_name: str, publisher_id: str, version: str
    ) -> str:
        return await self._create(
            "solutions",
            {
                "uniquename": unique_name,
                "friendlyname": friendly_name,
                "version": version,
                "description": "Co-sell Sync: columns, tables, form section, views and roles",
                "publisherid@odata.bind": f"/publishers({UUID(publisher_id)})",
            },
            "solutionid",
        )

    async def list_solution_components(self, solution_id: str) -> list[SolutionComponent]:
        return [
            SolutionComponent.model_validate(row)
            async for row in self._rows(
                "solutioncomponents",
                select=["componenttype", "objectid"],
                filter=eq("_solutionid_value", UUID(solution_id)),
            )
        ]

    async def add_solution_component(
        self, solution: str, component_type: int, object_id: str, *, subcomponents: bool = True
    ) -> None:
        """``AddSolutionComponent``; a standard table is added without its subcomponents, so
        only the columns the solution adds travel with it."""
        await self._post(
            "AddSolutionComponent",
            {
                "ComponentId": object_id,
                "ComponentType": component_type,
                "SolutionUniqueName": solution,
                "AddRequiredComponents": False,
                "DoNotIncludeSubcomponents": not subcomponents,
            },
        )

    # -- forms ----------------------------------------------------------------------------------

    async def list_main_forms(self, table: str) -> list[SystemForm]:
        """The table's active main forms, the ones sellers open."""
        return [
            SystemForm.model_validate(row)
            async for row in self._rows(
                "systemforms",
                select=["formid", "name", "formxml"],
                # Inactive forms are not shown to users (systemform.formactivationstate).
                filter=eq("objecttypecode", table)
                & eq("type", MAIN_FORM)
                & eq("formactivationstate", ACTIVE_FORM),
            )
        ]

    async def update_form(self, form_id: str, formxml: str, *, solution: str | None) -> None:
        """Replace a form's XML (``If-Match: *``: never create a form by mistake). The change is
        unpublished until ``publish``."""
        headers = {"If-Match": "*"}
        if solution:
            headers[SOLUTION_HEADER] = solution
        await self._client._send(
            "PATCH", row_path("systemforms", form_id), json={"formxml": formxml}, headers=headers
        )

    async def publish(self, tables: Sequence[str]) -> None:
        """``PublishXml`` for the tables' forms, views and columns."""
        entities = "".join(f"<entity>{name}</entity>" for name in tables)
        xml = f"<importexportxml><entities>{entities}</entities></importexportxml>"
        await self._post("PublishXml", {"ParameterXml": xml})

    # -- views ----------------------------------------------------------------------------------

    async def list_views(self, table: str) -> list[SavedQuery]:
        return [
            SavedQuery.model_validate(row)
            async for row in self._rows(
                "savedqueries",
                select=["savedqueryid", "name", "fetchxml", "layoutxml", "isdefault"],
                filter=eq("returnedtypecode", table) & eq("querytype", PUBLIC_VIEW),
            )
        ]

    async def create_view(
        self,
        *,
        table: str,
        name: str,
        description: str,
        fetchxml: str,
        layoutxml: str,
        solution: str | None,
    ) -> str:
        return await self._create(
            "savedqueries",
            {
                "name": name,
                "description": description,
                "returnedtypecode": table,
                "querytype": PUBLIC_VIEW,
                "fetchxml": fetchxml,
                "layoutxml": layoutxml,
            },
            "savedqueryid",
            solution=solution,
        )

    async def run_view(self, entity_set: str, view_id: str) -> list[dict[str, Any]]:
        """The rows a view returns (``?savedQuery=``, "Retrieve and execute predefined queries")."""
        response = await self._client._send(
            "GET", entity_set, params={"savedQuery": str(UUID(view_id))}
        )
        return list(self._client._json(response).get("value") or [])

    # -- roles ----------------------------------------------------------------------------------

    async def root_business_unit(self) -> str:
        async for row in self._rows(
            "businessunits",
            select=["businessunitid"],
            filter=eq("_parentbusinessunitid_value", None),
        ):
            return str(row["businessunitid"])
        raise LookupError("Dataverse lists no root business unit")

    async def find_role(self, name: str, *, business_unit: str) -> Role | None:
        async for row in self._rows(
            "roles",
            select=["roleid", "name"],
            filter=eq("name", name) & eq("_businessunitid_value", UUID(business_unit)),
        ):
            return Role.model_validate(row)
        return None

    async def create_role(
        self, *, name: str, description: str, business_unit: str, solution: str | None
    ) -> str:
        return await self._create(
            "roles",
            {
                "name": name,
                "description": description,
                "businessunitid@odata.bind": f"/businessunits({UUID(business_unit)})",
            },
            "roleid",
            solution=solution,
        )

    async def find_privileges(self, names: Sequence[str]) -> dict[str, Privilege]:
        """The privileges named (by lower-cased name); names Dataverse does not have are absent."""
        found: dict[str, Privilege] = {}
        for start in range(0, len(names), 20):  # keep each filter short
            chunk = names[start : start + 20]
            async for row in self._rows(
                "privileges",
                select=["privilegeid", "name"],
                filter=any_of(*(eq("name", name) for name in chunk)),
            ):
                privilege = Privilege.model_validate(row)
                found[privilege.name.lower()] = privilege
        return found

    async def add_privileges(
        self, role_id: str, privileges: Sequence[tuple[str, Depth]], *, business_unit: str
    ) -> None:
        await self._post(
            f"roles({UUID(role_id)})/Microsoft.Dynamics.CRM.AddPrivilegesRole",
            {
                "Privileges": [
                    {"PrivilegeId": pid, "Depth": depth, "BusinessUnitId": business_unit}
                    for pid, depth in privileges
                ]
            },
        )

    async def list_role_privileges(self, role_id: str) -> list[RolePrivilege]:
        response = await self._client._send(
            "GET", f"roles({UUID(role_id)})/Microsoft.Dynamics.CRM.RetrieveRolePrivilegesRole()"
        )
        values = self._client._json(response).get("RolePrivileges") or []
        return [RolePrivilege.model_validate(v) for v in values]

    # -- export and import ----------------------------------------------------------------------

    async def export_solution(self, unique_name: str, *, managed: bool) -> bytes:
        body = await self._post("ExportSolution", {"SolutionName": unique_name, "Managed": managed})
        return base64.b64decode(str(body.get("ExportSolutionFile") or ""))

    async def start_import(
        self, file: bytes, *, import_job_id: UUID, overwrite_unmanaged: bool
    ) -> str:
        """``ImportSolutionAsync``; the id of the asynchronous operation to follow."""
        body = await self._post(
            "ImportSolutionAsync",
            {
                "CustomizationFile": base64.b64encode(file).decode("ascii"),
                "OverwriteUnmanagedCustomizations": overwrite_unmanaged,
                "PublishWorkflows": False,
                "ImportJobId": str(import_job_id),
            },
        )
        return str(body["AsyncOperationId"])

    async def get_async_operation(self, operation_id: str) -> AsyncOperation:
        response = await self._client._send(
            "GET",
            row_path("asyncoperations", operation_id),
            params=query_params(select=["statecode", "statuscode", "message", "friendlymessage"]),
        )
        return AsyncOperation.model_validate(self._client._json(response))

    async def get_import_job(self, import_job_id: UUID) -> ImportJob | None:
        """The import job's progress; None while Dataverse has not created the row yet."""
        try:
            response = await self._client._send(
                "GET",
                row_path("importjobs", import_job_id),
                params=query_params(select=["progress", "completedon", "solutionname", "data"]),
            )
        except NotFound:
            return None
        return ImportJob.model_validate(self._client._json(response))
