"""Latency through the whole sandbox (real sockets, Azurite, both emulators, the local host).

* Partner Center → Dataverse: a deal value is patched in Partner Center; the emulator fires
  ``referral-updated`` at the webhook function; the job goes through ``sync-jobs``; the clock
  stops when the opportunity shows the value (read every 20 ms).
* Dataverse → Partner Center: a deal value is edited on the opportunity; ``poll_dataverse``
  (every ``POLL_SECONDS`` s here) finds it; the clock stops when the referral shows it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from bench.common import control_client
from sandbox.partner_center.samples import cosell_referral_from_microsoft
from sandbox.stack import SandboxStack
from shared import wiring
from shared.dataverse import DataverseClient, eq
from shared.partner_center import PartnerCenterClient

POLL_SECONDS = 1
POLL_SCHEDULE = f"*/{POLL_SECONDS} * * * * *"
READ_EVERY_S = 0.02
TIMEOUT_S = 30.0


@dataclass
class Latencies:
    webhook_s: list[float] = field(default_factory=list)
    poll_s: list[float] = field(default_factory=list)
    timeouts: int = 0
    poll_interval_s: int = POLL_SECONDS


async def _opportunity_id(crm: DataverseClient, referral_id: str) -> str | None:
    row = await crm.first(
        "opportunities", filter=eq("cosell_referralid", referral_id), select=["opportunityid"]
    )
    return str(row["opportunityid"]) if row else None


async def measure(samples: int = 40, referrals: int = 4) -> Latencies:
    result = Latencies()
    stack = SandboxStack(settings={"DATAVERSE_POLL_SCHEDULE": POLL_SCHEDULE})
    async with (
        stack,
        control_client(stack.partner_center_url, timeout=10) as microsoft,
        wiring.partner_center_client(stack.app_settings()) as pc,
        wiring.dataverse_client(stack.app_settings()) as crm,
    ):
        pairs: list[tuple[str, str]] = []
        for number in range(referrals):
            body = cosell_referral_from_microsoft(name=f"Latency deal {number}")
            answer = await microsoft.post("/_emulator/microsoft/referrals", json=body)
            answer.raise_for_status()
            referral_id = str(answer.json()["id"])
            deadline = time.perf_counter() + TIMEOUT_S
            opportunity_id = None
            while opportunity_id is None and time.perf_counter() < deadline:
                opportunity_id = await _opportunity_id(crm, referral_id)
                await asyncio.sleep(0.05)
            if opportunity_id is None:
                raise RuntimeError("the sandbox did not create the opportunity in 30 s")
            pairs.append((referral_id, opportunity_id))
        await asyncio.sleep(2)  # let the creation's own follow-up jobs settle
        for number in range(samples):
            referral_id, opportunity_id = pairs[number % len(pairs)]
            await _one_webhook(result, pc, crm, referral_id, opportunity_id, 200000 + number)
            await _one_poll(result, pc, crm, referral_id, opportunity_id, 300000 + number)
    return result


async def _one_webhook(
    result: Latencies,
    pc: PartnerCenterClient,
    crm: DataverseClient,
    referral_id: str,
    opportunity_id: str,
    value: int,
) -> None:
    referral = await pc.get_referral(referral_id)
    operations = [{"op": "replace", "path": "/details/dealValue", "value": value}]
    started = time.perf_counter()
    await pc.patch_referral(referral_id, operations, etag=referral.e_tag)

    async def seen() -> bool:
        row = await crm.get("opportunities", opportunity_id, select=["estimatedvalue"])
        return bool(row.get("estimatedvalue") == value)

    await _record(result, result.webhook_s, seen, started)


async def _one_poll(
    result: Latencies,
    pc: PartnerCenterClient,
    crm: DataverseClient,
    referral_id: str,
    opportunity_id: str,
    value: int,
) -> None:
    started = time.perf_counter()
    await crm.update("opportunities", opportunity_id, {"estimatedvalue": value})

    async def seen() -> bool:
        details = (await pc.get_referral(referral_id)).details
        return bool(details and details.deal_value == value)

    await _record(result, result.poll_s, seen, started)


async def _record(
    result: Latencies, samples: list[float], seen: Callable[[], Awaitable[bool]], started: float
) -> None:
    """Read until ``seen``; the time since ``started`` goes to ``samples`` (or a timeout)."""
    while time.perf_counter() - started < TIMEOUT_S:
        if await seen():
            samples.append(time.perf_counter() - started)
            return
        await asyncio.sleep(READ_EVERY_S)
    result.timeouts += 1
