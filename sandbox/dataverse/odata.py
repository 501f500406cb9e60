"""The OData subset the emulator understands: ``$filter`` (parsed and evaluated), ``$select``,
``$orderby`` and ``$expand`` (reference section 2).

Filters are parsed into a small tree, checked against the table's schema (unknown property or an
operand of the wrong type → 400, as Dataverse does) and then evaluated per row. String
comparisons are case-insensitive (reference 2.2).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

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

Row = dict[str, Any]

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>'(?:[^']|'')*')
  | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2}\b)
  | (?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_./]*)
  | (?P<punct>[(),])
    """,
    re.VERBOSE,
)
COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}
_OP_KIND = {
    "eq": "Equal",
    "ne": "NotEqual",
    "gt": "GreaterThan",
    "ge": "GreaterThanOrEqual",
    "lt": "LessThan",
    "le": "LessThanOrEqual",
}
STRING_FUNCTIONS = {"contains", "startswith", "endswith"}


@dataclass(frozen=True)
class Token:
    kind: str
    text: str


@dataclass(frozen=True)
class Literal:
    value: Any
    edm: str  # Edm.String, Edm.Guid, Edm.Date, Edm.DateTimeOffset, Edm.Decimal, Edm.Boolean, null


@dataclass(frozen=True)
class Prop:
    path: str  # a wire name, or nav/wire-name through a single-valued navigation property


@dataclass(frozen=True)
class Compare:
    op: str
    left: Literal | Prop
    right: Literal | Prop


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple[Literal | Prop, ...]


@dataclass(frozen=True)
class Logical:
    op: str  # "and" | "or"
    left: Node
    right: Node


@dataclass(frozen=True)
class Not:
    operand: Node


Node = Compare | Call | Logical | Not


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise query_error(f"Syntax error at position {pos} in '{text}'.")
        pos = match.end()
        kind = match.lastgroup or ""
        if kind != "ws":
            tokens.append(Token(kind, match.group()))
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.pos = 0

    def peek(self) -> Token | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> Token:
        token = self.peek()
        if token is None:
            raise query_error(f"Syntax error: unexpected end of '{self.text}'.")
        self.pos += 1
        return token

    def expect(self, text: str) -> None:
        token = self.take()
        if token.text != text:
            raise query_error(f"Syntax error: expected '{text}' but found '{token.text}'.")

    def at_word(self, *words: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "ident" and token.text in words

    def parse(self) -> Node:
        node = self.parse_or()
        if self.peek() is not None:
            raise query_error(f"Syntax error at '{self.take().text}' in '{self.text}'.")
        return node

    def parse_or(self) -> Node:
        node = self.parse_and()
        while self.at_word("or"):
            self.take()
            node = Logical("or", node, self.parse_and())
        return node

    def parse_and(self) -> Node:
        node = self.parse_not()
        while self.at_word("and"):
            self.take()
            node = Logical("and", node, self.parse_not())
        return node

    def parse_not(self) -> Node:
        if self.at_word("not"):
            self.take()
            return Not(self.parse_not())
        return self.parse_primary()

    def parse_primary(self) -> Node:
        token = self.peek()
        if token is not None and token.text == "(":
            self.take()
            node = self.parse_or()
            self.expect(")")
            return node
        if token is not None and token.kind == "ident" and token.text in STRING_FUNCTIONS:
            self.take()
            self.expect("(")
            args = [self.parse_operand()]
            while self.peek() is not None and self.peek() == Token("punct", ","):
                self.take()
                args.append(self.parse_operand())
            self.expect(")")
            return Call(token.text, tuple(args))
        left = self.parse_operand()
        op = self.take()
        if op.kind != "ident" or op.text not in COMPARISONS:
            raise query_error(f"Syntax error: expected a comparison operator, found '{op.text}'.")
        return Compare(op.text, left, self.parse_operand())

    def parse_operand(self) -> Literal | Prop:
        token = self.take()
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
        if token.kind == "ident":
            if token.text in ("true", "false"):
                return Literal(token.text == "true", "Edm.Boolean")
            if token.text == "null":
                return Literal(None, "null")
            if token.text.startswith("Microsoft.Dynamics.CRM."):
                raise query_error(f"The emulator does not implement the function '{token.text}'.")
            return Prop(token.text)
        raise query_error(f"Syntax error: unexpected '{token.text}'.")


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
    else:
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
    node = _Parser(text).parse()
    check(node, schema, table)
    return node


def parse_expression(text: str) -> Node:
    """A ``$filter`` tree not checked against a table (metadata collections check their own)."""
    return _Parser(text).parse()


def properties(node: Node) -> list[str]:
    """The property paths a filter reads, in order."""
    if isinstance(node, Logical):
        return [*properties(node.left), *properties(node.right)]
    if isinstance(node, Not):
        return properties(node.operand)
    sides = node.args if isinstance(node, Call) else (node.left, node.right)
    return [side.path for side in sides if isinstance(side, Prop)]


Getter = Callable[[Row, str], Any]


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


def _operand(side: Literal | Prop, other: Literal | Prop, row: Row, get: Getter) -> Any:
    if isinstance(side, Literal):
        value = side.value
        if isinstance(value, str):
            return value.casefold()
        return value
    return _normalise(get(row, side.path), other if isinstance(other, Literal) else None)


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if left is None or right is None:
        return False  # ordering against null is never true
    try:
        if op == "gt":
            return bool(left > right)
        if op == "ge":
            return bool(left >= right)
        if op == "lt":
            return bool(left < right)
        return bool(left <= right)
    except TypeError:
        return False


def evaluate(node: Node, row: Row, get: Getter) -> bool:
    if isinstance(node, Logical):
        if node.op == "and":
            return evaluate(node.left, row, get) and evaluate(node.right, row, get)
        return evaluate(node.left, row, get) or evaluate(node.right, row, get)
    if isinstance(node, Not):
        return not evaluate(node.operand, row, get)
    if isinstance(node, Call):
        prop, literal = node.args
        assert isinstance(prop, Prop) and isinstance(literal, Literal)
        value = get(row, prop.path)
        if not isinstance(value, str):
            return False
        haystack, needle = value.casefold(), str(literal.value).casefold()
        if node.name == "contains":
            return needle in haystack
        if node.name == "startswith":
            return haystack.startswith(needle)
        return haystack.endswith(needle)
    left = _operand(node.left, node.right, row, get)
    right = _operand(node.right, node.left, row, get)
    return _compare(node.op, left, right)


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
