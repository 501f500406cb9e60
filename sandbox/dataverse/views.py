"""The ``savedqueries`` table (system views) and running views and FetchXML over the Web API.

* learn.microsoft.com/power-apps/developer/data-platform/reference/entities/savedquery:
  ``name``, ``description``, ``returnedtypecode`` (the table's logical name), ``querytype``
  (0 = public view), ``fetchxml``, ``layoutxml``, ``isdefault``, ``statecode``.
* learn.microsoft.com/power-apps/developer/data-platform/webapi/retrieve-and-execute-
  predefined-queries: ``GET accounts?savedQuery=<savedqueryid>`` runs a system view on the
  entity set of its ``returnedtypecode``; like FetchXML, its rows leave out null properties.
* learn.microsoft.com/power-apps/developer/data-platform/webapi/use-fetchxml-web-api:
  ``GET accounts?fetchXml=<url-encoded FetchXML>``; ``count`` and ``page`` page the result and
  ``@Microsoft.Dynamics.CRM.morerecords`` says whether there are more (UNCERTAIN: the emulator
  gives no ``fetchxmlpagingcookie``; asking for the next ``page`` works without one).
* learn.microsoft.com/power-apps/maker/model-driven-apps/create-edit-views: a new table comes
  with its public view "Active <plural name>", the default one.
"""

from __future__ import annotations

import uuid
from typing import Any

from sandbox.dataverse import fetchxml
from sandbox.dataverse.errors import DataverseFault, query_error
from sandbox.dataverse.schema import ACTIVE_STATES, Column, Kind, Schema, Table, add_system_columns
from sandbox.dataverse.store import Record, Row, Store

_NAMESPACE = uuid.UUID("7a2d4c91-3b5e-4f60-8c1d-9e0f1a2b3c44")
PUBLIC_VIEW = 0
MAX_ROWS = 5000


def view_id(*names: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(names)))


def add_tables(schema: Schema) -> None:
    view = Table("savedquery", "savedqueries", "savedqueryid", "name")
    add_system_columns(view, ACTIVE_STATES)
    for column in (
        Column("name", Kind.STRING, max_length=200),
        Column("description", Kind.MEMO, max_length=2000),
        Column("returnedtypecode", Kind.STRING, max_length=100),
        Column("querytype", Kind.INTEGER, minimum=0, maximum=2**31 - 1),
        Column("fetchxml", Kind.MEMO, max_length=1_073_741_823),
        Column("layoutxml", Kind.MEMO, max_length=1_073_741_823),
        Column("isdefault", Kind.BOOLEAN),
        Column("isquickfindquery", Kind.BOOLEAN),
        Column("ismanaged", Kind.BOOLEAN, read_only=True),
    ):
        view.add(column)
    schema.tables[view.entity_set] = view


def _fetch(table: str, attributes: tuple[str, ...], conditions: str, order: str) -> str:
    cells = "".join(f'<attribute name="{a}" />' for a in attributes)
    return (
        '<fetch version="1.0" output-format="xml-platform" mapping="logical" distinct="false">'
        f'<entity name="{table}">{cells}<order attribute="{order}" descending="false" />'
        f'<filter type="and">{conditions}</filter></entity></fetch>'
    )


def _layout(table: Table, attributes: tuple[str, ...], otc: int) -> str:
    cells = "".join(f'<cell name="{a}" width="150" />' for a in attributes)
    return (
        f'<grid name="resultset" object="{otc}" jump="{table.primary_name}" select="1" '
        f'icon="1" preview="1"><row name="result" id="{table.primary_key}">{cells}</row></grid>'
    )


_OPEN = '<condition attribute="statecode" operator="eq" value="0" />'
_MINE = '<condition attribute="ownerid" operator="eq-userid" />'
_OPPORTUNITY_COLUMNS = ("name", "customerid", "estimatedvalue", "estimatedclosedate", "ownerid")
# (table, name, columns, conditions, default)
SEEDED = (
    ("opportunity", "Open Opportunities", _OPPORTUNITY_COLUMNS, _OPEN, False),
    ("opportunity", "My Open Opportunities", _OPPORTUNITY_COLUMNS, _OPEN + _MINE, True),
    ("account", "Active Accounts", ("name", "telephone1", "address1_city"), _OPEN, True),
    (
        "account",
        "My Active Accounts",
        ("name", "telephone1", "address1_city"),
        _OPEN + _MINE,
        False,
    ),
)
_OTC = {"opportunity": 3, "account": 1}


def seed(store: Store) -> None:
    for logical, name, columns, conditions, default in SEEDED:
        table = store.schema.by_logical_name(logical)
        assert table is not None
        store.create(
            "savedqueries",
            {
                "savedqueryid": view_id(logical, name),
                "name": name,
                "returnedtypecode": logical,
                "querytype": PUBLIC_VIEW,
                "fetchxml": _fetch(logical, columns, conditions, "name"),
                "layoutxml": _layout(table, columns, _OTC[logical]),
                "isdefault": default,
                "isquickfindquery": False,
            },
        ).values["ismanaged"] = True  # the org's own views come in Microsoft's managed solutions
    for table in store.schema.tables.values():
        if table.custom:
            default_view(store, table, table.logical_name, 0)


def default_view(store: Store, table: Table, plural: str, otc: int) -> Record:
    """The "Active <plural>" public view Dataverse gives a new table (a fixed id per table, so
    the same table has the same view in every org and an import replaces it)."""
    columns = (table.primary_name, "createdon")
    row_id = view_id(table.logical_name, "active")
    existing = store.find("savedqueries", row_id)
    if existing is not None:
        return existing
    return store.create(
        "savedqueries",
        {
            "savedqueryid": row_id,
            "name": f"Active {plural}",
            "returnedtypecode": table.logical_name,
            "querytype": PUBLIC_VIEW,
            "fetchxml": _fetch(table.logical_name, columns, _OPEN, table.primary_name),
            "layoutxml": _layout(table, columns, otc),
            "isdefault": True,
            "isquickfindquery": False,
        },
    )


def check_new_view(store: Store, body: Row) -> None:
    """A view must be about an existing table and hold FetchXML for it."""
    logical = body.get("returnedtypecode")
    table = store.schema.by_logical_name(str(logical)) if isinstance(logical, str) else None
    if table is None:
        raise DataverseFault(
            400, "0x80040203", f"The returnedtypecode '{logical}' is not a table of this org."
        )
    text = body.get("fetchxml")
    if not isinstance(text, str):
        raise DataverseFault(400, "0x80040203", "A view needs its fetchxml.")
    fetchxml.parse(text, store.schema, table, user_id=store.caller.user_id)


def saved_query(store: Store, table: Table, view: str) -> str:
    """The FetchXML of the system view ``view`` (a savedqueryid) for ``table``."""
    record = store.find("savedqueries", view.strip("{}")) if view else None
    if record is None:
        raise DataverseFault(404, "0x80040217", f"savedquery With Id = {view} Does Not Exist")
    if record.values.get("returnedtypecode") != table.logical_name:
        raise query_error(
            f"The saved query {view} returns '{record.values.get('returnedtypecode')}' rows, "
            f"not '{table.logical_name}' ({table.entity_set})."
        )
    return str(record.values.get("fetchxml") or "")


def run(store: Store, table: Table, text: str, *, annotate: bool) -> dict[str, Any]:
    """The ``value`` (and paging annotation) of a FetchXML query over ``table``."""
    fetch = fetchxml.parse(text, store.schema, table, user_id=store.caller.user_id)
    keyed = store.select(table.entity_set, fetch.where, fetch.order)
    rows = [record for record, _ in keyed]
    body: dict[str, Any] = {}
    if fetch.count is not None:
        start = (fetch.page - 1) * fetch.count
        page = rows[start : start + fetch.count]
        body["@Microsoft.Dynamics.CRM.morerecords"] = len(rows) > start + fetch.count
    else:
        page = rows[: min(fetch.top or MAX_ROWS, MAX_ROWS)]
    body["value"] = [render(store, table, r, fetch.attributes, annotate) for r in page]
    return body


def render(
    store: Store, table: Table, record: Record, attributes: list[str] | None, annotate: bool
) -> Row:
    """A FetchXML row: the ETag, the primary key and the chosen columns that are not null."""
    values = record.values
    names = list(values) if attributes is None else [table.primary_key, *attributes]
    out: Row = {"@odata.etag": record.etag}
    for name in names:
        value = values.get(name)
        if value is None or name in out:
            continue
        out[name] = value
        column: Column | None = table.by_wire_name(name)
        if annotate and column is not None and column.kind is Kind.LOOKUP:
            target = store.schema.table(record.targets.get(column.name, ""))
            if target is not None:
                out[f"{name}@Microsoft.Dynamics.CRM.lookuplogicalname"] = target.logical_name
    return out
