"""Remote calls per sync, counted by the emulators (engine + both emulators in process).

The unit is the engine (``SyncEngine.sync``), since a call count does not depend on sockets:
both emulators run in this process behind ``httpx.ASGITransport`` and the app's state and
``sync-jobs`` queue live on Azurite (the app's own runtime, as the worker builds it). Each
figure is the growth of the emulators' request counters (control API left out) across one sync:

* one changed field: the deal value edited on one side, then the job that change causes
  (``webhook:referral-updated`` for Partner Center, ``poll`` for Dataverse);
* duplicate event: the very same job delivered again, as the queue redelivers a message (same
  insertion time; the first delivery ran ``CLOCK_SKEW`` or more after it was enqueued — a poll
  job handled sooner than that is read once more on its first redelivery, see ``plan.covered``);
* echo: what our own write costs when it comes back — for a Dataverse write, through
  ``poll_dataverse`` as in the product (the calls of the jobs it enqueues for it: the poll's own
  query runs on its timer anyway); for a Partner Center patch, the
  ``webhook:referral-updated`` job of the referral we patched.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
from azure.storage.queue import TextBase64DecodePolicy
from azure.storage.queue.aio import QueueClient

from bench.common import job, total_requests
from bench.mapping import MAPPED_COLUMNS, add_columns, mapping_setting, with_extra_fields
from sandbox.dataverse import create_app as create_dataverse
from sandbox.partner_center import create_app as create_partner_center
from sandbox.partner_center.samples import cosell_referral_from_microsoft
from shared.dataverse import DataverseClient, eq
from shared.jobs import SYNC_JOBS_QUEUE, SyncJob, decode_job
from shared.partner_center import PartnerCenterClient
from shared.runtime import Runtime, Transports
from shared.settings import load_settings
from shared.sync import SyncEngine
from shared.sync.plan import CLOCK_SKEW
from shared.triggers.poll import poll_dataverse

PC_URL = "http://127.0.0.1:7101"
DV_URL = "http://127.0.0.1:7102"


@dataclass
class World:
    pc_http: httpx.AsyncClient
    dv_http: httpx.AsyncClient
    runtime: Runtime
    queue: QueueClient  # sync-jobs, decoding the base64 the app writes

    @property
    def pc(self) -> PartnerCenterClient:
        return self.runtime.partner_center()

    @property
    def crm(self) -> DataverseClient:
        return self.runtime.dataverse()

    @property
    def engine(self) -> SyncEngine:
        return self.runtime.engine()

    async def requests(self) -> int:
        return await total_requests(self.pc_http, self.dv_http)

    async def queued(self) -> list[tuple[SyncJob, datetime | None]]:
        """Take every ``sync-jobs`` message (the jobs and their insertion times)."""
        taken: list[tuple[SyncJob, datetime | None]] = []
        async for message in self.queue.receive_messages(max_messages=32, visibility_timeout=60):
            taken.append((decode_job(str(message.content)), message.inserted_on))
            await self.queue.delete_message(message)
        return taken


@asynccontextmanager
async def open_world(connection_string: str) -> AsyncIterator[World]:
    pc_app, dv_app = create_partner_center(seed=11), create_dataverse(seed=11)
    settings = load_settings(
        {
            "AzureWebJobsStorage": connection_string,
            "DATAVERSE_URL": DV_URL,
            "PARTNER_CENTER_API_URL": f"{PC_URL}/v1.0/engagements",
            "PARTNER_CENTER_WEBHOOK_API_URL": f"{PC_URL}/webhooks/v1",
            "CRM_MAPPING": mapping_setting(),
        }
    )
    runtime = Runtime.from_settings(
        settings,
        transports=Transports(
            partner_center=httpx.ASGITransport(app=pc_app),
            dataverse=httpx.ASGITransport(app=dv_app),
        ),
    )
    queue = QueueClient.from_connection_string(
        connection_string, SYNC_JOBS_QUEUE, message_decode_policy=TextBase64DecodePolicy()
    )
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=pc_app), base_url=PC_URL) as pc_http,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=dv_app), base_url=DV_URL) as dv_http,
        queue,
    ):
        try:
            await runtime.ensure_storage()
            await queue.clear_messages()
            await add_columns(runtime.dataverse())
            yield World(pc_http, dv_http, runtime, queue)
        finally:
            await queue.clear_messages()  # the fuzz run counts this queue next
            await runtime.close()


@dataclass
class Calls:
    changed_field: list[int] = field(default_factory=list)
    duplicate: list[int] = field(default_factory=list)
    echo: list[int] = field(default_factory=list)
    creation: list[int] = field(default_factory=list)


async def measure(connection_string: str, rounds: int = 20) -> Calls:
    calls = Calls()
    async with open_world(connection_string) as world:
        answer = await world.pc_http.post(
            "/_emulator/microsoft/referrals",
            json=with_extra_fields(cosell_referral_from_microsoft()),
        )
        referral_id = str(answer.json()["id"])
        referral = await world.pc.get_referral(referral_id)
        before = await world.requests()
        await world.engine.sync(
            job("referral", referral_id, "webhook:referral-created", referral.updated_date_time)
        )
        calls.creation.append(await world.requests() - before)
        row = await world.crm.first(
            "opportunities",
            filter=eq("cosell_referralid", referral_id),
            select=["opportunityid", *MAPPED_COLUMNS],
        )
        assert row is not None, "the engine did not create the opportunity"
        # The figures are with the mapping in effect: its columns were filled on creation.
        assert all(row.get(c) is not None for c in MAPPED_COLUMNS), row
        opportunity_id = str(row["opportunityid"])
        for number in range(rounds):
            await _partner_center_edit(world, calls, referral_id, opportunity_id, 1000 + number)
            await _dataverse_edit(world, calls, referral_id, opportunity_id, 5000 + number)
    return calls


async def _measured(
    world: World,
    kind: str,
    record_id: str,
    reason: str,
    at: object,
    *,
    enqueued_at: datetime | None = None,
) -> int:
    before = await world.requests()
    await world.engine.sync(job(kind, record_id, reason, at), enqueued_at=enqueued_at)
    return await world.requests() - before


async def _poll_echo(world: World, opportunity_id: str) -> int:
    """Run ``poll_dataverse`` after our write and sync whatever it enqueued for the opportunity."""
    report = await poll_dataverse(world.runtime)
    # Not vacuous: the poll did see our write (and took it for an echo, or enqueued a job).
    assert report.opportunities >= 1, "poll_dataverse did not see the opportunity we wrote"
    total = 0
    for queued, enqueued in await world.queued():
        if str(queued.id) == opportunity_id:
            before = await world.requests()
            await world.engine.sync(queued, enqueued_at=enqueued)
            total += await world.requests() - before
    return total


async def _partner_center_edit(
    world: World, calls: Calls, referral_id: str, opportunity_id: str, value: int
) -> None:
    current = await world.pc.get_referral(referral_id)
    operations = [{"op": "replace", "path": "/details/dealValue", "value": value}]
    edited = await world.pc.patch_referral(referral_id, operations, etag=current.e_tag)
    assert edited is not None
    reason, at = "webhook:referral-updated", edited.updated_date_time
    calls.changed_field.append(await _measured(world, "referral", referral_id, reason, at))
    calls.duplicate.append(await _measured(world, "referral", referral_id, reason, at))
    written = await world.crm.get("opportunities", opportunity_id, select=["estimatedvalue"])
    assert written.get("estimatedvalue", value) == value
    calls.echo.append(await _poll_echo(world, opportunity_id))


async def _dataverse_edit(
    world: World, calls: Calls, referral_id: str, opportunity_id: str, value: int
) -> None:
    edited = await world.crm.update(
        "opportunities", opportunity_id, {"estimatedvalue": value}, select=["modifiedon"]
    )
    modified = edited["modifiedon"]
    enqueued = datetime.now(UTC)  # the poll enqueues the job; a worker takes it a little later
    await asyncio.sleep(CLOCK_SKEW.total_seconds() + 0.05)
    calls.changed_field.append(
        await _measured(
            world, "opportunity", opportunity_id, "poll", modified, enqueued_at=enqueued
        )
    )
    calls.duplicate.append(
        await _measured(
            world, "opportunity", opportunity_id, "poll", modified, enqueued_at=enqueued
        )
    )
    referral = await world.pc.get_referral(referral_id)
    assert referral.details is not None and referral.details.deal_value == value
    reason, at = "webhook:referral-updated", referral.updated_date_time
    calls.echo.append(await _measured(world, "referral", referral_id, reason, at))
