"""Storage clients made from the app settings the bindings name (``connection``), closed at stop."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from azure.storage.queue.aio import QueueClient

from sandbox.host.config import DEFAULT_CONNECTION
from sandbox.host.errors import HostError
from sandbox.host.indexing import resolve_settings


class StorageClients:
    """Queue clients for trigger and output bindings; every one made is closed by ``close()``."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self._clients: list[QueueClient] = []

    def connection(self, binding: Mapping[str, Any]) -> str:
        """The connection string the binding's ``connection`` setting holds (§1.5)."""
        setting = str(binding.get("connection") or DEFAULT_CONNECTION)
        connection = self.environ.get(setting)
        if not connection:
            raise HostError(
                f"queue binding {binding.get('name')!r}: app setting {setting!r} "
                "(a storage connection string) is not set"
            )
        return connection

    def queue(self, binding: Mapping[str, Any], queue_name: str) -> QueueClient:
        client = QueueClient.from_connection_string(
            self.connection(binding), resolve_settings(queue_name, self.environ)
        )
        self._clients.append(client)
        return client

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
        self._clients.clear()
