"""Bearer tokens for the Web API: from an azure-identity credential, or static (sandbox)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Protocol

import httpx
from azure.core.credentials_async import AsyncTokenCredential

# Refresh a little before expiry so a long page walk never sends a stale token.
_REFRESH_MARGIN_S = 300


class TokenProvider(Protocol):
    """Anything that hands out a bearer token for Dataverse."""

    async def get_token(self) -> str: ...


class StaticTokenProvider:
    """A fixed token: the sandbox emulator's well-known one, or a test's."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def get_token(self) -> str:
        return self._token


class CredentialTokenProvider:
    """Tokens for ``<DATAVERSE_URL>/.default`` (reference 1.3) from an async credential."""

    def __init__(self, credential: AsyncTokenCredential, scope: str) -> None:
        self._credential = credential
        self._scope = scope
        self._token: str | None = None
        self._expires_on = 0.0
        self._lock = asyncio.Lock()

    async def get_token(self) -> str:
        if self._token is not None and time.time() < self._expires_on - _REFRESH_MARGIN_S:
            return self._token
        async with self._lock:
            if self._token is None or time.time() >= self._expires_on - _REFRESH_MARGIN_S:
                access = await self._credential.get_token(self._scope)
                self._token, self._expires_on = access.token, float(access.expires_on)
            return self._token


class BearerAuth(httpx.Auth):
    """Adds ``Authorization: Bearer <token>`` to every request (and every retry)."""

    def __init__(self, provider: TokenProvider) -> None:
        self._provider = provider

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        request.headers["Authorization"] = f"Bearer {await self._provider.get_token()}"
        yield request
