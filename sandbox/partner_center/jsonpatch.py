"""JSON Patch (RFC 6902) limited to what Partner Center accepts: ``replace`` and ``add`` (§1.1)."""

from __future__ import annotations

from typing import Any

from .errors import invalid

SUPPORTED_OPS = ("replace", "add")


def split_pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or not path.startswith("/"):
        raise invalid(f"'{path}' is not a JSON Pointer path.", "path")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def apply_patch(document: dict[str, Any], operations: Any) -> None:
    """Apply ``operations`` to ``document`` in place (callers pass a copy: all or nothing)."""
    if not isinstance(operations, list) or not operations:
        raise invalid("The request body must be a non-empty JSON Patch array.")
    for operation in operations:
        if not isinstance(operation, dict):
            raise invalid("Each JSON Patch operation must be an object.")
        op = operation.get("op")
        if op not in SUPPORTED_OPS:
            raise invalid(f"The operation '{op}' is not supported; use 'replace' or 'add'.", "op")
        if "value" not in operation:
            raise invalid(
                f"The '{op}' operation at '{operation.get('path')}' needs a value.", "value"
            )
        _apply(document, str(op), split_pointer(operation.get("path")), operation["value"])


def _apply(document: dict[str, Any], op: str, parts: list[str], value: Any) -> None:
    parent: Any = document
    for depth, part in enumerate(parts[:-1]):
        if op == "add" and parts[depth + 1 :] == ["-"] and _absent(parent, part):
            # UNCERTAIN: RFC 6902 refuses `add` to `/registrations/-` while `registrations` does
            # not exist, but the connector's deal registration is exactly that operation on a
            # referral without registrations yet (DealRegistration in its swagger, reference
            # dataverse-push-and-webhook-trust.md §3), so an absent array is taken as empty.
            parent[part] = []
        parent = _child(parent, part, parts)
    last = parts[-1]
    if isinstance(parent, dict):
        # RFC 6902 wants the member to exist for `replace`; the service's behaviour is not
        # documented, and clearing/setting an absent optional field is what a sync does, so the
        # emulator treats it like `add` (UNCERTAIN, tolerant).
        parent[last] = value
        return
    if isinstance(parent, list):
        if op == "add" and last == "-":
            parent.append(value)
            return
        index = _index(last, len(parent) + (1 if op == "add" else 0), parts)
        if op == "add":
            parent.insert(index, value)
        else:
            parent[index] = value
        return
    raise invalid(f"The path '/{'/'.join(parts)}' does not exist.", "path")


def _absent(node: Any, part: str) -> bool:
    return isinstance(node, dict) and node.get(part) is None


def _child(node: Any, part: str, parts: list[str]) -> Any:
    if isinstance(node, dict) and isinstance(node.get(part), dict | list):
        return node[part]
    if isinstance(node, list):
        return node[_index(part, len(node), parts)]
    raise invalid(f"The path '/{'/'.join(parts)}' does not exist.", "path")


def _index(part: str, size: int, parts: list[str]) -> int:
    if not part.isdigit() or int(part) >= size:
        raise invalid(f"The path '/{'/'.join(parts)}' does not exist.", "path")
    return int(part)
