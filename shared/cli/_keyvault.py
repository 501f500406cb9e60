"""Key Vault references in the CLI's settings, read with the operator's own identity.

In Azure the app settings of secrets are App Service Key Vault references, and the Functions
platform resolves them for the app. An operator who copies those settings into a settings file
(or the environment) for ``cosell`` gets the reference text, not the secret; the CLI reads each
reference it needs itself: ``DefaultAzureCredential`` (``az login``, environment variables,
a managed identity...) and Microsoft's ``SecretClient`` (azure-keyvault-secrets), both async.
The two forms App Service accepts are understood:

* ``@Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>[/<version>])``
* ``@Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>[;SecretVersion=<version>])``

Only Key Vault hosts are ever contacted (``shared.settings.parse_secret_uri``).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
)

from shared.errors import SettingsError
from shared.settings import parse_secret_uri

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential
    from azure.core.pipeline.transport import AsyncHttpTransport

PREFIX = "@Microsoft.KeyVault("
_PAIR = re.compile(r"^\s*([A-Za-z]+)\s*=\s*(.*?)\s*$")
LOOKUP_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class SecretReference:
    """Where a reference points: the vault's URL, the secret's name and maybe a version."""

    vault_url: str
    name: str
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.vault_url}/secrets/{self.name}" + (
            f"/{self.version}" if self.version else ""
        )


def is_reference(value: str) -> bool:
    return value.lstrip().startswith(PREFIX)


def parse_reference(value: str) -> SecretReference:
    """The secret a Key Vault reference names; ValueError (saying what is expected) if the
    reference cannot be read or points outside Key Vault."""
    text = value.strip()
    expected = (
        "expected @Microsoft.KeyVault(SecretUri=https://<vault>.vault.azure.net/secrets/<name>) "
        "or @Microsoft.KeyVault(VaultName=<vault>;SecretName=<name>)"
    )
    if not (text.startswith(PREFIX) and text.endswith(")")):
        raise ValueError(expected)
    pairs: dict[str, str] = {}
    for part in text[len(PREFIX) : -1].split(";"):
        match = _PAIR.match(part)
        if not match:
            raise ValueError(expected)
        pairs[match.group(1).lower()] = match.group(2)
    if set(pairs) == {"secreturi"}:
        vault_url, name, version = parse_secret_uri(pairs["secreturi"])
    elif {"vaultname", "secretname"} <= set(pairs) <= {"vaultname", "secretname", "secretversion"}:
        uri = f"https://{pairs['vaultname']}.vault.azure.net/secrets/{pairs['secretname']}"
        if pairs.get("secretversion"):
            uri += f"/{pairs['secretversion']}"
        vault_url, name, version = parse_secret_uri(uri)
    else:
        raise ValueError(expected)
    return SecretReference(vault_url, name, version)


def _default_credential() -> AsyncTokenCredential:
    from azure.identity.aio import DefaultAzureCredential

    return DefaultAzureCredential()


@dataclass
class KeyVaultAccess:
    """How the CLI reaches Key Vault: the operator's identity, and (tests) a transport."""

    credential: Callable[[], AsyncTokenCredential] = _default_credential
    transport: Callable[[], AsyncHttpTransport[Any, Any]] | None = None


ACCESS = KeyVaultAccess()  # tests replace it


async def resolve_references(
    values: Mapping[str, str], *, access: KeyVaultAccess | None = None
) -> dict[str, str]:
    """``values`` with every Key Vault reference replaced by its secret's value.

    Raises ``SettingsError`` naming each setting whose secret could not be read, and why."""
    wanted: dict[str, SecretReference] = {}
    problems: list[str] = []
    for name, value in values.items():
        if not is_reference(value):
            continue
        try:
            wanted[name] = parse_reference(value)
        except ValueError as exc:
            problems.append(f"  - {name}: the Key Vault reference cannot be read; {exc}")
    if problems:
        raise SettingsError("invalid app settings:\n" + "\n".join(problems))
    if not wanted:
        return dict(values)
    from azure.keyvault.secrets.aio import SecretClient

    access = access or ACCESS
    resolved = dict(values)
    async with AsyncExitStack() as stack:
        credential = access.credential()
        stack.push_async_callback(credential.close)
        clients: dict[str, SecretClient] = {}
        for name, reference in wanted.items():
            client = clients.get(reference.vault_url)
            if client is None:
                options: dict[str, Any] = {"connection_timeout": 10.0, "read_timeout": 10.0}
                if access.transport is not None:
                    options["transport"] = access.transport()
                client = SecretClient(reference.vault_url, credential, **options)
                await stack.enter_async_context(client)
                clients[reference.vault_url] = client
            try:
                async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                    secret = await client.get_secret(reference.name, reference.version)
            except Exception as exc:  # noqa: BLE001 - each failure is named, then all are raised
                problems.append(f"  - {name}: {_why(reference, exc)}")
                continue
            if secret.value is None:
                problems.append(f"  - {name}: the secret {reference} has no value")
                continue
            resolved[name] = secret.value
    if problems:
        raise SettingsError("could not read Key Vault references:\n" + "\n".join(problems))
    return resolved


def _why(reference: SecretReference, exc: Exception) -> str:
    """One line: what failed for this secret and what the operator can do."""
    where = f"the secret {reference}"
    if isinstance(exc, ClientAuthenticationError) and exc.status_code is None:
        return (
            f"no token for Key Vault ({type(exc).__name__}); sign in (`az login`) or set "
            "AZURE_CLIENT_ID/AZURE_TENANT_ID/AZURE_CLIENT_SECRET, then retry"
        )
    if isinstance(exc, ResourceNotFoundError):
        return f"{where} does not exist (check the reference and the secret's name)"
    if isinstance(exc, HttpResponseError) and exc.status_code in (401, 403):
        return (
            f"{where}: Key Vault answered {exc.status_code}; your identity needs "
            "'Key Vault Secrets User' on the vault (or the secret)"
        )
    if isinstance(exc, HttpResponseError) and exc.status_code is not None:
        return f"{where}: Key Vault answered {exc.status_code}"
    if isinstance(exc, TimeoutError):
        return f"{where}: no answer within {LOOKUP_TIMEOUT_S:.0f}s"
    if isinstance(exc, ServiceRequestError):
        return f"{where}: no answer from {reference.vault_url} ({type(exc).__name__})"
    return f"{where}: {type(exc).__name__}"
