"""Fixtures: a fresh emulator per test, a client and a raw HTTP client pointed at it in-process
(``httpx.ASGITransport``: no sockets, nothing leaves the machine)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette

from sandbox.dataverse import Emulator, create_app, emulator_of
from shared.dataverse import DataverseClient
from shared.retry import RetryPolicy

URL = "http://dataverse.test"
API = URL + "/api/data/v9.2/"
TOKEN = "sandbox"


async def no_wait(seconds: float) -> None:
    await asyncio.sleep(0)


class VirtualTime:
    """A clock that only moves when someone sleeps: long windows pass in no real time."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


@pytest.fixture
def app() -> Starlette:
    return create_app(token=TOKEN, seed=7)


@pytest.fixture
def emulator(app: Starlette) -> Emulator:
    return emulator_of(app)


@pytest.fixture
async def client(app: Starlette) -> AsyncIterator[DataverseClient]:
    async with DataverseClient(
        URL,
        token=TOKEN,
        transport=httpx.ASGITransport(app=app),
        retry_policy=RetryPolicy(sleep=no_wait),
    ) as dataverse:
        yield dataverse


@pytest.fixture
async def http(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """Raw requests as the reference writes them, with the headers of reference 1.2."""
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=API,
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Accept": "application/json",
            "OData-MaxVersion": "4.0",
            "OData-Version": "4.0",
            "If-None-Match": "null",
        },
    ) as raw:
        yield raw


@pytest.fixture
async def control(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=URL + "/_emulator/"
    ) as raw:
        yield raw
