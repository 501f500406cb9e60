"""Calling user functions as the worker does: awaited or in a thread pool, out-bindings written.

Async functions are awaited on the host's event loop (bounded by host.json ``functionTimeout``);
sync ones run in a thread pool (§1.4). Each invocation is logged with name, outcome and duration,
never with its payload (SPEC 8). Queue out-bindings are written after a successful call.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import uuid
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, Generic, TypeVar

import azure.functions as func
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue.aio import QueueClient

from sandbox.host.clock import Clock
from sandbox.host.config import HostConfig
from sandbox.host.context import InvocationContext
from sandbox.host.indexing import FunctionSpec
from sandbox.host.storage import StorageClients

logger = logging.getLogger("sandbox.host")

T = TypeVar("T")


class Out(func.Out[T], Generic[T]):
    """What the worker passes for an out-binding parameter (reference §1.2 ``queue_output``)."""

    def __init__(self) -> None:
        self._value: T | None = None

    def set(self, val: T) -> None:
        self._value = val

    def get(self) -> T:
        return self._value  # type: ignore[return-value]


class Invoker:
    """Runs invocations; ``inflight`` holds the running ones, ``invocations`` counts the
    completed ones per function."""

    def __init__(
        self, storage: StorageClients, clock: Clock, *, thread_count: int | None = None
    ) -> None:
        self.storage = storage
        self.clock = clock
        self.config = HostConfig()
        self.directory = "."
        self.executor = ThreadPoolExecutor(
            max_workers=thread_count, thread_name_prefix="functions-sync"
        )
        self.inflight: set[asyncio.Task[Any]] = set()
        self.invocations: dict[str, int] = {}
        self._output_clients: dict[tuple[str, str], QueueClient] = {}

    async def invoke(self, spec: FunctionSpec, kwargs: dict[str, Any]) -> Any:
        """Call the user function (awaited, or in the thread pool), logging name/outcome/time.

        Exceptions are logged by type only: their messages may echo payload data (SPEC 8).
        """
        invocation_id = str(uuid.uuid4())
        if spec.wants_context:
            kwargs = {
                **kwargs,
                "context": InvocationContext(invocation_id, spec.name, self.directory),
            }
        started = self.clock.monotonic()
        outcome = "Failed"
        try:
            if spec.is_async:
                result = await asyncio.wait_for(
                    spec.user_function(**kwargs), self.config.function_timeout
                )
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(
                    self.executor, partial(spec.user_function, **kwargs)
                )
            outcome = "Succeeded"
            return result
        except TimeoutError:
            logger.error("Function %s timed out (functionTimeout, host.json)", spec.name)
            raise
        except Exception as exc:
            logger.error(
                "Function %s failed: %s (Id=%s)", spec.name, type(exc).__name__, invocation_id
            )
            logger.debug("Function %s traceback", spec.name, exc_info=True)
            raise
        finally:
            self.invocations[spec.name] = self.invocations.get(spec.name, 0) + 1
            logger.info(
                "Executed 'Functions.%s' (%s, Id=%s, Duration=%dms)",
                spec.name,
                outcome,
                invocation_id,
                (self.clock.monotonic() - started) * 1000,
            )

    def start(self, spec: FunctionSpec, kwargs: dict[str, Any]) -> asyncio.Task[Any]:
        """``invoke`` as a task tracked in ``inflight`` (``stop()`` waits for those)."""
        task = asyncio.ensure_future(self.invoke(spec, kwargs))
        self.inflight.add(task)
        task.add_done_callback(self.inflight.discard)
        return task

    async def call(self, spec: FunctionSpec, trigger_value: Any) -> Any:
        """Invoke a non-HTTP function with its trigger value and write its out-bindings."""
        outputs = self.outputs(spec)
        kwargs: dict[str, Any] = {str(spec.trigger["name"]): trigger_value, **outputs}
        result = await asyncio.shield(self.start(spec, kwargs))
        await self.flush_outputs(spec, outputs)
        return result

    def outputs(self, spec: FunctionSpec) -> dict[str, Out[Any]]:
        return {str(b["name"]): Out() for b in spec.outputs}

    async def flush_outputs(self, spec: FunctionSpec, outputs: Mapping[str, Out[Any]]) -> None:
        """Write queue out-bindings after a successful call (what the host does with them)."""
        for binding in spec.outputs:
            value = outputs[str(binding["name"])].get()
            if value is None:
                continue
            if binding.get("type") != "queue":
                logger.warning(
                    "Function %s: out-binding type %s is not supported locally",
                    spec.name,
                    binding.get("type"),
                )
                continue
            client = await self._output_client(binding)
            for item in value if isinstance(value, list) else [value]:
                await client.send_message(self.encode(item))

    async def _output_client(self, binding: Mapping[str, Any]) -> QueueClient:
        """One client per output queue, created with its queue on first use (like the host)."""
        key = (str(binding.get("connection")), str(binding["queueName"]))
        client = self._output_clients.get(key)
        if client is None:
            client = self.storage.queue(binding, str(binding["queueName"]))
            with contextlib.suppress(ResourceExistsError):
                await client.create_queue()
            self._output_clients[key] = client
        return client

    def encode(self, value: str | bytes) -> str:
        data = value.encode("utf-8") if isinstance(value, str) else value
        if self.config.queues.message_encoding == "base64":
            return base64.b64encode(data).decode("ascii")
        return data.decode("utf-8")

    def close(self) -> None:
        self._output_clients.clear()
        # Sync functions still running in a thread cannot be interrupted; do not wait for them.
        self.executor.shutdown(wait=False, cancel_futures=True)
