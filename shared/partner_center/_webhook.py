"""Reading a webhook callback body (reference §4.3) under the rules of SPEC 8."""

from __future__ import annotations

import json
import uuid

from pydantic import ValidationError

from shared.errors import CosellError

from ._models import WebhookEvent, WebhookEventName

__all__ = ["MAX_EVENT_BYTES", "WebhookEventError", "parse_webhook_event"]

MAX_EVENT_BYTES = 64 * 1024  # SPEC 8: the body is capped
REFERRAL_EVENTS = frozenset(
    {
        WebhookEventName.REFERRAL_CREATED,
        WebhookEventName.REFERRAL_UPDATED,
        WebhookEventName.RELATED_REFERRAL_CREATED,
        WebhookEventName.RELATED_REFERRAL_UPDATED,
    }
)


class WebhookEventError(CosellError, ValueError):
    """A callback body we refuse; ``status`` is the HTTP answer (400 or 413)."""

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def parse_webhook_event(body: bytes, *, max_bytes: int = MAX_EVENT_BYTES) -> WebhookEvent:
    """The event, if it is a referral event with a GUID referral id, or a ``test-created``
    event; anything else raises ``WebhookEventError`` with a message fit for the answer."""
    if len(body) > max_bytes:
        raise WebhookEventError(f"the body is larger than {max_bytes} bytes", status=413)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise WebhookEventError("the body is not JSON") from None
    except RecursionError:
        # A small body can nest deeper than the parser recurses (``[[[[…``): untrusted input,
        # so it is a 400 like any other body we cannot read, never an escaped 500.
        raise WebhookEventError("the body's JSON is nested too deeply") from None
    if not isinstance(data, dict):
        raise WebhookEventError("the body is not a JSON object")
    try:
        event = WebhookEvent.model_validate(data)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) or "body" for e in exc.errors())
        raise WebhookEventError(f"invalid event fields: {fields}") from None
    name = event.event_name
    if name == WebhookEventName.TEST_CREATED:
        return event
    if name not in REFERRAL_EVENTS:
        raise WebhookEventError(f"unknown EventName {str(name)[:64]!r}")
    if (event.resource_name or "").lower() != "referral":
        raise WebhookEventError("ResourceName must be 'referral'")
    referral_id = event.resource_id
    try:
        uuid.UUID(referral_id or "")
    except ValueError:
        raise WebhookEventError("ResourceUri does not end with a referral id (a GUID)") from None
    return event
