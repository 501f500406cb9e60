"""One Dataverse request budget for every instance of the app (issue 20).

Dataverse's service protection counts per application user: 6,000 requests per sliding 5
minutes and 52 concurrent requests (reference dataverse-web-api.md §6). Flex Consumption runs
many instances of the app as that one user, so a per-instance throttle lets N instances send N
times the budget. This ledger shares it through what the app already has, Table Storage with
ETags (no lease server):

* **Requests.** Time is cut into buckets (10 s by default). The ledger is one row per scope
  (table ``synccursors``, partition ``budget``) holding the requests granted in each of the last
  ``buckets + 1`` buckets. An instance claims a *grant* (25 requests) at a time: it reads the
  row, and if the sum plus the grant stays under ``requests_per_window × headroom``, writes it
  back with the grant added, ``If-Match`` its ETag — so every claim sees all grants before it.
  A grant is spent within its bucket (what is left when the bucket ends is dropped), and any
  sliding window of ``window_s`` overlaps at most ``buckets + 1`` buckets: together the
  instances never exceed the budget.
* **Concurrency.** Each instance keeps a heartbeat row (every ``heartbeat_s``) and counts the
  live ones: its share of the concurrent cap is ``concurrent // live`` (at least 1).
* **Degrading safely.** Every storage call has a short timeout. When storage does not answer,
  the instance falls back to its fair share, computed from the instance count it last saw, for
  that bucket; it never stalls waiting on storage and never takes more than that share.
* 429 + ``Retry-After`` stay the last word: ``AdaptiveThrottle`` still obeys them.

Cost: two storage calls per grant (a read and a write; more on ETag contention), so 0.08 storage
calls per Dataverse request at the default grant, plus two per heartbeat; while the window is
full, each instance reads the ledger once per bucket (not once per waiting request).
``bench/shared_budget.py`` measures it with three instances at the ceiling: 0.36 per request at
its scale (1 s buckets, a 5 s heartbeat), which the defaults (10 s, 20 s) divide by about four.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import (
    AzureError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableEntity, UpdateMode
from azure.data.tables.aio import TableClient

log = logging.getLogger(__name__)
T = TypeVar("T")
_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")
_LEDGER = "budget"  # PartitionKey of the ledger rows (one per scope)


class TableBudget:
    """The shared request budget and concurrency share of one Dataverse application user.

    ``take()`` waits until this instance may send one more request; ``debit(n)`` counts ``n``
    more already sent (a ``$batch``'s inner operations); ``concurrency`` is this instance's
    share of the concurrent-request cap. ``scope`` names the budget (the environment's host:
    one application user per environment)."""

    def __init__(
        self,
        table: TableClient,
        *,
        scope: str,
        instance_id: str | None = None,
        requests_per_window: int = 6000,
        window_s: float = 300.0,
        concurrent: int = 52,
        buckets: int = 30,
        headroom: float = 0.95,
        grant: int = 25,
        heartbeat_s: float = 20.0,
        storage_timeout_s: float = 2.0,
        storage_retry_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if buckets < 1 or grant < 1 or not 0 < headroom <= 1:
            raise ValueError("expected buckets >= 1, grant >= 1 and 0 < headroom <= 1")
        self._table = table
        safe = _KEY_UNSAFE.sub("-", scope)
        self._scope = safe
        self._instances = f"instances-{safe}"
        self.instance_id = instance_id or uuid.uuid4().hex
        self.limit = math.floor(requests_per_window * headroom)
        self.bucket_s = window_s / buckets
        self.buckets = buckets
        self.concurrent = concurrent
        self.grant_size = grant
        self.heartbeat_s = heartbeat_s
        self.storage_timeout_s = storage_timeout_s
        self.storage_retry_s = storage_retry_s
        self._storage_back_at = -math.inf
        self._fallback_bucket = -1  # the bucket whose fair share was last handed out
        self._full_bucket = -1  # the bucket in which the ledger last had no room
        self._clock = clock
        self._sleep = sleep
        # Left of the current grant; negative while requests sent beyond it are owed (debit).
        self._tokens = 0
        self._tokens_bucket = -1  # the bucket the tokens were granted in
        self._live = 1  # instances seen at the last heartbeat
        self._beat_at = -math.inf
        self._lock = asyncio.Lock()
        # measured
        self.storage_calls = 0
        self.storage_failures = 0
        self.granted = 0
        self.fallback_grants = 0

    # -- what the throttle asks ----------------------------------------------------------------

    @property
    def concurrency(self) -> int:
        return max(1, self.concurrent // max(1, self._live))

    @property
    def live_instances(self) -> int:
        return self._live

    async def take(self) -> None:
        """Wait until one more request fits the shared budget."""
        while True:
            async with self._lock:
                bucket = self._bucket()
                if self._clock() - self._beat_at >= self.heartbeat_s:
                    await self._heartbeat()
                if self._tokens_bucket != bucket:
                    # What is left of a grant expires with its bucket; what is owed stays owed.
                    self._tokens, self._tokens_bucket = min(0, self._tokens), bucket
                if self._tokens <= 0 and self._full_bucket != bucket:
                    got, counted_in = await self._claim(bucket)
                    if got == 0:
                        # The window is full: room opens only when a bucket drops out of it,
                        # so the other waiters of this bucket do not ask the ledger again.
                        self._full_bucket = bucket
                    elif counted_in != self._bucket():
                        # Granted for a bucket that has passed: spending it now would put
                        # requests outside the bucket they were counted in.
                        continue
                    else:
                        self._tokens += got
                        if self._tokens <= 0:
                            continue  # it paid what was owed (debit); claim again
                if self._tokens > 0:
                    self._tokens -= 1
                    return
                wait = (bucket + 1) * self.bucket_s - self._clock()
            # The window is full for now: wait for the next bucket (outside the lock).
            await self._sleep(max(0.01, wait))

    def debit(self, requests: int) -> None:
        """Requests already sent beyond those taken (a ``$batch``'s inner operations): owed
        tokens, paid from the next grants."""
        self._tokens -= max(0, requests)

    # -- the ledger ----------------------------------------------------------------------------

    def _bucket(self) -> int:
        return int(self._clock() // self.bucket_s)

    def _fair_share(self) -> int:
        """Requests per bucket this instance may send on its own: its share of the per-bucket
        rate that keeps any window within the limit."""
        per_bucket = self.limit // (self.buckets + 1)
        return max(1, per_bucket // max(1, self._live))

    async def _claim(self, bucket: int) -> tuple[int, int]:
        """Add a grant to ``bucket`` if the window allows: the tokens granted (0: the window is
        full) and the bucket they are counted in. The ledger is one row, changed with
        ``If-Match``: a claim sees every grant made before it."""
        if self._clock() < self._storage_back_at:
            return self._fair_share_now(None)
        for _ in range(8):  # ETag contention between instances: re-read and retry
            try:
                row = await self._storage(self._read_ledger())
            except (AzureError, TimeoutError, OSError) as exc:
                return self._fair_share_now(exc)
            counts = _counts(row)
            recent = {b: n for b, n in counts.items() if b >= bucket - self.buckets}
            room = self.limit - sum(recent.values())
            if room <= 0:
                return 0, bucket
            size = min(self.grant_size, room)
            recent[bucket] = recent.get(bucket, 0) + size
            try:
                await self._storage(self._write_ledger(row, recent))
            except (ResourceModifiedError, ResourceExistsError):
                continue
            except (AzureError, TimeoutError, OSError) as exc:
                return self._fair_share_now(exc)
            self.granted += size
            return size, bucket
        return 0, bucket

    def _fair_share_now(self, exc: BaseException | None) -> tuple[int, int]:
        """Storage did not answer: this instance's fair share, for the bucket it is in now
        (storage is left alone for ``storage_retry_s`` so a dead one costs no waiting)."""
        if exc is not None:
            self.storage_failures += 1
            self._storage_back_at = self._clock() + self.storage_retry_s
            log.warning(
                "dataverse budget: storage did not answer (%s); this instance keeps to its fair "
                "share of %d requests per bucket for %.0f s",
                type(exc).__name__,
                self._fair_share(),
                self.storage_retry_s,
            )
        bucket = self._bucket()
        if self._fallback_bucket == bucket:
            return 0, bucket  # its share of this bucket is spent: wait for the next
        self._fallback_bucket = bucket
        share = self._fair_share()
        self.fallback_grants += share
        return share, bucket

    async def _read_ledger(self) -> TableEntity | None:
        try:
            return await self._table.get_entity(_LEDGER, self._scope)
        except ResourceNotFoundError:
            return None

    async def _write_ledger(self, row: TableEntity | None, counts: dict[int, int]) -> None:
        entity = {
            "PartitionKey": _LEDGER,
            "RowKey": self._scope,
            "Buckets": json.dumps({str(b): n for b, n in sorted(counts.items())}),
        }
        if row is None:
            await self._table.create_entity(entity)
            return
        await self._table.update_entity(
            entity,
            mode=UpdateMode.REPLACE,
            etag=row.metadata["etag"],
            match_condition=MatchConditions.IfNotModified,
        )

    async def _heartbeat(self) -> None:
        """Say this instance is alive and count the live ones (for the concurrency share)."""
        now = self._clock()
        self._beat_at = now
        entity = {
            "PartitionKey": self._instances,
            "RowKey": self.instance_id,
            # Three missed beats (at least 10 s) and the others stop counting this instance.
            "Expires": now + max(3 * self.heartbeat_s, 10.0),
        }

        async def live() -> int:
            pages = self._table.query_entities(
                "PartitionKey eq @pk and Expires gt @now",
                parameters={"pk": self._instances, "now": now},
                select=["RowKey"],
            )
            return len([e async for e in pages])

        try:
            await self._storage(self._table.upsert_entity(entity, mode=UpdateMode.REPLACE))
            self._live = max(1, await self._storage(live()))
        except (AzureError, TimeoutError, OSError) as exc:
            self.storage_failures += 1
            log.warning("dataverse budget: heartbeat failed (%s)", type(exc).__name__)

    async def _storage(self, call: Awaitable[T]) -> T:
        self.storage_calls += 1
        return await asyncio.wait_for(call, self.storage_timeout_s)


def _counts(row: TableEntity | None) -> dict[int, int]:
    """The ledger's grants per bucket ({} for a new ledger or an unreadable one)."""
    if row is None:
        return {}
    try:
        return {int(b): int(n) for b, n in json.loads(str(row.get("Buckets") or "{}")).items()}
    except (ValueError, TypeError, AttributeError):
        return {}  # a damaged ledger starts afresh rather than blocking every instance
