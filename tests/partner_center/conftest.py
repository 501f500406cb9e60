from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from sandbox.partner_center import DEFAULT_TOKEN, SigningAuthority, create_app
from shared.partner_center import PartnerCenterClient, StaticTokenProvider
from shared.retry import RetryPolicy

# A name that resolves nowhere: every request goes through ASGITransport, never the network.
BASE = "https://pc.test"
API_URL = f"{BASE}/v1.0/engagements"
WEBHOOK_API_URL = f"{BASE}/webhooks/v1"
AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}


class RecordedSleeps:
    """Stands in for asyncio.sleep in RetryPolicy: returns at once, remembers what was asked."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture(scope="session")
def signing() -> SigningAuthority:
    return SigningAuthority.generate()  # one test CA for the session: RSA keys take time


@pytest.fixture
def sleeps() -> RecordedSleeps:
    return RecordedSleeps()


@pytest.fixture
def app(signing: SigningAuthority) -> Starlette:
    return create_app(signing=signing, seed=3)


@pytest.fixture
async def http(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """Raw HTTP to the emulator, with the sandbox token."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE, headers=AUTH
    ) as client:
        yield client


@pytest.fixture
async def client(app: Starlette, sleeps: RecordedSleeps) -> AsyncIterator[PartnerCenterClient]:
    async with PartnerCenterClient(
        token_provider=StaticTokenProvider(DEFAULT_TOKEN),
        api_url=API_URL,
        webhook_api_url=WEBHOOK_API_URL,
        transport=httpx.ASGITransport(app=app),
        retry_policy=RetryPolicy(sleep=sleeps, jitter=0.0),
    ) as pc:
        yield pc
