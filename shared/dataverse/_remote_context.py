"""Dataverse's push body: the serialised ``RemoteExecutionContext`` (reference:
dataverse-push-and-webhook-trust §1.1; Microsoft's docs ``use-webhooks``).

It is data-contract JSON, not OData: collections are lists of ``{"key": …, "value": …}``, an
entity is ``{"__type": "Entity:…", "Attributes": [...], "Id", "LogicalName", "RowVersion", …}``,
a lookup is ``{"__type": "EntityReference:…", "Id", "LogicalName", "Name"}``, money and choices
are typed objects with a ``Value``, and dates are ``"\\/Date(1506384247000)\\/"`` (milliseconds
since 1970 UTC; ``OperationCreatedOn`` may add the sender's offset, ``…000-0700``, which does not
move the instant). When the body would pass 256 KB, Dataverse drops ``ParentContext``,
``InputParameters`` and both image collections and says so in ``x-ms-dynamics-msg-size-exceeded``:
the receiver then knows only the message, the table and the row id.

Parsing here is pure and strict about what the product needs (a message, a table, a row id that
is a GUID) and lenient about the rest: it is a hint to read the row, never data to trust.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

# Dataverse truncates at 256 KB (reference §1.1); a longer body is not Dataverse's.
MAX_CONTEXT_BYTES = 256 * 1024
SIZE_EXCEEDED_HEADER = "x-ms-dynamics-msg-size-exceeded"
ENTITY_HEADER = "x-ms-dynamics-entity-name"
REQUEST_HEADER = "x-ms-dynamics-request-name"
ORGANIZATION_HEADER = "x-ms-dynamics-organization"
CORRELATION_HEADER = "x-ms-correlation-request-id"

_DATE = re.compile(r"^/Date\((?P<ms>-?\d+)(?P<offset>[+-]\d{4})?\)/$")


class RemoteContextError(ValueError):
    """The body is not a usable push: ``status`` is the answer (400 or 413)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class PushedEntity:
    """An entity (``Target`` on Create/Update, an image) or, on Delete, the reference to one:
    its table, id, attributes (values made plain: see ``plain_value``) and ``RowVersion``."""

    logical_name: str
    id: UUID | None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    row_version: int | None = None

    def lookup_id(self, column: str) -> UUID | None:
        """The row a lookup attribute points at (None when absent or cleared)."""
        value = self.attributes.get(column)
        return value.id if isinstance(value, PushedReference) else None

    def modified_on(self) -> datetime | None:
        value = self.attributes.get("modifiedon")
        return value if isinstance(value, datetime) else None

    def version(self) -> int | None:
        """``versionnumber`` if the body carries it (as an attribute or ``RowVersion``)."""
        value = self.attributes.get("versionnumber")
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return self.row_version


@dataclass(frozen=True)
class PushedReference:
    """An ``EntityReference`` value (a lookup)."""

    logical_name: str
    id: UUID


@dataclass(frozen=True)
class RemoteExecutionContext:
    """What the product uses of one push; everything else stays unread."""

    message_name: str
    primary_entity_name: str
    primary_entity_id: UUID
    initiating_user_id: UUID | None = None
    user_id: UUID | None = None
    operation_id: UUID | None = None
    correlation_id: UUID | None = None
    operation_created_on: datetime | None = None
    depth: int | None = None
    target: PushedEntity | None = None
    pre_images: Mapping[str, PushedEntity] = field(default_factory=dict)
    post_images: Mapping[str, PushedEntity] = field(default_factory=dict)
    size_exceeded: bool = False

    def entities(self) -> list[PushedEntity]:
        """The target and the images, the target first (what tells a row's lookups)."""
        found = [self.target] if self.target is not None else []
        return [*found, *self.pre_images.values(), *self.post_images.values()]


def parse_date(text: str) -> datetime | None:
    """``/Date(1506384247000)/`` or ``/Date(1506409448000-0700)/`` → UTC (the offset is the
    sender's zone, not a shift of the instant); None if it is not that form."""
    match = _DATE.match(text)
    if match is None:
        return None
    try:
        return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=int(match["ms"]))
    except OverflowError:
        return None


def parse_remote_context(body: bytes, headers: Mapping[str, str]) -> RemoteExecutionContext:
    """The push in ``body``; raises ``RemoteContextError`` (413 too large, 400 otherwise)."""
    if len(body) > MAX_CONTEXT_BYTES:
        raise RemoteContextError(413, f"the body is larger than {MAX_CONTEXT_BYTES} bytes")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RemoteContextError(400, "the body is not JSON") from None
    if not isinstance(data, dict):
        raise RemoteContextError(400, "the body is not a RemoteExecutionContext object")
    lowered = {k.lower(): v for k, v in headers.items()}
    message = _text(data, "MessageName") or lowered.get(REQUEST_HEADER, "")
    entity = _text(data, "PrimaryEntityName") or lowered.get(ENTITY_HEADER, "")
    if not message or not entity:
        raise RemoteContextError(400, "MessageName and PrimaryEntityName are required")
    for header, value in ((REQUEST_HEADER, message), (ENTITY_HEADER, entity)):
        sent = lowered.get(header)
        if sent is not None and sent.strip().lower() != value.lower():
            raise RemoteContextError(400, f"{header} does not match the body")
    row_id = _guid(data.get("PrimaryEntityId"))
    if row_id is None:
        raise RemoteContextError(400, "PrimaryEntityId must be a GUID")
    size_exceeded = lowered.get(SIZE_EXCEEDED_HEADER, "").strip().lower() not in ("", "false")
    inputs = _collection(data.get("InputParameters"))
    target = _entity(inputs.get("Target"), default_name=entity)
    created_on = data.get("OperationCreatedOn")
    depth = data.get("Depth")
    return RemoteExecutionContext(
        message_name=message,
        primary_entity_name=entity.lower(),
        primary_entity_id=row_id,
        initiating_user_id=_guid(data.get("InitiatingUserId")),
        user_id=_guid(data.get("UserId")),
        operation_id=_guid(data.get("OperationId")),
        correlation_id=_guid(data.get("CorrelationId")),
        operation_created_on=parse_date(created_on) if isinstance(created_on, str) else None,
        depth=depth if isinstance(depth, int) and not isinstance(depth, bool) else None,
        target=target,
        pre_images=_images(data.get("PreEntityImages"), entity),
        post_images=_images(data.get("PostEntityImages"), entity),
        size_exceeded=size_exceeded or "InputParameters" not in data,
    )


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    return value.strip() if isinstance(value, str) else ""


def _guid(value: object) -> UUID | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = UUID(value.strip("{}"))
    except ValueError:
        return None
    return None if parsed.int == 0 else parsed  # Guid.Empty: no user / no row


def _collection(value: object) -> dict[str, Any]:
    """A data-contract collection (``[{"key": k, "value": v}, …]``) as a dict."""
    if not isinstance(value, list):
        return {}
    return {
        item["key"]: item.get("value")
        for item in value
        if isinstance(item, dict) and isinstance(item.get("key"), str)
    }


def _images(value: object, default_name: str) -> dict[str, PushedEntity]:
    images = {}
    for alias, image in _collection(value).items():
        parsed = _entity(image, default_name=default_name)
        if parsed is not None:
            images[alias] = parsed
    return images


def _entity(value: object, *, default_name: str) -> PushedEntity | None:
    if not isinstance(value, dict):
        return None
    name = value.get("LogicalName")
    logical_name = name.lower() if isinstance(name, str) and name else default_name.lower()
    attributes = {k: plain_value(v) for k, v in _collection(value.get("Attributes")).items()}
    version = value.get("RowVersion")
    row_version = int(version) if isinstance(version, str) and version.isdigit() else None
    return PushedEntity(logical_name, _guid(value.get("Id")), attributes, row_version)


def plain_value(value: Any) -> Any:
    """A data-contract value made plain: a date → ``datetime``, an ``EntityReference`` →
    ``PushedReference``, money and choices → their ``Value``; the rest unchanged."""
    if isinstance(value, str):
        date = parse_date(value)
        return date if date is not None else value
    if isinstance(value, dict):
        kind = str(value.get("__type", "")).split(":", 1)[0]
        if kind == "EntityReference":
            row_id = _guid(value.get("Id"))
            name = value.get("LogicalName")
            if row_id is not None and isinstance(name, str):
                return PushedReference(name.lower(), row_id)
            return None
        if "Value" in value:
            return value["Value"]
    return value
