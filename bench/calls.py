"""Remote calls per sync, counted by the emulators (engine + both emulators in process).

The unit is the engine (``SyncEngine.sync``), since a call count does not depend on sockets:
both emulators run in this process behind ``httpx.ASGITransport`` and the engine's state lives
on Azurite. Each figure is the growth of the emulators' request counters (control API left
out) across one sync:

* one changed field: the deal value edited on one side, then the job that change causes
  (``webhook:referral-updated`` for Partner Center, ``poll`` for Dataverse);
* duplicate event: the very same job delivered again;
* echo: the job our own write causes on the other side (a ``poll`` job of the opportunity we
  just wrote, a ``webhook:referral-updated`` job of the referral we just patched).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from azure.data.tables.aio import TableClient

from bench.common import job, total_requests
from sandbox.dataverse import create_app as create_dataverse
from sandbox.partner_center import create_app as create_partner_center
from sandbox.partner_center.samples import cosell_referral_from_microsoft
from shared import wiring
from shared.dataverse import DataverseClient, eq
from shared.partner_center import PartnerCenterClient
from shared.settings import load_settings
from shared.state import HistoryStore, LinkStore
from shared.sync import SyncEngine

PC_URL = "http://127.0.0.1:7101"
DV_URL = "http://127.0.0.1:7102"


@dataclass
class World:
    pc_http: httpx.AsyncClient
    dv_http: httpx.AsyncClient
    pc: PartnerCenterClient
    crm: DataverseClient
    engine: SyncEngine

    async def requests(self) -> int:
        return await total_requests(self.pc_http, self.dv_http)


@asynccontextmanager
async def open_world(connection_string: str, prefix: str) -> AsyncIterator[World]:
    pc_app, dv_app = create_partner_center(seed=11), create_dataverse(seed=11)
    settings = load_settings(
        {
            "AzureWebJobsStorage": connection_string,
            "DATAVERSE_URL": DV_URL,
            "PARTNER_CENTER_API_URL": f"{PC_URL}/v1.0/engagements",
            "PARTNER_CENTER_WEBHOOK_API_URL": f"{PC_URL}/webhooks/v1",
        }
    )
    links = LinkStore(TableClient.from_connection_string(connection_string, prefix + "l"))
    history = HistoryStore(TableClient.from_connection_string(connection_string, prefix + "h"))
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=pc_app), base_url=PC_URL) as pc_http,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=dv_app), base_url=DV_URL) as dv_http,
        wiring.partner_center_client(settings, transport=httpx.ASGITransport(app=pc_app)) as pc,
        wiring.dataverse_client(settings, transport=httpx.ASGITransport(app=dv_app)) as crm,
        links,
        history,
    ):
        await links.create_table()
        await history.create_table()
        engine = wiring.sync_engine(settings, pc=pc, dataverse=crm, links=links, history=history)
        yield World(pc_http, dv_http, pc, crm, engine)


@dataclass
class Calls:
    changed_field: list[int] = field(default_factory=list)
    duplicate: list[int] = field(default_factory=list)
    echo: list[int] = field(default_factory=list)
    creation: list[int] = field(default_factory=list)


async def measure(connection_string: str, rounds: int = 20) -> Calls:
    calls = Calls()
    async with open_world(connection_string, "benchcalls") as world:
        answer = await world.pc_http.post(
            "/_emulator/microsoft/referrals", json=cosell_referral_from_microsoft()
        )
        referral_id = str(answer.json()["id"])
        referral = await world.pc.get_referral(referral_id)
        before = await world.requests()
        await world.engine.sync(
            job("referral", referral_id, "webhook:referral-created", referral.updated_date_time)
        )
        calls.creation.append(await world.requests() - before)
        row = await world.crm.first(
            "opportunities", filter=eq("cosell_referralid", referral_id), select=["opportunityid"]
        )
        assert row is not None, "the engine did not create the opportunity"
        opportunity_id = str(row["opportunityid"])
        for number in range(rounds):
            await _partner_center_edit(world, calls, referral_id, opportunity_id, 1000 + number)
            await _dataverse_edit(world, calls, referral_id, opportunity_id, 5000 + number)
    return calls


async def _measured(world: World, kind: str, record_id: str, reason: str, at: object) -> int:
    before = await world.requests()
    await world.engine.sync(job(kind, record_id, reason, at))
    return await world.requests() - before


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
    written = await world.crm.get("opportunities", opportunity_id, select=["modifiedon"])
    assert written.get("estimatedvalue", value) == value
    modified = written["modifiedon"]
    calls.echo.append(await _measured(world, "opportunity", opportunity_id, "poll", modified))


async def _dataverse_edit(
    world: World, calls: Calls, referral_id: str, opportunity_id: str, value: int
) -> None:
    edited = await world.crm.update("opportunities", opportunity_id, {"estimatedvalue": value})
    modified = (
        edited.get("modifiedon")
        or (await world.crm.get("opportunities", opportunity_id, select=["modifiedon"]))[
            "modifiedon"
        ]
    )
    calls.changed_field.append(
        await _measured(world, "opportunity", opportunity_id, "poll", modified)
    )
    calls.duplicate.append(await _measured(world, "opportunity", opportunity_id, "poll", modified))
    referral = await world.pc.get_referral(referral_id)
    assert referral.details is not None and referral.details.deal_value == value
    reason, at = "webhook:referral-updated", referral.updated_date_time
    calls.echo.append(await _measured(world, "referral", referral_id, reason, at))
