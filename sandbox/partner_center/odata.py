"""The OData subset the Referrals API documents (reference §1.2), evaluated over JSON dicts.

``$filter``: ``eq ne gt ge lt le``, ``and or not``, parentheses, string literals ('' escapes a
quote), unquoted GUIDs (real payloads use them, §1.1), unquoted or quoted ISO dates, numbers,
true/false/null, and ``collection/any(x: x/field eq ...)`` (used as ``team/any(t:t/email eq '…')``).
``$orderby``: ``createdDateTime`` / ``updatedDateTime`` ``asc|desc``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Predicate = Callable[[dict[str, Any], dict[str, Any]], bool]  # (item, lambda scope) -> bool

ORDERABLE = ("createdDateTime", "updatedDateTime")
MAX_FILTER_LENGTH = 4096


class ODataError(ValueError):
    """A query option we cannot read; the emulator answers 400 with this message."""


_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>'(?:[^']|'')*')
    | (?P<datetime>\d{4}-\d{2}-\d{2}
        (?:T\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:\d{2})?)?)(?![\w-])
    | (?P<guid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})
    | (?P<number>-?\d+(?:\.\d+)?)(?![\w-])
    | (?P<punct>[(),:/])
    | (?P<name>[A-Za-z_@$][\w.@$]*)
    )""",
    re.VERBOSE,
)

_COMPARISONS = {"eq", "ne", "gt", "ge", "lt", "le"}


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str


@dataclass(frozen=True)
class _Literal:
    value: Any


@dataclass(frozen=True)
class _Path:
    parts: tuple[str, ...]


@dataclass(frozen=True)
class _AnyPath(_Path):
    """``collection/any`` — the lambda follows."""


def tokenize(text: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise ODataError(f"cannot read $filter at position {pos}: {text[pos : pos + 20]!r}")
        kind = match.lastgroup or ""
        tokens.append(_Tok(kind, match.group(kind)))
        pos = match.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.pos = 0

    def peek(self, offset: int = 0) -> _Tok | None:
        index = self.pos + offset
        return self.tokens[index] if index < len(self.tokens) else None

    def take(self) -> _Tok:
        token = self.peek()
        if token is None:
            raise ODataError("$filter ends too early")
        self.pos += 1
        return token

    def at(self, text: str) -> bool:
        token = self.peek()
        return token is not None and token.text == text

    def expect(self, text: str) -> None:
        token = self.take()
        if token.text != text:
            raise ODataError(f"expected {text!r} in $filter, found {token.text!r}")

    def keyword(self, word: str) -> bool:
        token = self.peek()
        if token is not None and token.kind == "name" and token.text.lower() == word:
            self.pos += 1
            return True
        return False

    def parse(self) -> Predicate:
        predicate = self.or_expr()
        if self.peek() is not None:
            raise ODataError(f"unexpected {self.take().text!r} in $filter")
        return predicate

    def or_expr(self) -> Predicate:
        terms = [self.and_expr()]
        while self.keyword("or"):
            terms.append(self.and_expr())
        if len(terms) == 1:
            return terms[0]
        return lambda item, scope: any(term(item, scope) for term in terms)

    def and_expr(self) -> Predicate:
        terms = [self.unary()]
        while self.keyword("and"):
            terms.append(self.unary())
        if len(terms) == 1:
            return terms[0]
        return lambda item, scope: all(term(item, scope) for term in terms)

    def unary(self) -> Predicate:
        if self.keyword("not"):
            inner = self.unary()
            return lambda item, scope: not inner(item, scope)
        token = self.peek()
        if token is not None and token.text == "(":
            self.take()
            inner = self.or_expr()
            self.expect(")")
            return inner
        return self.comparison()

    def operand(self) -> _Literal | _Path:
        token = self.take()
        if token.kind == "string":
            return _Literal(token.text[1:-1].replace("''", "'"))
        if token.kind == "guid":
            return _Literal(token.text)
        if token.kind == "datetime":
            return _Literal(_parse_datetime(token.text))
        if token.kind == "number":
            return _Literal(float(token.text) if "." in token.text else int(token.text))
        if token.kind == "name":
            word = token.text
            if word.lower() in ("true", "false"):
                return _Literal(word.lower() == "true")
            if word.lower() == "null":
                return _Literal(None)
            parts = [word]
            while self.at("/"):
                self.take()
                segment = self.take()
                if segment.kind != "name":
                    raise ODataError(f"expected a property name after '/', found {segment.text!r}")
                if segment.text.lower() == "any" and self.at("("):
                    return _AnyPath(tuple(parts))
                parts.append(segment.text)
            return _Path(tuple(parts))
        raise ODataError(f"expected a property or a literal, found {token.text!r}")

    def comparison(self) -> Predicate:
        left = self.operand()
        if isinstance(left, _AnyPath):
            return self.lambda_any(left)
        token = self.take()
        op = token.text.lower()
        if token.kind != "name" or op not in _COMPARISONS:
            raise ODataError(f"expected a comparison operator, found {token.text!r}")
        right = self.operand()
        if isinstance(right, _AnyPath):
            raise ODataError("any() cannot be compared")

        def check(item: dict[str, Any], scope: dict[str, Any]) -> bool:
            return compare(op, resolve(left, item, scope), resolve(right, item, scope))

        return check

    def lambda_any(self, collection: _Path) -> Predicate:
        self.expect("(")
        variable = self.take()
        if variable.kind != "name":
            raise ODataError("expected a lambda variable in any(...)")
        self.expect(":")
        body = self.or_expr()
        self.expect(")")
        name = variable.text

        def check(item: dict[str, Any], scope: dict[str, Any]) -> bool:
            elements = resolve(collection, item, scope)
            if not isinstance(elements, list):
                return False
            return any(body(item, {**scope, name: element}) for element in elements)

        return check


def resolve(operand: _Literal | _Path, item: dict[str, Any], scope: dict[str, Any]) -> Any:
    if isinstance(operand, _Literal):
        return operand.value
    head, *rest = operand.parts
    value: Any = scope[head] if head in scope else item.get(head)
    for part in rest:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def compare(op: str, left: Any, right: Any) -> bool:
    left, right = _comparable(left, right)
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if left is None or right is None:
        return False  # OData: ordering comparisons with null are false
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


def _comparable(left: Any, right: Any) -> tuple[Any, Any]:
    # Dates: a datetime literal (or a quoted one — accepted literal syntax is UNCERTAIN, §1.2)
    # against an ISO string property compares as instants.
    if isinstance(left, datetime) or isinstance(right, datetime):
        return _as_datetime(left), _as_datetime(right)
    if isinstance(left, str) and isinstance(right, str):
        if _looks_like_datetime(left) and _looks_like_datetime(right):
            return _as_datetime(left), _as_datetime(right)
        # GUIDs, enum values and e-mail addresses compare without regard to case (UNCERTAIN:
        # the service's collation is undocumented; case-insensitive is the tolerant choice).
        return left.casefold(), right.casefold()
    return left, right


_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}(T.*)?$")


def _looks_like_datetime(value: str) -> bool:
    return bool(_ISO.match(value))


def _as_datetime(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return _parse_datetime(value)
        except ODataError:
            return value
    return value


def _parse_datetime(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ODataError(f"not a date/time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_filter(text: str) -> Callable[[dict[str, Any]], bool]:
    """Compile ``$filter`` into a predicate over referral dicts."""
    if len(text) > MAX_FILTER_LENGTH:
        raise ODataError(f"$filter is longer than {MAX_FILTER_LENGTH} characters")
    try:
        predicate = _Parser(text).parse()
    except RecursionError:
        raise ODataError("$filter is nested too deeply") from None
    return lambda item: predicate(item, {})


def parse_orderby(text: str | None) -> list[tuple[str, bool]]:
    """``$orderby`` as (property, descending) pairs; only the documented properties (§1.2)."""
    keys: list[tuple[str, bool]] = []
    for clause in (text or "").split(","):
        words = clause.split()
        if not words:
            continue
        if len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
            raise ODataError(f"cannot read $orderby clause {clause.strip()!r}")
        name = next((p for p in ORDERABLE if p.lower() == words[0].lower()), None)
        if name is None:
            raise ODataError(f"$orderby supports {' and '.join(ORDERABLE)}, not {words[0]!r}")
        keys.append((name, len(words) == 2 and words[1].lower() == "desc"))
    return keys


def parse_select(text: str | None) -> list[str] | None:
    if not text:
        return None
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", name):
            raise ODataError(f"$select takes top-level property names, not {name!r}")
    return names


def parse_top(text: str | None) -> int | None:
    if text is None or text == "":
        return None
    if not text.isdigit():
        raise ODataError(f"$top must be a non-negative integer, not {text!r}")
    return int(text)
