"""How the client authenticates: a credential's token for ``<DATAVERSE_URL>/.default``, cached
until close to expiry; the sandbox's static token from settings (``shared.wiring``)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest
from azure.core.credentials import AccessToken
from starlette.applications import Starlette

from sandbox.dataverse import create_app
from shared import wiring
from shared.dataverse import AuthenticationFailed, DataverseClient
from shared.settings import load_settings

SANDBOX_ENV = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "PARTNER_CENTER_API_URL": "http://127.0.0.1:7101/v1.0/engagements",
}


class FakeCredential:
    """An azure-identity style async credential that hands out short-lived fake tokens."""

    def __init__(self, lifetime_s: float) -> None:
        self.lifetime_s = lifetime_s
        self.scopes: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.scopes.append(scopes)
        return AccessToken(f"fake-{len(self.scopes)}", int(time.time() + self.lifetime_s))

    async def close(self) -> None:
        pass

    async def __aenter__(self) -> FakeCredential:
        return self

    async def __aexit__(self, *args: object) -> None:
        pass


async def test_a_credential_token_is_requested_for_the_environment_scope_and_cached() -> None:
    app = create_app(token="fake-1")
    credential = FakeCredential(lifetime_s=3600)
    settings = load_settings({**SANDBOX_ENV, "DATAVERSE_URL": "https://contoso.crm.dynamics.com"})
    assert not settings.sandbox

    async with wiring.dataverse_client(
        settings,
        credential=credential,  # type: ignore[arg-type]
        transport=httpx.ASGITransport(app=app),  # in-process: nothing leaves the machine
    ) as client:
        await client.who_am_i()
        await client.who_am_i()

    assert credential.scopes == [("https://contoso.crm.dynamics.com/.default",)]


async def test_a_token_close_to_expiry_is_refreshed_before_use() -> None:
    app = create_app(token="fake-2")
    credential = FakeCredential(lifetime_s=60)  # inside the refresh margin
    async with DataverseClient(
        "https://contoso.crm.dynamics.com",
        credential=credential,  # type: ignore[arg-type]
        transport=httpx.ASGITransport(app=app),
    ) as client:
        with pytest.raises(AuthenticationFailed):
            await client.who_am_i()  # "fake-1" is not the emulator's token
        await client.who_am_i()  # "fake-2": the first one was about to expire, so a new one

    assert len(credential.scopes) == 2


async def test_sandbox_settings_use_the_emulator_token(app: Starlette) -> None:
    settings = load_settings({**SANDBOX_ENV, "DATAVERSE_URL": "http://127.0.0.1:7102"})
    assert settings.sandbox

    async with wiring.dataverse_client(settings, transport=httpx.ASGITransport(app=app)) as client:
        me = await client.who_am_i()

    assert me.user_id
