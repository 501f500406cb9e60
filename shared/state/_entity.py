"""Turning our records into Table entities and back, within the service's limits.

Azurite does not enforce the 252-property or 1 MiB entity limits, and the SDK does not check
forbidden key characters, so we check them here and fail with a message that names the problem
instead of a service error in production (reference: azure-functions-platform §0.4, §5).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from azure.data.tables import EdmType, EntityProperty

from shared.errors import EntityTooLargeError, InvalidKeyError

MAX_KEY_CHARS = 1024
MAX_PROPERTIES = 252  # 255 minus PartitionKey, RowKey and Timestamp
MAX_ENTITY_BYTES = 1024 * 1024
MAX_PROPERTY_BYTES = 64 * 1024
# A chunk of 16,384 code points is at most 32,768 UTF-16 units = 64 KiB, whatever the text.
JSON_CHUNK_CHARS = 16 * 1024
_CHUNK_SUFFIX = "__part"
_FORBIDDEN_KEY = re.compile(r"[/\\#?\x00-\x1f\x7f-\x9f]")


def check_key(value: str, *, what: str) -> str:
    """Return ``value`` if it is a valid PartitionKey/RowKey, else raise ``InvalidKeyError``."""
    if not value:
        raise InvalidKeyError(f"{what} is empty")
    if len(value) > MAX_KEY_CHARS:
        raise InvalidKeyError(f"{what} is {len(value)} characters, more than {MAX_KEY_CHARS}")
    bad = _FORBIDDEN_KEY.search(value)
    if bad:
        raise InvalidKeyError(
            f"{what} {value[:64]!r} contains {bad.group()!r}; Table keys may not contain "
            "'/', '\\', '#', '?' or control characters"
        )
    return value


def to_entity(
    partition_key: str,
    row_key: str,
    values: Mapping[str, Any],
    *,
    json_fields: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Build an entity; ``json_fields`` are stored as JSON text split into 64 KiB parts."""
    entity: dict[str, Any] = {
        "PartitionKey": check_key(partition_key, what="PartitionKey"),
        "RowKey": check_key(row_key, what="RowKey"),
    }
    for name, value in values.items():
        if value is None:
            continue  # absent and null read back the same; saves space
        if name in json_fields:
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)
            for index, start in enumerate(range(0, len(text), JSON_CHUNK_CHARS)):
                part = name if index == 0 else f"{name}{_CHUNK_SUFFIX}{index}"
                entity[part] = text[start : start + JSON_CHUNK_CHARS]
        elif isinstance(value, bool | float | datetime):
            entity[name] = value
        elif isinstance(value, int):
            # A plain int is written as Int32 and overflows past 2**31: store every int as Int64.
            entity[name] = EntityProperty(value, EdmType.INT64)
        elif isinstance(value, str):
            entity[name] = value
        else:
            raise TypeError(f"property {name}: cannot store a {type(value).__name__}")
    check_size(entity)
    return entity


def from_entity(
    entity: Mapping[str, Any], *, json_fields: frozenset[str] = frozenset()
) -> dict[str, Any]:
    """The stored values by name (keys and metadata dropped, JSON parts joined and parsed)."""
    values: dict[str, Any] = {}
    for name, value in entity.items():
        if name in ("PartitionKey", "RowKey", "Timestamp") or _CHUNK_SUFFIX in name:
            continue
        if isinstance(value, EntityProperty):
            value = value.value
        if name in json_fields:
            parts = [value]
            index = 1
            while (more := entity.get(f"{name}{_CHUNK_SUFFIX}{index}")) is not None:
                parts.append(more)
                index += 1
            value = json.loads("".join(parts))
        values[name] = value
    return values


def check_size(entity: Mapping[str, Any]) -> None:
    """Raise ``EntityTooLargeError`` if Azure would refuse this entity."""
    names = [n for n in entity if n not in ("PartitionKey", "RowKey", "Timestamp")]
    if len(names) > MAX_PROPERTIES:
        raise EntityTooLargeError(
            f"entity {entity['PartitionKey']}/{entity['RowKey']} has {len(names)} properties, "
            f"more than Table Storage's {MAX_PROPERTIES}"
        )
    total = 4 + _utf16_bytes(entity["PartitionKey"]) + _utf16_bytes(entity["RowKey"])
    for name in names:
        size = _value_bytes(entity[name])
        if size > MAX_PROPERTY_BYTES:
            raise EntityTooLargeError(
                f"property {name} is {size} bytes, more than Table Storage's "
                f"{MAX_PROPERTY_BYTES} bytes per property"
            )
        total += 8 + _utf16_bytes(name) + size
    if total > MAX_ENTITY_BYTES:
        raise EntityTooLargeError(
            f"entity {entity['PartitionKey']}/{entity['RowKey']} is {total} bytes, more than "
            f"Table Storage's {MAX_ENTITY_BYTES} bytes per entity"
        )


def _utf16_bytes(text: str) -> int:
    return len(text.encode("utf-16-le"))


def _value_bytes(value: Any) -> int:
    # Sizes per "Understanding the Table service data model" (strings are UTF-16 plus 4 bytes).
    if isinstance(value, EntityProperty):
        value = value.value
    if isinstance(value, str):
        return 4 + _utf16_bytes(value)
    if isinstance(value, bytes):
        return 4 + len(value)
    if isinstance(value, bool):
        return 1
    return 8  # Int32/Int64/Double/DateTime (GUIDs are stored as strings here)
