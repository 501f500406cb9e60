"""Three app instances on one Dataverse budget (issue 20): ``shared.state.budget`` measured.

Set-up: Azurite; the Dataverse emulator under uvicorn in this process, answering after
``latency_ms`` and enforcing service protection at the documented 20 requests/s per user —
6,000 per 300 s scaled to ``LIMIT_REQUESTS`` per ``LIMIT_WINDOW_S`` (the backfill row's scale) —
and 52 concurrent requests. Three child processes, like three Functions instances, each send as
many Dataverse reads as they can through the app's own client (``wiring``-style throttle with a
``TableBudget`` on the same Azurite table), ``WORKERS`` at a time, for ``seconds``.

Measured: the requests the emulator admitted, their rate against the ceiling over six windows,
429 answers, the emulator's peak of concurrent requests, and the ledger's storage calls per
Dataverse request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import uvicorn

from bench.common import TOKEN, control_client
from sandbox import dataverse
from sandbox.azurite import Azurite
from sandbox.host import quiet_server, serve_in_background

CEILING_PER_S = 20.0  # SPEC 11: 6,000 requests per 300 s per user
LIMIT_REQUESTS = 600
LIMIT_WINDOW_S = 30.0
INSTANCES = 3
WORKERS = 24  # per instance: more than its share of 52, so the share is what binds


@dataclass
class SharedBudget:
    instances: int
    seconds: float
    admitted: int
    throttled: int
    peak_concurrent: int
    storage_calls: int
    fallback_grants: int
    per_instance: list[int]

    @property
    def share_of_ceiling(self) -> float:
        """Admitted requests per second over the run, against 20/s. A sliding window lets up to
        a window's budget through in any window, so over a run of whole windows the most is
        the ceiling itself (the run is six windows long to keep the edges small)."""
        return self.admitted / self.seconds / CEILING_PER_S

    @property
    def storage_calls_per_request(self) -> float:
        return self.storage_calls / max(1, self.admitted)


async def measure(*, seconds: float = 6 * LIMIT_WINDOW_S, latency_ms: float = 20.0) -> SharedBudget:
    with Azurite() as azurite:
        app = dataverse.create_app(token=TOKEN)
        server = quiet_server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
        )
        port = await serve_in_background(server)
        url = f"http://127.0.0.1:{port}"
        try:
            return await _run(azurite.connection_string, url, seconds, latency_ms)
        finally:
            server.should_exit = True
            task = getattr(server, "task", None)
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)


async def _run(connection: str, url: str, seconds: float, latency_ms: float) -> SharedBudget:
    async with control_client(url) as control:
        limits = {"requests": LIMIT_REQUESTS, "window_s": LIMIT_WINDOW_S, "concurrent": 52}
        (await control.put("/_emulator/limits", json=limits)).raise_for_status()
        faults = {"error_rate": 0.0, "latency_ms": latency_ms}
        (await control.put("/_emulator/faults", json=faults)).raise_for_status()
        before = (await control.get("/_emulator/stats")).json()
        children = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bench.shared_budget",
                "--child",
                connection,
                url,
                str(seconds),
                f"instance-{n}",
                stdout=asyncio.subprocess.PIPE,
            )
            for n in range(INSTANCES)
        ]
        outputs = [await child.communicate() for child in children]
        after = (await control.get("/_emulator/stats")).json()
    reports = [json.loads(out.decode()) for out, _ in outputs]
    return SharedBudget(
        instances=INSTANCES,
        seconds=seconds,
        admitted=after["total_requests"] - before["total_requests"],
        throttled=after["throttled"] - before["throttled"],
        peak_concurrent=int(after["peak_concurrent"]),
        storage_calls=sum(r["storage_calls"] for r in reports),
        fallback_grants=sum(r["fallback_grants"] for r in reports),
        per_instance=[r["sent"] for r in reports],
    )


async def _child(connection: str, url: str, seconds: float, name: str) -> dict[str, Any]:
    """One instance: the app's Dataverse client with its throttle on the shared ledger."""
    from azure.core.exceptions import ResourceExistsError
    from azure.data.tables.aio import TableClient

    from shared.dataverse import AdaptiveThrottle, DataverseClient
    from shared.state.budget import TableBudget

    table = TableClient.from_connection_string(connection, table_name="synccursors")
    async with table:
        with contextlib.suppress(ResourceExistsError):  # another instance made it
            await table.create_table()
        budget = TableBudget(
            table,
            scope=url,
            instance_id=name,
            requests_per_window=LIMIT_REQUESTS,
            window_s=LIMIT_WINDOW_S,
            heartbeat_s=5.0,
        )
        throttle = AdaptiveThrottle(16, window_requests=None, budget=budget)
        sent = 0
        end = time.monotonic() + seconds
        async with DataverseClient(url, token=TOKEN, throttle=throttle) as client:

            async def worker() -> None:
                nonlocal sent
                while time.monotonic() < end:
                    await client.who_am_i()
                    sent += 1

            await asyncio.gather(*(worker() for _ in range(WORKERS)))
        return {
            "sent": sent,
            "storage_calls": budget.storage_calls,
            "fallback_grants": budget.fallback_grants,
        }


def main() -> None:
    if len(sys.argv) >= 6 and sys.argv[1] == "--child":
        connection, url, seconds, name = sys.argv[2:6]
        print(json.dumps(asyncio.run(_child(connection, url, float(seconds), name))))
        return
    result = asyncio.run(measure())
    print(json.dumps({**result.__dict__, "share_of_ceiling": result.share_of_ceiling,
                      "storage_calls_per_request": result.storage_calls_per_request}))  # fmt: skip


if __name__ == "__main__":
    main()
