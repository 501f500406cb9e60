"""A ``$filter`` tree evaluated over one item. The dialect supplies how a property is read
(``get``) and how two values are made comparable (``comparable``: case, dates); the meaning of
the operators is OData's and the same for every service."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from sandbox.odata.syntax import Call, Lambda, Literal, Logical, Node, Not, Operand

Getter = Callable[[Any, str], Any]  # (item, property path) -> value
# (left operand, its value, right operand, its value) -> the two values to compare
Comparable = Callable[[Operand, Any, Operand, Any], tuple[Any, Any]]

_ORDERINGS: dict[str, Callable[[Any, Any], Any]] = {
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}

# The string functions, case-insensitive as both services compare strings.
_STRING_FUNCTIONS: dict[str, Callable[[str, str], bool]] = {
    "contains": lambda haystack, needle: needle in haystack,
    "startswith": str.startswith,
    "endswith": str.endswith,
}


def compare(op: str, left: Any, right: Any) -> bool:
    if op == "eq":
        return bool(left == right)
    if op == "ne":
        return bool(left != right)
    if left is None or right is None:
        return False  # OData: ordering comparisons with null are false
    try:
        return bool(_ORDERINGS[op](left, right))
    except TypeError:
        return False


def lookup(item: Any, path: str) -> Any:
    """The value at ``a/b/c`` in nested dicts; None where a step is missing or not an object."""
    value = item
    for part in path.split("/") if path else ():
        value = value.get(part) if isinstance(value, dict) else None
    return value


def evaluate(
    node: Node,
    item: Any,
    get: Getter,
    comparable: Comparable,
    scope: Mapping[str, Any] | None = None,
) -> bool:
    """Whether ``item`` passes ``node``; ``scope`` holds the lambda variables in force."""
    scope = scope or {}
    if isinstance(node, Logical):
        if node.op == "and":
            return evaluate(node.left, item, get, comparable, scope) and evaluate(
                node.right, item, get, comparable, scope
            )
        return evaluate(node.left, item, get, comparable, scope) or evaluate(
            node.right, item, get, comparable, scope
        )
    if isinstance(node, Not):
        return not evaluate(node.operand, item, get, comparable, scope)
    if isinstance(node, Lambda):
        elements = _value(node.collection, item, get, scope)
        if not isinstance(elements, list):
            return False
        return any(
            evaluate(node.body, item, get, comparable, {**scope, node.variable: element})
            for element in elements
        )
    if isinstance(node, Call):
        subject, needle = node.args
        value = _value(subject, item, get, scope)
        if not isinstance(value, str):
            return False
        text = str(_value(needle, item, get, scope)).casefold()
        return _STRING_FUNCTIONS[node.name](value.casefold(), text)
    left = _value(node.left, item, get, scope)
    right = _value(node.right, item, get, scope)
    return compare(node.op, *comparable(node.left, left, node.right, right))


def _value(operand: Operand, item: Any, get: Getter, scope: Mapping[str, Any]) -> Any:
    if isinstance(operand, Literal):
        return operand.value
    head, _, rest = operand.path.partition("/")
    if head in scope:
        return lookup(scope[head], rest)
    return get(item, operand.path)
