"""The rotated refresh token goes to Key Vault as a new version of its secret (SPEC 6)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from shared.errors import SettingsError
from shared.secrets import KEY_VAULT_SCOPE, KeyVaultSecretWriter
from shared.settings import load_settings

SECRET_URI = "https://contoso-kv.vault.azure.net/secrets/partner-center-refresh-token"


class FakeCredential:
    """Stands in for the managed identity (outside what this test is about)."""

    def __init__(self) -> None:
        self.scopes: list[str] = []
        self.closed = False

    async def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        self.scopes.extend(scopes)
        return AccessToken("kv-token", 2_000_000_000)

    async def close(self) -> None:
        self.closed = True


def key_vault(status: int = 200) -> tuple[Starlette, list[dict[str, Any]]]:
    """A minimal Key Vault secrets endpoint that records what it was sent."""
    received: list[dict[str, Any]] = []

    async def set_secret(request: Request) -> JSONResponse:
        received.append(
            {
                "name": request.path_params["name"],
                "api": request.query_params.get("api-version"),
                "auth": request.headers.get("authorization"),
                "body": json.loads(await request.body()),
            }
        )
        return JSONResponse({"id": f"{SECRET_URI}/v2"}, status_code=status)

    return Starlette(routes=[Route("/secrets/{name}", set_secret, methods=["PUT"])]), received


async def test_a_new_refresh_token_is_written_once_as_a_new_version() -> None:
    app, received = key_vault()
    credential = FakeCredential()
    writer = KeyVaultSecretWriter(
        SECRET_URI, credential=credential, transport=httpx.ASGITransport(app=app)
    )

    await writer("rotated-1")
    await writer("rotated-1")  # the same token again: nothing to write
    await writer("rotated-2")
    await writer.aclose()

    assert [r["body"]["value"] for r in received] == ["rotated-1", "rotated-2"]
    assert received[0]["name"] == "partner-center-refresh-token"
    assert received[0]["api"] == "7.4"
    assert received[0]["auth"] == "Bearer kv-token"
    assert credential.scopes[0] == KEY_VAULT_SCOPE
    assert credential.closed


async def test_a_refused_write_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    app, received = key_vault(status=403)
    writer = KeyVaultSecretWriter(
        SECRET_URI, credential=FakeCredential(), transport=httpx.ASGITransport(app=app)
    )

    await writer("rotated-1")
    await writer.aclose()

    assert len(received) == 1
    assert "Key Vault Secrets Officer" in caplog.text
    assert "rotated-1" not in caplog.text


def test_the_secret_uri_setting_must_name_a_secret_without_version() -> None:
    base = {"AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "DATAVERSE_URL": "http://127.0.0.1:7102",
            "PARTNER_CENTER_API_URL": "http://127.0.0.1:7101/v1.0/engagements"}  # fmt: skip
    ok = load_settings({**base, "PARTNER_CENTER_REFRESH_TOKEN_SECRET_URI": SECRET_URI})
    assert ok.partner_center_refresh_token_secret_uri == SECRET_URI

    with pytest.raises(SettingsError, match="PARTNER_CENTER_REFRESH_TOKEN_SECRET_URI"):
        load_settings({**base, "PARTNER_CENTER_REFRESH_TOKEN_SECRET_URI": SECRET_URI + "/abc"})
