"""SPEC 11's "push path" row: Dataverse change → visible in Partner Center through
``dataverse_webhook`` (issue 16), and what chaos needs to drop pushes.

The stack runs with the poll once an hour, so only the push can carry an edit across in
seconds. A seller (a person: the emulator's ``MSCRMCallerID`` impersonation, so the push is not
taken for the app's own write) edits the deal value; the clock stops when the referral shows it,
read from the Partner Center emulator's memory every 20 ms (no HTTP requests, so the request
counts stay the sync's own). Per edit it also counts the remote calls the sync made (requests
the emulators answered, less the seller's own write), and after each edit one write as the app's
own user (an echo) whose calls must be 0.

``python -m bench.push_latency`` prints the numbers; ``measure`` returns them for bench/run.py.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from sandbox.dataverse import emulator_of, push
from sandbox.partner_center.samples import cosell_referral_from_microsoft
from sandbox.stack import SandboxStack
from shared import wiring
from shared.dataverse import DataverseClient, eq

HOURLY = "0 0 * * * *"
PUSH_TARGET_S = 1.0  # SPEC 11: p95 ≤ 1 s
READ_EVERY_S = 0.02
TIMEOUT_S = 30.0
SETTLE_S = 0.5  # after a change is visible: the sync's last writes and their echo pushes


@dataclass
class PushLatencies:
    push_s: list[float] = field(default_factory=list)
    calls_per_edit: list[int] = field(default_factory=list)
    calls_per_echo: list[int] = field(default_factory=list)
    timeouts: int = 0

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.push_s)
        p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)] if ordered else None
        return {
            "samples": len(self.push_s),
            "p50_s": statistics.median(ordered) if ordered else None,
            "p95_s": p95,
            "max_calls_per_edit": max(self.calls_per_edit, default=None),
            "max_calls_per_echo": max(self.calls_per_echo, default=None),
            "timeouts": self.timeouts,
            "target_met": p95 is not None and p95 <= PUSH_TARGET_S and not self.timeouts,
        }


def seller_client(stack: SandboxStack) -> DataverseClient:
    """A Dataverse client of the stack that edits as the sandbox's seller (pushed on)."""
    return wiring.dataverse_client(stack.app_settings(), transport=push.seller_transport())


async def drop_pushes(dataverse_url: str, rate: float, *, delay_ms: float = 0.0) -> None:
    """The Dataverse emulator drops ``rate`` of its pushes (chaos: 0.1) and delays the rest."""
    async with httpx.AsyncClient(base_url=dataverse_url, timeout=10) as control:
        answer = await control.put(
            "/_emulator/push", json={"drop_rate": rate, "delay_ms": delay_ms}
        )
        answer.raise_for_status()


async def push_stats(dataverse_url: str) -> dict[str, Any]:
    """Pushes made, delivered, failed and dropped (``GET /_emulator/push``)."""
    async with httpx.AsyncClient(base_url=dataverse_url, timeout=10) as control:
        answer = await control.get("/_emulator/push")
        answer.raise_for_status()
        stats: dict[str, Any] = answer.json()["stats"]
        return stats


async def measure(samples: int = 40, referrals: int = 4) -> PushLatencies:
    result = PushLatencies()
    stack = SandboxStack(settings={"DATAVERSE_POLL_SCHEDULE": HOURLY})
    async with stack:
        settings = stack.app_settings()
        async with (
            httpx.AsyncClient(base_url=stack.partner_center_url, timeout=10) as microsoft,
            seller_client(stack) as seller,
            wiring.dataverse_client(settings) as app_user,
        ):
            pairs = [await _pair(microsoft, seller, n) for n in range(referrals)]
            await asyncio.sleep(2)  # the creations' own follow-up jobs settle
            for number in range(samples):
                referral_id, opportunity_id = pairs[number % len(pairs)]
                await _one_edit(stack, result, seller, referral_id, opportunity_id, 400000 + number)
                await _one_echo(stack, result, app_user, opportunity_id, number)
    return result


async def _pair(microsoft: httpx.AsyncClient, crm: DataverseClient, number: int) -> tuple[str, str]:
    body = cosell_referral_from_microsoft(name=f"Push latency deal {number}")
    answer = await microsoft.post("/_emulator/microsoft/referrals", json=body)
    answer.raise_for_status()
    referral_id = str(answer.json()["id"])
    deadline = time.perf_counter() + TIMEOUT_S
    while time.perf_counter() < deadline:
        row = await crm.first(
            "opportunities", filter=eq("cosell_referralid", referral_id), select=["opportunityid"]
        )
        if row is not None:
            return referral_id, str(row["opportunityid"])
        await asyncio.sleep(0.05)
    raise RuntimeError("the sandbox did not create the opportunity in 30 s")


def _requests(stack: SandboxStack) -> int:
    pc = stack.partner_center_app.state.emulator.stats()["requests_total"]
    return int(pc) + sum(emulator_of(stack.dataverse_app).requests.values())


def _deal_value(stack: SandboxStack, referral_id: str) -> Any:
    referral = stack.partner_center_app.state.emulator.store.get(referral_id)
    return (referral.get("details") or {}).get("dealValue")


async def _one_edit(
    stack: SandboxStack,
    result: PushLatencies,
    seller: DataverseClient,
    referral_id: str,
    opportunity_id: str,
    value: int,
) -> None:
    before = _requests(stack)
    started = time.perf_counter()
    await seller.update("opportunities", opportunity_id, {"estimatedvalue": value})
    while time.perf_counter() - started < TIMEOUT_S:
        if _deal_value(stack, referral_id) == value:
            result.push_s.append(time.perf_counter() - started)
            await asyncio.sleep(SETTLE_S)
            result.calls_per_edit.append(_requests(stack) - before - 1)  # less the seller's
            return
        await asyncio.sleep(READ_EVERY_S)
    result.timeouts += 1


async def _one_echo(
    stack: SandboxStack,
    result: PushLatencies,
    app_user: DataverseClient,
    opportunity_id: str,
    number: int,
) -> None:
    """A write as the app's own user: pushed, and dropped without a remote call."""
    dispatcher = emulator_of(stack.dataverse_app).push
    before = _requests(stack)
    await app_user.update("opportunities", opportunity_id, {"description": f"echo {number}"})
    await dispatcher.idle()
    await asyncio.sleep(SETTLE_S)
    result.calls_per_echo.append(_requests(stack) - before - 1)  # less the write itself


def main(argv: list[str]) -> int:
    samples = int(argv[0]) if argv else 20
    measured = asyncio.run(measure(samples=samples))
    for key, value in measured.summary().items():
        print(f"{key:<20} {value}")
    return 0 if measured.summary()["target_met"] else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
