"""Process-wide resources of the Function app, created once on first use.

The Functions worker runs every async function on one event loop, and Microsoft's advice is to
create SDK clients once and reuse them. Async clients belong to the loop they were created on,
so the resources are kept per event loop (a test that runs several loops gets fresh ones).
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass

from azure.data.tables.aio import TableServiceClient

from shared.jobs import POISON_QUEUE, SYNC_JOBS_QUEUE, JobQueue
from shared.settings import Settings, get_settings
from shared.state import CURSORS_TABLE, CursorStore
from shared.storage import queue_client, table_service_client


@dataclass
class Runtime:
    """The settings and storage clients one worker process shares between invocations."""

    settings: Settings
    tables: TableServiceClient
    jobs: JobQueue
    poison: JobQueue

    @classmethod
    def from_settings(cls, settings: Settings) -> Runtime:
        return cls(
            settings=settings,
            tables=table_service_client(settings),
            jobs=JobQueue(queue_client(settings, SYNC_JOBS_QUEUE)),
            poison=JobQueue(queue_client(settings, POISON_QUEUE)),
        )

    def cursors(self) -> CursorStore:
        return CursorStore(self.tables.get_table_client(CURSORS_TABLE))

    async def close(self) -> None:
        await self.jobs.close()
        await self.poison.close()
        await self.tables.close()


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Runtime] = (
    weakref.WeakKeyDictionary()
)


def get_runtime() -> Runtime:
    """The runtime of the running event loop; raises ``SettingsError`` if settings are wrong."""
    loop = asyncio.get_running_loop()
    runtime = _by_loop.get(loop)
    if runtime is None:
        runtime = _by_loop[loop] = Runtime.from_settings(get_settings())
    return runtime
