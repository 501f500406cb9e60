"""Queue triggers: the host's QueueListener/QueueProcessor (reference §2.1).

Messages are fetched ``batchSize`` at a time whenever no more than ``newBatchThreshold`` are
running; each stays invisible while its function runs (a lease of ``lease_s``, renewed at half
time), is deleted after success, released with ``visibilityTimeout`` after a failure, and moved
to ``<queue>-poison`` after ``maxDequeueCount`` attempts. An idle queue is polled less and less
often (up to ``maxPollingInterval``). Several hosts on the same queue share its messages the way
Azure instances do: through the visibility timeout, each message on one host at a time.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import random
import uuid
from dataclasses import dataclass
from typing import Any

from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.functions.queue import QueueMessage as HostQueueMessage
from azure.storage.queue import QueueMessage as StorageQueueMessage

from sandbox.host.clock import Clock, wait_or_stop
from sandbox.host.config import MAX_QUEUE_NAME, MIN_POLLING_INTERVAL_S, QueueOptions
from sandbox.host.errors import InvocationError
from sandbox.host.indexing import FunctionSpec
from sandbox.host.invoker import Invoker
from sandbox.host.storage import StorageClients

logger = logging.getLogger("sandbox.host")


def poison_name(queue: str) -> str | None:
    """``<queue>-poison``, or None when the name ends in -poison or would be too long."""
    if queue.endswith("-poison") or len(queue) + len("-poison") > MAX_QUEUE_NAME:
        return None
    return f"{queue}-poison"


def manual_message(text: str) -> HostQueueMessage:
    """The message an admin-API run of a queue function gets."""
    return HostQueueMessage(  # type: ignore[no-untyped-call]
        id=str(uuid.uuid4()), body=text.encode("utf-8"), dequeue_count=1
    )


@dataclass
class _Lease:
    """A dequeued message and its current pop receipt (renewing the lease changes it)."""

    message: StorageQueueMessage
    pop_receipt: str


async def cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


class QueueListener:
    """Listens to one queue for one function until ``stop`` is set."""

    def __init__(
        self,
        spec: FunctionSpec,
        storage: StorageClients,
        invoker: Invoker,
        options: QueueOptions,
        *,
        clock: Clock,
        lease_s: float,
        stop: asyncio.Event,
    ) -> None:
        self.spec = spec
        self.invoker = invoker
        self.options = options
        self.clock = clock
        self.lease_s = lease_s
        self._stop = stop
        self.client = storage.queue(spec.trigger, str(spec.trigger["queueName"]))
        poison = poison_name(self.client.queue_name)
        self.poison = storage.queue(spec.trigger, poison) if poison is not None else None

    async def run(self) -> None:
        """Fetch ``batchSize`` messages whenever no more than ``newBatchThreshold`` are
        running; back off when idle."""
        options = self.options
        running: set[asyncio.Task[None]] = set()
        slot_free = asyncio.Event()
        interval = MIN_POLLING_INTERVAL_S
        while not self._stop.is_set():
            if len(running) > options.threshold:
                slot_free.clear()
                await slot_free.wait()
                continue
            try:
                batch = await self._receive(options.batch_size)
            except Exception as exc:  # noqa: BLE001 - storage hiccups must not stop the listener
                logger.warning(
                    "Queue %s: receive failed: %s", self.client.queue_name, type(exc).__name__
                )
                batch = []
            if not batch:
                pause = interval * random.uniform(0.8, 1.0)
                if await wait_or_stop(self._stop, pause, self.clock):
                    return
                interval = min(interval * 2, options.max_polling_interval)
                continue
            interval = MIN_POLLING_INTERVAL_S
            for message in batch:
                task = asyncio.ensure_future(self._process_safely(message))
                running.add(task)
                self.invoker.inflight.add(task)

                def finished(done: asyncio.Task[None]) -> None:
                    running.discard(done)
                    self.invoker.inflight.discard(done)
                    slot_free.set()

                task.add_done_callback(finished)

    async def _receive(self, count: int) -> list[StorageQueueMessage]:
        pages = self.client.receive_messages(
            messages_per_page=count, visibility_timeout=int(self.lease_s)
        ).by_page()
        try:
            async for page in pages:
                return [message async for message in page]
        except ResourceNotFoundError:
            return []  # the queue does not exist yet: the host polls on, as for an empty queue
        return []

    async def _process_safely(self, message: StorageQueueMessage) -> None:
        try:
            await self._process(message)
        except Exception as exc:  # noqa: BLE001 - e.g. a lost lease; the message comes back
            logger.warning(
                "Queue %s: settling message %s failed: %s",
                self.client.queue_name,
                message.id,
                type(exc).__name__,
            )

    async def _process(self, message: StorageQueueMessage) -> None:
        client = self.client
        lease = _Lease(message, str(message.pop_receipt))
        count = int(message.dequeue_count or 1)
        if count > self.options.max_dequeue_count and self.poison is not None:
            await self._to_poison(lease)
            return
        renewal = asyncio.ensure_future(self._keep_lease(lease))
        try:
            body = self._decode(str(message.content or ""))
            trigger = HostQueueMessage(  # type: ignore[no-untyped-call]
                id=message.id,
                body=body,
                dequeue_count=count,
                expiration_time=message.expires_on,
                insertion_time=message.inserted_on,
                time_next_visible=message.next_visible_on,
                pop_receipt=lease.pop_receipt,
            )
            await self.invoker.call(self.spec, trigger)
        except asyncio.CancelledError:
            renewal.cancel()
            # Shutting down mid-run: make the message visible again right away (best effort).
            with contextlib.suppress(Exception):
                await client.update_message(
                    message.id, pop_receipt=lease.pop_receipt, visibility_timeout=0
                )
            raise
        except Exception:  # noqa: BLE001 - every failure counts as an attempt (§2.1)
            await cancel(renewal)
            await self._failed(lease, count)
            return
        await cancel(renewal)
        try:
            await client.delete_message(message.id, pop_receipt=lease.pop_receipt)
        except ResourceNotFoundError:
            logger.warning("Queue %s: message already gone after success", client.queue_name)

    def _decode(self, content: str) -> bytes:
        if self.options.message_encoding != "base64":
            return content.encode("utf-8")
        try:
            return base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError) as exc:
            # The host fails the invocation, so the message ends in poison like any failure.
            raise InvocationError("message is not valid base64") from exc

    async def _failed(self, lease: _Lease, count: int) -> None:
        if self.poison is None:
            # No poison queue possible: the message stays invisible until its lease ends (§2.1).
            return
        if count >= self.options.max_dequeue_count:
            await self._to_poison(lease)
            return
        try:
            await self.client.update_message(
                lease.message.id,
                pop_receipt=lease.pop_receipt,
                visibility_timeout=int(self.options.visibility_timeout),
            )
        except ResourceNotFoundError:
            logger.warning("Queue %s: could not release a failed message", self.client.queue_name)

    async def _to_poison(self, lease: _Lease) -> None:
        assert self.poison is not None
        # Only the body is copied; the raw text is already the encoded (base64) body (§2.1).
        with contextlib.suppress(ResourceExistsError):
            await self.poison.create_queue()
        await self.poison.send_message(str(lease.message.content or ""))
        await self.client.delete_message(lease.message.id, pop_receipt=lease.pop_receipt)
        logger.warning(
            "Function %s: message %s moved to %s after %s attempts",
            self.spec.name,
            lease.message.id,
            self.poison.queue_name,
            lease.message.dequeue_count,
        )

    async def _keep_lease(self, lease: _Lease) -> None:
        while True:
            await self.clock.sleep(self.lease_s / 2)
            updated = await self.client.update_message(
                lease.message.id,
                pop_receipt=lease.pop_receipt,
                visibility_timeout=int(self.lease_s),
            )
            lease.pop_receipt = str(updated.pop_receipt)
