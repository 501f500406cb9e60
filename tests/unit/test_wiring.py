"""The app wiring: clients and stores built from the settings, the same for every consumer."""

from __future__ import annotations

import argparse

import httpx

from shared import wiring
from shared.cli._context import Context
from shared.cli._output import Output
from shared.partner_center import RefreshTokenProvider, StaticTokenProvider
from shared.secrets import KeyVaultSecretWriter
from shared.settings import Settings, load_settings

SANDBOX = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "DATAVERSE_URL": "http://127.0.0.1:7102",
    "PARTNER_CENTER_API_URL": "http://127.0.0.1:7101/v1.0/engagements",
    "PARTNER_CENTER_WEBHOOK_API_URL": "http://127.0.0.1:7101/webhooks/v1",
}
SECRET_URI = "https://contoso-kv.vault.azure.net/secrets/pc-refresh-token"
AZURE = {
    **SANDBOX,
    "DATAVERSE_URL": "https://contoso.crm.dynamics.com",
    "PARTNER_CENTER_API_URL": "https://api.partner.microsoft.com/v1.0/engagements",
    "PARTNER_CENTER_WEBHOOK_API_URL": "https://api.partnercenter.microsoft.com/webhooks/v1",
    "PARTNER_CENTER_TENANT_ID": "00000000-0000-4000-8000-000000000001",
    "PARTNER_CENTER_CLIENT_ID": "00000000-0000-4000-8000-000000000002",
    "PARTNER_CENTER_CLIENT_SECRET": "fake-secret",
    "PARTNER_CENTER_REFRESH_TOKEN": "fake-refresh",
    "PARTNER_CENTER_REFRESH_TOKEN_SECRET_URI": SECRET_URI,
}


def _refuse(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"no request expected, got {request.method} {request.url}")


def test_the_emulators_get_the_sandbox_token_and_the_service_gets_entra_tokens() -> None:
    sandbox, azure = load_settings(SANDBOX), load_settings(AZURE)

    assert isinstance(wiring.partner_center_tokens(sandbox), StaticTokenProvider)
    assert isinstance(wiring.partner_center_tokens(azure), RefreshTokenProvider)
    assert wiring.is_emulator(sandbox.dataverse_url)
    assert not wiring.is_emulator(azure.dataverse_url)


async def test_the_custom_tables_primary_keys_follow_the_column_prefix() -> None:
    settings = load_settings({**SANDBOX, "CRM_COLUMN_PREFIX": "abc_"})

    async with wiring.dataverse_client(settings, transport=httpx.MockTransport(_refuse)) as client:
        # Known keys need no metadata request (the transport refuses every request).
        assert await client.primary_key("abc_solutions") == "abc_solutionid"
        assert await client.primary_key("abc_solutiondetails") == "abc_solutiondetailid"
        assert await client.primary_key("opportunities") == "opportunityid"


async def test_a_refresh_token_writer_only_where_a_real_token_rotates() -> None:
    assert wiring.refresh_token_writer(load_settings(SANDBOX)) is None
    without_uri = {k: v for k, v in AZURE.items() if k != "PARTNER_CENTER_REFRESH_TOKEN_SECRET_URI"}
    assert wiring.refresh_token_writer(load_settings(without_uri)) is None

    writer = wiring.refresh_token_writer(load_settings(AZURE))
    assert isinstance(writer, KeyVaultSecretWriter)
    await writer.aclose()


async def test_the_cli_keeps_rotated_refresh_tokens_in_key_vault_like_the_worker() -> None:
    settings: Settings = load_settings(AZURE)
    async with Context(argparse.Namespace(), settings, Output()) as ctx:
        pc = await ctx.partner_center()
        # The client's token provider hands each rotated refresh token to the Key Vault writer.
        tokens = pc._tokens
        assert isinstance(tokens, RefreshTokenProvider)
        assert isinstance(tokens._on_refresh_token, KeyVaultSecretWriter)
