"""Webhook registration (reference §4.1) and signed delivery with retries (§4.3)."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from .errors import ApiError, invalid
from .signing import ALGORITHM, SigningAuthority

SUPPORTED_EVENTS = (
    "referral-created",
    "referral-updated",
    "related-referral-created",
    "related-referral-updated",
    "test-created",
)
MAX_ATTEMPTS = 10  # then the event goes to Microsoft's offline queue, never retried (§4.3)


def _field(body: dict[str, Any], name: str) -> Any:
    # Docs send PascalCase, the connectors camelCase (§4.1): read either.
    for key, value in body.items():
        if key.lower() == name.lower():
            return value
    return None


@dataclass
class Registration:
    subscriber_id: str
    webhook_url: str
    events: list[str]
    signature_in_header: bool

    def body(self) -> dict[str, Any]:
        return {
            "SubscriberId": self.subscriber_id,
            "WebhookUrl": self.webhook_url,
            "WebhookEvents": list(self.events),
        }


def parse_registration(body: Any, subscriber_id: str) -> Registration:
    if not isinstance(body, dict):
        raise invalid("The request body must be a registration object.")
    url = _field(body, "WebhookUrl")
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise invalid("WebhookUrl must be an absolute http(s) URL.", "WebhookUrl")
    events = _field(body, "WebhookEvents")
    if not isinstance(events, list) or not events:
        raise invalid("WebhookEvents must be a non-empty array.", "WebhookEvents")
    for event in events:
        if event not in SUPPORTED_EVENTS:
            raise invalid(f"The event '{event}' is not supported.", "WebhookEvents")
    header = _field(body, "SignatureTokenToMsSignatureHeader")
    return Registration(subscriber_id, url, list(dict.fromkeys(events)), header is True)


@dataclass
class DeliveryStats:
    events: int = 0
    attempts: int = 0
    delivered: int = 0
    failed: int = 0  # all attempts used up
    dropped: int = 0  # fault injection: never sent

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class TestEventRecord:
    correlation_id: str
    callback_url: str
    results: list[dict[str, Any]] = field(default_factory=list)
    status: str = "Pending"

    def body(self, partner_id: str) -> dict[str, Any]:
        return {
            "correlationId": self.correlation_id,
            "partnerId": partner_id,
            "status": self.status,
            "callbackUrl": self.callback_url,
            "results": self.results,
        }


Sleep = Callable[[float], Awaitable[None]]


class WebhookDispatcher:
    """Holds the one registration of the (single) tenant and delivers events to it."""

    def __init__(
        self,
        *,
        signing: SigningAuthority,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_base_s: float = 0.5,
        retry_max_s: float = 60.0,
        timeout_s: float = 10.0,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.signing = signing
        self.registration: Registration | None = None
        self.stats = DeliveryStats()
        self.test_events: dict[str, TestEventRecord] = {}
        self.drop_rate = 0.0
        self._transport = transport
        self._retry_base_s = retry_base_s
        self._retry_max_s = retry_max_s
        self._timeout_s = timeout_s
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._tasks: set[asyncio.Task[None]] = set()

    def reset(self) -> None:
        self.registration = None
        self.stats = DeliveryStats()
        self.test_events.clear()
        self.cancel()

    # -- registration API ----------------------------------------------------------------------

    def register(self, body: Any) -> Registration:
        if self.registration is not None:
            # One registration per tenant: POST is for the first one, PUT changes it (§4.1).
            raise ApiError(
                409, "conflict", "A webhook is already registered; use PUT to change it."
            )
        self.registration = parse_registration(body, str(uuid.uuid4()))
        return self.registration

    def update(self, body: Any) -> Registration:
        current = self.current()
        self.registration = parse_registration(body, current.subscriber_id)
        return self.registration

    def current(self) -> Registration:
        if self.registration is None:
            raise ApiError(404, "itemNotFound", "No webhook is registered.", target="registration")
        return self.registration

    # -- delivery ------------------------------------------------------------------------------

    def publish(
        self,
        event_name: str,
        resource_uri: str,
        *,
        certificate_url: str,
        resource_name: str = "referral",
        record: TestEventRecord | None = None,
        changed_at: str | None = None,
    ) -> bool:
        """Queue delivery of one event if the registration asks for it; True when queued.

        ``changed_at``: when the change happened (the referral's ``updatedDateTime``), which is
        what Partner Center's ``ResourceChangeUtcDate`` means ("the date and time, in UTC,
        when the resource change occurred", webhook docs); not the delivery time."""
        registration = self.registration
        if registration is None or event_name not in registration.events:
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a write made outside the server (e.g. seeding): nothing to send
            return False
        self.stats.events += 1
        if self.drop_rate and self._rng.random() < self.drop_rate:
            self.stats.dropped += 1
            return False
        body = {
            "EventName": event_name,
            "ResourceUri": resource_uri,
            "ResourceName": resource_name,
            "AuditUri": None,
            "ResourceChangeUtcDate": changed_at or datetime.now(UTC).isoformat(),
        }
        payload = json.dumps(body, separators=(",", ":")).encode()
        task = loop.create_task(self._deliver(registration, payload, certificate_url, record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def headers(self, payload: bytes, certificate_url: str, in_header: bool) -> dict[str, str]:
        signature = f"Signature {self.signing.sign(payload)}"
        headers = {
            "Content-Type": "application/json",
            "x-ms-certificate-url": certificate_url,
            "x-ms-signature-algorithm": ALGORITHM,
        }
        # SignatureTokenToMsSignatureHeader moves the signature out of Authorization (§4.3).
        headers["x-ms-signature" if in_header else "Authorization"] = signature
        return headers

    async def _deliver(
        self,
        registration: Registration,
        payload: bytes,
        certificate_url: str,
        record: TestEventRecord | None,
    ) -> None:
        headers = self.headers(payload, certificate_url, registration.signature_in_header)
        async with httpx.AsyncClient(transport=self._transport, timeout=self._timeout_s) as http:
            for attempt in range(1, MAX_ATTEMPTS + 1):
                self.stats.attempts += 1
                result: dict[str, Any] = {"dateTimeUtc": datetime.now(UTC).isoformat()}
                try:
                    response = await http.post(
                        registration.webhook_url, content=payload, headers=headers
                    )
                    result.update(
                        responseCode=response.status_code, responseMessage=response.reason_phrase
                    )
                    ok = response.is_success
                except httpx.HTTPError as exc:
                    result.update(responseCode=None, systemError=type(exc).__name__)
                    ok = False
                if record is not None:
                    record.results.append(result)
                if ok:
                    self.stats.delivered += 1
                    if record is not None:
                        record.status = "Succeeded"
                    return
                if attempt < MAX_ATTEMPTS:
                    # Interval undocumented (§4.3): exponential backoff with jitter.
                    delay = min(self._retry_max_s, self._retry_base_s * 2 ** (attempt - 1))
                    await self._sleep(delay * (0.5 + self._rng.random() / 2))
        self.stats.failed += 1
        if record is not None:
            record.status = "Failed"

    async def idle(self) -> None:
        """Wait until every queued delivery has finished (tests, demo)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()
