"""The rotated refresh token goes to Key Vault as a new version of its secret (SPEC 6), through
Microsoft's Key Vault client (``SecretClient.set_secret``) against a fake vault over TLS
(``tests/key_vault.py``: the challenge, the token, the PUT, as the service does them)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError

from shared.errors import SettingsError
from shared.secrets import KEY_VAULT_SCOPE, KeyVaultSecretWriter
from shared.settings import load_settings, parse_secret_uri
from tests.key_vault import KeyVaultServer, StaticCredential

SECRET_URI = "https://contoso-kv.vault.azure.net/secrets/partner-center-refresh-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyVaultServer]:
    with KeyVaultServer(tmp_path_factory.mktemp("key-vault")) as served:
        yield served


@pytest.fixture
def vault(server: KeyVaultServer) -> KeyVaultServer:
    return server.reset()


async def test_a_new_refresh_token_is_written_once_as_a_new_version(
    vault: KeyVaultServer,
) -> None:
    credential = StaticCredential()
    writer = KeyVaultSecretWriter(SECRET_URI, credential=credential, transport=vault.transport())

    await writer("rotated-1")
    await writer("rotated-1")  # the same token again: nothing to write
    await writer("rotated-2")
    await writer.aclose()

    versions = vault.vault.secrets["partner-center-refresh-token"]
    assert [value for _, value in versions] == ["rotated-1", "rotated-2"]
    puts = [r for r in vault.vault.requests if r["method"] == "PUT"]
    assert len(puts) == 2
    assert puts[0]["host"] == "contoso-kv.vault.azure.net"
    assert puts[0]["path"] == "/secrets/partner-center-refresh-token"
    assert puts[0]["api"]  # the SDK's service version
    assert json.loads(puts[0]["body"]) == {"value": "rotated-1", "contentType": "refresh-token"}
    assert credential.scopes[0] == KEY_VAULT_SCOPE  # from the vault's challenge
    assert credential.closed


async def test_a_refused_write_is_logged_not_raised(
    vault: KeyVaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    vault.vault.status = 403
    writer = KeyVaultSecretWriter(
        SECRET_URI, credential=StaticCredential(), transport=vault.transport()
    )

    await writer("rotated-1")
    await writer.aclose()

    assert len(vault.vault.requests) == 1  # a 403 is not retried
    assert "Key Vault answered 403" in caplog.text
    assert "Key Vault Secrets Officer" in caplog.text
    assert "rotated-1" not in caplog.text


async def test_a_failed_write_is_tried_again_with_the_next_token(vault: KeyVaultServer) -> None:
    vault.vault.status = 403
    writer = KeyVaultSecretWriter(
        SECRET_URI, credential=StaticCredential(), transport=vault.transport()
    )
    await writer("rotated-1")
    vault.vault.status = None
    await writer("rotated-1")  # not remembered as written: written now
    await writer.aclose()

    assert [v for _, v in vault.vault.secrets["partner-center-refresh-token"]] == ["rotated-1"]


async def test_no_token_is_logged_not_raised(
    vault: KeyVaultServer, caplog: pytest.LogCaptureFixture
) -> None:
    class NoToken(StaticCredential):
        async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
            raise ClientAuthenticationError("no identity here")

    writer = KeyVaultSecretWriter(SECRET_URI, credential=NoToken(), transport=vault.transport())
    await writer("rotated-1")
    await writer.aclose()

    assert "could not save the rotated refresh token: ClientAuthenticationError" in caplog.text
    assert not vault.vault.requests  # only the unauthorised challenge request went out


@pytest.mark.parametrize(
    "uri",
    [
        "http://contoso-kv.vault.azure.net/secrets/token",  # plain http
        "https://contoso-kv.vault.azure.net.evil.test/secrets/token",  # not a vault host
        "https://example.com/secrets/token",
        "https://contoso-kv.vault.azure.net:8443/secrets/token",  # a port
        "https://contoso-kv.vault.azure.net/keys/token",  # not a secret
        "https://contoso-kv.vault.azure.net/secrets/token/0123abcd",  # a version
        "https://contoso-kv.vault.azure.net/secrets/token?x=1",
    ],
)
def test_the_writer_takes_only_a_key_vault_secret_uri(uri: str) -> None:
    with pytest.raises(ValueError, match=r"https://<vault>\.vault\.azure\.net/secrets/<name>"):
        KeyVaultSecretWriter(uri, credential=StaticCredential())


def test_a_secret_uri_is_parsed_into_vault_name_and_version() -> None:
    assert parse_secret_uri(SECRET_URI + "/") == (
        "https://contoso-kv.vault.azure.net",
        "partner-center-refresh-token",
        None,
    )
    assert parse_secret_uri("https://KV1.vault.azure.cn/secrets/a-b/0f1e2d")[1:] == (
        "a-b",
        "0f1e2d",
    )


def test_the_secret_uri_setting_must_name_a_secret_without_version() -> None:
    base = {"AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "DATAVERSE_URL": "http://127.0.0.1:7102",
            "PARTNER_CENTER_API_URL": "http://127.0.0.1:7101/v1.0/engagements"}  # fmt: skip
    ok = load_settings({**base, "PARTNER_CENTER_REFRESH_TOKEN_SECRET_URI": SECRET_URI})
    assert ok.partner_center_refresh_token_secret_uri == SECRET_URI

    for wrong in (SECRET_URI + "/abc", "https://example.com/secrets/partner-center-refresh-token"):
        with pytest.raises(SettingsError, match="PARTNER_CENTER_REFRESH_TOKEN_SECRET_URI"):
            load_settings({**base, "PARTNER_CENTER_REFRESH_TOKEN_SECRET_URI": wrong})
