"""The OData subset the emulator understands: ``$filter`` (parsed and evaluated), ``$select``,
``$orderby`` and ``$expand`` (reference section 2).

Filters are parsed by the shared engine (``sandbox.odata``) in Dataverse's dialect — the string
functions, ``Edm.Date`` literals, case-sensitive keywords, Dataverse's error wording — then checked
against the table's schema (unknown property or an operand of the wrong type → 400, as Dataverse
does) and evaluated per row. String comparisons are case-insensitive (reference 2.2).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from sandbox import odata
from sandbox.dataverse.errors import DataverseFault, query_error
from sandbox.dataverse.schema import (
    CHOICE,
    EDM_TYPE,
    NUMERIC,
    Column,
    Kind,
    Schema,
    Table,
    parse_datetime,
)
from sandbox.odata import (
    Call,
    Compare,
    Dialect,
    Getter,
    Literal,
    Logical,
    Node,
    Not,
    Operand,
    Prop,
    Token,
    parse,
)

Row = dict[str, Any]

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2}\b)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_./]*)
  | (?P<punct>[(),])
    """,
    re.VERBOSE,
)
_OP_KIND = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}
STRING_FUNCTIONS = frozenset({"contains", "startswith", "endswith"})


def _literal(token: Token) -> Literal | None:
    if token.kind == "string":
        return Literal(token.text[1:-1].replace("''", "'"), "Edm.String")
    if token.kind == "guid":
        return Literal(token.text.lower(), "Edm.Guid")
    if token.kind == "datetime":
        parsed = parse_datetime(token.text)
        if parsed is None:
            raise query_error(f"Invalid DateTimeOffset literal '{token.text}'.")
        return Literal(parsed, "Edm.DateTimeOffset")
    if token.kind == "date":
        try:
            return Literal(date.fromisoformat(token.text), "Edm.Date")
        except ValueError:
            raise query_error(f"Invalid Date literal '{token.text}'.") from None
    if token.kind == "number":
        number = float(token.text) if any(c in token.text for c in ".eE") else int(token.text)
        return Literal(number, "Edm.Decimal")
    if token.kind != "name":
        return None
    if token.text in ("true", "false"):
        return Literal(token.text == "true", "Edm.Boolean")
    if token.text == "null":
        return Literal(None, "null")
    if token.text.startswith("Microsoft.Dynamics.CRM."):
        # The query functions (Microsoft.Dynamics.CRM.LastXDays ...) read as names; refuse
        # them rather than look for a property of that name.
        raise query_error(f"The emulator does not implement the function '{token.text}'.")
    return None


DIALECT = Dialect(
    tokens=_TOKEN,
    literal=_literal,
    error=query_error,
    messages={
        "unreadable": "Syntax error at position {pos} in '{text}'.",
        "ends": "Syntax error: unexpected end of '{text}'.",
        "expected": "Syntax error: expected '{expected}' but found '{found}'.",
        "trailing": "Syntax error at '{found}' in '{text}'.",
        "operator": "Syntax error: expected a comparison operator, found '{found}'.",
        "operand": "Syntax error: unexpected '{found}'.",
        # A path is one token here and lambdas are not emulated, so these cannot arise.
        "path_segment": "Syntax error: unexpected '{found}'.",
        "lambda_variable": "Syntax error in a lambda.",
        "lambda_compared": "Syntax error in a lambda.",
    },
    functions=STRING_FUNCTIONS,
)


def unknown_property(table: Table, name: str) -> DataverseFault:
    return query_error(
        f"Could not find a property named '{name}' on type "
        f"'Microsoft.Dynamics.CRM.{table.logical_name}'."
    )


def resolve_column(schema: Schema, table: Table, path: str) -> Column:
    """The column a property path names; ``nav/column`` goes through a lookup."""
    if "/" in path:
        nav, _, rest = path.partition("/")
        found = table.navigation(nav)
        target = schema.table(found[1]) if found else None
        if target is None or "/" in rest:
            raise unknown_property(table, nav)
        return resolve_column(schema, target, rest)
    column = table.by_wire_name(path)
    if column is None:
        raise unknown_property(table, path)
    return column


def _compatible(column: Column, literal: Literal) -> bool:
    if literal.edm == "null":
        return True
    kind = column.kind
    if kind in (Kind.STRING, Kind.MEMO):
        return literal.edm == "Edm.String"
    if kind in NUMERIC or kind in CHOICE:
        return literal.edm == "Edm.Decimal"
    if kind is Kind.BOOLEAN:
        return literal.edm == "Edm.Boolean"
    if kind is Kind.DATEONLY:
        return literal.edm in ("Edm.Date", "Edm.DateTimeOffset")
    if kind is Kind.DATETIME:
        return literal.edm in ("Edm.Date", "Edm.DateTimeOffset")
    return literal.edm == "Edm.Guid"  # primary keys and lookups


def check(node: Node, schema: Schema, table: Table) -> None:
    """Refuse unknown properties and mismatched operand types, as Dataverse does."""
    if isinstance(node, Logical):
        check(node.left, schema, table)
        check(node.right, schema, table)
    elif isinstance(node, Not):
        check(node.operand, schema, table)
    elif isinstance(node, Call):
        if len(node.args) != 2 or not isinstance(node.args[0], Prop):
            raise query_error(f"'{node.name}' takes a property and a string.")
        column = resolve_column(schema, table, node.args[0].path)
        literal = node.args[1]
        if (
            column.kind not in (Kind.STRING, Kind.MEMO)
            or not isinstance(literal, Literal)
            or literal.edm != "Edm.String"
        ):
            raise query_error(f"'{node.name}' needs a string property and a string literal.")
    elif isinstance(node, Compare):
        sides = [node.left, node.right]
        columns = [resolve_column(schema, table, s.path) for s in sides if isinstance(s, Prop)]
        literals = [s for s in sides if isinstance(s, Literal)]
        if len(columns) == 1 and literals and not _compatible(columns[0], literals[0]):
            raise query_error(
                "A binary operator with incompatible types was detected. Found operand types "
                f"'{EDM_TYPE[columns[0].kind]}' and '{literals[0].edm}' for operator kind "
                f"'{_OP_KIND[node.op]}'."
            )


def parse_filter(text: str, schema: Schema, table: Table) -> Node:
    node = parse_expression(text)
    check(node, schema, table)
    return node


def parse_expression(text: str) -> Node:
    """A ``$filter`` tree not checked against a table (metadata collections check their own)."""
    return parse(text, DIALECT)


def _normalise(value: Any, other: Literal | None) -> Any:
    """A comparable form: case-folded strings, parsed dates when compared with date literals."""
    if value is None:
        return None
    if (
        other is not None
        and other.edm in ("Edm.DateTimeOffset", "Edm.Date")
        and isinstance(value, str)
    ):
        if other.edm == "Edm.Date" and len(value) == 10:
            return date.fromisoformat(value)
        parsed = parse_datetime(value if "T" in value else value + "T00:00:00Z")
        return parsed if other.edm == "Edm.DateTimeOffset" else (parsed.date() if parsed else None)
    if isinstance(value, str):
        return value.casefold()
    return value


def _operand(side: Operand, value: Any, other: Operand) -> Any:
    if isinstance(side, Literal):
        return value.casefold() if isinstance(value, str) else value
    return _normalise(value, other if isinstance(other, Literal) else None)


def _comparable(
    left: Operand, left_value: Any, right: Operand, right_value: Any
) -> tuple[Any, Any]:
    return _operand(left, left_value, right), _operand(right, right_value, left)


def evaluate(node: Node, row: Row, get: Getter) -> bool:
    return odata.evaluate(node, row, get, _comparable)


def split_top_level(text: str, separator: str = ",") -> list[str]:
    """Split on ``separator`` outside parentheses and quotes."""
    parts: list[str] = []
    depth = 0
    quoted = False
    current: list[str] = []
    for char in text:
        if char == "'":
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        if char == separator and depth == 0 and not quoted:
            parts.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def parse_select(text: str | None, table: Table) -> list[str] | None:
    """The selected wire names (None = all); unknown names → 400."""
    if text is None:
        return None
    names = split_top_level(text)
    for name in names:
        if table.by_wire_name(name) is None:
            raise unknown_property(table, name)
    return names


def parse_orderby(text: str | None, schema: Schema, table: Table) -> list[tuple[str, bool]]:
    """``[(wire name, descending)]``."""
    if not text:
        return []
    order: list[tuple[str, bool]] = []
    for part in split_top_level(text):
        name, _, direction = part.partition(" ")
        direction = direction.strip().lower() or "asc"
        if direction not in ("asc", "desc"):
            raise query_error(f"Invalid $orderby direction '{direction}'.")
        resolve_column(schema, table, name)
        order.append((name, direction == "desc"))
    return order


MAX_EXPAND = 15  # $expand per query (reference 0, 2.4); nested ones are counted too
_SINGLE_OPTIONS = frozenset({"$select", "$expand"})
_COLLECTION_OPTIONS = frozenset({"$select", "$filter", "$orderby", "$top", "$expand"})


@dataclass(frozen=True)
class Expansion:
    """One ``$expand`` item. Single-valued: the lookup's target row (or null). Collection-valued
    (``many``): the rows whose lookup ``column`` points back at the row, filtered, ordered and
    cut to ``top`` by the nested options (reference 2.4)."""

    navigation: str
    entity_set: str
    column: Column
    select: list[str] | None
    many: bool = False
    where: Node | None = None
    order: tuple[tuple[str, bool], ...] = ()
    top: int | None = None
    expand: tuple[Expansion, ...] = ()


def parse_expand(text: str | None, schema: Schema, table: Table) -> list[Expansion]:
    """Navigation properties with nested options in parentheses, separated by ``;``
    (reference 2.4): ``$select`` and ``$expand`` on single-valued ones; also ``$filter``,
    ``$orderby`` and ``$top`` on collection-valued ones. At most 15 ``$expand`` in all."""
    expansions = _parse_expand(text, schema, table)
    if _count(expansions) > MAX_EXPAND:
        raise query_error(f"The query has more than {MAX_EXPAND} $expand; at most 15 are allowed.")
    return expansions


def _count(expansions: list[Expansion] | tuple[Expansion, ...]) -> int:
    return sum(1 + _count(e.expand) for e in expansions)


def _parse_expand(text: str | None, schema: Schema, table: Table) -> list[Expansion]:
    if not text:
        return []
    expansions: list[Expansion] = []
    for part in split_top_level(text):
        nav, paren, rest = part.partition("(")
        nav = nav.strip()
        if paren and not rest.rstrip().endswith(")"):
            raise query_error(f"Syntax error in $expand: '{part}' lacks its closing ')'.")
        options = rest.rstrip()[:-1] if paren else ""
        single = table.navigation(nav)
        relation = None if single is not None else schema.collection(table, nav)
        if single is not None:
            column, entity_set = single
        elif relation is not None:
            column, entity_set = relation.column, relation.entity_set
        else:
            raise unknown_property(table, nav)
        target = schema.table(entity_set)
        if target is None:
            raise unknown_property(table, nav)
        allowed = _COLLECTION_OPTIONS if relation is not None else _SINGLE_OPTIONS
        values: dict[str, str] = {}
        for option in split_top_level(options, ";"):
            key, equals, value = option.partition("=")
            key = key.strip()
            if not equals or key not in allowed:
                raise query_error(
                    f"The query option '{key}' is not supported inside $expand of '{nav}'; "
                    f"use {', '.join(sorted(allowed))}."
                )
            if key in values:
                raise query_error(f"The query option '{key}' appears twice in $expand of '{nav}'.")
            values[key] = value.strip()
        top: int | None = None
        if "$top" in values:
            try:
                top = int(values["$top"])
            except ValueError:
                top = -1
            if top < 0:
                raise query_error("$top must be a non-negative integer.")
        expansions.append(
            Expansion(
                nav,
                entity_set,
                column,
                parse_select(values.get("$select"), target),
                many=relation is not None,
                where=parse_filter(values["$filter"], schema, target)
                if "$filter" in values
                else None,
                order=tuple(parse_orderby(values.get("$orderby"), schema, target)),
                top=top,
                expand=tuple(_parse_expand(values.get("$expand"), schema, target)),
            )
        )
    return expansions
