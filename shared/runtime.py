"""Process-wide resources of the Function app, created once on first use.

The Functions worker runs every async function on one event loop, and Microsoft's advice is to
create SDK clients once and reuse them (reference: azure-functions-platform §1.4). Async clients
belong to the loop they were created on, so the resources are kept per event loop (a test that
runs several loops gets fresh ones).

What a runtime holds, each created on first use: the settings, the storage clients (tables,
``sync-jobs`` and ``sync-jobs-poison``), the state stores, the Partner Center and Dataverse
clients, the webhook signature verifier and the sync engine.

Tests and the sandbox point the SaaS clients at the emulators in-process, without patching:

    runtime = use_runtime(Runtime.from_settings(settings, transports=Transports(
        partner_center=httpx.ASGITransport(app=pc_app),
        dataverse=httpx.ASGITransport(app=dataverse_app),
        certificates=httpx.ASGITransport(app=pc_app),
    )))
    ...
    await close_runtime()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from uuid import UUID

import httpx
from azure.core.exceptions import HttpResponseError, ResourceExistsError
from azure.data.tables.aio import TableServiceClient
from azure.storage.queue.aio import QueueClient

from shared import wiring
from shared.dataverse import DataverseClient
from shared.errors import CosellError
from shared.jobs import POISON_QUEUE, SYNC_JOBS_QUEUE, JobQueue
from shared.partner_center import (
    ISSUER_LOCATIONS,
    MAX_CERTIFICATE_BYTES,
    PartnerCenterClient,
    SignatureError,
    WebhookSignatureVerifier,
    default_trusted_roots,
)
from shared.secrets import KeyVaultSecretWriter
from shared.settings import Settings, get_settings
from shared.state import TABLE_NAMES, CursorStore, HistoryStore, LinkStore
from shared.state.budget import TableBudget
from shared.state.cursors import CURSORS_TABLE
from shared.storage import queue_client, table_service_client

if TYPE_CHECKING:
    from shared.sync import SyncEngine

logger = logging.getLogger(__name__)

CERTIFICATE_TIMEOUT_S = 5.0
# The emulator serves its issuing CA here (sandbox.partner_center.signing.PKI_PATH).
EMULATOR_PKI_PATH = "/_emulator/pki/"


@dataclass(frozen=True)
class Transports:
    """httpx transports used instead of the network (``None`` = the network).

    Tests pass ``httpx.ASGITransport(app=...)`` of the emulators; ``certificates`` is where the
    webhook signing certificate is downloaded from (the Partner Center emulator serves it).
    """

    partner_center: httpx.AsyncBaseTransport | None = None
    dataverse: httpx.AsyncBaseTransport | None = None
    certificates: httpx.AsyncBaseTransport | None = None


class RecentKeys:
    """Keys seen in the last ``ttl_s`` seconds, at most ``max_keys`` of them.

    A cheap in-process filter for duplicate webhook deliveries (SPEC 8: "duplicates coalesced
    cheaply"); it is only an optimisation, since the engine reads current state (SPEC 7).
    """

    def __init__(
        self,
        *,
        ttl_s: float = 5.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl_s
        self._max = max_keys
        self._clock = clock
        self._expiry: OrderedDict[Hashable, float] = OrderedDict()

    def add(self, key: Hashable) -> bool:
        """Remember ``key``; False if it was already seen within the time to live."""
        now = self._clock()
        # Entries are kept in insertion order and share one TTL, so expired ones are in front.
        while self._expiry and next(iter(self._expiry.values())) <= now:
            self._expiry.popitem(last=False)
        if key in self._expiry:
            return False
        self._expiry[key] = now + self._ttl
        if len(self._expiry) > self._max:
            self._expiry.popitem(last=False)
        return True

    def discard(self, key: Hashable) -> None:
        """Forget ``key`` (its enqueue failed, so a retried delivery must get through)."""
        self._expiry.pop(key, None)


@dataclass
class Runtime:
    """The settings and clients one worker process shares between invocations."""

    settings: Settings
    tables: TableServiceClient
    jobs: JobQueue
    poison: JobQueue
    # The same client as ``poison``'s: the poison queue also takes envelopes that are not jobs.
    poison_queue: QueueClient
    transports: Transports = field(default_factory=Transports)
    recent_events: RecentKeys = field(default_factory=RecentKeys)
    _pc: PartnerCenterClient | None = field(default=None, init=False, repr=False)
    _secret_writer: KeyVaultSecretWriter | None = field(default=None, init=False, repr=False)
    _dataverse: DataverseClient | None = field(default=None, init=False, repr=False)
    _application_user: UUID | None = field(default=None, init=False, repr=False)
    _cursors: CursorStore | None = field(default=None, init=False, repr=False)
    _links: LinkStore | None = field(default=None, init=False, repr=False)
    _history: HistoryStore | None = field(default=None, init=False, repr=False)
    _engine: SyncEngine | None = field(default=None, init=False, repr=False)
    _certificate_http: httpx.AsyncClient | None = field(default=None, init=False, repr=False)
    _verifier: WebhookSignatureVerifier | None = field(default=None, init=False, repr=False)
    _storage_ready: bool = field(default=False, init=False, repr=False)
    _storage_lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings, *, transports: Transports | None = None) -> Runtime:
        poison_queue = queue_client(settings, POISON_QUEUE)
        return cls(
            settings=settings,
            tables=table_service_client(settings),
            jobs=JobQueue(queue_client(settings, SYNC_JOBS_QUEUE)),
            poison=JobQueue(poison_queue),
            poison_queue=poison_queue,
            transports=transports or Transports(),
        )

    # -- state -----------------------------------------------------------------------------------

    def cursors(self) -> CursorStore:
        if self._cursors is None:
            self._cursors = wiring.cursor_store(self.tables)
        return self._cursors

    def links(self) -> LinkStore:
        if self._links is None:
            self._links = wiring.link_store(self.tables)
        return self._links

    def history(self) -> HistoryStore:
        if self._history is None:
            self._history = wiring.history_store(self.tables)
        return self._history

    async def ensure_storage(self) -> None:
        """Create the state tables and both queues once per process if they are missing.

        Bicep declares them in Azure; the sandbox and tests start from an empty Azurite. An
        identity without the right to create them (403) is fine: they exist there.
        """
        if self._storage_ready:
            return
        async with self._storage_lock:  # one creation per process, not one per invocation
            if not self._storage_ready:
                await self._create_storage()
                self._storage_ready = True

    async def _create_storage(self) -> None:
        try:
            await asyncio.gather(
                *(self._create_table(name) for name in TABLE_NAMES),
                self.jobs.create_queue(),
                self.poison.create_queue(),
            )
        except HttpResponseError as exc:
            if exc.status_code != 403:
                raise
            logger.warning("storage: no right to create tables/queues; assuming they exist")

    async def _create_table(self, name: str) -> None:
        with contextlib.suppress(ResourceExistsError):
            await self.tables.create_table(name)

    # -- SaaS clients and the engine -------------------------------------------------------------

    def partner_center(self) -> PartnerCenterClient:
        if self._pc is None:
            # Each rotated refresh token becomes the secret's new version (SPEC 6).
            self._secret_writer = wiring.refresh_token_writer(self.settings)
            self._pc = wiring.partner_center_client(
                self.settings,
                on_refresh_token=self._secret_writer,
                transport=self.transports.partner_center,
            )
        return self._pc

    def dataverse(self) -> DataverseClient:
        if self._dataverse is None:
            scope = urlsplit(self.settings.dataverse_url).netloc or "dataverse"
            budget = TableBudget(self.tables.get_table_client(CURSORS_TABLE), scope=scope)
            self._dataverse = wiring.dataverse_client(
                self.settings, transport=self.transports.dataverse, budget=budget
            )
        return self._dataverse

    async def application_user_id(self) -> UUID | None:
        """The Dataverse user the app writes as (``WhoAmI``, asked once per process: a push
        initiated by it is our own write). None while Dataverse cannot be asked."""
        if self._application_user is None:
            try:
                self._application_user = (await self.dataverse().who_am_i()).user_id
            except (CosellError, httpx.HTTPError, ValueError) as exc:
                logger.warning("WhoAmI failed (%s): pushes are checked by the link only",
                               type(exc).__name__)  # fmt: skip
        return self._application_user

    def engine(self) -> SyncEngine:
        """The sync engine over this runtime's clients and stores."""
        if self._engine is None:
            self._engine = wiring.sync_engine(
                self.settings,
                pc=self.partner_center(),
                dataverse=self.dataverse(),
                links=self.links(),
                history=self.history(),
            )
        return self._engine

    # -- webhook signatures ----------------------------------------------------------------------

    def webhook_verifier(self) -> WebhookSignatureVerifier:
        """The verifier of SPEC 8 (reference: dataverse-push-and-webhook-trust §2).

        Roots: ``WEBHOOK_TRUSTED_ROOTS`` when set, else the Microsoft and DigiCert roots picked
        from the Mozilla bundle by fingerprint. Intermediates come from Microsoft's and
        DigiCert's PKI; in the sandbox also from the Partner Center emulator, which serves its
        own. Certificates are cached per URL by the verifier, so it lives as long as the process.
        """
        if self._verifier is None:
            self._verifier = webhook_verifier_for(self.settings, self._fetch_certificate)
        return self._verifier

    async def _fetch_certificate(self, url: str) -> bytes:
        """GET a certificate (the verifier has checked the URL against its allow-list).

        A non-200 answer or an oversized body is a ``SignatureError`` (401); a network failure
        raises ``httpx.HTTPError`` so the caller can answer 503 and Partner Center retries.
        """
        if self._certificate_http is None:
            self._certificate_http = certificate_http_client(self.transports.certificates)
        return await fetch_certificate(self._certificate_http, url)

    async def close(self) -> None:
        if self._pc is not None:
            await self._pc.aclose()
        if self._secret_writer is not None:
            await self._secret_writer.aclose()
        if self._dataverse is not None:
            await self._dataverse.aclose()
        if self._certificate_http is not None:
            await self._certificate_http.aclose()
        for store in (self._cursors, self._links, self._history):
            if store is not None:
                await store.close()
        await self.jobs.close()
        await self.poison.close()
        await self.tables.close()


def webhook_verifier_for(
    settings: Settings, fetch: Callable[[str], Awaitable[bytes]]
) -> WebhookSignatureVerifier:
    """The webhook signature verifier the settings describe, downloading through ``fetch``."""
    roots = settings.webhook_trusted_root_certificates or list(default_trusted_roots())
    locations = list(ISSUER_LOCATIONS)
    if settings.sandbox:
        # Allow-listed in the sandbox only: the emulator's own issuing CA, on its own host.
        emulator = urlsplit(settings.partner_center_api_url).netloc
        locations.append(emulator + EMULATOR_PKI_PATH)
    return WebhookSignatureVerifier(
        trusted_roots=roots,
        allowed_hosts=settings.webhook_cert_hosts,
        fetch_certificate=fetch,
        issuer_locations=locations,
        allow_http_loopback=settings.sandbox,
    )


def certificate_http_client(transport: httpx.AsyncBaseTransport | None) -> httpx.AsyncClient:
    """The HTTP client certificates are downloaded with (``transport`` None = the network)."""
    return httpx.AsyncClient(
        transport=transport,
        timeout=CERTIFICATE_TIMEOUT_S,
        follow_redirects=False,  # a redirect could leave the allow-listed host
    )


async def fetch_certificate(http: httpx.AsyncClient, url: str) -> bytes:
    """GET ``url``, reading at most ``MAX_CERTIFICATE_BYTES``; non-200 is a ``SignatureError``."""
    async with http.stream("GET", url) as response:
        if response.status_code != 200:
            raise SignatureError(
                f"a certificate of the chain could not be downloaded ({response.status_code})"
            )
        data = bytearray()
        async for chunk in response.aiter_bytes():
            data += chunk
            if len(data) > MAX_CERTIFICATE_BYTES:
                raise SignatureError("a certificate download is too large")
    return bytes(data)


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


def use_runtime(runtime: Runtime) -> Runtime:
    """Make ``runtime`` the running event loop's runtime (tests and the sandbox, to inject
    emulator transports); it replaces one created before without closing it."""
    _by_loop[asyncio.get_running_loop()] = runtime
    return runtime


async def close_runtime() -> None:
    """Close and forget the running event loop's runtime, if it has one."""
    runtime = _by_loop.pop(asyncio.get_running_loop(), None)
    if runtime is not None:
        await runtime.close()
