"""Access tokens for Partner Center (reference §3).

The Referrals API accepts only app+user (delegated) tokens; with MFA enforced the supported way
is a refresh token obtained once by a Referrals admin and redeemed by the app. Entra rotates the
refresh token on every redemption, so the newest one is handed to a persistence hook (Key Vault in
Azure) — otherwise the stored one eventually ages out. The sandbox uses a static token.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ._exceptions import PartnerCenterAuthError, RefreshTokenRejected

logger = logging.getLogger("shared.partner_center")

__all__ = [
    "REFERRALS_RESOURCE",
    "WEBHOOKS_RESOURCE",
    "RefreshTokenProvider",
    "StaticTokenProvider",
    "TokenProvider",
]

# Two hosts, two audiences: the Referrals API and the (webhook) Partner Center API (§1, §3).
REFERRALS_RESOURCE = "https://api.partner.microsoft.com"
WEBHOOKS_RESOURCE = "https://api.partnercenter.microsoft.com"

# Entra error codes that mean the refresh token itself is no good any more (not a transient
# failure): invalid_grant covers expired, revoked and password-changed (AADSTS70008/50173/...).
_REJECTED = frozenset({"invalid_grant", "interaction_required", "consent_required"})


@runtime_checkable
class TokenProvider(Protocol):
    """Anything that can give a bearer token for a resource (audience)."""

    async def get_token(self, resource: str) -> str: ...


class StaticTokenProvider:
    """A fixed token, for the sandbox emulator (which accepts its configured token)."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def get_token(self, resource: str) -> str:
        return self._token

    def __repr__(self) -> str:
        return "StaticTokenProvider(token=***)"


class RefreshTokenApp(Protocol):
    """The part of ``msal.ConfidentialClientApplication`` we use (so tests can supply a fake)."""

    def acquire_token_by_refresh_token(
        self, refresh_token: str, scopes: list[str], **kwargs: Any
    ) -> dict[str, Any]: ...


RefreshTokenSink = Callable[[str], Awaitable[None] | None]


@dataclass
class _Cached:
    token: str
    expires_at: float


class RefreshTokenProvider:
    """App+user tokens from a refresh token through MSAL, cached until shortly before expiry.

    ``on_refresh_token`` receives every rotated refresh token (sync or async callable); store it
    where the next start will read it. A rejected refresh token raises ``RefreshTokenRejected``.
    """

    def __init__(
        self,
        *,
        tenant_id: str,
        client_id: str,
        client_secret: str,
        refresh_token: str,
        on_refresh_token: RefreshTokenSink | None = None,
        authority_host: str = "https://login.microsoftonline.com",
        refresh_margin_s: float = 300.0,
        timeout: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        app: RefreshTokenApp | None = None,
    ) -> None:
        self._tenant_id = tenant_id
        self._client_id = client_id
        self._client_secret = client_secret
        self._refresh_token = refresh_token
        self._on_refresh_token = on_refresh_token
        self._authority = f"{authority_host.rstrip('/')}/{tenant_id}"
        self._margin = refresh_margin_s
        self._timeout = timeout
        self._clock = clock
        self._app = app
        self._cache: dict[str, _Cached] = {}
        self._lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"RefreshTokenProvider(tenant_id={self._tenant_id!r}, client_id={self._client_id!r})"

    async def get_token(self, resource: str) -> str:
        cached = self._cache.get(resource)
        if cached and cached.expires_at - self._margin > self._clock():
            return cached.token
        async with self._lock:  # one redemption at a time: each one rotates the refresh token
            cached = self._cache.get(resource)
            if cached and cached.expires_at - self._margin > self._clock():
                return cached.token
            return await self._redeem(resource)

    async def _redeem(self, resource: str) -> str:
        scopes = [f"{resource.rstrip('/')}/.default"]  # MSAL/v2 form of the v1 resource (§3)
        started = self._clock()
        try:
            result = await asyncio.to_thread(
                self._application().acquire_token_by_refresh_token, self._refresh_token, scopes
            )
        except OSError as exc:  # MSAL's HTTP errors (requests) derive from OSError
            raise PartnerCenterAuthError(
                f"could not reach Entra for a Partner Center token ({type(exc).__name__})",
                code="tokenEndpointUnreachable",
            ) from exc
        if "access_token" not in result:
            raise self._error(result)
        token = str(result["access_token"])
        expires_in = float(result.get("expires_in") or 3600)
        self._cache[resource] = _Cached(token, started + expires_in)
        rotated = result.get("refresh_token")
        if isinstance(rotated, str) and rotated and rotated != self._refresh_token:
            self._refresh_token = rotated
            await self._persist(rotated)
        logger.info("partner center token acquired", extra={"resource": resource})
        return token

    async def _persist(self, refresh_token: str) -> None:
        if self._on_refresh_token is None:
            return
        outcome = self._on_refresh_token(refresh_token)
        if inspect.isawaitable(outcome):
            await outcome

    def _application(self) -> RefreshTokenApp:
        if self._app is None:
            # Imported late (only needed against the real service); msal ships no type hints.
            import msal

            self._app = msal.ConfidentialClientApplication(
                self._client_id,
                client_credential=self._client_secret,
                authority=self._authority,
                timeout=self._timeout,  # SPEC 7: the token call has a timeout too
            )
        return self._app

    def _error(self, result: dict[str, Any]) -> PartnerCenterAuthError:
        code = str(result.get("error") or "unknown_error")
        # Only the AADSTS number is kept: the description can quote user or tenant details.
        description = str(result.get("error_description") or "")
        aadsts = description.split(":", 1)[0] if description.startswith("AADSTS") else None
        detail = f"{code}{f' ({aadsts})' if aadsts else ''}"
        if code in _REJECTED:
            return RefreshTokenRejected(
                f"the Partner Center refresh token was rejected ({detail}): it expired, was "
                "revoked or consent was withdrawn. A Referrals admin must sign in again and the "
                "new refresh token must be stored in PARTNER_CENTER_REFRESH_TOKEN.",
                status=401,
                code=code,
            )
        return PartnerCenterAuthError(
            f"could not obtain a Partner Center token ({detail}); check PARTNER_CENTER_TENANT_ID,"
            " PARTNER_CENTER_CLIENT_ID and PARTNER_CENTER_CLIENT_SECRET",
            status=401,
            code=code,
        )
