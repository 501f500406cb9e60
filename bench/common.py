"""Small helpers shared by the benchmark and the chaos run: emulator stats, figures.

Clients of the emulators come from the app's wiring (``shared.wiring``) and the stack's settings.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from shared.jobs import SyncJob

TOKEN = "sandbox"  # noqa: S105 - the emulators' public test token
WRITES = ("POST", "PATCH", "PUT", "DELETE")
MARKS = ("✔ ", "✖ ")


def control_client(base_url: str, *, timeout: float = 30) -> httpx.AsyncClient:
    """A client for the emulators' control routes. Idle connections are dropped after 1 s, well
    before uvicorn closes them (5 s): a request sent on a connection the server is closing
    fails with ``ReadError`` (seen once in ``make chaos``), and a control POST such as
    "Microsoft sends a referral" cannot be retried blindly."""
    return httpx.AsyncClient(
        base_url=base_url, timeout=timeout, limits=httpx.Limits(keepalive_expiry=1.0)
    )


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in 0..1); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "n": float(len(values)),
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "max": max(values) if values else math.nan,
    }


def without_mark(name: str | None) -> str:
    text = str(name or "")
    for mark in MARKS:
        if text.startswith(mark):
            return text[len(mark) :]
    return text


def job(kind: str, record_id: str, reason: str, observed_at: object) -> SyncJob:
    """A sync job as a trigger would enqueue it (``observed_at`` None: now)."""
    at = observed_at if observed_at is not None else datetime.now(UTC)
    return SyncJob.model_validate({"kind": kind, "id": record_id, "reason": reason,
                                   "observed_at": at})  # fmt: skip


async def api_requests(http: httpx.AsyncClient) -> dict[str, int]:
    """API requests by route an emulator has answered so far (its control API left out)."""
    routes = (await http.get("/_emulator/stats")).json()["requests"]
    return {route: n for route, n in routes.items() if "/_emulator/" not in route}


async def total_requests(*emulators: httpx.AsyncClient) -> int:
    total = 0
    for http in emulators:
        total += sum((await api_requests(http)).values())
    return total


async def set_faults(http: httpx.AsyncClient, faults: Mapping[str, Any] | None) -> None:
    if faults is None:
        (await http.delete("/_emulator/faults")).raise_for_status()
    else:
        (await http.put("/_emulator/faults", json=dict(faults))).raise_for_status()


def machine() -> dict[str, str]:
    """Cores, memory, Python and OS of this machine, for the report."""
    memory = "?"
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                    break
    except OSError:
        pass
    return {
        "cores": str(os.cpu_count() or "?"),
        "memory": memory,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()} ({platform.machine()})",
        "cpu": _cpu_model(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"
