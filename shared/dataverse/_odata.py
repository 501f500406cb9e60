"""OData query building for the Dataverse Web API (reference section 2).

Values never become query text by string formatting: every literal goes through ``literal()``,
which quotes strings and doubles their single quotes (reference 2.2), so a quote in a customer
name can never change a filter. Column names are checked against Dataverse's logical-name shape.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import TypeAlias
from uuid import UUID

LiteralValue: TypeAlias = str | int | float | bool | Decimal | UUID | date | datetime | Enum | None

# A logical name, or one hop through a single-valued navigation property (``nav/column``).
_PROPERTY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:/[A-Za-z_][A-Za-z0-9_]*)?$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_EXPAND = 15  # $expand per query, nested ones included (reference 0, 2.4)
_ORDER = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_/]*)(?:\s+(?P<dir>asc|desc))?$")


def check_name(name: str, *, path: bool = False) -> str:
    """``name`` if it is a valid property name; a ValueError otherwise (never query text)."""
    if not (_PROPERTY if path else _NAME).match(name):
        raise ValueError(f"not a Dataverse property name: {name!r}")
    return name


def literal(value: LiteralValue) -> str:
    """The OData literal for a Python value (reference 2.2)."""
    if isinstance(value, Enum):
        value = value.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float | Decimal):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("NaN and infinity have no OData literal")
        return format(value, "f") if isinstance(value, Decimal) else repr(value)
    if isinstance(value, UUID):
        return str(value)  # GUID literals are not quoted
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("datetimes in filters must be timezone-aware (Dataverse stores UTC)")
        # DateTimeOffset literal, unquoted (reference 2.2, UNCERTAIN-minor but widely used)
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()  # Edm.Date for DateOnly columns
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no OData literal for {type(value).__name__}")


@dataclass(frozen=True)
class Filter:
    """A ``$filter`` expression; combine with ``&``, ``|`` and ``~``."""

    text: str

    def __and__(self, other: Filter) -> Filter:
        return Filter(f"({self.text}) and ({other.text})")

    def __or__(self, other: Filter) -> Filter:
        return Filter(f"({self.text}) or ({other.text})")

    def __invert__(self) -> Filter:
        return Filter(f"not ({self.text})")

    def __str__(self) -> str:
        return self.text


def _compare(op: str, column: str, value: LiteralValue) -> Filter:
    return Filter(f"{check_name(column, path=True)} {op} {literal(value)}")


def eq(column: str, value: LiteralValue) -> Filter:
    """``column eq value``; ``None`` tests for null. Pass a ``UUID`` for lookups (_x_value)."""
    return _compare("eq", column, value)


def ne(column: str, value: LiteralValue) -> Filter:
    return _compare("ne", column, value)


def gt(column: str, value: LiteralValue) -> Filter:
    return _compare("gt", column, value)


def ge(column: str, value: LiteralValue) -> Filter:
    return _compare("ge", column, value)


def lt(column: str, value: LiteralValue) -> Filter:
    return _compare("lt", column, value)


def le(column: str, value: LiteralValue) -> Filter:
    return _compare("le", column, value)


def _function(name: str, column: str, text: str) -> Filter:
    return Filter(f"{name}({check_name(column, path=True)},{literal(text)})")


def contains(column: str, text: str) -> Filter:
    return _function("contains", column, text)


def startswith(column: str, text: str) -> Filter:
    return _function("startswith", column, text)


def endswith(column: str, text: str) -> Filter:
    return _function("endswith", column, text)


def all_of(*filters: Filter) -> Filter:
    """Every filter holds (``and``)."""
    if not filters:
        raise ValueError("all_of needs at least one filter")
    result = filters[0]
    for item in filters[1:]:
        result = result & item
    return result


def any_of(*filters: Filter) -> Filter:
    """At least one filter holds (``or``)."""
    if not filters:
        raise ValueError("any_of needs at least one filter")
    result = filters[0]
    for item in filters[1:]:
        result = result | item
    return result


@dataclass(frozen=True)
class Expand:
    """``$expand`` of a navigation property with its nested options (reference 2.4).

    Single-valued (a lookup, e.g. ``Expand("parentaccountid", ["name"])``): the related row or
    null; only ``select`` and ``expand`` apply. Collection-valued (a one-to-many relationship,
    e.g. ``Expand("cosell_opportunity_cosell_solutions", ["cosell_solutionidentifier"],
    filter=eq(...), orderby=["cosell_name asc"], top=50)``): a JSON array of rows, empty when
    none; ``filter``,
    ``orderby`` and ``top`` apply to that array. Names are validated and the filter comes from
    the safe helpers, exactly as for a top-level query.
    """

    navigation: str
    select: Sequence[str] = ()
    filter: Filter | None = None
    orderby: Sequence[str] = ()
    top: int | None = None
    expand: Sequence[str | Expand] = ()

    def options(self) -> list[str]:
        """The nested options, in the order ``$select;$filter;$orderby;$top;$expand``."""
        params = query_params(
            select=self.select,
            filter=self.filter,
            orderby=self.orderby,
            top=self.top,
            expand=self.expand,
        )
        order = ("$select", "$filter", "$orderby", "$top", "$expand")
        return [f"{key}={params[key]}" for key in order if key in params]

    def __str__(self) -> str:
        nav = check_name(self.navigation)
        options = self.options()
        # Nested options sit in parentheses separated by ";" (reference 2.4).
        return f"{nav}({';'.join(options)})" if options else nav


def _count_expands(items: Sequence[str | Expand]) -> int:
    return sum(1 + _count_expands(i.expand) if isinstance(i, Expand) else 1 for i in items)


def query_params(
    *,
    select: Sequence[str] | None = None,
    filter: Filter | None = None,
    orderby: Sequence[str] | None = None,
    expand: Sequence[str | Expand] | None = None,
    top: int | None = None,
) -> dict[str, str]:
    """The query string options of a read, validated."""
    params: dict[str, str] = {}
    if select:
        params["$select"] = ",".join(check_name(c) for c in select)
    if filter is not None:
        if not isinstance(filter, Filter):
            raise TypeError("filter must be built with the Filter helpers (eq, contains, ...)")
        params["$filter"] = filter.text
    if orderby:
        for item in orderby:
            if not _ORDER.match(item.strip()):
                raise ValueError(f"not an $orderby item: {item!r} (expected 'column [asc|desc]')")
        params["$orderby"] = ",".join(item.strip() for item in orderby)
    if expand:
        if _count_expands(expand) > MAX_EXPAND:
            raise ValueError(f"at most {MAX_EXPAND} $expand per query (reference 2.4)")
        params["$expand"] = ",".join(
            str(item) if isinstance(item, Expand) else check_name(item) for item in expand
        )
    if top is not None:
        if top < 0:
            raise ValueError("top must be >= 0")
        params["$top"] = str(top)
    return params


def bind(entity_set: str, row_id: UUID | str) -> str:
    """The ``@odata.bind`` value that points a lookup at a row (reference 4.5)."""
    return f"/{check_name(entity_set)}({UUID(str(row_id))})"


def lookup(navigation: str, entity_set: str, row_id: UUID | str | None) -> dict[str, str | None]:
    """``{"<navigation>@odata.bind": "/<set>(<id>)"}``; ``None`` clears the lookup (4.5)."""
    key = f"{check_name(navigation)}@odata.bind"
    return {key: None if row_id is None else bind(entity_set, row_id)}


def row_path(entity_set: str, row_id: UUID | str) -> str:
    """``opportunities(<guid>)``; the id is parsed as a GUID so it cannot carry a path."""
    return f"{check_name(entity_set)}({UUID(str(row_id))})"
