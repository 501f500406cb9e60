"""The CLI against the sandbox: both emulators and a webhook receiver served by uvicorn on
ports the OS picks (the CLI talks HTTP like it does in production), Azurite for storage.

The servers run in background threads because ``main()`` runs its own event loop with
``asyncio.run``; they start once per session and are reset before each test.
"""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox import dataverse as dataverse_emulator
from sandbox import partner_center as pc_emulator
from sandbox.partner_center.samples import cosell_referral_from_microsoft
from shared.cli import main
from shared.jobs import POISON_QUEUE, SYNC_JOBS_QUEUE
from shared.settings import get_settings, setting_names
from tests.server_thread import ServerThread

AUTH = {"Authorization": "Bearer sandbox"}


@dataclass
class Receiver:
    """Stands in for the app's webhook function: answers 200 and counts the events."""

    events: int = 0
    pushes: int = 0  # posts to the Dataverse push's route

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            await request.body()
            self.events += 1
            return JSONResponse({}, status_code=200)

        async def push(request: Request) -> Response:
            await request.body()
            self.pushes += 1
            return JSONResponse({}, status_code=202)

        return Starlette(
            routes=[
                Route("/api/webhooks/partner-center", hook, methods=["POST"]),
                Route("/api/webhooks/dataverse", push, methods=["POST"]),
            ]
        )


@dataclass
class Sandbox:
    pc_url: str
    dataverse_url: str
    receiver_url: str
    receiver: Receiver
    dataverse_app: Starlette

    def reset(self) -> None:
        for url in (self.pc_url, self.dataverse_url):
            httpx.post(f"{url}/_emulator/reset", timeout=10).raise_for_status()

    def stats(self, url: str) -> dict[str, Any]:
        response = httpx.get(f"{url}/_emulator/stats", timeout=10)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    receiver = Receiver()
    dataverse_app = dataverse_emulator.create_app(seed=11)
    servers = [
        ServerThread(pc_emulator.create_app(seed=5, test_events_per_minute=1000)),
        ServerThread(dataverse_app),
        ServerThread(receiver.app()),
    ]
    urls = [server.start() for server in servers]
    try:
        yield Sandbox(urls[0], urls[1], urls[2], receiver, dataverse_app)
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def cli_env(
    sandbox: Sandbox, storage_connection_string: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Sandbox]:
    """App settings pointing at the sandbox, with both emulators emptied."""
    for name in setting_names():
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AzureWebJobsStorage", storage_connection_string)
    monkeypatch.setenv("DATAVERSE_URL", sandbox.dataverse_url)
    monkeypatch.setenv("PARTNER_CENTER_API_URL", f"{sandbox.pc_url}/v1.0/engagements")
    monkeypatch.setenv("PARTNER_CENTER_WEBHOOK_API_URL", f"{sandbox.pc_url}/webhooks/v1")
    monkeypatch.setenv("WEBHOOK_SIGNATURE_MODE", "off")
    get_settings.cache_clear()
    sandbox.reset()
    yield sandbox
    get_settings.cache_clear()


@dataclass
class BareDataverse:
    """A Dataverse emulator without the app's custom schema (``create_app(custom_schema=False)``):
    a new org as ``cosell schema apply`` finds it."""

    url: str
    app: Starlette


@contextlib.contextmanager
def serve_bare_dataverse(seed: int) -> Iterator[BareDataverse]:
    """A bare Dataverse emulator served on a free port while the block runs."""
    app = dataverse_emulator.create_app(seed=seed, custom_schema=False)
    server = ServerThread(app)
    url = server.start()
    try:
        yield BareDataverse(url, app)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def bare_dataverse() -> Iterator[BareDataverse]:
    with serve_bare_dataverse(13) as bare:
        yield bare


@pytest.fixture
def bare_env(
    cli_env: Sandbox, bare_dataverse: BareDataverse, monkeypatch: pytest.MonkeyPatch
) -> BareDataverse:
    """``cli_env`` with ``DATAVERSE_URL`` on the bare emulator, reset to its bare schema."""
    monkeypatch.setenv("DATAVERSE_URL", bare_dataverse.url)
    get_settings.cache_clear()
    httpx.post(f"{bare_dataverse.url}/_emulator/reset", timeout=10).raise_for_status()
    return bare_dataverse


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cosell(capsys: pytest.CaptureFixture[str]) -> Any:
    """``cosell(*args)`` runs ``main`` and returns its exit code and captured output."""

    def run(*args: str) -> Ran:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Ran(code, captured.out, captured.err)

    return run


@pytest.fixture
def queues(cli_env: Sandbox, storage_connection_string: str) -> Iterator[dict[str, QueueClient]]:
    """``sync-jobs`` and ``sync-jobs-poison``, created and emptied (raw text, no encoding)."""
    clients = {
        name: QueueClient.from_connection_string(storage_connection_string, name)
        for name in (SYNC_JOBS_QUEUE, POISON_QUEUE)
    }
    for client in clients.values():
        with contextlib.suppress(ResourceExistsError):
            client.create_queue()
        client.clear_messages()
    yield clients
    for client in clients.values():  # other folders share this Azurite and these queue names
        client.clear_messages()
        client.close()


def jobs_in(client: QueueClient) -> list[dict[str, Any]]:
    """The jobs waiting in a queue (peeked, base64-decoded)."""
    return [json.loads(base64.b64decode(m.content)) for m in client.peek_messages(max_messages=32)]


def incoming_referral(pc_url: str, **fields: Any) -> str:
    """Microsoft sends the partner a co-sell referral (fictitious example data); its id."""
    body = cosell_referral_from_microsoft(**fields)
    response = httpx.post(f"{pc_url}/_emulator/microsoft/referrals", json=body, timeout=10)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])
