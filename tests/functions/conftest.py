"""Fixtures: the app's settings pointing at Azurite and at both emulators, in-process.

The emulators are reached through ``httpx.ASGITransport`` handed to the runtime
(``shared.runtime.Transports``): the functions run exactly as in Azure, on the running event
loop's runtime, without sockets or patching. The loopback URLs in the settings make them the
sandbox's (static tokens); nothing listens on port 9.

Every test starts with empty ``sync-jobs`` / ``sync-jobs-poison`` queues and empty state tables
(their names are fixed in code), so the functions' effects can be counted exactly.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient
from starlette.applications import Starlette

from sandbox.dataverse import create_app as create_dataverse
from sandbox.partner_center import SigningAuthority
from sandbox.partner_center import create_app as create_partner_center
from shared.jobs import POISON_QUEUE, SYNC_JOBS_QUEUE, SyncJob, decode_job
from shared.runtime import Runtime, Transports, close_runtime, use_runtime
from shared.settings import get_settings, setting_names
from shared.state import TABLE_NAMES

EMULATOR = "http://127.0.0.1:9"  # loopback: the settings treat both APIs as the sandbox's


@pytest.fixture(scope="session")
def signing() -> SigningAuthority:
    return SigningAuthority.generate()  # one test CA for the session: RSA keys take time


@pytest.fixture
def app_settings(storage_connection_string: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection_string)
    monkeypatch.setenv("DATAVERSE_URL", EMULATOR)
    monkeypatch.setenv("PARTNER_CENTER_API_URL", f"{EMULATOR}/v1.0/engagements")
    monkeypatch.setenv("PARTNER_CENTER_WEBHOOK_API_URL", f"{EMULATOR}/webhooks/v1")
    monkeypatch.setenv("WEBHOOK_SIGNATURE_MODE", "off")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def deliveries() -> list[httpx.Request]:
    """Webhook deliveries the Partner Center emulator made (to a receiver that answers 200)."""
    return []


@pytest.fixture
def pc_app(signing: SigningAuthority, deliveries: list[httpx.Request]) -> Starlette:
    async def receive(request: httpx.Request) -> httpx.Response:
        await request.aread()
        deliveries.append(request)
        return httpx.Response(200)

    return create_partner_center(
        signing=signing, seed=5, webhook_transport=httpx.MockTransport(receive)
    )


@pytest.fixture
def dataverse_app() -> Starlette:
    return create_dataverse(seed=5)


@dataclass
class App:
    """The runtime the functions use, and views of the queues for assertions."""

    runtime: Runtime
    pc_app: Starlette
    dataverse_app: Starlette
    jobs_queue: QueueClient
    poison_queue: QueueClient

    async def jobs(self) -> list[SyncJob]:
        """Every message in ``sync-jobs``, decoded (peeked: they stay in the queue)."""
        return [decode_job(text) for text in await _peek(self.jobs_queue)]

    async def poison(self) -> list[dict[str, Any]]:
        """Every message in ``sync-jobs-poison``, as JSON."""
        return [json.loads(text) for text in await _peek(self.poison_queue)]

    def control(self) -> httpx.AsyncClient:
        """The Partner Center emulator's control API (``/_emulator/...``)."""
        return httpx.AsyncClient(transport=httpx.ASGITransport(app=self.pc_app), base_url=EMULATOR)


async def _peek(queue: QueueClient) -> list[str]:
    # At most 32 messages per peek: enough for these tests, and they stay in the queue.
    return [str(m.content) for m in await queue.peek_messages(max_messages=32)]


@pytest.fixture
async def app(
    app_settings: None,
    storage_connection_string: str,
    pc_app: Starlette,
    dataverse_app: Starlette,
) -> AsyncIterator[App]:
    runtime = use_runtime(
        Runtime.from_settings(
            get_settings(),
            transports=Transports(
                partner_center=httpx.ASGITransport(app=pc_app),
                dataverse=httpx.ASGITransport(app=dataverse_app),
                certificates=httpx.ASGITransport(app=pc_app),
            ),
        )
    )
    # The app writes base64 (as the host reads it); these clients decode it for the asserts.
    jobs, poison = (
        QueueClient.from_connection_string(
            storage_connection_string, name, message_decode_policy=TextBase64DecodePolicy()
        )
        for name in (SYNC_JOBS_QUEUE, POISON_QUEUE)
    )
    try:
        await runtime.ensure_storage()
        for queue in (jobs, poison):
            await queue.clear_messages()
        await _empty_tables(runtime)
        yield App(runtime, pc_app, dataverse_app, jobs, poison)
    finally:
        await jobs.close()
        await poison.close()
        await close_runtime()


async def _empty_tables(runtime: Runtime) -> None:
    for name in TABLE_NAMES:
        table = runtime.tables.get_table_client(name)
        async for entity in table.list_entities(select=["PartitionKey", "RowKey"]):
            await table.delete_entity(entity["PartitionKey"], entity["RowKey"])
