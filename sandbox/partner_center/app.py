"""The Partner Center emulator as an ASGI app: ``create_app(...)`` → Starlette.

Same paths as the real hosts (``/v1.0/engagements/referrals…`` and ``/webhooks/v1/registration…``)
so the client only needs its two base URLs pointed here; the control API lives under
``/_emulator/``. Everything is in memory.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox.kit import control as kit_control

from . import control, referrals
from .errors import ApiError, error_response
from .faults import injected_response
from .signing import PKI_PATH, SigningAuthority
from .state import API_PREFIX, EVENT_RESOURCE_PREFIX, WEBHOOK_PREFIX, EmulatorState
from .store import ReferralStore
from .webhooks import Sleep, WebhookDispatcher

DEFAULT_TOKEN = "sandbox"  # noqa: S105 - the sandbox's public test token, not a secret


def _routes() -> list[BaseRoute]:
    api, hooks = API_PREFIX, WEBHOOK_PREFIX
    return [
        Route(f"{api}/referrals", referrals.list_referrals, methods=["GET"]),
        Route(f"{api}/referrals", referrals.create_referral, methods=["POST"]),
        Route(f"{api}/referrals/{{referral_id}}", referrals.get_referral, methods=["GET"]),
        Route(f"{api}/referrals/{{referral_id}}", referrals.patch_referral, methods=["PATCH"]),
        Route(f"{api}/referrals/{{referral_id}}", referrals.put_referral, methods=["PUT"]),
        # The ResourceUri shape of events (§4.3); served so the URI resolves, though the app
        # never follows it (SPEC 8).
        Route(f"{EVENT_RESOURCE_PREFIX}/{{referral_id}}", referrals.get_referral, methods=["GET"]),
        Route(f"{hooks}/registration/events", control.list_events, methods=["GET"]),
        Route(f"{hooks}/registration", control.get_registration, methods=["GET"]),
        Route(f"{hooks}/registration", control.register, methods=["POST"]),
        Route(f"{hooks}/registration", control.update_registration, methods=["PUT"]),
        Route(f"{hooks}/registration/validationEvents", control.send_test_event, methods=["POST"]),
        Route(
            f"{hooks}/registration/validationEvents/{{correlation_id}}",
            control.test_event_result,
            methods=["GET"],
        ),
        *kit_control.routes(service="partner-center-emulator", prefix="/_emulator"),
        Route("/_emulator/patch-paths", control.get_patch_paths, methods=["GET"]),
        Route("/_emulator/patch-paths", control.put_patch_paths, methods=["PUT"]),
        Route("/_emulator/webhooks/idle", control.wait_idle, methods=["POST"]),
        Route("/_emulator/certificates/{name}", control.certificate, methods=["GET"]),
        Route(f"{PKI_PATH}/{{name}}", control.issuer_certificate, methods=["GET"]),
        Route(
            "/_emulator/microsoft/referrals", control.microsoft_create_referral, methods=["POST"]
        ),
        Route(
            "/_emulator/microsoft/referrals/{referral_id}/patch",
            control.microsoft_patch_referral,
            methods=["POST"],
        ),
    ]


def create_app(
    *,
    token: str | None = DEFAULT_TOKEN,
    page_size: int = 100,
    public_url: str | None = None,
    signing: SigningAuthority | None = None,
    webhook_transport: httpx.AsyncBaseTransport | None = None,
    webhook_retry_base_s: float = 0.5,
    webhook_sleep: Sleep = asyncio.sleep,
    test_events_per_minute: int = 2,
    create_status: int = 200,
    seed: int | None = None,
    strict_patch_paths: bool = False,
) -> Starlette:
    """A fresh emulator.

    ``token``: the bearer token API calls must carry (``None`` accepts any bearer token).
    ``page_size``: referrals per list page (undocumented for the real API, §1.2).
    ``public_url``: the base URL used in links and events (default: the URL of each request).
    ``signing``: the test CA and signing certificate (generated when not given).
    ``webhook_transport``: how deliveries reach the receiver (default: the network).
    ``strict_patch_paths``: refuse JSON Patch paths the connector's contract does not list.
    ``create_status``: the status of ``POST /referrals``. UNCERTAIN (reference §1.1, §8.5): the
    connector's machine-readable contract (microsoft/PowerPlatformConnectors,
    certified-connectors/PartnerCenterReferrals/apiDefinition.swagger.json, ``CreateReferral``)
    documents only 200 with the referral; the docs' create-a-referral page names no code, and
    learn.microsoft.com/partner-center/developer/referrals-api-response-codes lists
    "201: Resource created" only among the 2xx codes any Referrals call may answer. The one
    statement about this operation wins, so 200 by default; 201 lets tests prove the client
    takes either.
    """
    rng = random.Random(seed)
    dispatcher = WebhookDispatcher(
        signing=signing or SigningAuthority.generate(),
        transport=webhook_transport,
        retry_base_s=webhook_retry_base_s,
        sleep=webhook_sleep,
        rng=rng,
    )
    state = EmulatorState(
        token=token,
        store=ReferralStore(seed=seed),
        dispatcher=dispatcher,
        page_size=page_size,
        public_url=public_url,
        test_events_per_minute=test_events_per_minute,
        create_status=create_status,
        rng=rng,
        strict_patch_paths=strict_patch_paths,
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        dispatcher.cancel()

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    app = Starlette(
        routes=_routes(),
        exception_handlers={ApiError: api_error},
        lifespan=lifespan,
    )
    app.state.emulator = state
    app.add_middleware(_EmulatorMiddleware, state=state, routes=app.routes)
    return app


class _EmulatorMiddleware:
    """Counts requests by route template, checks the bearer token, injects faults, and stamps
    ``request-id`` (and echoes ``client-request-id``) like the real service (§5)."""

    def __init__(self, app: ASGIApp, *, state: EmulatorState, routes: list[BaseRoute]) -> None:
        self.app = app
        self.state = state
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        state = self.state
        state.requests[f"{scope['method']} {self._template(scope)}"] += 1
        state.remember_base_url(str(request.base_url))
        extra = {"request-id": str(uuid.uuid4())}
        if request.headers.get("client-request-id"):
            extra["client-request-id"] = request.headers["client-request-id"]

        async def stamped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in extra.items():
                    headers[key] = value
            await send(message)

        if not scope["path"].startswith("/_emulator/"):
            refusal = self._refusal(request) or await self._fault()
            if refusal is not None:
                await refusal(scope, receive, stamped)
                return
        await self.app(scope, receive, stamped)

    def _template(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is Match.FULL:
                return str(getattr(route, "path", scope["path"]))
        return "(unmatched)"

    def _refusal(self, request: Request) -> Response | None:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and presented and self.state.token in (None, presented):
            return None
        return error_response(
            ApiError(401, "unauthenticated", "A valid bearer token is required."),
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def _fault(self) -> Response | None:
        faults = self.state.faults
        if faults.latency_ms:
            await asyncio.sleep(faults.latency_ms / 1000)
        status = faults.draw(self.state.rng)
        return None if status is None else injected_response(status, faults)
