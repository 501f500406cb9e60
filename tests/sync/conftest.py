"""A world for engine tests: both emulators in process, the engine's state on Azurite."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from azure.data.tables.aio import TableClient

from sandbox.dataverse import Emulator, emulator_of
from sandbox.dataverse import create_app as create_dataverse
from sandbox.partner_center import DEFAULT_TOKEN
from sandbox.partner_center import create_app as create_partner_center
from sandbox.partner_center.samples import cosell_referral_from_microsoft
from shared.dataverse import DataverseClient, eq
from shared.jobs import SyncJob
from shared.partner_center import PartnerCenterClient, Referral, StaticTokenProvider
from shared.retry import RetryPolicy
from shared.settings import Settings, load_settings
from shared.state import HistoryStore, LinkStore
from shared.sync import SyncEngine, SyncResult

PC_URL = "http://127.0.0.1:7101"
DV_URL = "http://127.0.0.1:7102"
WRITES = ("POST", "PATCH", "PUT", "DELETE")


def poll_job(row: dict[str, Any]) -> SyncJob:
    """The job ``poll_dataverse`` makes for an opportunity row as read (its ``modifiedon``)."""
    return SyncJob.model_validate(
        {"kind": "opportunity", "id": row["opportunityid"], "reason": "poll",
         "observed_at": row["modifiedon"]}
    )  # fmt: skip


async def _no_sleep(_: float) -> None:
    return None


def sandbox_settings(**overrides: str) -> Settings:
    return load_settings(
        {
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "DATAVERSE_URL": DV_URL,
            "PARTNER_CENTER_API_URL": f"{PC_URL}/v1.0/engagements",
            "PARTNER_CENTER_WEBHOOK_API_URL": f"{PC_URL}/webhooks/v1",
            **overrides,
        }
    )


@dataclass
class DataverseClock:
    """The Dataverse emulator's wall clock (``modifiedon``): real time plus what tests add."""

    ahead_s: float = 0.0
    frozen_at: float | None = None  # every write in this one second (to the emulator's stamp)

    def __call__(self) -> float:
        return (self.frozen_at if self.frozen_at is not None else time.time()) + self.ahead_s


@dataclass
class World:
    """Both systems, the engine, and short-hands for what tests do to them."""

    pc_http: httpx.AsyncClient
    dv_http: httpx.AsyncClient
    pc: PartnerCenterClient
    dataverse: DataverseClient
    links: LinkStore
    history: HistoryStore
    engine: SyncEngine
    dv_emulator: Emulator  # for the few tests that choose how Dataverse behaves
    dv_clock: DataverseClock
    pc_app: Any  # the Partner Center emulator (ASGI), for tests that wrap its transport

    def engine_with_partner_center(
        self,
        wrap: Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport] = lambda t: t,
        *,
        retry_policy: RetryPolicy | None = None,
    ) -> tuple[PartnerCenterClient, SyncEngine]:
        """A Partner Center client over the emulator whose transport ``wrap`` may change (to
        inject an event at a chosen request), and an engine using it; close the client."""
        pc = PartnerCenterClient(
            sandbox_settings().partner_center_api_url,
            token_provider=StaticTokenProvider(DEFAULT_TOKEN),
            transport=wrap(httpx.ASGITransport(app=self.pc_app)),
            retry_policy=retry_policy,
        )
        engine = SyncEngine(
            pc=pc,
            dataverse=self.dataverse,
            links=self.links,
            history=self.history,
            settings=sandbox_settings(),
        )
        return pc, engine

    def freeze_dataverse_clock(self) -> None:
        """From now on Dataverse stamps every write with the same ``modifiedon`` second."""
        self.dv_clock.frozen_at = self.dv_clock()

    def later_in_dataverse(self, seconds: float = 1.0) -> None:
        """Dataverse stamps the next edits ``seconds`` later than Partner Center would."""
        self.dv_clock.ahead_s += seconds

    async def incoming(self, **fields: Any) -> str:
        """Microsoft sends the partner a co-sell referral; returns its id."""
        body = incoming_cosell(**fields)
        response = await self.pc_http.post("/_emulator/microsoft/referrals", json=body)
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    async def flagged_opportunity(
        self,
        *,
        country: str | None = "DE",
        contact: bool = True,
        solutions: tuple[str, ...] = ("SOL-12345-ABC",),
        help_needed: int | None = 100000001,
        **columns: Any,
    ) -> str:
        """A seller's opportunity with the sync flag on (account, contact, solutions)."""
        account_id, opportunity_id = new_id(), new_id()
        account: dict[str, Any] = {"name": "Fabrikam Ltd", "address1_postalcode": "10115"}
        if country:
            account["address1_country"] = country
        await self.dataverse.create("accounts", account, row_id=account_id)
        body: dict[str, Any] = {
            "name": "Fabrikam - data platform",
            "estimatedvalue": 50000,
            "estimatedclosedate": "2027-06-30",
            "description": "Seller's notes",
            "parentaccountid@odata.bind": f"/accounts({account_id})",
            "customerid_account@odata.bind": f"/accounts({account_id})",
            "cosell_syncwithpartnercenter": True,
            "cosell_visibletomicrosoft": True,
        }
        if help_needed is not None:
            body["cosell_helpneeded"] = help_needed
        if contact:
            contact_id = new_id()
            await self.dataverse.create(
                "contacts",
                {"firstname": "Ben", "lastname": "Example", "emailaddress1": "ben@example.com"},
                row_id=contact_id,
            )
            body["parentcontactid@odata.bind"] = f"/contacts({contact_id})"
        body.update(columns)
        await self.dataverse.create("opportunities", body, row_id=opportunity_id)
        for identifier in solutions:
            await self.dataverse.create(
                "cosell_solutions",
                {
                    "cosell_name": identifier,
                    "cosell_solutionidentifier": identifier,
                    "cosell_opportunityid@odata.bind": f"/opportunities({opportunity_id})",
                },
            )
        return opportunity_id

    async def edit_opportunity(self, opportunity_id: str, **columns: Any) -> dict[str, Any]:
        return await self.dataverse.update("opportunities", opportunity_id, columns)

    async def edit_referral(self, referral_id: str, *operations: dict[str, Any]) -> Referral:
        current = await self.referral(referral_id)
        updated = await self.pc.patch_referral(referral_id, list(operations), etag=current.e_tag)
        assert updated is not None
        return updated

    async def referral(self, referral_id: str) -> Referral:
        return await self.pc.get_referral(referral_id)

    async def opportunity(self, opportunity_id: str) -> dict[str, Any]:
        return await self.dataverse.get("opportunities", opportunity_id)

    async def count(self, entity_set: str, **where: Any) -> int:
        rows = 0
        filters = [eq(k, v) for k, v in where.items()]
        from shared.dataverse import all_of

        async for _ in self.dataverse.list_rows(
            entity_set, filter=all_of(*filters) if filters else None
        ):
            rows += 1
        return rows

    async def sync_referral(
        self, referral_id: str, *, reason: str = "manual", **kw: Any
    ) -> SyncResult:
        return await self.engine.sync(SyncJob.now("referral", referral_id, reason=reason), **kw)

    async def sync_opportunity(
        self, opportunity_id: str, *, reason: str = "manual", **kw: Any
    ) -> SyncResult:
        return await self.engine.sync(
            SyncJob.now("opportunity", opportunity_id, reason=reason), **kw
        )

    async def _api_requests(self) -> dict[str, dict[str, int]]:
        """API requests by route seen so far by each emulator (control calls left out)."""
        found = {}
        for side, http in (("pc", self.pc_http), ("dv", self.dv_http)):
            routes = (await http.get("/_emulator/stats")).json()["requests"]
            found[side] = {r: n for r, n in routes.items() if "/_emulator/" not in r}
        return found

    async def writes(self) -> dict[str, int]:
        """Write requests seen so far by each emulator."""
        return {
            side: sum(n for route, n in routes.items() if route.split(" ")[0] in WRITES)
            for side, routes in (await self._api_requests()).items()
        }

    async def dataverse_requests(self) -> int:
        return sum((await self._api_requests())["dv"].values())

    async def requests(self) -> int:
        """API requests (reads and writes) seen so far by both emulators."""
        return sum(sum(routes.values()) for routes in (await self._api_requests()).values())


# The sample Microsoft co-sell referral (shared with the demo and the CLI tests).
incoming_cosell = cosell_referral_from_microsoft


@asynccontextmanager
async def open_world(
    storage_connection_string: str, table_prefix: str, **settings: str
) -> AsyncIterator[World]:
    """Fresh emulators, fresh state tables, and an engine between them."""
    pc_app = create_partner_center(seed=7)
    dv_clock = DataverseClock()
    dv_app = create_dataverse(seed=7, wall_clock=dv_clock)
    config = sandbox_settings(**settings)
    fast = RetryPolicy(sleep=_no_sleep, jitter=0.0)
    async with (
        httpx.AsyncClient(transport=httpx.ASGITransport(app=pc_app), base_url=PC_URL) as pc_http,
        httpx.AsyncClient(transport=httpx.ASGITransport(app=dv_app), base_url=DV_URL) as dv_http,
        PartnerCenterClient(
            token_provider=StaticTokenProvider(DEFAULT_TOKEN),
            api_url=config.partner_center_api_url,
            webhook_api_url=config.partner_center_webhook_api_url,
            transport=httpx.ASGITransport(app=pc_app),
            retry_policy=fast,
        ) as pc,
        DataverseClient(
            DV_URL, token="sandbox", transport=httpx.ASGITransport(app=dv_app), retry_policy=fast
        ) as dataverse,
        LinkStore(
            TableClient.from_connection_string(storage_connection_string, table_prefix + "l")
        ) as links,
        HistoryStore(
            TableClient.from_connection_string(storage_connection_string, table_prefix + "h")
        ) as history,
    ):
        await links.create_table()
        await history.create_table()
        engine = SyncEngine(
            pc=pc, dataverse=dataverse, links=links, history=history, settings=config
        )
        yield World(
            pc_http,
            dv_http,
            pc,
            dataverse,
            links,
            history,
            engine,
            emulator_of(dv_app),
            dv_clock,
            pc_app,
        )


@pytest.fixture
async def world(storage_connection_string: str, unique_name: str) -> AsyncIterator[World]:
    async with open_world(storage_connection_string, unique_name) as opened:
        yield opened


def new_id() -> str:
    return str(uuid.uuid4())
