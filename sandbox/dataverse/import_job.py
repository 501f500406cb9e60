"""Importing a solution file: ``ImportSolution`` (synchronous) and ``ImportSolutionAsync``.

* learn.microsoft.com/power-apps/developer/data-platform/webapi/reference/importsolution
  (``CustomizationFile`` base64, ``OverwriteUnmanagedCustomizations``, ``PublishWorkflows``,
  ``ImportJobId``; no return value) and .../reference/importsolutionasync →
  ``ImportSolutionAsyncResponse`` (``AsyncOperationId``, ``ImportJobKey``).
* learn.microsoft.com/power-apps/developer/data-platform/reference/entities/importjob
  (``progress`` 0-100, ``startedon``, ``completedon``, ``solutionname``, ``data``: the import's
  XML result) and .../entities/asyncoperation (``statecode`` 0 Ready, 2 Locked, 3 Completed;
  ``statuscode`` 0 Waiting for resources, 20 In Progress, 30 Succeeded, 31 Failed;
  ``message``, ``friendlymessage``).
* learn.microsoft.com/power-apps/developer/data-platform/solution-import-export (import a
  solution asynchronously, then poll the system job and read the import job's data).

The file is read and checked whole before anything changes (a bad file changes nothing and the
job fails naming what is wrong); then the publisher, the solution (managed or not as the file
says), the tables, columns and choices (through ``definitions.py``, as the metadata API makes
them), the relationships, the forms (replacing the target's form of that id, published), the
views and the roles (their privileges found by name in this org) are created one component at
a time, ``import_delay_ms`` apart (``/_emulator/customization``), with the job's progress
written after each. UNCERTAIN: ``OverwriteUnmanagedCustomizations`` false would keep an
unmanaged change of the target's form above the imported layer; the emulator has no layers and
always takes the file's form. Dataverse rolls a failed import back; the emulator checks before
it starts instead, so a failure half way (a name taken meanwhile) leaves what was done.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any
from xml.sax.saxutils import quoteattr

from sandbox.dataverse import definitions, roles, solution_file, solution_model, solutions
from sandbox.dataverse.errors import DataverseFault
from sandbox.dataverse.forms import Pending
from sandbox.dataverse.schema import (
    ACTIVE_STATES,
    Column,
    Kind,
    Schema,
    Table,
    add_system_columns,
    format_datetime,
    metadata_id,
)
from sandbox.dataverse.solution_model import SolutionFile, SolutionFileError
from sandbox.dataverse.store import Record, Store

# UNCERTAIN: the asyncoperation operationtype of a solution import (103 "Import Solution").
OPERATION_TYPE = 103
IMPORT_FAILED = "0x80048033"  # UNCERTAIN: the code of a failed synchronous ImportSolution


def add_tables(schema: Schema) -> None:
    job = Table("importjob", "importjobs", "importjobid", "name")
    add_system_columns(job, ACTIVE_STATES)
    for column in (
        Column("name", Kind.STRING, max_length=256),
        Column("solutionname", Kind.STRING, max_length=256),
        Column("progress", Kind.DOUBLE, minimum=0, maximum=100),
        Column("startedon", Kind.DATETIME),
        Column("completedon", Kind.DATETIME),
        Column("data", Kind.MEMO, max_length=1_073_741_823),
        Column("operationcontext", Kind.STRING, max_length=256),
    ):
        job.add(column)
    schema.tables[job.entity_set] = job


class Import:
    """One import: its job row, its system job (asynchronous imports) and its result."""

    def __init__(
        self,
        store: Store,
        pending_forms: Pending,
        body: dict[str, Any],
        *,
        delay_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.pending_forms = pending_forms
        self.delay_s = delay_s
        self.clock = clock
        self.overwrite = bool(body.get("OverwriteUnmanagedCustomizations"))
        job_id = body.get("ImportJobId")
        self.job_id = (
            job_id.lower() if isinstance(job_id, str) and len(job_id) == 36 else str(uuid.uuid4())
        )
        self.file_text = body.get("CustomizationFile")
        self.operation_id: str | None = None
        self.results: list[tuple[str, str, str]] = []  # (kind, name, error text or "")
        self.error = ""
        self.solution: SolutionFile | None = None

    def _now(self) -> str:
        return format_datetime(datetime.fromtimestamp(self.clock(), UTC))

    def begin(self, *, asynchronous: bool) -> None:
        """The job row (and the system job), before the work starts: both readable at once."""
        if self.store.find("importjobs", self.job_id) is not None:
            raise DataverseFault(
                400, "0x80040237", f"An import job with the id {self.job_id} already exists."
            )
        self.store.create(
            "importjobs",
            {
                "importjobid": self.job_id,
                "name": "Customizations",
                "progress": 0,
                "startedon": self._now(),
                "operationcontext": "Import",
            },
        )
        if asynchronous:
            record = self.store.create(
                "asyncoperations",
                {"name": "Import Solution", "operationtype": OPERATION_TYPE},
            )
            self.operation_id = str(record.values["asyncoperationid"])

    def _job(self, changes: dict[str, Any]) -> None:
        if self.store.find("importjobs", self.job_id) is not None:
            self.store.update("importjobs", self.job_id, changes, if_match="*")

    def _operation(self, changes: dict[str, Any]) -> None:
        if self.operation_id and self.store.find("asyncoperations", self.operation_id):
            self.store.update("asyncoperations", self.operation_id, changes, if_match="*")

    async def run(self) -> bool:
        """The whole import; True when it succeeded (``error`` says why not)."""
        self._operation({"statecode": 2, "statuscode": 20})
        try:
            file = self.read()
            self.solution = file
            self._job({"solutionname": file.unique_name})
            self.check(file)
            steps = self.steps(file)
            for index, (kind, name, step) in enumerate(steps, start=1):
                await asyncio.sleep(self.delay_s)
                step()
                self.results.append((kind, name, ""))
                self._job({"progress": round(100.0 * index / len(steps), 2)})
        except (SolutionFileError, DataverseFault) as exc:
            self.error = exc.message if isinstance(exc, DataverseFault) else str(exc)
        done: dict[str, Any] = {"completedon": self._now(), "data": self.data()}
        if not self.error:
            done["progress"] = 100.0
        self._job(done)
        self._operation(
            {"statecode": 3, "statuscode": 31 if self.error else 30}
            | ({"message": self.error, "friendlymessage": self.error} if self.error else {})
        )
        return not self.error

    def read(self) -> SolutionFile:
        if not isinstance(self.file_text, str) or not self.file_text:
            raise SolutionFileError("CustomizationFile is missing: send the solution file, base64.")
        try:
            data = base64.b64decode(self.file_text, validate=True)
        except (binascii.Error, ValueError):
            raise SolutionFileError("CustomizationFile is not valid base64.") from None
        return solution_file.read(data)

    def check(self, file: SolutionFile) -> None:
        """What would make the import fail, found before anything changes."""
        store = self.store
        existing = solutions.find(store, "solutions", file.unique_name)
        if existing is not None and bool(existing.values.get("ismanaged")) != file.managed:
            state = "managed" if existing.values.get("ismanaged") else "unmanaged"
            raise SolutionFileError(
                f"The solution '{file.unique_name}' is already installed as an {state} solution; "
                f"this file holds it {'managed' if file.managed else 'unmanaged'}."
            )
        known = {t.logical_name for t in store.schema.tables.values()}
        known |= {e.logical for e in file.entities if e.custom}
        for entity in file.entities:
            if entity.logical not in known:
                raise SolutionFileError(
                    f"The table '{entity.logical}' the solution needs does not exist here "
                    "(a missing dependency)."
                )
            if entity.custom and not any(a.primary_name for a in entity.attributes):
                table = store.schema.by_logical_name(entity.logical)
                if table is None:
                    raise SolutionFileError(
                        f"The new table '{entity.logical}' has no primary name column."
                    )
        for relationship in file.relationships:
            for name in (relationship.referenced, relationship.referencing):
                if name not in known:
                    raise SolutionFileError(
                        f"The relationship '{relationship.schema_name}' needs the table '{name}', "
                        "which does not exist here."
                    )

    def steps(self, file: SolutionFile) -> list[tuple[str, str, Callable[[], None]]]:
        holder: dict[str, Record] = {}

        def publisher() -> None:
            holder["publisher"] = _publisher(self.store, file)

        def solution() -> None:
            holder["solution"] = _solution(self.store, file, holder["publisher"])

        def later(
            kind: str, name: str, apply: Callable[[Record], None]
        ) -> tuple[str, str, Callable[[], None]]:
            return kind, name, lambda: apply(holder["solution"])

        steps: list[tuple[str, str, Callable[[], None]]] = [
            ("publisher", file.publisher["uniquename"], publisher),
            ("solution", file.unique_name, solution),
        ]
        for e in file.entities:
            steps.append(later("entity", e.logical, partial(self.entity, entity=e)))
        for r in file.relationships:
            steps.append(later("relationship", r.schema_name, partial(self.relationship, item=r)))
        for f in file.forms:
            steps.append(later("form", f.name, partial(self.form, form=f, file=file)))
        for v in file.views:
            steps.append(later("view", v.name, partial(self.view, view=v, file=file)))
        for role in file.roles:
            steps.append(later("role", role.name, partial(self.role, role=role, file=file)))
        return steps

    def entity(self, solution: Record, entity: solution_model.Entity) -> None:
        store = self.store
        table = store.schema.by_logical_name(entity.logical)
        if table is None:
            primary = [a for a in entity.attributes if a.primary_name]
            rest = [a for a in entity.attributes if not a.primary_name]
            table = definitions.create_table(
                store,
                {
                    "SchemaName": entity.schema_name,
                    "EntitySetName": entity.entity_set,
                    "DisplayName": _label(entity.display_name),
                    "DisplayCollectionName": _label(entity.display_collection_name),
                    "Attributes": [_attribute_body(a) for a in primary + rest],
                },
            )
        else:
            for attribute in entity.attributes:
                if attribute.name not in table.columns:
                    definitions.create_column(store, table, _attribute_body(attribute))
        solutions.add(
            store, solution, solutions.ENTITY, metadata_id(table.logical_name),
            behavior=entity.behavior,
        )  # fmt: skip
        if entity.behavior != 0:
            for attribute in entity.attributes:
                column_id = metadata_id(table.logical_name, attribute.name)
                solutions.add(store, solution, solutions.ATTRIBUTE, column_id)

    def relationship(self, solution: Record, item: solution_model.Relationship) -> None:
        store = self.store
        relationship = item
        referencing = store.schema.by_logical_name(relationship.referencing)
        assert referencing is not None  # checked before the import started
        if relationship.lookup not in referencing.columns:
            definitions.create_lookup(
                store,
                {
                    "SchemaName": relationship.schema_name,
                    "ReferencedEntity": relationship.referenced,
                    "ReferencingEntity": relationship.referencing,
                    "Lookup": {"SchemaName": relationship.lookup},
                    "ReferencingEntityNavigationPropertyName": relationship.navigation,
                    "ReferencedEntityNavigationPropertyName": relationship.collection,
                },
            )
        relationship_id = metadata_id("relationship", relationship.schema_name)
        solutions.add(store, solution, solutions.RELATIONSHIP, relationship_id)

    def form(self, solution: Record, form: solution_model.Form, file: SolutionFile) -> None:
        values = {
            "name": form.name,
            "objecttypecode": form.table,
            "type": form.type,
            "formxml": form.formxml,
            "formactivationstate": form.activation,
            "description": form.description or None,
        }
        record = self._upsert("systemforms", form.formid, values)
        self.pending_forms.pop(form.formid, None)  # an imported form is published
        record.values["ismanaged"] = file.managed or bool(record.values.get("ismanaged"))
        solutions.add(self.store, solution, solutions.SYSTEM_FORM, form.formid)

    def view(self, solution: Record, view: solution_model.View, file: SolutionFile) -> None:
        values = {
            "name": view.name,
            "returnedtypecode": view.table,
            "querytype": view.querytype,
            "fetchxml": view.fetchxml,
            "layoutxml": view.layoutxml,
            "isdefault": view.isdefault,
            "description": view.description or None,
        }
        record = self._upsert("savedqueries", view.savedqueryid, values)
        record.values["ismanaged"] = file.managed or bool(record.values.get("ismanaged"))
        solutions.add(self.store, solution, solutions.SAVED_QUERY, view.savedqueryid)

    def role(self, solution: Record, role: solution_model.Role, file: SolutionFile) -> None:
        unit = self.store.caller.business_unit_id
        values = {"name": role.name, "businessunitid@odata.bind": f"/businessunits({unit})"}
        record = self._upsert("roles", role.roleid, values)
        record.values["ismanaged"] = file.managed or bool(record.values.get("ismanaged"))
        missing = roles.grant_by_name(self.store, record, role.privileges)
        if missing:
            self.results.append(("role", role.name, "privileges not found: " + ", ".join(missing)))
        solutions.add(self.store, solution, solutions.ROLE, role.roleid)

    def _upsert(self, entity_set: str, row_id: str, values: dict[str, Any]) -> Record:
        if self.store.find(entity_set, row_id) is not None:
            record, _ = self.store.update(entity_set, row_id, values, if_match="*")
            return record
        key = self.store.table(entity_set).primary_key
        return self.store.create(entity_set, {key: row_id, **values})

    def data(self) -> str:
        """The importjob's ``data``: the import's result, per component (UNCERTAIN: a reduced
        form of Dataverse's importexportxml result document)."""
        file = self.solution
        outcome = "failure" if self.error else "success"
        parts = [
            f'<importexportxml start="{self._now()}" stop="{self._now()}" progress='
            f'"{100 if not self.error else 0}" processed="true">'
        ]
        if file is not None:
            parts.append(
                f'<solutionManifests><solutionManifest languagecode="1033" '
                f"id={quoteattr(file.unique_name)} LocalizedName={quoteattr(file.friendly_name)} "
                f'processed="true"><UniqueName>{_escape(file.unique_name)}</UniqueName>'
                f"<Version>{_escape(file.version)}</Version>"
                f"<Managed>{1 if file.managed else 0}</Managed>"
                f'<result result="{outcome}" errorcode="{IMPORT_FAILED if self.error else 0}" '
                f"errortext={quoteattr(self.error)} /></solutionManifest></solutionManifests>"
            )
        parts.append("<components>")
        for kind, name, problem in self.results:
            result = "warning" if problem else "success"
            parts.append(
                f"<component type={quoteattr(kind)} name={quoteattr(name)}>"
                f'<result result="{result}" errortext={quoteattr(problem)} /></component>'
            )
        parts.append("</components></importexportxml>")
        return "".join(parts)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _label(text: str) -> dict[str, Any]:
    return {"LocalizedLabels": [{"Label": text, "LanguageCode": 1033}]}


def _attribute_body(attribute: solution_model.Attribute) -> dict[str, Any]:
    """The AttributeMetadata the metadata API would have been sent for this column."""
    body: dict[str, Any] = {
        "@odata.type": "Microsoft.Dynamics.CRM." + solution_file.METADATA_TYPES[attribute.type],
        "SchemaName": attribute.name,
        "IsPrimaryName": attribute.primary_name,
    }
    if attribute.date_only:
        body["Format"] = "DateOnly"
    if attribute.max_length is not None:
        body["MaxLength"] = attribute.max_length
    if attribute.minimum is not None:
        body["MinValue"] = attribute.minimum
    if attribute.maximum is not None:
        body["MaxValue"] = attribute.maximum
    if attribute.type == "picklist":
        body["OptionSet"] = {
            "Options": [
                {"Value": value, "Label": _label(label)}
                for value, label in sorted(attribute.options.items())
            ]
        }
    return body


def _publisher(store: Store, file: SolutionFile) -> Record:
    existing = solutions.find(store, "publishers", file.publisher["uniquename"])
    if existing is not None:
        return existing
    try:
        option = int(file.publisher["optionvalueprefix"])
    except ValueError:
        raise SolutionFileError(
            "The publisher's CustomizationOptionValuePrefix is not a number."
        ) from None
    return store.create(
        "publishers",
        {
            "uniquename": file.publisher["uniquename"],
            "friendlyname": file.publisher["friendlyname"] or file.publisher["uniquename"],
            "customizationprefix": file.publisher["prefix"],
            "customizationoptionvalueprefix": option,
        },
    )


def _solution(store: Store, file: SolutionFile, publisher: Record) -> Record:
    values = {
        "friendlyname": file.friendly_name or file.unique_name,
        "version": file.version,
        "description": file.description or None,
    }
    existing = solutions.find(store, "solutions", file.unique_name)
    if existing is not None:
        record, _ = store.update("solutions", existing.values["solutionid"], values, if_match="*")
    else:
        record = store.create(
            "solutions",
            {
                "uniquename": file.unique_name,
                "publisherid@odata.bind": f"/publishers({publisher.values['publisherid']})",
                **values,
            },
        )
    record.values["ismanaged"] = file.managed  # read-only through the API; the file says
    record.values["isvisible"] = True
    record.values["installedon"] = format_datetime(datetime.now(UTC))
    return record
