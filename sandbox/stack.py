"""The whole sandbox on one machine (SPEC 9): Azurite, both emulators and the local Functions host.

``async with SandboxStack() as stack:`` starts Azurite (queue + table), the Partner Center and
Dataverse emulators (each under uvicorn, in this process), sets the app settings of
``local.settings.sample.json`` with the URLs pointing at the emulators' real ports (and webhook
signatures verified against the Partner Center emulator's test root), starts the
local host on ``function_app.py``, waits until everything answers and registers the webhook
with the Partner Center emulator when the app declares ``partner_center_webhook``, and the
Dataverse push (service endpoint and steps) when it declares ``dataverse_webhook``. Leaving the
block stops everything and puts the environment back. ``python -m sandbox up`` runs it until
Ctrl-C; end-to-end tests and the demo use it directly (every port 0 = pick a free one).

``hosts=N`` (``SANDBOX_HOSTS``) runs N host instances instead of one, as Azure scales an app out:
each a process of its own (``sandbox.host.HostProcess``) on its own free port, all with the same
app settings, Azurite storage and queues, function key and host id. They share each queue's
messages through the visibility timeout (one instance at a time per message) and each timer
through its singleton lease (one instance fires it, another takes over if it stops or dies). A
round-robin front door in this process (``sandbox.host.balancer``) listens on the host port
(``SANDBOX_HOST_PORT``) and spreads requests over the instances, skipping one that is down; the
Partner Center webhook and the Dataverse push are registered on it, as Azure's would be on the
app's URL. With one host (the default) it runs in this process, as before.

``SandboxStack.from_environ`` (what ``python -m sandbox up`` and the demo use) also takes the app
settings found in that environment, e.g. ``CRM_MAPPING`` or ``SYNC_COSELL_ONLY``, over the
sandbox's values, except those that wire the app to the sandbox's own storage and emulators.
``check_settings`` validates the app settings before anything starts, as the app would at its
first invocation, so a wrong one stops start-up with the app's message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
import uvicorn
from azure.storage.queue.aio import QueueServiceClient
from starlette.applications import Starlette

from sandbox import dataverse, partner_center
from sandbox.azurite import Azurite
from sandbox.host import (
    FunctionHost,
    FunctionSpec,
    HostConfig,
    function_url,
    index_module,
    quiet_server,
    serve_in_background,
)
from sandbox.host.balancer import RoundRobin
from sandbox.host.process import HostProcess
from sandbox.partner_center.webhooks import SUPPORTED_EVENTS
from shared.crm_schema import DEFAULT_PREFIX
from shared.settings import (
    STORAGE_IDENTITY_SETTINGS,
    Settings,
    load_settings,
    setting_names,
)

logger = logging.getLogger("sandbox.stack")

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_SETTINGS = ROOT / "local.settings.sample.json"
LOCAL_SETTINGS = ROOT / ".sandbox" / "local.settings.json"  # written by `python -m sandbox up`
WEBHOOK_FUNCTION = "partner_center_webhook"
PUSH_FUNCTION = "dataverse_webhook"
# Both emulators accept this bearer token; it is public test data, not a secret.
EMULATOR_TOKEN = partner_center.DEFAULT_TOKEN
SANDBOX_POLL_SCHEDULE = "*/5 * * * * *"  # SPEC 3: the sandbox polls Dataverse every 5 s

# SPEC 9: the variables `python -m sandbox up` reads, and their defaults.
PORT_VARIABLES = {
    "host_port": ("SANDBOX_HOST_PORT", 7071),
    "partner_center_port": ("SANDBOX_PC_PORT", 7101),
    "dataverse_port": ("SANDBOX_DATAVERSE_PORT", 7102),
    "queue_port": ("SANDBOX_QUEUE_PORT", 10001),
    "table_port": ("SANDBOX_TABLE_PORT", 10002),
}
HOSTS_VARIABLE = "SANDBOX_HOSTS"  # how many host instances (default 1)
APP_RUNTIME_CLOSE = "shared.runtime:close_runtime"  # what an instance process runs at stop

# App settings the sandbox points at its own Azurite and emulators: the environment cannot send
# them elsewhere (the sandbox never talks to a real Microsoft service).
SANDBOX_WIRED_SETTINGS = frozenset(
    {
        "AzureWebJobsStorage",
        *STORAGE_IDENTITY_SETTINGS,
        "PARTNER_CENTER_API_URL",
        "PARTNER_CENTER_WEBHOOK_API_URL",
        "DATAVERSE_URL",
        "WEBHOOK_SIGNATURE_MODE",
        "WEBHOOK_CERT_HOST_ALLOWLIST",
        "WEBHOOK_TRUSTED_ROOTS",
    }
)


def environ_settings(environ: Mapping[str, str]) -> dict[str, str]:
    """The app settings set (non-empty) in ``environ`` that the sandbox lets it choose."""
    return {
        name: environ[name]
        for name in setting_names()
        if name not in SANDBOX_WIRED_SETTINGS and environ.get(name)
    }


def sample_settings(path: Path = SAMPLE_SETTINGS) -> dict[str, str]:
    """The ``Values`` of local.settings.sample.json (every app setting, sandbox values)."""
    values = json.loads(path.read_text(encoding="utf-8"))["Values"]
    return {str(name): str(value) for name, value in values.items()}


def _port(environ: Mapping[str, str], variable: str, default: int) -> int:
    text = environ.get(variable, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) > 65535:
        raise ValueError(f"{variable} must be a port number 0-65535 (0 = any free port)")
    return int(text)


def _hosts(environ: Mapping[str, str]) -> int:
    text = environ.get(HOSTS_VARIABLE, "").strip()
    if not text:
        return 1
    if not text.isdigit() or not 1 <= int(text) <= 16:
        raise ValueError(f"{HOSTS_VARIABLE} must be a number of host instances, 1-16")
    return int(text)


def _endpoint_port(connection_string: str, key: str) -> int:
    for part in connection_string.split(";"):
        name, _, value = part.partition("=")
        if name.strip().lower() == key.lower():
            return urlsplit(value).port or 0
    return 0


def _rebase(url: str, base: str) -> str:
    """``url`` with its scheme and host:port replaced by ``base`` (the emulator's real one)."""
    path = urlsplit(url).path
    return base.rstrip("/") + path


class SandboxStack:
    """Azurite + Partner Center emulator + Dataverse emulator + local Functions host.

    Ports: 0 picks a free one (tests must use 0); the real ones are on the attributes after
    start. ``settings`` overrides app settings on top of the sandbox values. ``module`` /
    ``app_dir``: the Functions app to host (default the repo's ``function_app``).
    ``max_polling_interval`` caps host.json's queue polling interval for latency.
    ``host_options`` go to ``FunctionHost`` (e.g. ``visibility_timeout`` for tests; JSON values
    when ``hosts`` > 1, as they go to each instance process on its command line).
    ``storage_connection_string``: use this storage (e.g. the test session's Azurite) instead of
    starting Azurite. ``partner_center_app`` / ``dataverse_app``: emulators built with other
    options (their ``create_app``); by default fresh ones accepting the token ``sandbox``.
    ``hosts``: how many host instances; more than one runs each in a process of its own behind a
    round-robin front door on ``host_port`` (see the module docstring).

    After ``start()`` / ``async with``: ``host_url``, ``partner_center_url``, ``dataverse_url``,
    ``connection_string``, ``queue_port``, ``table_port``, ``function_key``, ``settings`` (what
    was set), ``webhook_url`` (None when the app has no webhook function), ``push_url`` (the
    Dataverse push's endpoint, None when the app has no ``dataverse_webhook``), ``host``
    (the FunctionHost; None with several hosts), ``partner_center_app`` and ``dataverse_app``
    (the emulators' ASGI apps, for ``emulator_of``-style inspection), ``functions`` (the app's
    functions by name), ``host_id``; with several hosts ``processes`` (the ``HostProcess`` of each
    instance: ``url``, ``status()``, ``stop()``, ``kill()``), ``host_urls`` (each instance's) and
    ``front_door`` (the ``RoundRobin``).
    """

    def __init__(
        self,
        *,
        host_port: int = 0,
        partner_center_port: int = 0,
        dataverse_port: int = 0,
        queue_port: int = 0,
        table_port: int = 0,
        function_key: str = "sandbox",
        bind: str = "127.0.0.1",
        module: str = "function_app",
        app_dir: Path = ROOT,
        settings: Mapping[str, str] | None = None,
        max_polling_interval: float = 0.5,
        register_webhook: bool = True,
        host_options: Mapping[str, Any] | None = None,
        storage_connection_string: str | None = None,
        partner_center_app: Starlette | None = None,
        dataverse_app: Starlette | None = None,
        hosts: int = 1,
    ) -> None:
        if hosts < 1:
            raise ValueError("hosts must be at least 1")
        self.hosts = hosts
        # Every instance of this stack's app shares it (the timers' singleton leases are under
        # it); another stack on the same storage has another one, as another app would.
        self.host_id = f"sandbox-{uuid.uuid4().hex[:12]}"
        self.bind = bind
        self.function_key = function_key
        self.module = module
        self.app_dir = app_dir
        self.overrides = dict(settings or {})
        self.max_polling_interval = max_polling_interval
        self.register_webhook = register_webhook
        self.host_options = dict(host_options or {})
        self._requested_host_port = host_port
        self.partner_center_port = partner_center_port
        self.dataverse_port = dataverse_port
        self.azurite = Azurite(queue_port=queue_port, table_port=table_port, host=bind)
        self._given_storage = storage_connection_string
        self.partner_center_app: Starlette = partner_center_app or partner_center.create_app(
            token=EMULATOR_TOKEN
        )
        # The emulator's custom columns carry the prefix the app is configured with.
        prefix = self.overrides.get("CRM_COLUMN_PREFIX", DEFAULT_PREFIX)
        self.dataverse_app: Starlette = dataverse_app or dataverse.create_app(
            token=EMULATOR_TOKEN, column_prefix=prefix
        )
        self.host: FunctionHost | None = None
        self.processes: list[HostProcess] = []
        self.front_door: RoundRobin | None = None
        self._front_port = 0
        self._functions: dict[str, FunctionSpec] = {}
        self._host_config = HostConfig()
        self.settings: dict[str, str] = {}
        self.webhook_url: str | None = None
        self.push_url: str | None = None
        self._servers: list[uvicorn.Server] = []
        self._saved_environ: dict[str, str | None] = {}
        self._azurite_started = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None, **options: Any) -> SandboxStack:
        """Ports from ``SANDBOX_*_PORT``, the key from ``SANDBOX_FUNCTION_KEY`` (SPEC 9) and the
        number of host instances from ``SANDBOX_HOSTS``."""
        environ = os.environ if environ is None else environ
        ports = {name: _port(environ, *variable) for name, variable in PORT_VARIABLES.items()}
        options.setdefault("hosts", _hosts(environ))
        options["settings"] = {**environ_settings(environ), **options.get("settings", {})}
        return cls(
            host_port=ports["host_port"],
            partner_center_port=ports["partner_center_port"],
            dataverse_port=ports["dataverse_port"],
            queue_port=ports["queue_port"],
            table_port=ports["table_port"],
            function_key=environ.get("SANDBOX_FUNCTION_KEY") or "sandbox",
            **options,
        )

    # -- addresses

    @property
    def queue_port(self) -> int:
        if self._given_storage is not None:
            return _endpoint_port(self._given_storage, "QueueEndpoint")
        return self.azurite.queue_port

    @property
    def table_port(self) -> int:
        if self._given_storage is not None:
            return _endpoint_port(self._given_storage, "TableEndpoint")
        return self.azurite.table_port

    @property
    def connection_string(self) -> str:
        return self._given_storage or self.azurite.connection_string

    @property
    def host_port(self) -> int:
        """The app's port: the host's, or with several hosts the front door's."""
        if self.host is not None:
            return self.host.port
        return self._front_port or self._requested_host_port

    @property
    def host_url(self) -> str:
        return f"http://{self.bind}:{self.host_port}"

    @property
    def host_urls(self) -> list[str]:
        """Each host instance's own URL (one host: ``[host_url]``)."""
        if self.processes:
            return [process.url for process in self.processes]
        return [self.host_url]

    @property
    def functions(self) -> dict[str, FunctionSpec]:
        """The hosted app's functions by name (after start)."""
        return self.host.functions if self.host is not None else self._functions

    @property
    def partner_center_url(self) -> str:
        return f"http://{self.bind}:{self.partner_center_port}"

    @property
    def dataverse_url(self) -> str:
        return f"http://{self.bind}:{self.dataverse_port}"

    def function_url(self, name: str) -> str:
        """The URL (with ``?code=``) of an HTTP function of the hosted app."""
        if self.host is not None:
            return self.host.function_url(name)
        assert self._functions, "start the stack first"
        return function_url(
            self.host_url, self._functions[name], self._host_config, self.function_key
        )

    # -- lifecycle

    def check_settings(self) -> None:
        """Validate the app settings this stack would set (the emulators' real ports do not
        matter to validity) and raise ``SettingsError`` naming each wrong one, as the app's
        first invocation and its health endpoint would."""
        load_settings({**sample_settings(), **self.overrides})

    async def start(self) -> SandboxStack:
        try:
            # Azurite takes seconds to start: let the emulators come up meanwhile.
            azurite = asyncio.ensure_future(self._start_azurite())
            try:
                self.partner_center_port = await self._serve(
                    self.partner_center_app, self.partner_center_port
                )
                self.dataverse_port = await self._serve(self.dataverse_app, self.dataverse_port)
            finally:
                await azurite
            self._apply_settings()
            if self.hosts == 1:
                self.host = FunctionHost(
                    self.module,
                    app_dir=self.app_dir,
                    host=self.bind,
                    port=self._requested_host_port,
                    function_key=self.function_key,
                    max_polling_interval=self.max_polling_interval,
                    on_stop=[_close_app_runtime],
                    host_id=self.host_id,
                    **self.host_options,
                )
                await self.host.start()
            else:
                await self._start_instances()
            await self.wait_until_answering()
            if self.register_webhook:
                await self._register_webhook()
                await self._register_dataverse_push()
        except BaseException:
            await self.stop()
            raise
        return self

    async def stop(self) -> None:
        if self.host is not None:
            await self.host.stop()
        await asyncio.gather(*(process.stop() for process in self.processes))
        for server in self._servers:
            server.should_exit = True
        for server in self._servers:
            task = getattr(server, "task", None)
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        self._servers.clear()
        if self.front_door is not None:
            await self.front_door.aclose()
            self.front_door = None
        if self._azurite_started:
            await asyncio.to_thread(self.azurite.stop)
            self._azurite_started = False
        self._restore_settings()

    async def __aenter__(self) -> SandboxStack:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _start_azurite(self) -> None:
        if self._given_storage is None:
            self._azurite_started = True  # stop() cleans up even a half-started Azurite
            await asyncio.to_thread(self.azurite.start)

    async def _start_instances(self) -> None:
        """``hosts`` instance processes and the round-robin front door before them."""
        if self.app_dir is not None and str(self.app_dir) not in sys.path:
            sys.path.insert(0, str(self.app_dir))
        # The app is indexed here too (not run): its functions name the URLs to print/register.
        _module, self._functions = index_module(self.module)
        self._host_config = HostConfig.load(self.app_dir / "host.json")
        options = {"max_polling_interval": self.max_polling_interval, **self.host_options}
        self.processes = [
            HostProcess(
                self.module,
                name=f"host-{number}",
                host_id=self.host_id,
                environ=dict(os.environ),
                function_key=self.function_key,
                app_dir=self.app_dir,
                bind=self.bind,
                options=options,
                on_stop=[APP_RUNTIME_CLOSE],
            )
            for number in range(1, self.hosts + 1)
        ]
        await asyncio.gather(*(process.start() for process in self.processes))
        self.front_door = RoundRobin(self.host_urls)
        self._front_port = await self._serve(self.front_door, self._requested_host_port)

    async def _serve(self, app: Any, port: int) -> int:
        config = uvicorn.Config(
            app, host=self.bind, port=port, log_level="warning", access_log=False
        )
        server = quiet_server(config)
        self._servers.append(server)
        return await serve_in_background(server)

    # -- app settings

    def sandbox_settings(self) -> dict[str, str]:
        """The sample settings with every URL on the emulators' real ports and Azurite."""
        values = sample_settings()
        values["AzureWebJobsStorage"] = self.connection_string
        values["PARTNER_CENTER_API_URL"] = _rebase(
            values["PARTNER_CENTER_API_URL"], self.partner_center_url
        )
        values["PARTNER_CENTER_WEBHOOK_API_URL"] = _rebase(
            values["PARTNER_CENTER_WEBHOOK_API_URL"], self.partner_center_url
        )
        values["DATAVERSE_URL"] = self.dataverse_url
        values["DATAVERSE_POLL_SCHEDULE"] = SANDBOX_POLL_SCHEDULE
        # Webhook signatures are verified as in Azure, through the emulator's own chain: its
        # test root is the one trusted root, and the app allow-lists the emulator's PKI location
        # because the settings are the sandbox's (shared.runtime.webhook_verifier_for).
        values["WEBHOOK_SIGNATURE_MODE"] = "verify"
        values["WEBHOOK_CERT_HOST_ALLOWLIST"] = self.bind
        values["WEBHOOK_TRUSTED_ROOTS"] = self.signing.root_pem.decode()
        values.update(self.overrides)
        return values

    def write_local_settings(self, path: Path = LOCAL_SETTINGS) -> Path:
        """The settings this sandbox runs with, as Core Tools' ``local.settings.json`` (SPEC 6),
        so ``cosell --settings-file`` (and ``func start``) talk to it on whatever ports it got.
        ``SANDBOX_HOST_PORT``/``SANDBOX_FUNCTION_KEY`` let ``cosell webhook register`` find the
        running host. Everything in it is sandbox test data (no real secret)."""
        values = {
            **self.settings,
            "FUNCTIONS_WORKER_RUNTIME": "python",
            "SANDBOX_HOST_PORT": str(self.host_port),
            "SANDBOX_FUNCTION_KEY": self.function_key,
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {"IsEncrypted": False, "Values": values}
        path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        return path

    @property
    def signing(self) -> partner_center.SigningAuthority:
        """The Partner Center emulator's signing chain (its root is the sandbox's trusted root)."""
        signing: partner_center.SigningAuthority = (
            self.partner_center_app.state.emulator.dispatcher.signing
        )
        return signing

    def app_settings(self) -> Settings:
        """The app's typed settings for this stack (start it first), e.g. to build clients of
        the emulators with ``shared.wiring``."""
        assert self.settings, "start the stack first"
        return load_settings(self.settings)

    def _apply_settings(self) -> None:
        # The app reads its settings from the process environment, as in Azure; the host runs
        # in this process, so they go there (and come back out in stop()).
        self.settings = self.sandbox_settings()
        for name, value in self.settings.items():
            self._saved_environ.setdefault(name, os.environ.get(name))
            os.environ[name] = value
        _forget_cached_settings()

    def _restore_settings(self) -> None:
        for name, value in self._saved_environ.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_environ.clear()
        _forget_cached_settings()

    # -- readiness and webhook

    async def wait_until_answering(self, *, within_s: float = 30.0) -> None:
        """Return once Azurite, both emulators and the host answer (raise after ``within_s``)."""
        checks = {
            "partner center emulator": f"{self.partner_center_url}/_emulator/health",
            "dataverse emulator": f"{self.dataverse_url}/_emulator/health",
            "functions host": f"{self.host_url}/admin/host/status?code={self.function_key}",
        }
        for process in self.processes:
            checks[f"functions host {process.name}"] = (
                f"{process.url}/admin/host/status?code={self.function_key}"
            )
        deadline = asyncio.get_running_loop().time() + within_s
        async with httpx.AsyncClient(timeout=5) as client:
            for name, url in checks.items():
                while True:
                    try:
                        if (await client.get(url)).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if asyncio.get_running_loop().time() > deadline:
                        raise RuntimeError(f"the {name} did not answer within {within_s:.0f}s")
                    await asyncio.sleep(0.1)
        async with QueueServiceClient.from_connection_string(self.connection_string) as queues:
            await queues.get_service_properties()

    async def _register_webhook(self) -> None:
        if WEBHOOK_FUNCTION not in self.functions:
            logger.info("function_app has no %s yet: webhook not registered", WEBHOOK_FUNCTION)
            return
        url = self.function_url(WEBHOOK_FUNCTION)
        registration = {"WebhookUrl": url, "WebhookEvents": list(SUPPORTED_EVENTS)}
        endpoint = f"{self.settings['PARTNER_CENTER_WEBHOOK_API_URL']}/registration"
        headers = {"Authorization": f"Bearer {EMULATOR_TOKEN}"}
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.post(endpoint, json=registration, headers=headers)
            if answer.status_code == 409:  # already registered: change it (reference §4.1)
                answer = await client.put(endpoint, json=registration, headers=headers)
            answer.raise_for_status()
        self.webhook_url = url

    async def _register_dataverse_push(self) -> None:
        """Dataverse's push to ``dataverse_webhook``, registered as ``cosell webhook register``
        does (one WebhookKey service endpoint and its steps, shared.dataverse_push)."""
        if PUSH_FUNCTION not in self.functions:
            logger.info("function_app has no %s yet: Dataverse push not registered", PUSH_FUNCTION)
            return
        from shared import wiring
        from shared.dataverse_push import PushRegistrar, push_steps
        from shared.sync.engine import sync_policy

        url = self.function_url(PUSH_FUNCTION).split("?", 1)[0]
        settings = self.app_settings()
        async with wiring.dataverse_client(settings) as client:
            await PushRegistrar(client).register(
                url, self.function_key, push_steps(sync_policy(settings).columns), overwrite=True
            )
        self.push_url = url


def _forget_cached_settings() -> None:
    """The app caches its settings once per process; a new stack must be read afresh."""
    from shared.settings import get_settings

    get_settings.cache_clear()


async def _close_app_runtime() -> None:
    """Close the clients the app keeps per event loop (``shared.runtime``).

    In Azure the worker process simply ends; here the loop lives on (tests, the demo), so the
    clients are closed to end the stack without "Unclosed client session" noise.
    """
    # Imported here: the app's modules are loaded by the host after the settings are applied.
    from shared.runtime import close_runtime

    await close_runtime()
