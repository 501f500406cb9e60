"""The two sandbox emulators, in process (``httpx.ASGITransport``): what the real services are
compared with, and what the offline selftest runs against.

Nothing here opens a socket. A webhook registered in an emulator is never called: deliveries go
to a transport that answers 200 in memory.
"""

from __future__ import annotations

from contextlib import AsyncExitStack, suppress
from typing import Any

import httpx

from shared.cli.selftest.replay import SANDBOX_AUTHORIZATION, Service

PARTNER_CENTER_BASE = "http://partner-center.emulator"
DATAVERSE_BASE = "http://dataverse.emulator"
PARTNER_CENTER_API = f"{PARTNER_CENTER_BASE}/v1.0/engagements"
PARTNER_CENTER_WEBHOOKS = f"{PARTNER_CENTER_BASE}/webhooks/v1"
# Registered in an emulator only, to have a registration to show; never delivered to.
PLACEHOLDER_WEBHOOK_URL = "https://selftest.invalid/api/webhooks/partner-center"
PLACEHOLDER_EVENTS = (
    "referral-created",
    "referral-updated",
    "related-referral-created",
    "related-referral-updated",
    "test-created",
)


def _delivered(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200)


class Emulators:
    """A fresh Partner Center and Dataverse emulator, and an HTTP client for each."""

    def __init__(self, *, column_prefix: str) -> None:
        # Imported here: `cosell --help` and the live commands never need the sandbox.
        from sandbox import dataverse as dataverse_emulator
        from sandbox import partner_center as pc_emulator

        self.partner_center_app = pc_emulator.create_app(
            token=None, webhook_transport=httpx.MockTransport(_delivered), seed=1
        )
        self.dataverse_app = dataverse_emulator.create_app(seed=1, column_prefix=column_prefix)
        self._stack = AsyncExitStack()
        self.clients: dict[Service, httpx.AsyncClient] = {}

    def transport(self, service: Service) -> httpx.AsyncBaseTransport:
        app = self.partner_center_app if service == "partner center" else self.dataverse_app
        return httpx.ASGITransport(app=app)

    async def __aenter__(self) -> Emulators:
        bases: tuple[tuple[Service, str], ...] = (
            ("partner center", PARTNER_CENTER_BASE),
            ("dataverse", DATAVERSE_BASE),
        )
        for service, base in bases:
            client = httpx.AsyncClient(
                transport=self.transport(service),
                base_url=base,
                headers={"Authorization": SANDBOX_AUTHORIZATION},
                timeout=30.0,
            )
            self.clients[service] = await self._stack.enter_async_context(client)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        # Deliveries the replay set off finish (in memory) before the loop ends.
        with suppress(httpx.HTTPError):
            await self.clients["partner center"].post("/_emulator/webhooks/idle")
        await self._stack.aclose()

    async def seed(self, *, referral: bool, registration: bool) -> None:
        """Data comparable to what the real tenant showed: one referral (the sandbox's sample
        co-sell referral) and a webhook registration, each only if the tenant had one."""
        from sandbox.partner_center.samples import cosell_referral_from_microsoft

        pc = self.clients["partner center"]
        if referral:
            body: dict[str, Any] = cosell_referral_from_microsoft()
            (await pc.post("/_emulator/microsoft/referrals", json=body)).raise_for_status()
        if registration:
            answer = await pc.post(
                "/webhooks/v1/registration",
                json={
                    "WebhookUrl": PLACEHOLDER_WEBHOOK_URL,
                    "WebhookEvents": list(PLACEHOLDER_EVENTS),
                    "SignatureTokenToMsSignatureHeader": True,
                },
            )
            answer.raise_for_status()


__all__ = [
    "DATAVERSE_BASE",
    "PARTNER_CENTER_API",
    "PARTNER_CENTER_BASE",
    "PARTNER_CENTER_WEBHOOKS",
    "Emulators",
]
