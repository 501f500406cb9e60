"""The async Partner Center client: referrals (reference §1.1) and webhook registration (§4.1)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import ValidationError

from shared.calls import count_request, note_request_id
from shared.retry import RetryPolicy, RetryTransport
from shared.telemetry import PARTNER_CENTER, traced_transport

from ._auth import REFERRALS_RESOURCE, WEBHOOKS_RESOURCE, TokenProvider
from ._exceptions import ConnectionFailed, NotFound, PartnerCenterError, error_from_response
from ._models import (
    PatchOperation,
    Referral,
    TestEvent,
    TestEventResult,
    WebhookEventName,
    WebhookRegistration,
)

logger = logging.getLogger("shared.partner_center")

M = TypeVar("M", Referral, WebhookRegistration, TestEvent, TestEventResult)

__all__ = ["DEFAULT_API_URL", "DEFAULT_WEBHOOK_API_URL", "PartnerCenterClient"]

DEFAULT_API_URL = "https://api.partner.microsoft.com/v1.0/engagements"
DEFAULT_WEBHOOK_API_URL = "https://api.partnercenter.microsoft.com/webhooks/v1"

# The four referral events the connectors register, plus `test-created` so that
# `send_test_event` works (§4.1, §4.2).
DEFAULT_WEBHOOK_EVENTS: tuple[str, ...] = tuple(e.value for e in WebhookEventName)


class PartnerCenterClient:
    """One client for both Partner Center hosts; an async context manager owning its pool.

    ``api_url`` is the referrals API (``.../v1.0/engagements``), ``webhook_api_url`` the webhook
    registration API; ``token_provider`` hands out a bearer token per resource. ``transport`` is
    any httpx async transport (the network by default; an emulator's ASGI app in tests). It is
    wrapped in ``RetryTransport`` so SPEC 7's retry rules apply to every call. Building one from
    the app's settings is ``shared.wiring``'s job.
    """

    def __init__(
        self,
        api_url: str = DEFAULT_API_URL,
        *,
        token_provider: TokenProvider,
        webhook_api_url: str = DEFAULT_WEBHOOK_API_URL,
        transport: httpx.AsyncBaseTransport | None = None,
        retry_policy: RetryPolicy | None = None,
        timeout: float = 30.0,
        referrals_resource: str = REFERRALS_RESOURCE,
        webhooks_resource: str = WEBHOOKS_RESOURCE,
    ) -> None:
        self._tokens = token_provider
        self._api_url = api_url.rstrip("/")
        self._webhook_api_url = webhook_api_url.rstrip("/")
        self._referrals_resource = referrals_resource
        self._webhooks_resource = webhooks_resource
        inner = transport if transport is not None else httpx.AsyncHTTPTransport()
        self._http = httpx.AsyncClient(
            # One dependency span per call (shared.telemetry), its retries as events.
            transport=traced_transport(RetryTransport(inner, retry_policy), PARTNER_CENTER),
            timeout=httpx.Timeout(timeout),  # SPEC 7: every remote call has a timeout
            headers={"Accept": "application/json"},
            follow_redirects=False,
            event_hooks={"request": [count_request]},
        )

    async def __aenter__(self) -> Self:
        await self._http.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.__aexit__(exc_type, exc, tb)

    async def check_token(self) -> None:
        """Get (or reuse the cached) token for the Referrals API; raises what auth raises."""
        await self._tokens.get_token(self._referrals_resource)

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- referrals (§1.1) ---------------------------------------------------------------------

    async def get_referral(self, referral_id: str) -> Referral:
        response = await self._send("GET", self._referral_url(referral_id), route="referral")
        return _parse(Referral, response)

    async def list_referrals(
        self,
        *,
        filter: str | None = None,  # the OData option's own name
        orderby: str | None = None,
        top: int | None = None,
        select: Sequence[str] | str | None = None,
    ) -> AsyncIterator[Referral]:
        """Every referral matching the query, page by page through ``@odata.nextLink``.

        ``top`` is the most referrals to yield. Whether the service reads ``$top`` as a total or
        as a page size is undocumented (§1.2, UNCERTAIN), so the client also stops by itself.
        """
        params: dict[str, str] = {}
        if filter:
            params["$filter"] = filter
        if orderby:
            params["$orderby"] = orderby
        if top is not None:
            params["$top"] = str(top)
        if select:
            params["$select"] = select if isinstance(select, str) else ",".join(select)
        url: str | None = f"{self._api_url}/referrals"
        yielded = 0
        while url is not None:
            response = await self._send("GET", url, route="referrals", params=params or None)
            page = _json(response)
            if not isinstance(page, dict) or not isinstance(page.get("value"), list):
                raise PartnerCenterError(
                    "a referral list page without a 'value' array", status=response.status_code
                )
            for item in page["value"]:
                if top is not None and yielded >= top:
                    return
                yield _validate(Referral, item, response)
                yielded += 1
            url = self._next_link(page.get("@odata.nextLink"))
            params = {}

    async def list_related_referrals(self, engagement_id: str) -> AsyncIterator[Referral]:
        """The referrals of one engagement (e.g. Microsoft's side of a co-sell, §1.1)."""
        uuid.UUID(engagement_id)  # only a GUID goes into the filter, nothing else
        # The docs quote the GUID, the service's own links do not (§1.1); quoted is documented.
        async for referral in self.list_referrals(filter=f"engagementId eq '{engagement_id}'"):
            yield referral

    async def create_referral(self, referral: Referral | Mapping[str, Any]) -> Referral:
        body = referral.to_wire() if isinstance(referral, Referral) else dict(referral)
        response = await self._send(
            "POST", f"{self._api_url}/referrals", route="referrals", json_body=body
        )
        return _parse(Referral, response)  # 200 per swagger, 201 per the codes page (§1.1)

    async def patch_referral(
        self,
        referral_id: str,
        operations: Sequence[PatchOperation | Mapping[str, Any]],
        *,
        etag: str | None,
    ) -> Referral | None:
        """Apply JSON Patch ``replace``/``add`` operations, conditional on ``etag`` if given.

        Returns the updated referral (we ask for it with ``Prefer: return=representation``), or
        ``None`` if the service answered 204 anyway. A stale ``etag`` raises
        ``PreconditionFailed``.
        """
        body = [
            op.to_wire() if isinstance(op, PatchOperation) else PatchOperation(**op).to_wire()
            for op in operations
        ]
        headers = {"Prefer": "return=representation"}
        if etag is not None:
            headers["If-Match"] = etag  # verbatim, quotes included (§2.1)
        response = await self._send(
            "PATCH",
            self._referral_url(referral_id),
            route="referral",
            json_body=body,
            headers=headers,
        )
        if response.status_code == 204 or not response.content:
            return None
        return _parse(Referral, response)

    # -- webhook registration (§4.1) ---------------------------------------------------------

    async def get_webhook_registration(self) -> WebhookRegistration | None:
        """The tenant's registration, or ``None`` when there is none."""
        try:
            response = await self._send_webhooks("GET", "/registration")
        except NotFound:
            return None
        return _parse(WebhookRegistration, response)

    async def register_webhook(
        self,
        webhook_url: str,
        *,
        events: Sequence[str] = DEFAULT_WEBHOOK_EVENTS,
        signature_in_header: bool = True,
    ) -> WebhookRegistration:
        """First registration of the tenant (POST); use ``update_webhook`` to change it."""
        body = _registration_body(webhook_url, events, signature_in_header)
        response = await self._send_webhooks("POST", "/registration", json_body=body)
        return _parse(WebhookRegistration, response)

    async def update_webhook(
        self,
        webhook_url: str,
        *,
        events: Sequence[str] = DEFAULT_WEBHOOK_EVENTS,
        signature_in_header: bool = True,
    ) -> WebhookRegistration:
        """Replace the registration (PUT); the old URL stops getting events (§4.1)."""
        body = _registration_body(webhook_url, events, signature_in_header)
        response = await self._send_webhooks("PUT", "/registration", json_body=body)
        return _parse(WebhookRegistration, response)

    async def list_webhook_events(self) -> list[str]:
        response = await self._send_webhooks("GET", "/registration/events")
        data = _json(response)
        if not isinstance(data, list):
            raise PartnerCenterError("the event list is not an array", status=response.status_code)
        return [str(item) for item in data]

    async def send_test_event(self) -> TestEvent:
        """Ask Partner Center to send a ``test-created`` event (limit: 2 per minute, §4.1)."""
        response = await self._send_webhooks("POST", "/registration/validationEvents")
        return _parse(TestEvent, response)

    async def get_test_event_result(self, correlation_id: str) -> TestEventResult:
        uuid.UUID(correlation_id)
        response = await self._send_webhooks(
            "GET", f"/registration/validationEvents/{correlation_id}"
        )
        return _parse(TestEventResult, response)

    # -- plumbing ------------------------------------------------------------------------------

    def _referral_url(self, referral_id: str) -> str:
        # Ids are GUIDs (§2.1); refusing anything else keeps paths and queries out of the URL.
        try:
            uuid.UUID(referral_id)
        except ValueError:
            raise ValueError(f"a referral id must be a GUID, got {referral_id!r}") from None
        return f"{self._api_url}/referrals/{referral_id}"

    def _next_link(self, link: object) -> str | None:
        if not link:
            return None
        text = str(link)
        # Follow only links to the API's own origin: a page must not send our token elsewhere.
        base, target = urlsplit(self._api_url), urlsplit(text)
        if (target.scheme, target.netloc) != (base.scheme, base.netloc):
            raise PartnerCenterError("an @odata.nextLink to another host was not followed")
        return text

    async def _send_webhooks(
        self, method: str, path: str, *, json_body: Any = None
    ) -> httpx.Response:
        return await self._send(
            method,
            f"{self._webhook_api_url}{path}",
            route=f"webhooks{path.split('/validationEvents/')[0]}",
            json_body=json_body,
            resource=self._webhooks_resource,
        )

    async def _send(
        self,
        method: str,
        url: str,
        *,
        route: str,
        params: Mapping[str, str] | None = None,
        json_body: Any = None,
        headers: Mapping[str, str] | None = None,
        resource: str | None = None,
    ) -> httpx.Response:
        token = await self._tokens.get_token(resource or self._referrals_resource)
        request_headers = {
            "Authorization": f"Bearer {token}",
            "client-request-id": str(uuid.uuid4()),
            **(headers or {}),
        }
        content: bytes | None = None
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":")).encode()
            request_headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        try:
            response = await self._http.request(
                method, url, params=params, content=content, headers=request_headers
            )
        except httpx.TimeoutException as exc:
            raise _at(
                ConnectionFailed(f"{method} {route} timed out", code="timeout"), method, url
            ) from exc
        except httpx.TransportError as exc:
            raise _at(
                ConnectionFailed(
                    f"{method} {route} failed: {type(exc).__name__}", code="transportError"
                ),
                method,
                url,
            ) from exc
        # The id support asks Microsoft about: the sync's history row keeps the last one.
        note_request_id(response.headers.get("request-id") or request_headers["client-request-id"])
        # Method, route name, status and ids only: bodies may hold customer names and e-mails.
        logger.info(
            "partner center %s %s -> %s",
            method,
            route,
            response.status_code,
            extra={
                "status": response.status_code,
                "request_id": response.headers.get("request-id"),
                "client_request_id": request_headers["client-request-id"],
                "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            },
        )
        if response.is_success:
            return response
        raise _at(error_from_response(response), method, url)


def _at(error: PartnerCenterError, method: str, url: str) -> PartnerCenterError:
    """``error`` naming the call that failed: its method and URL path (no query: a filter may
    hold data)."""
    error.method, error.url = method, urlsplit(url).path
    return error


def _registration_body(
    webhook_url: str, events: Sequence[str], signature_in_header: bool
) -> dict[str, Any]:
    return {
        "WebhookUrl": webhook_url,
        "WebhookEvents": [str(e) for e in events],
        "SignatureTokenToMsSignatureHeader": signature_in_header,
    }


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        raise PartnerCenterError(
            "the response is not JSON",
            status=response.status_code,
            request_id=response.headers.get("request-id"),
        ) from None


def _validate(model: type[M], data: Any, response: httpx.Response) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        # Field locations only: the values could be personal data.
        fields = ", ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()[:5])
        raise PartnerCenterError(
            f"unexpected {model.__name__} shape ({fields})",
            status=response.status_code,
            code="invalidResponse",
            request_id=response.headers.get("request-id"),
        ) from None


def _parse(model: type[M], response: httpx.Response) -> M:
    return _validate(model, _json(response), response)
