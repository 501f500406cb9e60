"""The FetchXML the emulator evaluates, turned into the same filter tree ``$filter`` builds.

learn.microsoft.com/power-apps/developer/data-platform/fetchxml/overview and its reference
pages (.../fetchxml/reference/fetch, entity, attribute, all-attributes, order, filter,
condition, value, and .../reference/operators): ``<fetch top count page>``, ``<entity name>``,
``<attribute name>`` or ``<all-attributes/>``, ``<order attribute descending>``, nested
``<filter type="and|or">`` of ``<condition attribute operator value>`` with the operators
eq, ne, null, not-null, like, not-like, in, not-in (``<value>`` children), gt, ge, lt, le,
eq-userid, ne-userid. Two-option values are written 1/0 (or true/false).

Anything else (``link-entity``, aggregates, other operators) is a 400 naming what the emulator
does not evaluate, never a result that silently ignores part of the query.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from sandbox.dataverse import xml_safe
from sandbox.dataverse.errors import DataverseFault, query_error
from sandbox.dataverse.odata import check
from sandbox.dataverse.schema import CHOICE, GUID, NUMERIC, Column, Kind, Schema, Table
from sandbox.dataverse.xml_safe import XmlRefused
from sandbox.odata import Call, Compare, Literal, Logical, Node, Not, Prop

_COMPARISONS = frozenset({"eq", "ne", "gt", "ge", "lt", "le"})
_FETCH_ATTRIBUTES = frozenset(
    {"version", "mapping", "output-format", "distinct", "top", "count", "page", "no-lock",
     "returntotalrecordcount", "paging-cookie"}
)  # fmt: skip


@dataclass
class Fetch:
    """One parsed query: the table, the columns (None: all), order, filter and paging."""

    entity: str
    attributes: list[str] | None = None
    order: list[tuple[str, bool]] = field(default_factory=list)
    where: Node | None = None
    top: int | None = None
    count: int | None = None
    page: int = 1


def unsupported(what: str) -> DataverseFault:
    return query_error(f"The Dataverse emulator does not evaluate {what} in FetchXML.")


def _int(element: ET.Element, name: str) -> int | None:
    text = element.get(name)
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        raise query_error(
            f"The fetch attribute '{name}' must be an integer, not '{text}'."
        ) from None
    if value < 1:
        raise query_error(f"The fetch attribute '{name}' must be 1 or more.")
    return value


def entity_name(text: str) -> str:
    """The logical name of the table a FetchXML query is about (checked before it runs)."""
    return _entity(_root(text)).get("name", "")


def _root(text: str) -> ET.Element:
    try:
        root = xml_safe.parse(text)
    except XmlRefused as exc:
        raise query_error(f"The FetchXML is not well-formed XML: {exc}.") from None
    if root.tag != "fetch":
        raise query_error("FetchXML must have a <fetch> root element.")
    return root


def _entity(root: ET.Element) -> ET.Element:
    entities = root.findall("entity")
    if len(entities) != 1 or not entities[0].get("name"):
        raise query_error("FetchXML needs exactly one <entity name='...'> element.")
    return entities[0]


def parse(text: str, schema: Schema, table: Table, *, user_id: str) -> Fetch:
    """The query ``text`` asks of ``table``; 400 for what it cannot ask or the emulator cannot
    evaluate."""
    root = _root(text)
    for name in root.attrib:
        if name not in _FETCH_ATTRIBUTES:
            raise unsupported(f"the fetch attribute '{name}'")
    if root.get("aggregate") is not None:
        raise unsupported("aggregate")
    entity = _entity(root)
    if entity.get("name") != table.logical_name:
        raise query_error(
            f"The FetchXML is about '{entity.get('name')}', not '{table.logical_name}' "
            f"(the entity set {table.entity_set})."
        )
    fetch = Fetch(table.logical_name, top=_int(root, "top"), count=_int(root, "count"))
    fetch.page = _int(root, "page") or 1
    if fetch.top is not None and fetch.count is not None:
        raise query_error("The fetch attributes 'top' and 'count' cannot be used together.")
    filters: list[Node] = []
    for child in entity:
        if child.tag == "attribute":
            if child.get("aggregate") or child.get("alias") or child.get("groupby"):
                raise unsupported("aggregate, alias or groupby on <attribute>")
            column = _column(table, child.get("name"))
            fetch.attributes = [*(fetch.attributes or []), column.wire_name]
        elif child.tag == "all-attributes":
            fetch.attributes = None
            for later in entity:
                if later.tag == "attribute":
                    raise query_error("<all-attributes/> cannot be combined with <attribute>.")
        elif child.tag == "order":
            column = _column(table, child.get("attribute"))
            fetch.order.append((column.wire_name, child.get("descending") in ("true", "1")))
        elif child.tag == "filter":
            node = _filter(child, table, user_id)
            if node is not None:
                filters.append(node)
        else:
            raise unsupported(f"<{child.tag}>")
    for node in filters:
        fetch.where = node if fetch.where is None else Logical("and", fetch.where, node)
    if fetch.where is not None:
        check(fetch.where, schema, table)
    return fetch


def _column(table: Table, name: str | None) -> Column:
    column = table.columns.get(name or "")
    if column is None:
        # The wording of Dataverse's QueryBuilderNoAttribute error (0x80041103).
        raise DataverseFault(
            400,
            "0x80041103",
            f"'{table.logical_name}' entity doesn't contain attribute with Name = '{name}'.",
        )
    return column


def _filter(element: ET.Element, table: Table, user_id: str) -> Node | None:
    kind = element.get("type", "and")
    if kind not in ("and", "or"):
        raise query_error(f"A <filter> type is 'and' or 'or', not '{kind}'.")
    nodes: list[Node] = []
    for child in element:
        if child.tag == "condition":
            nodes.append(_condition(child, table, user_id))
        elif child.tag == "filter":
            node = _filter(child, table, user_id)
            if node is not None:
                nodes.append(node)
        else:
            raise unsupported(f"<{child.tag}> inside <filter>")
    if not nodes:
        return None
    result = nodes[0]
    for node in nodes[1:]:
        result = Logical(kind, result, node)
    return result


def _condition(element: ET.Element, table: Table, user_id: str) -> Node:
    if element.get("entityname") or element.get("valueof"):
        raise unsupported("entityname or valueof on <condition>")
    column = _column(table, element.get("attribute"))
    prop = Prop(column.wire_name)
    operator = element.get("operator", "")
    value = element.get("value")
    if operator in _COMPARISONS:
        return Compare(operator, prop, _literal(table, column, _required(value, operator)))
    if operator in ("null", "not-null"):
        return Compare("eq" if operator == "null" else "ne", prop, Literal(None, "null"))
    if operator in ("eq-userid", "ne-userid"):
        return Compare(operator[:2], prop, Literal(user_id, "Edm.Guid"))
    if operator in ("like", "not-like"):
        like = _like(prop, _required(value, operator))
        return Not(like) if operator == "not-like" else like
    if operator in ("in", "not-in"):
        values = [v.text or "" for v in element.findall("value")]
        if not values:
            raise query_error(f"The '{operator}' operator needs <value> elements.")
        node: Node = Compare("eq", prop, _literal(table, column, values[0]))
        for text in values[1:]:
            node = Logical("or", node, Compare("eq", prop, _literal(table, column, text)))
        return Not(node) if operator == "not-in" else node
    raise unsupported(f"the condition operator '{operator}'")


def _required(value: str | None, operator: str) -> str:
    if value is None:
        raise query_error(f"The '{operator}' operator needs a value.")
    return value


def _like(prop: Prop, pattern: str) -> Node:
    inner = pattern.strip("%")
    if "%" in inner or "_" in inner or "[" in inner:
        raise unsupported(f"the like pattern '{pattern}' (only leading and trailing %)")
    text = Literal(inner, "Edm.String")
    starts, ends = pattern.startswith("%"), pattern.endswith("%")
    if starts and ends:
        return Call("contains", (prop, text))
    if ends:
        return Call("startswith", (prop, text))
    if starts:
        return Call("endswith", (prop, text))
    return Compare("eq", prop, text)


def _literal(table: Table, column: Column, text: str) -> Literal:
    kind = column.kind

    def wrong() -> DataverseFault:
        return query_error(
            f"The value '{text}' is not valid for the attribute '{column.name}' of "
            f"'{table.logical_name}' ({kind.value})."
        )

    if kind in (Kind.STRING, Kind.MEMO):
        return Literal(text, "Edm.String")
    if kind is Kind.BOOLEAN:
        if text.lower() in ("1", "true"):
            return Literal(True, "Edm.Boolean")
        if text.lower() in ("0", "false"):
            return Literal(False, "Edm.Boolean")
        raise wrong()
    if kind in NUMERIC or kind in CHOICE:
        try:
            number = float(text) if any(c in text for c in ".eE") else int(text)
        except ValueError:
            raise wrong() from None
        return Literal(number, "Edm.Decimal")
    if kind in (Kind.UNIQUEIDENTIFIER, Kind.LOOKUP):
        guid = text.strip("{}")
        if not GUID.match(guid):
            raise wrong()
        return Literal(guid.lower(), "Edm.Guid")
    if kind is Kind.DATEONLY:
        try:
            return Literal(date.fromisoformat(text[:10]), "Edm.Date")
        except ValueError:
            raise wrong() from None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise wrong() from None
    # FetchXML date-times without an offset are read as UTC (UNCERTAIN: Dataverse uses the
    # caller's time zone setting; the sandbox user's is UTC).
    return Literal(parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC), "Edm.DateTimeOffset")
