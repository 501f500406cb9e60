"""Persisting the rotated Partner Center refresh token to Key Vault (SPEC 6).

Each token refresh may hand back a new refresh token (reference: partner-center-referrals-api
§3); the old one stops working after a while, so the new one must survive a restart. The app
setting ``PARTNER_CENTER_REFRESH_TOKEN`` is a Key Vault reference to the same secret, so writing
a new version there is what the next start reads. The write is Microsoft's Key Vault client
(``azure-keyvault-secrets``: the async ``SecretClient.set_secret``, with its challenge
authentication and retries) with the app's identity.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import HttpResponseError
from azure.keyvault.secrets.aio import SecretClient

from shared.settings import parse_secret_uri

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.core.pipeline.transport import AsyncHttpTransport

log = logging.getLogger(__name__)
KEY_VAULT_SCOPE = "https://vault.azure.net/.default"
CONTENT_TYPE = "refresh-token"


class KeyVaultSecretWriter:
    """Writes a new version of one secret whenever it is given a new value; owns the
    credential it is given (closed with it).

    ``secret_uri`` must be ``https://<vault>.vault.azure.net/secrets/<name>`` (ValueError
    otherwise): the vault token must never go anywhere else. ``transport`` is an azure-core
    async transport (tests).
    """

    def __init__(
        self,
        secret_uri: str,
        *,
        credential: AsyncTokenCredential,
        transport: AsyncHttpTransport[Any, Any] | None = None,
        timeout: float = 15.0,
    ) -> None:
        vault_url, self.name, _ = parse_secret_uri(secret_uri, version=False)
        self._credential = credential
        self._last: str | None = None
        options: dict[str, object] = {"connection_timeout": timeout, "read_timeout": timeout}
        if transport is not None:
            options["transport"] = transport
        self._client = SecretClient(vault_url, credential, **options)

    async def __call__(self, value: str) -> None:
        """Store ``value`` as the secret's new version; failures are logged, not raised, since
        the token in memory keeps working until the next restart."""
        if value == self._last:
            return
        try:
            await self._client.set_secret(self.name, value, content_type=CONTENT_TYPE)
        except HttpResponseError as exc:
            if exc.status_code is None:  # the credential's own failure: no token
                log.warning("could not save the rotated refresh token: %s", type(exc).__name__)
                return
            log.warning(
                "could not save the rotated refresh token: Key Vault answered %s "
                "(the identity needs 'Key Vault Secrets Officer' on the secret)",
                exc.status_code,
            )
            return
        except Exception as exc:  # noqa: BLE001 - never let persistence break the sync
            log.warning("could not save the rotated refresh token: %s", type(exc).__name__)
            return
        self._last = value
        log.info("saved the rotated Partner Center refresh token to Key Vault")

    async def aclose(self) -> None:
        """Close the client and the credential (the writer owns both)."""
        await self._client.close()
        await self._credential.close()
