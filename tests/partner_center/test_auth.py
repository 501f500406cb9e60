"""App+user tokens through a refresh token (reference §3), with a stand-in for MSAL."""

from __future__ import annotations

from typing import Any

import pytest

from shared.partner_center import (
    REFERRALS_RESOURCE,
    WEBHOOKS_RESOURCE,
    PartnerCenterAuthError,
    RefreshTokenProvider,
    RefreshTokenRejected,
    StaticTokenProvider,
    TokenProvider,
)


class FakeEntra:
    """Answers like MSAL's acquire_token_by_refresh_token; rotates the refresh token each time."""

    def __init__(self, *, error: str | None = None) -> None:
        self.error = error
        self.redeemed: list[tuple[str, list[str]]] = []

    def acquire_token_by_refresh_token(
        self, refresh_token: str, scopes: list[str], **kwargs: Any
    ) -> dict[str, Any]:
        self.redeemed.append((refresh_token, scopes))
        if self.error:
            return {"error": self.error, "error_description": "AADSTS70008: expired. Trace: x"}
        n = len(self.redeemed)
        return {"access_token": f"access-{n}", "expires_in": 3600, "refresh_token": f"refresh-{n}"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _provider(entra: FakeEntra, clock: Clock, persisted: list[str]) -> RefreshTokenProvider:
    async def persist(token: str) -> None:
        persisted.append(token)

    return RefreshTokenProvider(
        tenant_id="00000000-0000-4000-8000-000000000001",
        client_id="00000000-0000-4000-8000-000000000002",
        client_secret="fake-secret",
        refresh_token="refresh-0",
        on_refresh_token=persist,
        clock=clock,
        app=entra,
    )


async def test_token_is_cached_until_shortly_before_expiry() -> None:
    entra, clock, persisted = FakeEntra(), Clock(), []
    provider = _provider(entra, clock, persisted)

    first = await provider.get_token(REFERRALS_RESOURCE)
    clock.now += 3000  # 10 minutes left: still cached
    second = await provider.get_token(REFERRALS_RESOURCE)
    clock.now += 400  # inside the 5-minute margin: redeemed again
    third = await provider.get_token(REFERRALS_RESOURCE)

    assert (first, second, third) == ("access-1", "access-1", "access-2")
    assert entra.redeemed == [
        ("refresh-0", ["https://api.partner.microsoft.com/.default"]),
        ("refresh-1", ["https://api.partner.microsoft.com/.default"]),
    ]


async def test_rotated_refresh_token_is_handed_to_the_persistence_hook() -> None:
    entra, persisted = FakeEntra(), []
    provider = _provider(entra, Clock(), persisted)

    await provider.get_token(REFERRALS_RESOURCE)
    await provider.get_token(WEBHOOKS_RESOURCE)  # other audience, own token

    assert persisted == ["refresh-1", "refresh-2"]
    assert entra.redeemed[1][1] == ["https://api.partnercenter.microsoft.com/.default"]


async def test_revoked_refresh_token_raises_error_that_says_what_to_do() -> None:
    provider = _provider(FakeEntra(error="invalid_grant"), Clock(), [])

    with pytest.raises(RefreshTokenRejected) as rejected:
        await provider.get_token(REFERRALS_RESOURCE)

    assert "PARTNER_CENTER_REFRESH_TOKEN" in str(rejected.value)
    assert "sign in again" in str(rejected.value)
    assert "AADSTS70008" in str(rejected.value)
    assert "Trace" not in str(rejected.value)


async def test_other_token_failures_name_the_settings_to_check() -> None:
    provider = _provider(FakeEntra(error="invalid_client"), Clock(), [])
    with pytest.raises(PartnerCenterAuthError) as failed:
        await provider.get_token(REFERRALS_RESOURCE)
    assert not isinstance(failed.value, RefreshTokenRejected)
    assert "PARTNER_CENTER_CLIENT_SECRET" in str(failed.value)


def test_providers_satisfy_the_protocol_and_hide_secrets() -> None:
    static = StaticTokenProvider("sandbox")
    refreshing = _provider(FakeEntra(), Clock(), [])
    assert isinstance(static, TokenProvider) and isinstance(refreshing, TokenProvider)
    assert "sandbox" not in repr(static)
    assert "refresh-0" not in repr(refreshing) and "fake-secret" not in repr(refreshing)
