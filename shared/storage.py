"""Clients for the app's storage account, built from the same settings the bindings use.

Locally ``AzureWebJobsStorage`` is a connection string (Azurite). In Azure it is the
identity-based group ``AzureWebJobsStorage__queueServiceUri`` / ``__tableServiceUri`` /
``__credential`` / ``__clientId``, so one configuration drives both the Functions bindings and
our own SDK calls (reference: azure-functions-platform §1.5).
"""

from __future__ import annotations

from typing import Any

from azure.core.credentials_async import AsyncTokenCredential
from azure.data.tables.aio import TableServiceClient
from azure.identity.aio import DefaultAzureCredential, ManagedIdentityCredential
from azure.storage.queue import TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient

from shared.errors import SettingsError
from shared.settings import Settings

# Every storage call has a deadline (issue 13, class 11): a storage account that accepts the
# connection and then never answers must end in an error, not a hang. Per try: connect within
# 5 s, each read within 10 s; the SDK's retries are held to 2, so a call gives up in about 35 s.
STORAGE_TIMEOUTS: dict[str, Any] = {"connection_timeout": 5, "read_timeout": 10, "retry_total": 2}


def azure_credential(settings: Settings) -> AsyncTokenCredential:
    """The app's Azure identity: the managed identity in Azure, else the developer's login."""
    if settings.storage_credential == "managedidentity":
        return ManagedIdentityCredential(client_id=settings.storage_client_id)
    # Identity URIs without `__credential` (a developer pointing at a real account): az login.
    return DefaultAzureCredential()


def table_service_client(settings: Settings) -> TableServiceClient:
    """An async Table service client for the state tables."""
    if settings.storage_connection_string is not None:
        return TableServiceClient.from_connection_string(
            settings.storage_connection_string.get_secret_value(), **STORAGE_TIMEOUTS
        )
    if settings.storage_table_service_uri is None:  # settings loaded without storage's needs
        raise SettingsError("AzureWebJobsStorage: missing; needed to reach the storage tables")
    return TableServiceClient(
        settings.storage_table_service_uri,
        credential=azure_credential(settings),
        **STORAGE_TIMEOUTS,
    )


def queue_client(settings: Settings, queue_name: str) -> QueueClient:
    """An async client of one queue that writes base64 text, as the Functions host reads it."""
    encode = TextBase64EncodePolicy()
    if settings.storage_connection_string is not None:
        return QueueClient.from_connection_string(
            settings.storage_connection_string.get_secret_value(),
            queue_name,
            message_encode_policy=encode,
            **STORAGE_TIMEOUTS,
        )
    if settings.storage_queue_service_uri is None:  # settings loaded without storage's needs
        raise SettingsError("AzureWebJobsStorage: missing; needed to reach the storage queues")
    return QueueClient(
        settings.storage_queue_service_uri,
        queue_name,
        credential=azure_credential(settings),
        message_encode_policy=encode,
        **STORAGE_TIMEOUTS,
    )
