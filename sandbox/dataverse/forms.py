"""The ``systemforms`` table and publishing.

* learn.microsoft.com/power-apps/developer/data-platform/reference/entities/systemform:
  ``formid``, ``name``, ``objecttypecode`` (the table's logical name), ``type`` (2 Main,
  6 Quick View, 7 Quick Create …), ``formxml``, ``formactivationstate``, ``description``.
* learn.microsoft.com/power-apps/developer/model-driven-apps/customize-entity-forms ("Publish
  customizations": a changed form is not used until it is published) and
  learn.microsoft.com/dotnet/api/microsoft.crm.sdk.messages.retrieveunpublishedrequest
  ("corresponds to the RetrieveRequest … except that it returns the current unpublished
  version of the record. When the record is published, this method and RetrieveRequest return
  the same data").
* learn.microsoft.com/power-apps/developer/data-platform/webapi/reference/publishxml
  (``ParameterXml``: ``<importexportxml><entities><entity>account</entity></entities>
  </importexportxml>`` publishes that table "including any attributes, ribbons or forms") and
  .../reference/publishallxml.

So a ``PATCH systemforms(<id>)`` is kept as the form's unpublished customization: ``GET``
returns the published form (unchanged row, ETag and all) until ``PublishXml`` names the table
or ``PublishAllXml`` runs; ``GET systemforms(<id>)/Microsoft.Dynamics.CRM.RetrieveUnpublished()``
returns the form as it would be published. UNCERTAIN: the binding of RetrieveUnpublished over
the Web API, and whether Dataverse bumps ``versionnumber`` on the PATCH (here: on publish).
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from sandbox.dataverse import xml_safe
from sandbox.dataverse.errors import DataverseFault
from sandbox.dataverse.schema import (
    ACTIVE_STATES,
    Column,
    Kind,
    Schema,
    Table,
    add_system_columns,
    coerce,
    not_declared,
)
from sandbox.dataverse.store import Record, Row, Store
from sandbox.dataverse.xml_safe import XmlRefused

_NAMESPACE = uuid.UUID("3e8b1f62-0c4d-4a5e-9f7a-2d6c5b4a3f13")
SEED = Path(__file__).resolve().parent / "seed"
MAIN, QUICK_VIEW, QUICK_CREATE = 2, 6, 7
FORM_TYPES = {
    0: "Dashboard",
    1: "AppointmentBook",
    2: "Main",
    5: "Mobile",
    6: "Quick View Form",
    7: "Quick Create",
    11: "Main - Interactive experience",
    12: "Card",
}
# Pending customizations of one emulator: form id -> the columns a PATCH changed.
Pending = dict[str, Row]


def form_id(*names: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(names)))


def add_tables(schema: Schema) -> None:
    form = Table("systemform", "systemforms", "formid", "name")
    add_system_columns(form, ACTIVE_STATES)
    for column in (
        Column("name", Kind.STRING, max_length=100),
        Column("description", Kind.MEMO, max_length=2000),
        Column("objecttypecode", Kind.STRING, max_length=100),
        Column("type", Kind.PICKLIST, options=dict(FORM_TYPES)),
        Column("formxml", Kind.MEMO, max_length=1_073_741_823),
        Column("formactivationstate", Kind.PICKLIST, options={0: "Inactive", 1: "Active"}),
        Column("isdefault", Kind.BOOLEAN),
        Column("ismanaged", Kind.BOOLEAN, read_only=True),
    ):
        form.add(column)
    schema.tables[form.entity_set] = form


def _minimal(table: str, label: str, fields: tuple[str, ...]) -> str:
    """A form in the real FormXml shape (tabs, columns, sections, rows, cells, controls)."""
    cells = "".join(
        f'<row><cell id="{{{form_id(table, label, f)}}}"><labels><label description="{f}" '
        f'languagecode="1033" /></labels><control id="{f}" '
        f'classid="{{4273EDBD-AC1D-40d3-9FB2-095C621B552D}}" datafieldname="{f}" /></cell></row>'
        for f in fields
    )
    return (
        "<form><tabs>"
        f'<tab name="general" id="{{{form_id(table, label, "tab")}}}" IsUserDefined="0">'
        f'<labels><label description="{label}" languagecode="1033" /></labels>'
        '<columns><column width="100%"><sections>'
        f'<section name="summary" id="{{{form_id(table, label, "section")}}}" '
        'IsUserDefined="0"><labels><label description="Summary" languagecode="1033" /></labels>'
        f"<rows>{cells}</rows></section></sections></column></columns></tab></tabs></form>"
    )


def opportunity_main_formxml() -> str:
    """Microsoft's stock Dynamics 365 opportunity main form (``seed/opportunity_main.formxml.xml``,
    sources in tests/fixtures/formxml/SOURCES.md); a minimal form of the same shape if the copy
    is missing."""
    path = SEED / "opportunity_main.formxml.xml"
    if path.is_file():
        return path.read_text(encoding="utf-8")
    fields = ("name", "parentcontactid", "parentaccountid", "estimatedclosedate", "estimatedvalue")
    return _minimal("opportunity", "Summary", fields)


SEEDED = (
    ("opportunity", "Opportunity", MAIN, opportunity_main_formxml),
    (
        "opportunity",
        "Opportunity Quick Create",
        QUICK_CREATE,
        lambda: _minimal(
            "opportunity", "Quick Create", ("name", "parentaccountid", "estimatedvalue")
        ),
    ),
    (
        "account",
        "Account",
        MAIN,
        lambda: _minimal("account", "Summary", ("name", "telephone1", "websiteurl")),
    ),
)


# Microsoft's stock Unified Interface opportunity main form keeps its id in every org
# (tests/fixtures/formxml/SOURCES.md: the seed's form is {a837e4a7-…}).
OPPORTUNITY_MAIN_FORM_ID = "a837e4a7-01b8-4f82-a475-be9abd67e667"


def seed(store: Store) -> None:
    for table, name, kind, formxml in SEEDED:
        fixed = table == "opportunity" and kind == MAIN
        store.create(
            "systemforms",
            {
                "formid": OPPORTUNITY_MAIN_FORM_ID if fixed else form_id(table, name),
                "name": name,
                "objecttypecode": table,
                "type": kind,
                "formxml": formxml(),
                "formactivationstate": 1,
                "isdefault": True,
                "description": f"The {FORM_TYPES[kind]} form of {table}.",
            },
        ).values["ismanaged"] = True  # the org's own forms come in Microsoft's managed solutions


def check_new_form(store: Store, body: Row) -> None:
    """A new form is about an existing table and holds well-formed FormXml."""
    logical = body.get("objecttypecode")
    if not isinstance(logical, str) or store.schema.by_logical_name(logical) is None:
        raise DataverseFault(
            400, "0x80040203", f"The objecttypecode '{logical}' is not a table of this org."
        )
    _check_formxml(str(body.get("formxml") or ""))


def edit(store: Store, pending: Pending, row_id: str, body: Row) -> Record:
    """A PATCH of a form: checked like any write, kept unpublished."""
    record = store.get("systemforms", row_id)
    table = store.table("systemforms")
    changes = pending.setdefault(record.values["formid"], {})
    checked = {}
    for key, value in body.items():
        if key.startswith("@"):
            continue
        column = table.columns.get(key)
        if column is None or column.kind is Kind.LOOKUP:
            raise not_declared(table, key)
        if column.read_only or key == table.primary_key:
            continue
        checked[key] = coerce(table, column, value)
    if "formxml" in checked:
        _check_formxml(str(checked["formxml"]))
    changes.update(checked)
    return record


def _check_formxml(text: str) -> None:
    try:
        root = xml_safe.parse(text)
    except XmlRefused as exc:
        raise DataverseFault(
            400, "0x80040203", f"The formxml is not well-formed XML: {exc}."
        ) from None
    if root.tag != "form":
        # UNCERTAIN: Dataverse validates FormXml against its schema; the emulator checks the root.
        raise DataverseFault(400, "0x80040203", "The formxml must have a <form> root element.")


def unpublished(store: Store, pending: Pending, row_id: str) -> Row:
    """The form as RetrieveUnpublished returns it."""
    record = store.get("systemforms", row_id)
    return {**record.values, **pending.get(record.values["formid"], {})}


def tables_to_publish(parameter_xml: Any) -> set[str]:
    """The table logical names a ``PublishXml`` ``ParameterXml`` names."""
    if not isinstance(parameter_xml, str):
        raise DataverseFault(400, "0x80048d19", "PublishXml needs ParameterXml (a string).")
    try:
        root = xml_safe.parse(parameter_xml)
    except XmlRefused as exc:
        raise DataverseFault(
            400, "0x80040203", f"The ParameterXml is not valid XML: {exc}."
        ) from None
    if root.tag != "importexportxml":
        raise DataverseFault(
            400, "0x80040203", "The ParameterXml must have an <importexportxml> root element."
        )
    return {(e.text or "").strip().lower() for e in root.iterfind("./entities/entity") if e.text}


def publish(store: Store, pending: Pending, tables: set[str] | None) -> int:
    """Apply the pending form customizations of ``tables`` (all of them for None); how many."""
    done = 0
    for row_id, changes in list(pending.items()):
        record = store.find("systemforms", row_id)
        if record is None:
            del pending[row_id]
            continue
        if tables is not None and record.values.get("objecttypecode") not in tables:
            continue
        if changes:
            store.update("systemforms", row_id, changes, if_match="*")
        del pending[row_id]
        done += 1
    return done
