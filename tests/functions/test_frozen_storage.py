"""Storage that hangs (issue 13, class 11): accepting connections and never answering, it kept
the webhook from answering for 90 s. Partner Center waits for that answer; it must get a 503
(and retry the delivery later) within seconds, and nothing is lost: the event comes again."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest

from sandbox.azurite import connection_string
from shared.runtime import Runtime, close_runtime, use_runtime
from shared.settings import get_settings
from shared.triggers.webhook import ENQUEUE_DEADLINE_S, handle_webhook

REFERRAL_ID = "5d3a2b10-7c4e-4f6a-9b8c-0123456789ab"


@pytest.fixture
async def frozen_storage() -> AsyncIterator[str]:
    """A connection string to a storage 'account' that accepts and then says nothing."""
    held: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # keep the connection open, read nothing back

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield connection_string(queue_port=port, table_port=port)
    finally:
        for writer in held:
            writer.close()
        server.close()


async def test_the_webhook_answers_503_in_seconds_when_storage_hangs(
    app_settings: None, frozen_storage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AzureWebJobsStorage", frozen_storage)
    get_settings.cache_clear()
    use_runtime(Runtime.from_settings(get_settings()))
    body = json.dumps(
        {
            "EventName": "referral-updated",
            "ResourceUri": f"https://api.partnercenter.microsoft.com/engagements/v1/referrals/{REFERRAL_ID}",
            "ResourceName": "referral",
            "ResourceChangeUtcDate": "2026-11-27T10:00:39Z",
        }
    ).encode()
    try:
        started = time.monotonic()
        answer = await handle_webhook(body, {"Content-Type": "application/json"})
        took = time.monotonic() - started
    finally:
        await close_runtime()

    assert answer.status == 503
    assert "retry later" in answer.message
    assert took < ENQUEUE_DEADLINE_S + 2  # not the SDK's whole retry budget
