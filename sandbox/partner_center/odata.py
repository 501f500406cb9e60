"""The OData subset the Referrals API documents (reference §1.2), evaluated over JSON dicts.

``$filter``: ``eq ne gt ge lt le``, ``and or not``, parentheses, string literals ('' escapes a
quote), unquoted GUIDs (real payloads use them, §1.1), unquoted or quoted ISO dates, numbers,
true/false/null, and ``collection/any(x: x/field eq ...)`` (used as ``team/any(t:t/email eq '…')``).
``$orderby``: ``createdDateTime`` / ``updatedDateTime`` ``asc|desc``.

The filter is read and evaluated by the shared engine (``sandbox.odata``); this module holds
Partner Center's dialect: its tokens and literals, lambdas, keywords in any case, its messages.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sandbox.odata import Dialect, Literal, Operand, Token, evaluate, lookup, parse

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


def _literal(token: Token) -> Literal | None:
    if token.kind == "string":
        return Literal(token.text[1:-1].replace("''", "'"), "Edm.String")
    if token.kind == "guid":
        return Literal(token.text, "Edm.Guid")
    if token.kind == "datetime":
        return Literal(_parse_datetime(token.text), "Edm.DateTimeOffset")
    if token.kind == "number":
        return Literal(float(token.text) if "." in token.text else int(token.text), "Edm.Decimal")
    word = token.text.lower() if token.kind == "name" else ""
    if word in ("true", "false"):
        return Literal(word == "true", "Edm.Boolean")
    if word == "null":
        return Literal(None, "null")
    return None


DIALECT = Dialect(
    tokens=_TOKEN,
    literal=_literal,
    error=ODataError,
    messages={
        "unreadable": "cannot read $filter at position {pos}: {snippet!r}",
        "ends": "$filter ends too early",
        "expected": "expected {expected!r} in $filter, found {found!r}",
        "trailing": "unexpected {found!r} in $filter",
        "operator": "expected a comparison operator, found {found!r}",
        "operand": "expected a property or a literal, found {found!r}",
        "path_segment": "expected a property name after '/', found {found!r}",
        "lambda_variable": "expected a lambda variable in any(...)",
        "lambda_compared": "any() cannot be compared",
    },
    lambdas=True,
    ignore_case=True,
)


def _comparable(_left: Operand, left: Any, _right: Operand, right: Any) -> tuple[Any, Any]:
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
        node = parse(text.rstrip(), DIALECT)
    except RecursionError:
        raise ODataError("$filter is nested too deeply") from None
    return lambda item: evaluate(node, item, lookup, _comparable)


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
