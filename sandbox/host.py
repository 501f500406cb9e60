"""A local Functions host: runs ``function_app.py`` as it is, the way the Azure host does.

The app is indexed like the Python worker indexes it (reference §1.3): import the module, take its
``app``, call ``app.get_functions()`` once and read each function's bindings from
``get_function_json()``. The user functions are then called with the same ``azure.functions``
objects the worker builds, so what runs here is the code that runs in Azure:

* HTTP triggers are served under ``/<routePrefix>/<route>`` (host.json, default ``api``) with the
  function key (``?code=`` or ``x-functions-key``) for auth levels FUNCTION and ADMIN;
* timer triggers fire on their 6-field NCRONTAB schedules (``%SETTING%`` resolved from the
  environment), one run at a time per timer (the host's singleton lock, §2.3);
* queue triggers follow host.json ``extensions.queues`` (§2.1): base64 bodies, batches with a
  refill threshold, retries through the visibility timeout, ``<queue>-poison`` after
  ``maxDequeueCount`` attempts, idle polling that backs off.

Async functions are awaited on the host's event loop; sync ones run in a thread pool (§1.4).
Invocations are logged with name, outcome and duration, never with bodies. A small part of the
host's admin API exists too: ``GET /admin/host/status`` and ``POST /admin/functions/<name>``
(run a timer or queue function now), both behind the key.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import importlib
import inspect
import json
import logging
import os
import random
import re
import socket
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, TypeVar

import azure.functions as func
import uvicorn
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.functions._abc import RetryContext, TraceContext
from azure.functions.queue import QueueMessage as HostQueueMessage
from azure.functions.timer import TimerRequest
from azure.storage.queue import QueueMessage as StorageQueueMessage
from azure.storage.queue.aio import QueueClient
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from shared.ncrontab import Schedule, parse_schedule

logger = logging.getLogger("sandbox.host")

T = TypeVar("T")

DEFAULT_CONNECTION = "AzureWebJobsStorage"
# The host keeps a dequeued message invisible while the function runs and renews the lease at
# half-time, so a crashed host lets the message come back (§2.1 "visibility timeout").
DEFAULT_LEASE_S = 600.0
MIN_POLLING_INTERVAL_S = 0.1  # QueuePollingIntervals.Minimum (§2.1)
MAX_QUEUE_NAME = 63
_SETTING = re.compile(r"%([^%]+)%")
_TIMESPAN = re.compile(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2})(?:\.(\d+))?$")


# -- host.json ---------------------------------------------------------------------------------


def parse_timespan(text: str) -> float:
    """``[d.]hh:mm:ss[.fff]`` (the .NET TimeSpan form host.json uses) → seconds."""
    match = _TIMESPAN.match(text.strip())
    if match is None:
        raise ValueError(f"expected a time span like '00:00:30', got {text!r}")
    days, hours, minutes, seconds, fraction = match.groups()
    total = int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    return total + (float(f"0.{fraction}") if fraction else 0.0)


@dataclass(frozen=True)
class QueueOptions:
    """host.json ``extensions.queues`` with the Storage extension's defaults (§2.1)."""

    batch_size: int = 16
    new_batch_threshold: int | None = None  # None: the host's (batchSize / 2) * processors
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"

    @property
    def threshold(self) -> int:
        if self.new_batch_threshold is not None:
            return self.new_batch_threshold
        return (self.batch_size // 2) * (os.cpu_count() or 1)


@dataclass(frozen=True)
class HostConfig:
    """The parts of host.json this host honours."""

    route_prefix: str = "api"
    queues: QueueOptions = field(default_factory=QueueOptions)
    function_timeout: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HostConfig:
        extensions = data.get("extensions") or {}
        http = extensions.get("http") or {}
        queues = extensions.get("queues") or {}
        defaults = QueueOptions()
        options = QueueOptions(
            batch_size=int(queues.get("batchSize", defaults.batch_size)),
            new_batch_threshold=(
                int(queues["newBatchThreshold"]) if "newBatchThreshold" in queues else None
            ),
            max_dequeue_count=int(queues.get("maxDequeueCount", defaults.max_dequeue_count)),
            visibility_timeout=parse_timespan(queues.get("visibilityTimeout", "00:00:00")),
            max_polling_interval=max(
                MIN_POLLING_INTERVAL_S,
                parse_timespan(queues.get("maxPollingInterval", "00:01:00")),
            ),
            message_encoding=str(queues.get("messageEncoding", "base64")).lower(),
        )
        if not 1 <= options.batch_size <= 32:
            raise ValueError("host.json extensions.queues.batchSize must be 1-32")
        if options.max_dequeue_count < 1:
            raise ValueError("host.json extensions.queues.maxDequeueCount must be at least 1")
        if options.message_encoding not in ("base64", "none"):
            raise ValueError("host.json extensions.queues.messageEncoding must be base64 or none")
        timeout = data.get("functionTimeout")
        return cls(
            route_prefix=str(http.get("routePrefix", "api")).strip("/"),
            queues=options,
            function_timeout=parse_timespan(timeout) if timeout and timeout != "-1" else None,
        )

    @classmethod
    def load(cls, path: Path | None) -> HostConfig:
        if path is None or not path.exists():
            return cls()
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


# -- indexing ----------------------------------------------------------------------------------

# get_functions() may be called only once per FunctionApp (§0.2): keep each app's result.
_indexed: weakref.WeakKeyDictionary[Any, list[func.Function]] = weakref.WeakKeyDictionary()


def index_app(app: func.FunctionApp) -> list[func.Function]:
    """``app.get_functions()``, called at most once per app object in this process."""
    found = _indexed.get(app)
    if found is None:
        # get_functions() records the names in app.functions_bindings and refuses a second call
        # (§0.2). Other code in this process (the app's own tests) may index the same app, so
        # index against an empty record and put the previous one back: neither call breaks.
        previous = app.functions_bindings
        app.functions_bindings = None
        try:
            found = _indexed[app] = list(app.get_functions())
        finally:
            app.functions_bindings = previous
    return found


@dataclass(frozen=True)
class FunctionSpec:
    """One indexed function: its name, bindings (function.json shape) and the user function."""

    name: str
    bindings: tuple[dict[str, Any], ...]
    user_function: Callable[..., Any]

    @property
    def trigger(self) -> dict[str, Any]:
        return next(b for b in self.bindings if str(b.get("type", "")).endswith("Trigger"))

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.user_function)

    @property
    def wants_context(self) -> bool:
        return "context" in inspect.signature(self.user_function).parameters

    def check_signature(self) -> None:
        """The worker's indexing rule (reference §0.3, §3.2): the parameters are exactly the
        binding names (``$return`` aside), plus an optional ``context``."""
        parameters = set(inspect.signature(self.user_function).parameters) - {"context"}
        bindings = {str(b["name"]) for b in self.bindings} - {"$return"}
        if parameters != bindings:
            raise HostError(
                f"function {self.name}: parameters {sorted(parameters)} do not match its "
                f"binding names {sorted(bindings)}"
            )

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return [
            b
            for b in self.bindings
            if str(b.get("direction", "")).lower() == "out" and b.get("name") != "$return"
        ]

    @classmethod
    def of(cls, function: func.Function) -> FunctionSpec:
        bindings = json.loads(function.get_function_json())["bindings"]
        return cls(
            name=str(function.get_function_name()),
            bindings=tuple(bindings),
            user_function=function.get_user_function(),
        )


def load_functions(module_name: str, *, attribute: str = "app") -> tuple[ModuleType, list[Any]]:
    """Import the app module and index its FunctionApp (reference §1.3)."""
    module = importlib.import_module(module_name)
    app = getattr(module, attribute, None)
    if not isinstance(app, func.FunctionApp):
        raise HostError(f"{module_name}.{attribute} is not an azure.functions.FunctionApp")
    return module, index_app(app)


def resolve_settings(text: str, environ: Mapping[str, str]) -> str:
    """Replace ``%NAME%`` binding expressions with app settings, as the host does (§2.3)."""

    def setting(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise HostError(f"app setting {name!r} (used as %{name}%) is not set")
        return environ[name]

    return _SETTING.sub(setting, text)


# -- HTTP routes -------------------------------------------------------------------------------

_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "guid": r"[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}",
    "alpha": r"[A-Za-z]+",
    "bool": r"(?i:true|false)",
    "float": r"-?\d+(?:\.\d+)?",
    "double": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
}
_PARAMETER = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z]+)(?:\([^)]*\))?)?(\?)?\}")


def compile_route(template: str) -> re.Pattern[str]:
    """An ASP.NET-style route template (``items/{id:int}/{rest?}``, ``{*path}``) as a regex.

    The Functions host routes with ASP.NET Core routing: literals match case-insensitively,
    ``{name?}`` is optional, ``{*name}`` takes the rest of the path.
    """
    pattern = ""
    for index, segment in enumerate(template.strip("/").split("/")):
        separator = "/" if index else ""
        whole = _PARAMETER.fullmatch(segment)
        if whole and whole.group(4):
            pattern += f"(?:{separator}(?P<{whole.group(2)}>{_value_regex(whole)}))?"
            continue
        if whole and whole.group(1):
            pattern += f"(?:{separator}(?P<{whole.group(2)}>.*))?"
            continue
        parts, last = [], 0
        for match in _PARAMETER.finditer(segment):
            parts.append(re.escape(segment[last : match.start()]))
            parts.append(f"(?P<{match.group(2)}>{_value_regex(match)})")
            last = match.end()
        parts.append(re.escape(segment[last:]))
        pattern += separator + "".join(parts)
    return re.compile(pattern, re.IGNORECASE)


def route_precedence(template: str) -> tuple[int, ...]:
    """Sort key: literal segments win over parameters, constrained over free, optional and
    catch-all last, as in ASP.NET Core routing (``items/new`` before ``items/{id}``)."""
    ranks = []
    for segment in template.strip("/").split("/"):
        whole = _PARAMETER.fullmatch(segment)
        if not _PARAMETER.search(segment):
            ranks.append(0)
        elif whole is None:
            ranks.append(1)  # a literal with a parameter inside it
        elif whole.group(1):
            ranks.append(5)
        elif whole.group(4):
            ranks.append(4)
        else:
            ranks.append(2 if whole.group(3) else 3)
    return tuple(ranks)


def _value_regex(match: re.Match[str]) -> str:
    return _CONSTRAINTS.get((match.group(3) or "").lower(), r"[^/]+")


@dataclass(frozen=True)
class HttpRoute:
    spec: FunctionSpec
    template: str
    pattern: re.Pattern[str]
    methods: frozenset[str] | None  # None: every method
    auth_level: str


# -- queue output binding ----------------------------------------------------------------------


class _Out(func.Out[T], Generic[T]):
    """What the worker passes for an out-binding parameter (reference §1.2 ``queue_output``)."""

    def __init__(self) -> None:
        self._value: T | None = None

    def set(self, val: T) -> None:
        self._value = val

    def get(self) -> T:
        return self._value  # type: ignore[return-value]


# -- invocation context ------------------------------------------------------------------------


class _TraceContext(TraceContext):
    def __init__(self) -> None:
        # A fresh W3C traceparent per invocation, as the host sends one.
        self._parent = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"

    @property
    def trace_state(self) -> str:
        return ""

    @property
    def trace_parent(self) -> str:
        return self._parent

    @property
    def attributes(self) -> dict[str, str]:
        return {}


class _RetryContext(RetryContext):
    @property
    def retry_count(self) -> int:
        return 0  # function-level retry policies are not run locally

    @property
    def max_retry_count(self) -> int:
        return 0

    @property
    def exception(self) -> Any:
        return None


class _Context(func.Context):
    """What the worker passes to a ``context`` parameter (``func.Context``)."""

    def __init__(self, invocation_id: str, function_name: str, directory: str) -> None:
        self._invocation_id = invocation_id
        self._function_name = function_name
        self._directory = directory
        self._local = threading.local

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> type[threading.local]:
        return self._local

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._directory

    @property
    def trace_context(self) -> TraceContext:
        return _TraceContext()

    @property
    def retry_context(self) -> RetryContext:
        return _RetryContext()


# -- the host ----------------------------------------------------------------------------------


class HostError(RuntimeError):
    """The app or its settings cannot be hosted (a missing setting, a signature mismatch)."""


@dataclass
class _Lease:
    """A dequeued message and its current pop receipt (renewing the lease changes it)."""

    message: StorageQueueMessage
    pop_receipt: str


class InvocationError(Exception):
    """Raised inside the host when a trigger cannot be bound; carries nothing of the payload."""


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
        self.config = HostConfig()
        self.functions: dict[str, FunctionSpec] = {}
        self.routes: list[HttpRoute] = []
        self._executor = ThreadPoolExecutor(
            max_workers=thread_count, thread_name_prefix="functions-sync"
        )
        self._stopping = asyncio.Event()
        self._background: list[asyncio.Task[None]] = []
        self._inflight: set[asyncio.Task[Any]] = set()
        self._timer_locks: dict[str, asyncio.Lock] = {}
        self._clients: list[QueueClient] = []
        self._output_clients: dict[tuple[str, str], QueueClient] = {}
        self._server: _QuietServer | None = None
        self._server_task: asyncio.Task[None] | None = None
        self.invocations: dict[str, int] = {}  # completed invocations per function
        self._directory = "."

    # -- lifecycle

    @property
    def environ(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    @property
    def url(self) -> str:
        return f"http://{self.bind_host}:{self.port}"

    def function_url(self, name: str, *, with_key: bool = True) -> str:
        """The URL of an HTTP function (its route without parameters filled in)."""
        spec = self.functions[name]
        route = str(spec.trigger.get("route") or spec.name).strip("/")
        prefix = f"/{self.config.route_prefix}" if self.config.route_prefix else ""
        key = f"?code={self.function_key}" if with_key else ""
        return f"{self.url}{prefix}/{route}{key}"

    async def start(self) -> FunctionHost:
        if self.app_dir is not None and str(self.app_dir) not in sys.path:
            sys.path.insert(0, str(self.app_dir))
        module, functions = load_functions(self.module_name)
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
        self.config = replace(config, queues=queues)
        self.functions = {spec.name: spec for spec in map(FunctionSpec.of, functions)}
        for spec in self.functions.values():
            spec.check_signature()
        self._directory = str(Path(getattr(module, "__file__", None) or ".").parent)
        routes = [self._route_of(s) for s in self.functions.values() if _is_http(s)]
        self.routes = sorted(routes, key=lambda route: route_precedence(route.template))
        try:
            for spec in self.functions.values():
                if spec.trigger_type == "timerTrigger":
                    self._timer_locks[spec.name] = asyncio.Lock()
                    schedule = parse_schedule(
                        resolve_settings(str(spec.trigger["schedule"]), self.environ)
                    )
                    self._spawn(self._run_timer(spec, schedule), f"timer {spec.name}")
                elif spec.trigger_type == "queueTrigger":
                    client = self._queue_client(spec.trigger, str(spec.trigger["queueName"]))
                    self._spawn(self._run_queue(spec, client), f"queue {spec.name}")
                elif not _is_http(spec):
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
        if self._server_task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._server_task), self.shutdown_timeout)
            if not self._server_task.done():
                assert self._server is not None
                self._server.force_exit = True
                await asyncio.gather(self._server_task, return_exceptions=True)
            self._server_task = None
        for hook in self._on_stop:
            try:
                await hook()
            except Exception as exc:  # noqa: BLE001 - one failing hook must not stop shutdown
                logger.warning("Shutdown hook failed: %s", type(exc).__name__)
        for client in self._clients:
            await client.close()
        self._clients.clear()
        self._output_clients.clear()
        # Sync functions still running in a thread cannot be interrupted; do not wait for them.
        self._executor.shutdown(wait=False, cancel_futures=True)

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
        """Call the user function (awaited, or in the thread pool), logging name/outcome/time.

        Exceptions are logged by type only: their messages may echo payload data (SPEC 8).
        """
        invocation_id = str(uuid.uuid4())
        if spec.wants_context:
            kwargs = {**kwargs, "context": _Context(invocation_id, spec.name, self._directory)}
        started = time.perf_counter()
        outcome = "Failed"
        try:
            if spec.is_async:
                result = await asyncio.wait_for(
                    spec.user_function(**kwargs), self.config.function_timeout
                )
            else:
                loop = asyncio.get_running_loop()
                result = await loop.run_in_executor(
                    self._executor, partial(spec.user_function, **kwargs)
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
                (time.perf_counter() - started) * 1000,
            )

    def _outputs(self, spec: FunctionSpec) -> dict[str, _Out[Any]]:
        return {str(b["name"]): _Out() for b in spec.outputs}

    async def _flush_outputs(self, spec: FunctionSpec, outputs: Mapping[str, _Out[Any]]) -> None:
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
                await client.send_message(self._encode(item))

    async def _output_client(self, binding: Mapping[str, Any]) -> QueueClient:
        """One client per output queue, created with its queue on first use (like the host)."""
        key = (str(binding.get("connection")), str(binding["queueName"]))
        client = self._output_clients.get(key)
        if client is None:
            client = self._queue_client(binding, str(binding["queueName"]))
            with contextlib.suppress(ResourceExistsError):
                await client.create_queue()
            self._output_clients[key] = client
        return client

    def _encode(self, value: str | bytes) -> str:
        data = value.encode("utf-8") if isinstance(value, str) else value
        if self.config.queues.message_encoding == "base64":
            return base64.b64encode(data).decode("ascii")
        return data.decode("utf-8")

    async def _call(self, spec: FunctionSpec, trigger_value: Any) -> Any:
        outputs = self._outputs(spec)
        kwargs: dict[str, Any] = {str(spec.trigger["name"]): trigger_value, **outputs}
        task = asyncio.ensure_future(self.invoke(spec, kwargs))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        result = await asyncio.shield(task)
        await self._flush_outputs(spec, outputs)
        return result

    # -- HTTP

    def _route_of(self, spec: FunctionSpec) -> HttpRoute:
        trigger = spec.trigger
        methods = trigger.get("methods")
        route = str(trigger.get("route") or spec.name)
        return HttpRoute(
            spec=spec,
            template=route,
            pattern=compile_route(route),
            methods=frozenset(m.upper() for m in methods) if methods else None,
            auth_level=str(trigger.get("authLevel", "FUNCTION")).upper(),
        )

    async def _start_server(self) -> None:
        config = uvicorn.Config(
            self._asgi,
            host=self.bind_host,
            port=self.port,
            lifespan="off",
            interface="asgi3",
            log_level="warning",
            access_log=False,
        )
        self._server = _QuietServer(config)
        self.port = await serve_in_background(self._server)
        self._server_task = self._server.task

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        response = await self.handle(request)
        await response(scope, receive, send)

    def _authorized(self, request: Request) -> bool:
        presented = request.query_params.get("code") or request.headers.get("x-functions-key")
        return presented is not None and _same(presented, self.function_key)

    async def handle(self, request: Request) -> Response:
        """Route one HTTP request to its function (or the admin API) and answer it."""
        path = request.url.path
        if path.startswith("/admin/"):
            return await self._admin(request)
        prefix = f"/{self.config.route_prefix}/" if self.config.route_prefix else "/"
        if not path.startswith(prefix):
            return Response(status_code=404)
        relative = path[len(prefix) :].rstrip("/")
        for route in self.routes:
            match = route.pattern.fullmatch(relative)
            # The host treats the methods as part of the route: another method is a 404.
            if match is None or (
                route.methods is not None and request.method.upper() not in route.methods
            ):
                continue
            if route.auth_level != "ANONYMOUS" and not self._authorized(request):
                return Response(status_code=401)
            params = {k: v for k, v in match.groupdict().items() if v is not None}
            return await self._call_http(route.spec, request, params)
        return Response(status_code=404)

    async def _call_http(
        self, spec: FunctionSpec, request: Request, route_params: dict[str, str]
    ) -> Response:
        body = await request.body()
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        http_request = func.HttpRequest(
            method=request.method,
            url=str(request.url),
            headers=headers,
            params=dict(request.query_params),
            route_params=route_params,
            body=body,
        )
        outputs = self._outputs(spec)
        kwargs: dict[str, Any] = {str(spec.trigger["name"]): http_request, **outputs}
        task = asyncio.ensure_future(self.invoke(spec, kwargs))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        try:
            result = await asyncio.shield(task)
        except Exception:  # noqa: BLE001 - any failure of the function is a 500
            # The host answers a failed invocation with a bare 500.
            return Response(status_code=500)
        http_out = next(
            (b for b in spec.bindings if b.get("type") == "http" and b.get("name") != "$return"),
            None,
        )
        if http_out is not None:
            result = outputs.pop(str(http_out["name"])).get()
        try:
            await self._flush_outputs(spec, outputs)
        except Exception as exc:  # noqa: BLE001 - an output the host cannot write fails the call
            logger.error("Function %s: writing outputs failed: %s", spec.name, type(exc).__name__)
            return Response(status_code=500)
        return to_starlette(result)

    async def _admin(self, request: Request) -> Response:
        # The admin API needs the master key in Azure; the sandbox has one key for everything.
        if not self._authorized(request):
            return Response(status_code=401)
        path = request.url.path.rstrip("/")
        if path == "/admin/host/status" and request.method == "GET":
            return JSONResponse({"state": "Running", "functions": sorted(self.functions)})
        if path.startswith("/admin/functions/") and request.method == "POST":
            spec = self.functions.get(path.removeprefix("/admin/functions/"))
            if spec is None or _is_http(spec):
                return Response(status_code=404)
            raw = await request.body()
            try:
                payload = json.loads(raw) if raw.strip() else {}
            except ValueError:
                return JSONResponse({"error": 'the body must be JSON like {"input": "..."}'}, 400)
            text = str(payload.get("input", "")) if isinstance(payload, dict) else ""
            self._spawn(self._run_manually(spec, text), f"manual {spec.name}")
            return Response(status_code=202)
        return Response(status_code=404)

    async def _run_manually(self, spec: FunctionSpec, text: str) -> None:
        with contextlib.suppress(Exception):
            if spec.trigger_type == "timerTrigger":
                async with self._timer_locks[spec.name]:
                    await self._call(spec, TimerRequest(past_due=False))
            else:
                message = HostQueueMessage(  # type: ignore[no-untyped-call]
                    id=str(uuid.uuid4()), body=text.encode("utf-8"), dequeue_count=1
                )
                await self._call(spec, message)

    # -- timers

    async def _run_timer(self, spec: FunctionSpec, schedule: Schedule) -> None:
        """Fire on schedule; runs never overlap (singleton lock, §2.3); a run that starts more
        than a second late (the previous one overran) gets ``past_due=True``."""
        lock = self._timer_locks[spec.name]
        if spec.trigger.get("runOnStartup"):
            async with lock:
                await self._fire(spec, schedule, past_due=False, last=None)
        last = _now()
        while not self._stopping.is_set():
            due = schedule.next_after(last)
            delay = (due - _now()).total_seconds()
            if delay > 0 and await _wait(self._stopping, delay):
                return
            early = (due - _now()).total_seconds()
            if early > 0:  # the loop's timer can wake a hair early
                await asyncio.sleep(early + 0.005)
            past_due = (_now() - due) > timedelta(seconds=1)
            async with lock:
                await self._fire(spec, schedule, past_due=past_due, last=last)
            # Occurrences missed while the run was going are not replayed one by one.
            last = _now().replace(microsecond=0) if past_due else due

    async def _fire(
        self, spec: FunctionSpec, schedule: Schedule, *, past_due: bool, last: datetime | None
    ) -> None:
        now = _now()
        status = {
            "Last": (last or now).isoformat(),
            "Next": schedule.next_after(now).isoformat(),
            "LastUpdated": now.isoformat(),
        }
        timer = TimerRequest(
            past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True}
        )
        with contextlib.suppress(Exception):  # logged by invoke(); a timer never retries itself
            await self._call(spec, timer)

    # -- queues

    def _queue_client(self, binding: Mapping[str, Any], queue_name: str) -> QueueClient:
        setting = str(binding.get("connection") or DEFAULT_CONNECTION)
        connection = self.environ.get(setting)
        if not connection:
            raise HostError(
                f"queue binding {binding.get('name')!r}: app setting {setting!r} "
                "(a storage connection string) is not set"
            )
        client = QueueClient.from_connection_string(
            connection, resolve_settings(queue_name, self.environ)
        )
        self._clients.append(client)
        return client

    async def _run_queue(self, spec: FunctionSpec, client: QueueClient) -> None:
        """The queue listener (QueueListener/QueueProcessor, §2.1): fetch ``batchSize`` messages
        whenever no more than ``newBatchThreshold`` are running; back off when idle."""
        options = self.config.queues
        poison = _poison_name(client.queue_name)
        poison_client = self._queue_client(spec.trigger, poison) if poison is not None else None
        running: set[asyncio.Task[None]] = set()
        slot_free = asyncio.Event()
        interval = MIN_POLLING_INTERVAL_S
        while not self._stopping.is_set():
            if len(running) > options.threshold:
                slot_free.clear()
                await slot_free.wait()
                continue
            try:
                batch = await self._receive(client, options.batch_size)
            except Exception as exc:  # noqa: BLE001 - storage hiccups must not stop the listener
                logger.warning(
                    "Queue %s: receive failed: %s", client.queue_name, type(exc).__name__
                )
                batch = []
            if not batch:
                if await _wait(self._stopping, interval * random.uniform(0.8, 1.0)):
                    return
                interval = min(interval * 2, options.max_polling_interval)
                continue
            interval = MIN_POLLING_INTERVAL_S
            for message in batch:
                task = asyncio.ensure_future(
                    self._process_safely(spec, client, poison_client, message)
                )
                running.add(task)
                self._inflight.add(task)

                def finished(done: asyncio.Task[None]) -> None:
                    running.discard(done)
                    self._inflight.discard(done)
                    slot_free.set()

                task.add_done_callback(finished)

    async def _receive(self, client: QueueClient, count: int) -> list[StorageQueueMessage]:
        pages = client.receive_messages(
            messages_per_page=count, visibility_timeout=int(self.lease_s)
        ).by_page()
        try:
            async for page in pages:
                return [message async for message in page]
        except ResourceNotFoundError:
            return []  # the queue does not exist yet: the host polls on, as for an empty queue
        return []

    async def _process_safely(
        self,
        spec: FunctionSpec,
        client: QueueClient,
        poison_client: QueueClient | None,
        message: StorageQueueMessage,
    ) -> None:
        try:
            await self._process(spec, client, poison_client, message)
        except Exception as exc:  # noqa: BLE001 - e.g. a lost lease; the message comes back
            logger.warning(
                "Queue %s: settling message %s failed: %s",
                client.queue_name,
                message.id,
                type(exc).__name__,
            )

    async def _process(
        self,
        spec: FunctionSpec,
        client: QueueClient,
        poison_client: QueueClient | None,
        message: StorageQueueMessage,
    ) -> None:
        options = self.config.queues
        lease = _Lease(message, str(message.pop_receipt))
        count = int(message.dequeue_count or 1)
        if count > options.max_dequeue_count and poison_client is not None:
            await self._to_poison(spec, client, poison_client, lease)
            return
        renewal = asyncio.ensure_future(self._keep_lease(client, lease))
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
            await self._call(spec, trigger)
        except asyncio.CancelledError:
            renewal.cancel()
            # Shutting down mid-run: make the message visible again right away (best effort).
            with contextlib.suppress(Exception):
                await client.update_message(
                    message.id, pop_receipt=lease.pop_receipt, visibility_timeout=0
                )
            raise
        except Exception:  # noqa: BLE001 - every failure counts as an attempt (§2.1)
            await _cancel(renewal)
            await self._failed(spec, client, poison_client, lease, count)
            return
        await _cancel(renewal)
        try:
            await client.delete_message(message.id, pop_receipt=lease.pop_receipt)
        except ResourceNotFoundError:
            logger.warning("Queue %s: message already gone after success", client.queue_name)

    def _decode(self, content: str) -> bytes:
        if self.config.queues.message_encoding != "base64":
            return content.encode("utf-8")
        try:
            return base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError) as exc:
            # The host fails the invocation, so the message ends in poison like any failure.
            raise InvocationError("message is not valid base64") from exc

    async def _failed(
        self,
        spec: FunctionSpec,
        client: QueueClient,
        poison_client: QueueClient | None,
        lease: _Lease,
        count: int,
    ) -> None:
        options = self.config.queues
        if poison_client is None:
            # No poison queue possible: the message stays invisible until its lease ends (§2.1).
            return
        if count >= options.max_dequeue_count:
            await self._to_poison(spec, client, poison_client, lease)
            return
        try:
            await client.update_message(
                lease.message.id,
                pop_receipt=lease.pop_receipt,
                visibility_timeout=int(options.visibility_timeout),
            )
        except ResourceNotFoundError:
            logger.warning("Queue %s: could not release a failed message", client.queue_name)

    async def _to_poison(
        self, spec: FunctionSpec, client: QueueClient, poison: QueueClient, lease: _Lease
    ) -> None:
        # Only the body is copied; the raw text is already the encoded (base64) body (§2.1).
        with contextlib.suppress(ResourceExistsError):
            await poison.create_queue()
        await poison.send_message(str(lease.message.content or ""))
        await client.delete_message(lease.message.id, pop_receipt=lease.pop_receipt)
        logger.warning(
            "Function %s: message %s moved to %s after %s attempts",
            spec.name,
            lease.message.id,
            poison.queue_name,
            lease.message.dequeue_count,
        )

    async def _keep_lease(self, client: QueueClient, lease: _Lease) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 2)
            updated = await client.update_message(
                lease.message.id,
                pop_receipt=lease.pop_receipt,
                visibility_timeout=int(self.lease_s),
            )
            lease.pop_receipt = str(updated.pop_receipt)


# -- helpers -----------------------------------------------------------------------------------


def to_starlette(result: Any) -> Response:
    """The HTTP answer for what an HTTP function returned (HttpResponse, str, bytes or None)."""
    if result is None:
        return Response(status_code=204)
    if isinstance(result, str | bytes):
        return Response(result, status_code=200, media_type="text/plain")
    if not isinstance(result, func.HttpResponse):
        logger.error("HTTP function returned %s, not an HttpResponse", type(result).__name__)
        return Response(status_code=500)
    headers = dict(result.headers.items())
    if not any(key.lower() == "content-type" for key in headers) and result.mimetype:
        charset = f"; charset={result.charset}" if result.charset else ""
        headers["content-type"] = f"{result.mimetype}{charset}"
    return Response(result.get_body(), status_code=result.status_code, headers=headers)


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its owner (several run in one loop)."""

    task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_in_background(server: uvicorn.Server, *, within_s: float = 15.0) -> int:
    """Start ``server`` on the running loop; return the port it really listens on.

    The socket is bound here, not by uvicorn, so a busy port is an ``OSError`` naming the
    address (uvicorn would log and call ``sys.exit``) and port 0 yields the port picked.
    """
    host, port = server.config.host, server.config.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    task = asyncio.ensure_future(server.serve(sockets=[listener]))
    if isinstance(server, _QuietServer):
        server.task = task
    deadline = time.monotonic() + within_s
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the HTTP server stopped while starting")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the HTTP server did not start in time")
        await asyncio.sleep(0.01)
    return int(server.servers[0].sockets[0].getsockname()[1])


def quiet_server(config: uvicorn.Config) -> _QuietServer:
    return _QuietServer(config)


def _is_http(spec: FunctionSpec) -> bool:
    return spec.trigger_type == "httpTrigger"


def _poison_name(queue: str) -> str | None:
    if queue.endswith("-poison") or len(queue) + len("-poison") > MAX_QUEUE_NAME:
        return None
    return f"{queue}-poison"


def _same(presented: str, expected: str) -> bool:
    return hmac.compare_digest(presented.encode(), expected.encode())


def _now() -> datetime:
    return datetime.now(UTC)


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    """Sleep up to ``seconds``; True if ``event`` was set meanwhile."""
    try:
        await asyncio.wait_for(event.wait(), timeout=max(seconds, 0))
    except TimeoutError:
        return False
    return True


def _log_crash(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        error = task.exception()
        logger.error(
            "Host loop %r stopped: %s", task.get_name(), type(error).__name__, exc_info=error
        )


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
