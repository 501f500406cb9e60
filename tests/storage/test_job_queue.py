"""The job queue against Azurite: what we enqueue is what the Functions host would read."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import pytest
from azure.storage.queue.aio import QueueClient

from shared.jobs import JobQueue, SyncJob, decode_job
from shared.settings import load_settings
from shared.storage import queue_client

GUIDS = [f"6f1f8a5e-3d4c-4b2a-9e8f-{n:012d}" for n in range(40)]


@pytest.fixture
async def queue(storage_connection_string: str, unique_name: str) -> AsyncIterator[JobQueue]:
    settings = load_settings(
        {
            "AzureWebJobsStorage": storage_connection_string,
            "DATAVERSE_URL": "http://127.0.0.1:1",
            "PARTNER_CENTER_API_URL": "http://127.0.0.1:1/v1.0/engagements",
        }
    )
    async with JobQueue(queue_client(settings, unique_name)) as jobs:
        await jobs.create_queue()
        yield jobs


@pytest.fixture
async def raw(storage_connection_string: str, unique_name: str) -> AsyncIterator[QueueClient]:
    """A plain client that, like the host, sees the stored text before decoding it."""
    async with QueueClient.from_connection_string(storage_connection_string, unique_name) as client:
        yield client


async def test_enqueued_job_is_base64_json_the_host_decodes(
    queue: JobQueue, raw: QueueClient
) -> None:
    job = SyncJob.now("referral", GUIDS[0], reason="webhook:referral-created")
    await queue.enqueue(job)

    message = await raw.receive_message()

    assert message is not None
    stored = message.content
    host_body = base64.b64decode(stored, validate=True)  # what the host does before our code
    assert decode_job(host_body) == job


async def test_enqueue_many_sends_each_record_once_and_counts(
    queue: JobQueue, raw: QueueClient
) -> None:
    jobs = [SyncJob.now("opportunity", g, reason="poll") for g in GUIDS]
    duplicate = SyncJob.now("opportunity", GUIDS[0], reason="poll")

    sent = await queue.enqueue_many([*jobs, duplicate])

    assert sent == len(GUIDS)
    received: list[SyncJob] = []
    async for message in raw.receive_messages(messages_per_page=32, visibility_timeout=60):
        received.append(decode_job(base64.b64decode(message.content)))
    assert sorted(str(j.id) for j in received) == sorted(GUIDS)
    assert await queue.get_depth() == len(GUIDS)


async def test_depth_of_a_queue_that_does_not_exist_is_zero(
    storage_connection_string: str,
) -> None:
    client = QueueClient.from_connection_string(storage_connection_string, "never-created-queue")
    async with JobQueue(client) as jobs:
        assert await jobs.get_depth() == 0
