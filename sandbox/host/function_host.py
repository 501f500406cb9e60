"""``FunctionHost``: one local Functions host instance, putting the other modules together.

Start-up indexes the app (``indexing``), reads host.json (``config``), starts a listener per
timer (``timers``) and queue trigger (``queues``) and serves HTTP (``http`` under ``server``);
``stop()`` stops listening, lets running invocations finish (bounded), runs the ``on_stop``
hooks, releases the timers' singleton leases and closes the storage clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import uvicorn

from sandbox.host.clock import SYSTEM_CLOCK, Clock
from sandbox.host.config import (
    DEFAULT_CONNECTION,
    DEFAULT_LEASE_S,
    MIN_POLLING_INTERVAL_S,
    HostConfig,
)
from sandbox.host.errors import HostError
from sandbox.host.http import HttpApp, HttpRoute, function_url
from sandbox.host.indexing import FunctionSpec, index_module, resolve_settings
from sandbox.host.invoker import Invoker
from sandbox.host.queues import QueueListener, manual_message
from sandbox.host.server import QuietServer, serve_in_background, stop_server
from sandbox.host.singleton import DEFAULT_SINGLETON_LEASE_S, TableLease, lock_table
from sandbox.host.storage import StorageClients
from sandbox.host.timers import TimerListener
from shared.ncrontab import parse_schedule

logger = logging.getLogger("sandbox.host")


def new_instance_id() -> str:
    """An id for one host instance: machine, process and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class FunctionHost:
    """Runs one v2 Functions app locally: HTTP server, timers and queue listeners.

    ``module``: the app module (``function_app``), whose ``app`` attribute is the FunctionApp.
    ``app_dir``: the folder with the module and host.json (put first on ``sys.path``).
    ``host_json``: host.json to read (default ``app_dir/host.json``, or next to the module).
    ``port``: 0 picks a free port; ``port`` / ``url`` report the real one after ``start()``.
    ``function_key``: the key HTTP functions with auth level FUNCTION or ADMIN require.
    ``environ``: where ``%SETTING%`` and ``connection`` names are resolved (default os.environ).
    ``visibility_timeout`` … ``max_polling_interval``: override host.json queue options (tests);
    ``max_polling_interval`` only lowers host.json's value (the sandbox caps it for latency).
    ``lease_s``: how long a dequeued message stays invisible while its function runs (renewed).
    ``shutdown_timeout``: how long ``stop()`` waits for running invocations before cancelling.
    ``on_stop``: coroutines run after the invocations finished (e.g. close the app's clients).
    ``clock``: what timers and queue polling read time from and sleep on (``SystemClock``; a
    ``VirtualClock`` in tests).
    ``host_id``: set it on every instance of one app (the stack does) to run several instances
    on the same storage: each timer then fires on one instance at a time, through a lease in
    ``AzureWebJobsStorage`` of ``singleton_lease_s`` (see ``singleton``). None: this instance
    alone (a lock in this process only). ``instance_id`` names this instance (in the lease, the
    logs and ``/admin/host/status``).
    """

    def __init__(
        self,
        module: str = "function_app",
        *,
        app_dir: Path | None = None,
        host_json: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        function_key: str = "sandbox",
        environ: Mapping[str, str] | None = None,
        visibility_timeout: float | None = None,
        max_dequeue_count: int | None = None,
        batch_size: int | None = None,
        new_batch_threshold: int | None = None,
        max_polling_interval: float | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        shutdown_timeout: float = 10.0,
        thread_count: int | None = None,
        serve_http: bool = True,
        on_stop: Sequence[Callable[[], Awaitable[None]]] = (),
        clock: Clock = SYSTEM_CLOCK,
        host_id: str | None = None,
        instance_id: str | None = None,
        singleton_lease_s: float = DEFAULT_SINGLETON_LEASE_S,
    ) -> None:
        self.module_name = module
        self.app_dir = app_dir
        self.host_json = host_json
        self.bind_host = host
        self.port = port
        self.function_key = function_key
        self._environ = environ
        self._overrides: dict[str, Any] = {
            key: value
            for key, value in {
                "visibility_timeout": visibility_timeout,
                "max_dequeue_count": max_dequeue_count,
                "batch_size": batch_size,
                "new_batch_threshold": new_batch_threshold,
            }.items()
            if value is not None
        }
        self._polling_cap = max_polling_interval
        self.lease_s = lease_s
        self.shutdown_timeout = shutdown_timeout
        self.serve_http = serve_http
        self._on_stop = list(on_stop)
        self.clock = clock
        self.host_id = host_id
        self.instance_id = instance_id or new_instance_id()
        self.singleton_lease_s = singleton_lease_s
        self.config = HostConfig()
        self.functions: dict[str, FunctionSpec] = {}
        self._storage = StorageClients(self.environ)
        self.invoker = Invoker(self._storage, clock, thread_count=thread_count)
        # The same objects as the invoker's: running invocations, completed ones per function.
        self._inflight = self.invoker.inflight
        self.invocations = self.invoker.invocations
        self.http = HttpApp(self.invoker, function_key, run_now=self._run_now, status=self._status)
        self.timers: dict[str, TimerListener] = {}
        self._stopping = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._tables: list[Any] = []
        self._server: QuietServer | None = None

    # -- addresses

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    @property
    def url(self) -> str:
        return f"http://{self.bind_host}:{self.port}"

    @property
    def routes(self) -> list[HttpRoute]:
        return self.http.routes

    def function_url(self, name: str, *, with_key: bool = True) -> str:
        """The URL of an HTTP function (its route without parameters filled in)."""
        key = self.function_key if with_key else None
        return function_url(self.url, self.functions[name], self.config, key)

    # -- lifecycle

    async def start(self) -> FunctionHost:
        if self.app_dir is not None and str(self.app_dir) not in sys.path:
            sys.path.insert(0, str(self.app_dir))
        module, self.functions = index_module(self.module_name)
        self.config = self._read_config(module)
        self.invoker.config = self.config
        self.invoker.directory = str(Path(getattr(module, "__file__", None) or ".").parent)
        self.http.load(self.config, self.functions)
        try:
            for spec in self.functions.values():
                if spec.trigger_type == "timerTrigger":
                    timer = await self._timer(spec)
                    self.timers[spec.name] = timer
                    self._spawn(timer.run(), f"timer {spec.name}")
                elif spec.trigger_type == "queueTrigger":
                    listener = QueueListener(
                        spec,
                        self._storage,
                        self.invoker,
                        self.config.queues,
                        clock=self.clock,
                        lease_s=self.lease_s,
                        stop=self._stopping,
                    )
                    self._spawn(listener.run(), f"queue {spec.name}")
                elif not spec.is_http:
                    logger.warning(
                        "Function %s: trigger %s is not supported locally; skipped",
                        spec.name,
                        spec.trigger_type,
                    )
            if self.serve_http:
                await self._start_server()
        except BaseException:
            await self.stop()
            raise
        logger.info(
            "Host started: %d functions (%s), %s",
            len(self.functions),
            ", ".join(sorted(self.functions)),
            self.url if self.serve_http else "no HTTP",
        )
        return self

    def _read_config(self, module: Any) -> HostConfig:
        host_json = self.host_json
        if host_json is None:
            folder = self.app_dir or Path(getattr(module, "__file__", None) or ".").parent
            host_json = folder / "host.json"
        config = HostConfig.load(host_json)
        queues = replace(config.queues, **self._overrides)
        if self._polling_cap is not None:
            queues = replace(
                queues,
                max_polling_interval=max(
                    MIN_POLLING_INTERVAL_S, min(queues.max_polling_interval, self._polling_cap)
                ),
            )
        return replace(config, queues=queues)

    async def _timer(self, spec: FunctionSpec) -> TimerListener:
        schedule = parse_schedule(resolve_settings(str(spec.trigger["schedule"]), self.environ))
        lease = None
        if self.host_id is not None:
            connection = self.environ.get(DEFAULT_CONNECTION)
            if not connection:
                raise HostError(
                    f"timer {spec.name}: several instances (host_id) need the app setting "
                    f"{DEFAULT_CONNECTION!r} for their singleton lock"
                )
            if not self._tables:
                self._tables.append(await lock_table(connection))
            lease = TableLease(
                self._tables[0],
                self.host_id,
                f"{spec.name}.Listener",
                self.instance_id,
                period_s=self.singleton_lease_s,
                clock=self.clock,
            )
        return TimerListener(
            spec, schedule, self.invoker, clock=self.clock, stop=self._stopping, lease=lease
        )

    async def stop(self) -> None:
        """Stop accepting, let running invocations finish (bounded), then close clients."""
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._background.clear()
        if self._inflight:
            _done, pending = await asyncio.wait(set(self._inflight), timeout=self.shutdown_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if self._server is not None:
            await stop_server(self._server, self.shutdown_timeout)
            self._server = None
        for hook in self._on_stop:
            try:
                await hook()
            except Exception as exc:  # noqa: BLE001 - one failing hook must not stop shutdown
                logger.warning("Shutdown hook failed: %s", type(exc).__name__)
        for timer in self.timers.values():
            await timer.release()
        for table in self._tables:
            await table.close()
        self._tables.clear()
        await self._storage.close()
        self.invoker.close()

    async def __aenter__(self) -> FunctionHost:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def _spawn(self, work: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(work)
        task.set_name(name)
        task.add_done_callback(_log_crash)
        self._background.append(task)

    # -- invoking

    async def invoke(self, spec: FunctionSpec, kwargs: dict[str, Any]) -> Any:
        """Call the user function (see ``Invoker.invoke``)."""
        return await self.invoker.invoke(spec, kwargs)

    async def handle(self, request: Any) -> Any:
        """Route one HTTP request to its function (or the admin API) and answer it."""
        return await self.http.handle(request)

    def _run_now(self, spec: FunctionSpec, text: str) -> None:
        timer = self.timers.get(spec.name)
        if timer is not None:
            self._spawn(timer.run_now(), f"manual {spec.name}")
        else:
            self._spawn(self._call_quietly(spec, text), f"manual {spec.name}")

    async def _call_quietly(self, spec: FunctionSpec, text: str) -> None:
        with contextlib.suppress(Exception):  # logged by invoke()
            await self.invoker.call(spec, manual_message(text))

    def _status(self) -> dict[str, Any]:
        return {
            "instance": self.instance_id,
            "invocations": dict(self.invocations),
            "timers": {
                name: timer.lease is None or timer.lease.held for name, timer in self.timers.items()
            },
        }

    async def _start_server(self) -> None:
        config = uvicorn.Config(
            self.http,
            host=self.bind_host,
            port=self.port,
            lifespan="off",
            interface="asgi3",
            log_level="warning",
            access_log=False,
        )
        self._server = QuietServer(config)
        self.port = await serve_in_background(self._server)


def _log_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        error = task.exception()
        logger.error(
            "Host loop %r stopped: %s", task.get_name(), type(error).__name__, exc_info=error
        )
