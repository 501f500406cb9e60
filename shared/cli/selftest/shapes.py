"""The shape of an HTTP answer, and how a real answer's shape differs from the emulator's (pure).

A shape is what a client can depend on without depending on data: the status code, a few headers
(by presence, or by value where the value is protocol and not data: ``OData-Version``,
``Preference-Applied``, the media type) and the JSON property names, two levels deep, with a
collection's ``value[0]`` treated like a single entity. Values are never part of a shape, so a
report of differences holds no customer data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

HeaderRule = Literal["presence", "value", "media type"]
# The headers clients act on (reference: dataverse-web-api §1-§4 for ETag, OData-EntityId,
# Preference-Applied and OData-Version; both references' throttling sections for Retry-After).
COMPARED_HEADERS: dict[str, HeaderRule] = {
    "etag": "presence",
    "odata-version": "value",
    "preference-applied": "value",
    "retry-after": "presence",
    "odata-entityid": "presence",
    "location": "presence",
    "content-type": "media type",
}
PRESENT = "present"
PROPERTY_DEPTH = 2
_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")

DifferenceKind = Literal[
    "status", "header", "unknown to the emulator", "missing in the real service", "not replayed"
]
# How each kind reads in the table's "real" / "emulator" columns when a side has nothing.
ABSENT = "-"


@dataclass(frozen=True)
class Shape:
    status: int
    headers: Mapping[str, str]  # compared header (lower case) → PRESENT or its value
    properties: frozenset[str]


@dataclass(frozen=True)
class Difference:
    """One place where the real service answered in another shape than the emulator."""

    step: str
    request: str  # e.g. "GET /v1.0/engagements/referrals/{id}"
    kind: DifferenceKind
    item: str  # "status", a header name or a property path
    real: str = ABSENT
    emulator: str = ABSENT


def header_shape(headers: Mapping[str, str]) -> dict[str, str]:
    """The compared headers of an answer, by their rule."""
    lowered = {k.lower(): v for k, v in headers.items()}
    shape: dict[str, str] = {}
    for name, rule in COMPARED_HEADERS.items():
        value = lowered.get(name)
        if value is None:
            continue
        if rule == "presence":
            shape[name] = PRESENT
        elif rule == "media type":
            shape[name] = value.split(";")[0].strip().lower()
        else:
            shape[name] = ",".join(part.strip() for part in value.split(","))
    return shape


def property_paths(body: Any, *, depth: int = PROPERTY_DEPTH) -> frozenset[str]:
    """JSON property names as dotted paths, ``depth`` levels deep; arrays of objects by their
    first element (``team[0].email``). The collection wrapper's ``value`` does not use up a
    level: ``value[0]`` is described as deep as a single entity would be."""
    found: set[str] = set()
    if isinstance(body, Mapping):
        _walk(body, "", depth, found, root=True)
    elif isinstance(body, list) and body and isinstance(body[0], Mapping):
        _walk(body[0], "[0]", depth, found)
    return frozenset(found)


def _walk(
    node: Mapping[str, Any], prefix: str, depth: int, found: set[str], *, root: bool = False
) -> None:
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        found.add(path)
        wrapper = root and key == "value"
        below = depth if wrapper else depth - 1
        if below <= 0:
            continue
        if isinstance(value, Mapping):
            _walk(value, path, below, found)
        elif isinstance(value, list) and value and isinstance(value[0], Mapping):
            _walk(value[0], f"{path}[0]", below, found)


def shape_of(status: int, headers: Mapping[str, str], body: Any) -> Shape:
    return Shape(status, header_shape(headers), property_paths(body))


def request_label(method: str, path: str, query_names: list[str] | tuple[str, ...] = ()) -> str:
    """A request without its data: ids become ``{id}``, only the query options' names stay."""
    label = f"{method} {_GUID.sub('{id}', path)}"
    names = sorted({n for n in query_names if n})
    return f"{label}?{'&'.join(names)}" if names else label


def compare_shapes(step: str, request: str, real: Shape, emulator: Shape) -> list[Difference]:
    """Every difference between the real answer's shape and the emulator's, status first, then
    headers, then properties the emulator does not know and properties the real service left
    out (each list sorted, so the report reads the same on every run)."""
    found: list[Difference] = []
    if real.status != emulator.status:
        found.append(
            Difference(step, request, "status", "status", str(real.status), str(emulator.status))
        )
    for name in sorted(set(real.headers) | set(emulator.headers)):
        mine, theirs = real.headers.get(name), emulator.headers.get(name)
        if mine != theirs:
            found.append(
                Difference(step, request, "header", name, mine or ABSENT, theirs or ABSENT)
            )
    for path in sorted(real.properties - emulator.properties):
        found.append(Difference(step, request, "unknown to the emulator", path, PRESENT, ABSENT))
    for path in sorted(emulator.properties - real.properties):
        found.append(
            Difference(step, request, "missing in the real service", path, ABSENT, PRESENT)
        )
    return found


def grouped(differences: list[Difference]) -> list[dict[str, Any]]:
    """One row per distinct difference, with the steps it was seen in (the engine asks the
    same question several times; the report says it once)."""
    rows: dict[tuple[str, str, str, str, str], dict[str, Any]] = {}
    for d in differences:
        key = (d.request, d.kind, d.item, d.real, d.emulator)
        row = rows.setdefault(
            key,
            {
                "request": d.request,
                "kind": d.kind,
                "item": d.item,
                "real": d.real,
                "emulator": d.emulator,
                "steps": [],
                "count": 0,
            },
        )
        if d.step not in row["steps"]:
            row["steps"].append(d.step)
        row["count"] += 1
    return list(rows.values())


def summarize(differences: list[Difference]) -> dict[str, int]:
    """How many differences of each kind (every kind listed, zeros included)."""
    kinds: tuple[DifferenceKind, ...] = (
        "status",
        "header",
        "unknown to the emulator",
        "missing in the real service",
        "not replayed",
    )
    return {kind: sum(d.kind == kind for d in differences) for kind in kinds}


__all__ = [
    "COMPARED_HEADERS",
    "PRESENT",
    "Difference",
    "DifferenceKind",
    "Shape",
    "compare_shapes",
    "grouped",
    "header_shape",
    "property_paths",
    "request_label",
    "shape_of",
    "summarize",
]
