"""The data endpoints under ``/api/data/v9.2/``: entity sets, rows, WhoAmI and the close actions."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from sandbox.dataverse import bulk, odata, query_options
from sandbox.dataverse.errors import DataverseFault, payload_error, query_error
from sandbox.dataverse.schema import Kind, Table
from sandbox.dataverse.state import API_PREFIX, Emulator
from sandbox.dataverse.store import Record, Row, Store

MAX_PAGE_SIZE = 5000  # reference section 2.3
_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
COLLECTION = re.compile(r"^(?P<set>[A-Za-z_][A-Za-z0-9_]*)$")
ROW = re.compile(rf"^(?P<set>[A-Za-z_][A-Za-z0-9_]*)\((?P<id>{_GUID})\)$")
REF = re.compile(rf"^(?P<set>[A-Za-z_][A-Za-z0-9_]*)\((?P<id>{_GUID})\)/(?P<nav>\w+)/\$ref$")


def service_root(request: Request) -> str:
    """The service root URL (``http://host/api/data/v9.2/``), as links and ``Location`` show it."""
    return str(request.base_url).rstrip("/") + API_PREFIX


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, ensure_ascii=False),
        status_code=status,
        headers={"OData-Version": "4.0", **(headers or {})},
        media_type="application/json; odata.metadata=minimal",
    )


def no_content(headers: dict[str, str] | None = None) -> Response:
    return Response(status_code=204, headers={"OData-Version": "4.0", **(headers or {})})


def preferences(request: Request) -> dict[str, str]:
    """``Prefer`` values by name; several may share a header (RFC 7240) or come in several."""
    prefs: dict[str, str] = {}
    for header in request.headers.getlist("prefer"):
        for part in re.findall(r'(?:[^,"]|"[^"]*")+', header):
            name, _, value = part.strip().partition("=")
            prefs[name.strip().lower()] = value.strip().strip('"')
    return prefs


async def read_body(request: Request, entity_set: str) -> Row:
    raw = await request.body()
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise payload_error(entity_set, "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise payload_error(entity_set, "The request body must be a JSON object.")
    return body


_BAD_SKIPTOKEN_MESSAGE = "The $skiptoken is not valid; follow @odata.nextLink unchanged."


def _encode_cookie(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def _decode_cookie(token: str) -> list[Any]:
    try:
        values = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except ValueError:
        raise query_error(
            "The $skiptoken is not valid; follow @odata.nextLink unchanged."
        ) from None
    if not isinstance(values, list):
        raise query_error("The $skiptoken is not valid; follow @odata.nextLink unchanged.")
    return values


class DataApi:
    """Handlers for one emulator's data endpoints."""

    def __init__(self, emulator: Emulator) -> None:
        self.emulator = emulator

    def base_url(self, request: Request) -> str:
        return service_root(request)

    async def handle(self, request: Request, path: str) -> Response:
        method = request.method
        if path == "WhoAmI" and method == "GET":
            caller = self.emulator.store.caller
            return json_response(
                {
                    "@odata.context": f"{self.base_url(request)}$metadata"
                    "#Microsoft.Dynamics.CRM.WhoAmIResponse",
                    "BusinessUnitId": caller.business_unit_id,
                    "UserId": caller.user_id,
                    "OrganizationId": caller.organization_id,
                }
            )
        if path in ("WinOpportunity", "LoseOpportunity") and method == "POST":
            body = await read_body(request, "opportunities")
            self.emulator.store.close_opportunity(path == "WinOpportunity", body)
            return no_content()
        if (match := bulk.BOUND_ACTION.match(path)) and method == "POST":
            return await self.bulk_action(request, match)
        if match := COLLECTION.match(path):
            entity_set = match.group("set")
            if method == "GET":
                return self.list_rows(request, entity_set)
            if method == "POST":
                return await self.create(request, entity_set)
        elif match := ROW.match(path):
            entity_set, row_id = match.group("set"), match.group("id")
            if method == "GET":
                return self.get_row(request, entity_set, row_id)
            if method == "PATCH":
                return await self.update(request, entity_set, row_id)
            if method == "DELETE":
                self.emulator.store.delete(
                    entity_set, row_id, if_match=request.headers.get("if-match")
                )
                return no_content()
        elif (match := REF.match(path)) and method == "DELETE":
            entity_set = match.group("set")
            self.emulator.store.update(
                entity_set,
                match.group("id"),
                {f"{match.group('nav')}@odata.bind": None},
                if_match="*",
            )
            return no_content()
        else:
            raise DataverseFault(404, "0x80060888", f"Resource not found for the segment '{path}'.")
        raise DataverseFault(405, "0x80060888", f"The method {method} is not allowed on '{path}'.")

    async def bulk_action(self, request: Request, match: re.Match[str]) -> Response:
        """``<set>/Microsoft.Dynamics.CRM.CreateMultiple`` or ``UpdateMultiple`` (``bulk.py``)."""
        store = self.emulator.store
        table = store.table(match.group("set"))
        body = await read_body(request, table.entity_set)
        ids = bulk.run(store, table, match.group("action"), body)
        if ids is None:
            return no_content()
        return json_response(
            {
                "@odata.context": f"{self.base_url(request)}$metadata"
                "#Microsoft.Dynamics.CRM.CreateMultipleResponse",
                "Ids": ids,
            }
        )

    # -- reads ----------------------------------------------------------------------------------

    def list_rows(self, request: Request, entity_set: str) -> Response:
        store = self.emulator.store
        table = store.table(entity_set)
        params = request.query_params
        query_options.check(params.keys(), query_options.COLLECTION)
        schema = store.schema
        select = odata.parse_select(params.get("$select"), table)
        where = (
            odata.parse_filter(params["$filter"], schema, table) if "$filter" in params else None
        )
        order = odata.parse_orderby(params.get("$orderby"), schema, table)
        expand = odata.parse_expand(params.get("$expand"), schema, table)
        prefs = preferences(request)
        keys = store.order_keys(table, order)
        token = params.get("$skiptoken")
        cookie = None if token is None else _decode_cookie(token)
        if cookie is not None and len(cookie) != len(keys):
            raise query_error("The $skiptoken does not belong to this query.")
        keyed = store.select(entity_set, where, order, after=cookie)
        rows = [record for record, _ in keyed]
        body: dict[str, Any] = {"@odata.context": f"{self.base_url(request)}$metadata#{entity_set}"}
        if "$top" in params:
            # UNCERTAIN (reference 2.3): $top and odata.maxpagesize should not be combined; here
            # $top wins and no next link is given.
            try:
                top = int(params["$top"])
            except ValueError:
                raise query_error("$top must be a non-negative integer.") from None
            page, more = rows[: max(0, top)], False
        else:
            size = _page_size(prefs.get("odata.maxpagesize"))
            page, more = rows[:size], len(rows) > size
        annotate = _wants_lookup_annotations(prefs)
        related = RelatedRows(store)
        body["value"] = [self.render(table, r, select, expand, annotate, related) for r in page]
        if params.get("$count") == "true":
            # Capped at 5000 (reference 2.5).
            body["@odata.count"] = min(len(rows), MAX_PAGE_SIZE)
        if more:
            last = keyed[len(page) - 1][1]
            body["@odata.nextLink"] = str(
                request.url.include_query_params(**{"$skiptoken": _encode_cookie(last)})
            )
        return json_response(body)

    def get_row(self, request: Request, entity_set: str, row_id: str) -> Response:
        store = self.emulator.store
        table = store.table(entity_set)
        params = request.query_params
        query_options.check(params.keys(), query_options.ROW)
        select = odata.parse_select(params.get("$select"), table)
        expand = odata.parse_expand(params.get("$expand"), store.schema, table)
        record = store.get(entity_set, row_id)
        if_none_match = request.headers.get("if-none-match")
        # Never 304 with $expand or when annotations are asked for: the answer is more than the
        # row, and its ETag does not cover it (reference 3.7; learn.microsoft.com, power-apps/
        # developer/data-platform/webapi/perform-conditional-operations-using-web-api).
        annotated = "odata.include-annotations" in preferences(request)
        if (
            if_none_match not in (None, "null")
            and if_none_match == record.etag
            and not expand
            and not annotated
        ):
            return Response(status_code=304, headers={"ETag": record.etag})
        body = {
            "@odata.context": f"{self.base_url(request)}$metadata#{entity_set}/$entity",
            **self.render(
                table, record, select, expand, _wants_lookup_annotations(preferences(request))
            ),
        }
        return json_response(body, headers={"ETag": record.etag})

    def render(
        self,
        table: Table,
        record: Record,
        select: list[str] | None,
        expand: list[odata.Expansion] | tuple[odata.Expansion, ...],
        annotate: bool = False,
        related: RelatedRows | None = None,
    ) -> Row:
        """A row as Dataverse returns it: etag, primary key, the selected columns, expansions.
        ``related`` indexes collection-valued expansions once per request (a page of rows)."""
        store = self.emulator.store
        values = record.values
        names = list(values) if select is None else [table.primary_key, *select]
        if select is not None and any(
            (c := table.by_wire_name(n)) is not None and c.kind is Kind.MONEY for n in select
        ):
            # Selecting a money column also returns its currency (reference 2.1).
            names.append("_transactioncurrencyid_value")
        out: Row = {"@odata.etag": record.etag}
        for name in names:
            if name not in out:
                out[name] = values.get(name)
            column = table.by_wire_name(name)
            if annotate and column is not None and column.kind is Kind.LOOKUP and values.get(name):
                target = store.schema.table(record.targets.get(column.name, ""))
                if target is not None:
                    out[f"{name}@Microsoft.Dynamics.CRM.lookuplogicalname"] = target.logical_name
        related = related or RelatedRows(store)
        for expansion in expand:
            target_table = store.table(expansion.entity_set)
            if expansion.many:
                # Collection-valued (reference 2.4): always an array, [] when no row links here.
                # UNCERTAIN: Dataverse pages big expanded collections with <nav>@odata.nextLink;
                # the emulator returns up to 5000 rows and no link.
                children = related.of(expansion, table, record)
                limit = (
                    MAX_PAGE_SIZE if expansion.top is None else min(expansion.top, MAX_PAGE_SIZE)
                )
                out[expansion.navigation] = [
                    self.render(
                        target_table, child, expansion.select, expansion.expand, annotate, related
                    )
                    for child in children[:limit]
                ]
                continue
            target_id = values.get(expansion.column.wire_name)
            linked = (
                store.find(expansion.entity_set, target_id)
                if target_id and record.targets.get(expansion.column.name) == expansion.entity_set
                else None
            )
            out[expansion.navigation] = (
                None
                if linked is None
                else self.render(
                    target_table, linked, expansion.select, expansion.expand, annotate, related
                )
            )
        return out

    # -- writes ---------------------------------------------------------------------------------

    def _written(self, request: Request, table: Table, record: Record, created: bool) -> Response:
        """204 with ``OData-EntityId``, or the row with ``Prefer: return=representation``."""
        if preferences(request).get("return") == "representation":
            select = odata.parse_select(request.query_params.get("$select"), table)
            expand = odata.parse_expand(
                request.query_params.get("$expand"), self.emulator.store.schema, table
            )
            body = {
                "@odata.context": f"{self.base_url(request)}$metadata#{table.entity_set}/$entity",
                **self.render(table, record, select, expand),
            }
            # The service says which preference it honoured (reference 1.2; learn.microsoft.com,
            # power-apps/developer/data-platform/webapi/create-entity-web-api, "Create with
            # data returned").
            applied = {"ETag": record.etag, "Preference-Applied": "return=representation"}
            return json_response(body, 201 if created else 200, applied)
        entity_id = (
            f"{self.base_url(request)}{table.entity_set}({record.values[table.primary_key]})"
        )
        return no_content({"OData-EntityId": entity_id})

    async def create(
        self,
        request: Request,
        entity_set: str,
        after: Callable[[Record], None] | None = None,
    ) -> Response:
        """POST a row; ``after`` runs with the new row inside the same write (the solution
        component a ``MSCRM.SolutionUniqueName`` header adds, customization.py)."""
        store = self.emulator.store
        table = store.table(entity_set)
        query_options.check(request.query_params.keys(), query_options.ROW)  # before writing
        body = await read_body(request, entity_set)
        with store.atomic():
            record = store.create(entity_set, body)
            if after is not None:
                after(record)
        return self._written(request, table, record, True)

    async def update(self, request: Request, entity_set: str, row_id: str) -> Response:
        store = self.emulator.store
        table = store.table(entity_set)
        query_options.check(request.query_params.keys(), query_options.ROW)  # before writing
        if_none_match = request.headers.get("if-none-match")
        record, created = store.update(
            entity_set,
            row_id,
            await read_body(request, entity_set),
            if_match=request.headers.get("if-match"),
            # "If-None-Match: null" is the cache directive of reference 1.2, not a condition.
            if_none_match=None if if_none_match == "null" else if_none_match,
        )
        return self._written(request, table, record, created)


class RelatedRows:
    """The rows of a collection-valued expansion for each parent row. Children are grouped by
    their lookup once per (table, lookup) and request, so expanding a page of N rows costs one
    pass over the child table, not N."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._groups: dict[tuple[str, str, str], dict[str, list[Record]]] = {}

    def of(self, expansion: odata.Expansion, table: Table, record: Record) -> list[Record]:
        """The rows linked to ``record``, filtered and in the expansion's (stable) order."""
        column = expansion.column
        key = (expansion.entity_set, column.name, table.entity_set)
        groups = self._groups.get(key)
        if groups is None:
            groups = {}
            for child in self.store.tables.get(expansion.entity_set, {}).values():
                parent_id = child.values.get(column.wire_name)
                # A polymorphic lookup may point at another table with the same id shape.
                if parent_id and child.targets.get(column.name) == table.entity_set:
                    groups.setdefault(parent_id, []).append(child)
            self._groups[key] = groups
        rows = groups.get(record.values[table.primary_key], [])
        keyed = self.store.select(
            expansion.entity_set, expansion.where, list(expansion.order), rows=rows
        )
        return [child for child, _ in keyed]


def _page_size(value: str | None) -> int:
    if value is None:
        return MAX_PAGE_SIZE
    try:
        size = int(value)
    except ValueError:
        raise query_error(f"odata.maxpagesize must be an integer, got '{value}'.") from None
    return max(1, min(size, MAX_PAGE_SIZE))


def _wants_lookup_annotations(prefs: dict[str, str]) -> bool:
    wanted = prefs.get("odata.include-annotations", "")
    return wanted == "*" or "lookuplogicalname" in wanted
