"""The resources one command uses, opened on first use and closed when the command ends.

The CLI builds its own clients with the app's wiring (``shared.wiring``, as the worker does),
rather than the Functions runtime's per-loop singletons: a command is one short event loop, and
it must close everything it opened before ``asyncio.run`` returns.
"""

from __future__ import annotations

import argparse
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING

from azure.data.tables.aio import TableServiceClient

from shared import wiring
from shared.cli._output import Output
from shared.dataverse import DataverseClient
from shared.jobs import POISON_QUEUE, SYNC_JOBS_QUEUE, JobQueue
from shared.partner_center import PartnerCenterClient
from shared.settings import Settings
from shared.state import HistoryStore, LinkStore
from shared.storage import queue_client, table_service_client

if TYPE_CHECKING:
    from shared.sync import SyncEngine


class Context:
    """Settings, output and lazily opened clients of one command run."""

    def __init__(self, args: argparse.Namespace, settings: Settings, out: Output) -> None:
        self.args = args
        self.settings = settings
        self.out = out
        self.stack = AsyncExitStack()
        self._pc: PartnerCenterClient | None = None
        self._dataverse: DataverseClient | None = None
        self._tables: TableServiceClient | None = None
        self._queues: dict[str, JobQueue] = {}

    async def __aenter__(self) -> Context:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stack.aclose()

    async def partner_center(self) -> PartnerCenterClient:
        if self._pc is None:
            # As in the worker: a token rotated during the command is kept in Key Vault, since
            # the next start reads the secret (SPEC 6). Closed after the client (LIFO).
            writer = wiring.refresh_token_writer(self.settings)
            if writer is not None:
                self.stack.push_async_callback(writer.aclose)
            self._pc = await self.stack.enter_async_context(
                wiring.partner_center_client(self.settings, on_refresh_token=writer)
            )
        return self._pc

    async def dataverse(self) -> DataverseClient:
        if self._dataverse is None:
            self._dataverse = await self.stack.enter_async_context(
                wiring.dataverse_client(self.settings)
            )
        return self._dataverse

    def tables(self) -> TableServiceClient:
        if self._tables is None:
            self._tables = table_service_client(self.settings)
            self.stack.push_async_callback(self._tables.close)
        return self._tables

    def links(self) -> LinkStore:
        store = wiring.link_store(self.tables())
        self.stack.push_async_callback(store.close)
        return store

    def history(self) -> HistoryStore:
        store = wiring.history_store(self.tables())
        self.stack.push_async_callback(store.close)
        return store

    def queue(self, name: str = SYNC_JOBS_QUEUE) -> JobQueue:
        """``sync-jobs`` or ``sync-jobs-poison`` (base64 text, as the host reads it)."""
        if name not in self._queues:
            queue = JobQueue(queue_client(self.settings, name))
            self.stack.push_async_callback(queue.close)
            self._queues[name] = queue
        return self._queues[name]

    def poison(self) -> JobQueue:
        return self.queue(POISON_QUEUE)

    async def engine(self, *, dry_run: bool = False) -> SyncEngine:
        """The app's ``SyncEngine`` on this command's clients (the CLI has no sync logic)."""
        try:
            import shared.sync  # noqa: F401 - a build without the engine fails here, clearly
        except ImportError as exc:
            raise EngineUnavailable(
                f"the sync engine (shared.sync.SyncEngine) is not available: {exc}"
            ) from None
        links, history = self.links(), self.history()
        if not dry_run:
            # Bicep (Azure) or the host (sandbox) create the tables; a first manual sync may
            # come earlier. A dry run creates nothing, not even a table.
            for store in (links, history):
                await store.create_table()
        return wiring.sync_engine(
            self.settings,
            pc=await self.partner_center(),
            dataverse=await self.dataverse(),
            links=links,
            history=history,
        )


class EngineUnavailable(RuntimeError):
    """``shared.sync`` cannot be imported (a build without the engine)."""
