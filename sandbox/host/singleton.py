"""The timer singleton lock: one host instance at a time holds a lease on a name.

The Azure host takes a blob lease in ``AzureWebJobsStorage`` (``locks/<hostId>/...``, reference
§2.3). The sandbox's Azurite runs queue and table only, so the lease here is a Table Storage row
(table ``sandboxhostlocks``, PartitionKey = host id, RowKey = lock name) holding its owner and
expiry, and every change is conditional on the row's ETag: two instances racing for a free or
expired lease cannot both win (one gets 409 or 412). The owner renews it well before it expires
and deletes it when it stops, so another instance takes over at once after a clean stop and
within a lease period after a crash.
"""

from __future__ import annotations

import contextlib
import logging
from datetime import datetime, timedelta

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from sandbox.host.clock import Clock

logger = logging.getLogger("sandbox.host")

LOCK_TABLE = "sandboxhostlocks"
DEFAULT_SINGLETON_LEASE_S = 15.0  # SingletonOptions.LockPeriod of the WebJobs host


class TableLease:
    """A renewable lease on ``name`` for ``owner``, shared by every host with ``host_id``."""

    def __init__(
        self,
        table: TableClient,
        host_id: str,
        name: str,
        owner: str,
        *,
        period_s: float,
        clock: Clock,
    ) -> None:
        self.table = table
        self.host_id = host_id
        self.name = name
        self.owner = owner
        self.period_s = period_s
        self.clock = clock
        self.held = False

    async def acquire(self) -> bool:
        """Take the lease if it is free, expired or already ours (then it is renewed)."""
        now = self.clock.now()
        entity = {
            "PartitionKey": self.host_id,
            "RowKey": self.name,
            "Owner": self.owner,
            "Expires": (now + timedelta(seconds=self.period_s)).isoformat(),
        }
        try:
            await self.table.create_entity(entity)
            self.held = True
            return True
        except ResourceExistsError:
            pass
        try:
            current = await self.table.get_entity(self.host_id, self.name)
        except ResourceNotFoundError:
            return False  # released meanwhile: the next attempt creates it
        mine = current.get("Owner") == self.owner
        if not mine and datetime.fromisoformat(str(current.get("Expires"))) > now:
            self.held = False
            return False
        try:
            await self.table.update_entity(
                entity,
                mode=UpdateMode.REPLACE,
                etag=current.metadata["etag"],
                match_condition=MatchConditions.IfNotModified,
            )
        except (ResourceModifiedError, ResourceNotFoundError):
            self.held = False
            return False  # someone else changed it first
        self.held = True
        return True

    async def release(self) -> None:
        """Give the lease up (only if it is still ours)."""
        if not self.held:
            return
        self.held = False
        with contextlib.suppress(ResourceNotFoundError, ResourceModifiedError):
            current = await self.table.get_entity(self.host_id, self.name)
            if current.get("Owner") == self.owner:
                await self.table.delete_entity(
                    self.host_id,
                    self.name,
                    etag=current.metadata["etag"],
                    match_condition=MatchConditions.IfNotModified,
                )


async def lock_table(connection_string: str) -> TableClient:
    """The lock table's client (the table is created if missing)."""
    table = TableClient.from_connection_string(connection_string, LOCK_TABLE)
    with contextlib.suppress(ResourceExistsError):
        await table.create_table()
    return table
