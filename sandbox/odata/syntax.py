"""The words and the tree of a ``$filter``: what the parser builds and the evaluator reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Token:
    kind: str  # a dialect's token group: "string", "number", "name", "punct", ...
    text: str


@dataclass(frozen=True)
class Literal:
    value: Any
    edm: str  # Edm.String, Edm.Guid, Edm.Date, Edm.DateTimeOffset, Edm.Decimal, Edm.Boolean, null


@dataclass(frozen=True)
class Prop:
    path: str  # a property name, or names joined by "/" (a navigation or a nested object)


Operand = Literal | Prop


@dataclass(frozen=True)
class Compare:
    op: str  # eq ne gt ge lt le
    left: Operand
    right: Operand


@dataclass(frozen=True)
class Call:
    name: str  # contains startswith endswith
    args: tuple[Operand, ...]


@dataclass(frozen=True)
class Logical:
    op: str  # "and" | "or"
    left: Node
    right: Node


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class Lambda:
    """``collection/any(variable: body)``: true when the body holds for one element."""

    collection: Prop
    variable: str
    body: Node


Node = Compare | Call | Logical | Not | Lambda


def properties(node: Node) -> list[str]:
    """The property paths a filter reads, in order (inside a lambda, those not of its element)."""
    if isinstance(node, Logical):
        return [*properties(node.left), *properties(node.right)]
    if isinstance(node, Not):
        return properties(node.operand)
    if isinstance(node, Lambda):
        inner = [p for p in properties(node.body) if p.partition("/")[0] != node.variable]
        return [node.collection.path, *inner]
    sides = node.args if isinstance(node, Call) else (node.left, node.right)
    return [side.path for side in sides if isinstance(side, Prop)]
