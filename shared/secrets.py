"""Persisting the rotated Partner Center refresh token to Key Vault (SPEC 6).

Each token refresh may hand back a new refresh token (reference: partner-center-referrals-api
§3); the old one stops working after a while, so the new one must survive a restart. The app
setting ``PARTNER_CENTER_REFRESH_TOKEN`` is a Key Vault reference to the same secret, so writing
a new version there is what the next start reads. Only the Key Vault REST call is used (no extra
SDK): ``PUT {vault}/secrets/{name}?api-version=7.4`` with a managed-identity token.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import httpx
from azure.core.credentials_async import AsyncTokenCredential

from shared.retry import RetryTransport

log = logging.getLogger(__name__)
KEY_VAULT_SCOPE = "https://vault.azure.net/.default"
API_VERSION = "7.4"


class KeyVaultSecretWriter:
    """Writes a new version of one secret whenever it is given a new value; owns the
    credential it is given (closed with it)."""

    def __init__(
        self,
        secret_uri: str,
        *,
        credential: AsyncTokenCredential,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 15.0,
    ) -> None:
        parts = urlsplit(secret_uri)
        # Only https://<vault>/secrets/<name>: the token must never go anywhere else.
        self._url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self._credential = credential
        self._last: str | None = None
        self._http = httpx.AsyncClient(
            transport=RetryTransport(transport or httpx.AsyncHTTPTransport()),
            timeout=timeout,
        )

    async def __call__(self, value: str) -> None:
        """Store ``value`` as the secret's new version; failures are logged, not raised, since
        the token in memory keeps working until the next restart."""
        if value == self._last:
            return
        try:
            token = await self._credential.get_token(KEY_VAULT_SCOPE)
            response = await self._http.put(
                self._url,
                params={"api-version": API_VERSION},
                json={"value": value, "contentType": "refresh-token"},
                headers={"Authorization": f"Bearer {token.token}"},
            )
        except Exception as exc:  # noqa: BLE001 - never let persistence break the sync
            log.warning("could not save the rotated refresh token: %s", type(exc).__name__)
            return
        if response.status_code >= 400:
            log.warning(
                "could not save the rotated refresh token: Key Vault answered %s "
                "(the identity needs 'Key Vault Secrets Officer' on the secret)",
                response.status_code,
            )
            return
        self._last = value
        log.info("saved the rotated Partner Center refresh token to Key Vault")

    async def aclose(self) -> None:
        """Close the connection pool and the credential (the writer owns both)."""
        await self._http.aclose()
        await self._credential.close()
