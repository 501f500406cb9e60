"""App wiring: the SaaS clients, the state stores and the engine, built from ``Settings``.

The clients know an endpoint and a credential, not the app's settings (as azure-data-tables'
``TableClient`` does); this module is the one place that reads the settings to make them, for
every consumer: the worker runtime (``shared.runtime``), the CLI (``shared.cli._context``), the
bench and the sandbox. Test hooks (a transport, a retry policy) are keyword-only.

The one rule the sandbox needs lives here too: an API on a loopback URL is the sandbox's
emulator, which takes the static ``SANDBOX_TOKEN`` instead of Entra tokens.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
from azure.data.tables.aio import TableServiceClient

from shared.crm_schema import primary_keys
from shared.dataverse import AdaptiveThrottle, DataverseClient, RequestBudget
from shared.errors import SettingsError
from shared.partner_center import (
    PartnerCenterAuthError,
    PartnerCenterClient,
    RefreshTokenProvider,
    StaticTokenProvider,
    TokenProvider,
)
from shared.retry import RetryPolicy
from shared.secrets import KeyVaultSecretWriter
from shared.settings import Settings, is_loopback_url
from shared.state import (
    CURSORS_TABLE,
    HISTORY_TABLE,
    LINKS_TABLE,
    CursorStore,
    HistoryStore,
    LinkStore,
)
from shared.storage import azure_credential

if TYPE_CHECKING:
    from azure.core.credentials_async import AsyncTokenCredential

    from shared.partner_center._auth import RefreshTokenSink
    from shared.sync import SyncEngine

__all__ = [
    "SANDBOX_TOKEN",
    "crm_primary_keys",
    "cursor_store",
    "dataverse_client",
    "history_store",
    "is_emulator",
    "link_store",
    "partner_center_client",
    "partner_center_tokens",
    "refresh_token_writer",
    "sync_engine",
]

SANDBOX_TOKEN = "sandbox"  # noqa: S105 - the sandbox emulators' public test token, not a secret
DEFAULT_TIMEOUT = 30.0  # SPEC 7: every remote call has a timeout


def is_emulator(url: str) -> bool:
    """True when ``url`` is a sandbox emulator (loopback), which takes ``SANDBOX_TOKEN``.

    The same test as the settings' own (a loopback Partner Center URL needs no credentials).
    """
    return is_loopback_url(url)


# -- Partner Center ---------------------------------------------------------------------------


def partner_center_tokens(
    settings: Settings, *, on_refresh_token: RefreshTokenSink | None = None
) -> TokenProvider:
    """The sandbox token against the emulator, else app+user tokens from the refresh token;
    ``on_refresh_token`` receives each rotated refresh token (see ``refresh_token_writer``)."""
    if is_emulator(settings.partner_center_api_url):
        return StaticTokenProvider(SANDBOX_TOKEN)
    tenant, client = settings.partner_center_tenant_id, settings.partner_center_client_id
    secret, refresh = settings.partner_center_client_secret, settings.partner_center_refresh_token
    if not (tenant and client):
        raise PartnerCenterAuthError(
            "PARTNER_CENTER_TENANT_ID and PARTNER_CENTER_CLIENT_ID are needed"
        )
    if secret is None or refresh is None:
        raise PartnerCenterAuthError(
            "PARTNER_CENTER_CLIENT_SECRET and PARTNER_CENTER_REFRESH_TOKEN are needed"
        )
    return RefreshTokenProvider(
        tenant_id=tenant,
        client_id=client,
        client_secret=secret.get_secret_value(),
        refresh_token=refresh.get_secret_value(),
        on_refresh_token=on_refresh_token,
    )


def refresh_token_writer(settings: Settings) -> KeyVaultSecretWriter | None:
    """The Key Vault writer that keeps each rotated refresh token as the secret's new version
    (SPEC 6), or None when ``PARTNER_CENTER_REFRESH_TOKEN_SECRET_URI`` is unset or in the
    sandbox (whose static token never rotates). The caller closes it (``aclose``) after the
    client that uses it."""
    uri = settings.partner_center_refresh_token_secret_uri
    if uri is None or is_emulator(settings.partner_center_api_url):
        return None
    return KeyVaultSecretWriter(uri, credential=azure_credential(settings))


def partner_center_client(
    settings: Settings,
    *,
    token_provider: TokenProvider | None = None,
    on_refresh_token: RefreshTokenSink | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    retry_policy: RetryPolicy | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> PartnerCenterClient:
    """A client of the configured Partner Center URLs; tokens from ``partner_center_tokens``
    unless ``token_provider`` is given."""
    if token_provider is None:
        token_provider = partner_center_tokens(settings, on_refresh_token=on_refresh_token)
    return PartnerCenterClient(
        settings.partner_center_api_url,
        token_provider=token_provider,
        webhook_api_url=settings.partner_center_webhook_api_url,
        transport=transport,
        retry_policy=retry_policy,
        timeout=timeout,
    )


# -- Dataverse --------------------------------------------------------------------------------


def crm_primary_keys(settings: Settings) -> dict[str, str]:
    """Entity set → primary key of the app's custom tables, for the configured prefix."""
    return primary_keys(settings.crm_column_prefix)


def dataverse_client(
    settings: Settings,
    *,
    credential: AsyncTokenCredential | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    retry_policy: RetryPolicy | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    budget: RequestBudget | None = None,
) -> DataverseClient:
    """A client of ``DATAVERSE_URL``: the sandbox token against the emulator, else
    ``credential`` or a ``DefaultAzureCredential`` (managed identity in Azure) that the client
    owns and closes with itself. ``budget`` shares the application user's request window and
    concurrency with the app's other instances (``shared.state.budget``)."""
    url, token, owns_credential = settings.dataverse_url, None, False
    if not url:  # settings loaded for a consumer that does not need Dataverse
        raise SettingsError("DATAVERSE_URL: missing; needed to talk to Dataverse")
    if credential is None and is_emulator(url):
        token = SANDBOX_TOKEN
    elif credential is None:
        from azure.identity.aio import DefaultAzureCredential

        credential, owns_credential = DefaultAzureCredential(), True
    return DataverseClient(
        url,
        credential=credential,
        token=token,
        owns_credential=owns_credential,
        transport=transport,
        retry_policy=retry_policy,
        timeout=timeout,
        primary_keys=crm_primary_keys(settings),
        # Dataverse's limits per user (reference 6): 6,000 requests / 5 min; 16 in flight here,
        # under the 52 concurrent, and within this instance's share when a budget is shared.
        throttle=AdaptiveThrottle(16, window_requests=6000, window_s=300.0, budget=budget),
    )


# -- state and the engine ---------------------------------------------------------------------


def link_store(tables: TableServiceClient) -> LinkStore:
    return LinkStore(tables.get_table_client(LINKS_TABLE))


def history_store(tables: TableServiceClient) -> HistoryStore:
    return HistoryStore(tables.get_table_client(HISTORY_TABLE))


def cursor_store(tables: TableServiceClient) -> CursorStore:
    return CursorStore(tables.get_table_client(CURSORS_TABLE))


def sync_engine(
    settings: Settings,
    *,
    pc: PartnerCenterClient,
    dataverse: DataverseClient,
    links: LinkStore,
    history: HistoryStore,
) -> SyncEngine:
    """The sync engine over the given clients and stores."""
    # Imported here: the HTTP and timer functions never need the engine's modules.
    from shared.sync import SyncEngine

    return SyncEngine(pc=pc, dataverse=dataverse, links=links, history=history, settings=settings)
