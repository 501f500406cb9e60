"""The customization requests of the Web API: solutions and their components, forms and
publishing, views and FetchXML, roles and privileges, solution export and import. Run before
the metadata and data APIs (``app.py``); what is not one of these falls through to them (the
system tables are ordinary tables, so GET, ``$filter``, ``$expand`` … work as for any).

* ``POST AddSolutionComponent`` → 200 ``{"id": <solutioncomponentid>}`` (solutions.py).
* ``POST publishers`` / ``POST solutions``: checked (prefix, unique name, version), then created.
* ``POST savedqueries`` / ``POST roles`` / ``PATCH systemforms(<id>)`` with
  ``MSCRM.SolutionUniqueName``: the component joins that solution (compose-http-requests-
  handle-errors). ``POST solutioncomponents`` and writes to ``privileges`` are refused: the
  service makes those rows.
* ``PATCH systemforms(<id>)`` → 204, unpublished until ``POST PublishXml`` / ``PublishAllXml``
  (→ 204); ``GET systemforms(<id>)/Microsoft.Dynamics.CRM.RetrieveUnpublished()`` (forms.py).
* ``GET <set>?fetchXml=…`` and ``GET <set>?savedQuery=<id>`` (views.py, fetchxml.py).
* ``POST roles(<id>)/Microsoft.Dynamics.CRM.AddPrivilegesRole`` / ``ReplacePrivilegesRole`` →
  204; ``GET roles(<id>)/Microsoft.Dynamics.CRM.RetrieveRolePrivilegesRole()`` (roles.py).
* ``POST ExportSolution`` → 200 ``{"ExportSolutionFile": base64}``; ``POST ImportSolution`` →
  204; ``POST ImportSolutionAsync`` → 200 ``{"AsyncOperationId", "ImportJobKey"}``
  (learn.microsoft.com .../webapi/reference/exportsolution, importsolution,
  importsolutionasync; solution_file.py, import_job.py).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sandbox.dataverse import (
    access,
    forms,
    import_job,
    roles,
    solution_export,
    solution_file,
    solutions,
    views,
)
from sandbox.dataverse.api import (
    COLLECTION,
    ROW,
    DataApi,
    json_response,
    no_content,
    preferences,
    read_body,
    service_root,
)
from sandbox.dataverse.customizing import Customizing
from sandbox.dataverse.errors import INVALID_ARGUMENT, DataverseFault
from sandbox.dataverse.state import Emulator
from sandbox.dataverse.store import Record

_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
BOUND = re.compile(
    rf"^(?P<set>roles|systemforms)\((?P<id>{_GUID})\)/Microsoft\.Dynamics\.CRM\.(?P<op>\w+)"
    r"(?P<call>\(\))?$"
)
# Rows only the service makes (UNCERTAIN: Dataverse's code and wording of the refusal; 400
# InvalidArgument here).
_SERVICE_MADE = frozenset({"solutioncomponents", "privileges", "roleprivilegescollection"})


class CustomizationApi:
    def __init__(self, emulator: Emulator, customizing: Customizing, data: DataApi) -> None:
        self.emulator = emulator
        self.customizing = customizing
        self.data = data
        self._actions: dict[str, Callable[[Request], Awaitable[Response]]] = {
            "AddSolutionComponent": self.add_solution_component,
            "PublishXml": self.publish_xml,
            "PublishAllXml": self.publish_all_xml,
            "ExportSolution": self.export_solution,
            "ImportSolution": self.import_solution,
            "ImportSolutionAsync": self.import_solution_async,
        }

    async def handle(self, request: Request, path: str) -> Response | None:
        store = self.emulator.store
        method = request.method
        access.check(store, self.customizing.missing, method, path)
        if method == "POST" and path in self._actions:
            return await self._actions[path](request)
        if match := BOUND.match(path):
            return await self.bound(request, match)
        collection = COLLECTION.match(path)
        row = ROW.match(path)
        matched = collection or row
        entity_set = matched.group("set") if matched else ""
        if entity_set in _SERVICE_MADE and method != "GET":
            raise DataverseFault(
                400,
                INVALID_ARGUMENT,
                f"The {entity_set} rows are made by the service; "
                + (
                    "add a component with AddSolutionComponent."
                    if entity_set == "solutioncomponents"
                    else "they cannot be written."
                ),
            )
        params = request.query_params
        if collection and method == "GET" and ("fetchXml" in params or "savedQuery" in params):
            return self.run_query(request, entity_set)
        if collection and method == "POST":
            return await self.create(request, entity_set)
        if row and method == "PATCH" and entity_set == "systemforms":
            body = await read_body(request, entity_set)
            solution = solutions.requested(request, store)
            record = forms.edit(store, self.customizing.pending_forms, row.group("id"), body)
            if solution is not None:
                solutions.add(store, solution, solutions.SYSTEM_FORM, record.values["formid"])
            return no_content(
                {"OData-EntityId": f"{service_root(request)}systemforms({record.values['formid']})"}
            )
        return None

    async def create(self, request: Request, entity_set: str) -> Response | None:
        store = self.emulator.store
        kinds = {
            "savedqueries": solutions.SAVED_QUERY,
            "roles": solutions.ROLE,
            # UNCERTAIN: a new form is used at once here; Dataverse may wait for a publish.
            "systemforms": solutions.SYSTEM_FORM,
        }
        if entity_set not in ("publishers", "solutions", *kinds):
            return None
        body = await read_body(request, entity_set)
        if entity_set == "publishers":
            solutions.check_publisher(store, body)
        elif entity_set == "solutions":
            solutions.check_solution(store, body)
        elif entity_set == "savedqueries":
            views.check_new_view(store, body)
        elif entity_set == "roles":
            roles.check_new_role(body)
        else:
            forms.check_new_form(store, body)
        solution = solutions.requested(request, store) if entity_set in kinds else None

        def join(record: Record) -> None:
            if solution is not None:
                key = store.table(entity_set).primary_key
                solutions.add(store, solution, kinds[entity_set], record.values[key])

        return await self.data.create(request, entity_set, join)

    def run_query(self, request: Request, entity_set: str) -> Response:
        store = self.emulator.store
        table = store.table(entity_set)
        params = request.query_params
        if "fetchXml" in params and "savedQuery" in params:
            raise DataverseFault(400, "0x80060888", "Send fetchXml or savedQuery, not both.")
        others = [k for k in params if k not in ("fetchXml", "savedQuery")]
        if others:
            # UNCERTAIN: Dataverse refuses system query options beside fetchXml.
            raise DataverseFault(
                400, "0x80060888", f"The query options {others} cannot be combined with a query."
            )
        text = params.get("fetchXml") or views.saved_query(store, table, params["savedQuery"])
        wanted = preferences(request).get("odata.include-annotations", "")
        annotate = wanted == "*" or "lookuplogicalname" in wanted
        body = {"@odata.context": f"{service_root(request)}$metadata#{entity_set}"}
        body.update(views.run(store, table, text, annotate=annotate))
        return json_response(body)

    async def bound(self, request: Request, match: re.Match[str]) -> Response:
        store = self.emulator.store
        record = store.get(match.group("set"), match.group("id"))
        op, call, method = match.group("op"), match.group("call"), request.method
        if match.group("set") == "roles":
            if op in ("AddPrivilegesRole", "ReplacePrivilegesRole") and method == "POST":
                body = await read_body(request, "roles")
                roles.add_privileges(store, record, body, replace=op == "ReplacePrivilegesRole")
                return no_content()
            if op == "RetrieveRolePrivilegesRole" and call and method == "GET":
                return json_response(
                    {
                        "@odata.context": f"{service_root(request)}$metadata#Microsoft.Dynamics."
                        "CRM.RetrieveRolePrivilegesRoleResponse",
                        "RolePrivileges": roles.role_privileges(store, record),
                    }
                )
        elif op == "RetrieveUnpublished" and call and method == "GET":
            values = forms.unpublished(store, self.customizing.pending_forms, match.group("id"))
            return json_response(
                {
                    "@odata.context": f"{service_root(request)}$metadata#systemforms/$entity",
                    "@odata.etag": record.etag,
                    **{k: v for k, v in values.items() if not k.startswith("_")},
                }
            )
        raise DataverseFault(
            404, "0x80060888", f"Resource not found for the segment 'Microsoft.Dynamics.CRM.{op}'."
        )

    # -- unbound actions ------------------------------------------------------------------------

    async def add_solution_component(self, request: Request) -> Response:
        body = await read_body(request, "AddSolutionComponent")
        component_id = solutions.add_solution_component(self.emulator.store, body)
        return json_response(
            {
                "@odata.context": f"{service_root(request)}$metadata#Microsoft.Dynamics.CRM."
                "AddSolutionComponentResponse",
                "id": component_id,
            }
        )

    async def publish_xml(self, request: Request) -> Response:
        body = await read_body(request, "PublishXml")
        tables = forms.tables_to_publish(body.get("ParameterXml"))
        forms.publish(self.emulator.store, self.customizing.pending_forms, tables)
        self.customizing.publishes += 1
        return no_content()

    async def publish_all_xml(self, request: Request) -> Response:
        forms.publish(self.emulator.store, self.customizing.pending_forms, None)
        self.customizing.publishes += 1
        return no_content()

    async def export_solution(self, request: Request) -> Response:
        store = self.emulator.store
        body = await read_body(request, "ExportSolution")
        name, managed = body.get("SolutionName"), body.get("Managed", False)
        if not isinstance(name, str) or not isinstance(managed, bool):
            raise DataverseFault(
                400, "0x80048d19", "ExportSolution needs SolutionName and Managed (a boolean)."
            )
        solution = solutions.find(store, "solutions", name)
        if solution is None:
            raise DataverseFault(
                404, "0x80040217", f"No solution with the unique name '{name}' exists."
            )
        if solution.values.get("ismanaged") or name in ("Default", "Active"):
            # UNCERTAIN: Dataverse's code for exporting a managed (or system) solution.
            raise DataverseFault(
                400,
                INVALID_ARGUMENT,
                f"The solution '{name}' cannot be exported: only unmanaged solutions can be.",
            )
        data = solution_file.write(solution_export.collect(store, solution, managed=managed))
        return json_response(
            {
                "@odata.context": f"{service_root(request)}$metadata#Microsoft.Dynamics.CRM."
                "ExportSolutionResponse",
                "ExportSolutionFile": base64.b64encode(data).decode("ascii"),
            }
        )

    def _import(self, body: dict[str, Any]) -> import_job.Import:
        self.customizing.imports += 1
        return import_job.Import(
            self.emulator.store,
            self.customizing.pending_forms,
            body,
            delay_s=self.customizing.import_delay_ms / 1000,
        )

    async def import_solution(self, request: Request) -> Response:
        job = self._import(await read_body(request, "ImportSolution"))
        job.begin(asynchronous=False)
        if not await job.run():
            raise DataverseFault(400, import_job.IMPORT_FAILED, job.error)
        return no_content()

    async def import_solution_async(self, request: Request) -> Response:
        job = self._import(await read_body(request, "ImportSolutionAsync"))
        job.begin(asynchronous=True)
        self.customizing.start(job.run())
        return json_response(
            {
                "@odata.context": f"{service_root(request)}$metadata#Microsoft.Dynamics.CRM."
                "ImportSolutionAsyncResponse",
                "AsyncOperationId": job.operation_id,
                # UNCERTAIN: the key's form; the import job's id, as a string.
                "ImportJobKey": job.job_id,
            }
        )
