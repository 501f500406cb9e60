"""What the end-to-end stories share: the running sandbox with its actors, and waiting for the
host (another process) to have done its work."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
from azure.storage.queue.aio import QueueClient

from sandbox.partner_center.samples import cosell_referral_from_microsoft
from sandbox.stack import SandboxStack
from shared import wiring
from shared.dataverse import DataverseClient, eq
from shared.errors import PreconditionFailedError
from shared.jobs import SYNC_JOBS_QUEUE
from shared.partner_center import PartnerCenterClient, Referral

T = TypeVar("T")
WITHIN_S = 30.0


@dataclass
class Sandbox:
    """The running stack and the actors: Microsoft (the emulator's control API), the partner's
    sellers in Partner Center and in Dynamics 365."""

    stack: SandboxStack
    microsoft: httpx.AsyncClient
    pc: PartnerCenterClient
    crm: DataverseClient

    async def microsoft_sends(self, **fields: Any) -> str:
        """Microsoft sends the partner a referral (a co-sell one unless ``fields`` say
        otherwise); returns its id."""
        body = cosell_referral_from_microsoft(**fields)
        answer = await self.microsoft.post("/_emulator/microsoft/referrals", json=body)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    async def partner_edits(self, referral_id: str, **values: Any) -> None:
        """A partner user edits the referral in Partner Center (``values`` by patch path,
        ``/`` written as ``__``); Partner Center then fires ``referral-updated``. The host may
        write the referral between the read and the patch (a 412): the user reads it again."""
        operations = [
            {"op": "replace", "path": "/" + path.replace("__", "/"), "value": value}
            for path, value in values.items()
        ]
        for attempt in range(5):
            current = await self.pc.get_referral(referral_id)
            try:
                await self.pc.patch_referral(referral_id, operations, etag=current.e_tag)
                return
            except PreconditionFailedError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2)

    async def referral(self, referral_id: str) -> Referral:
        return await self.pc.get_referral(referral_id)

    async def opportunity_for(self, referral_id: str) -> dict[str, Any] | None:
        """The opportunity the product made for the referral, once its sync marked it ✔."""
        row = await self.crm.first("opportunities", filter=eq("cosell_referralid", referral_id))
        return row if row is not None and str(row["name"]).startswith("✔ ") else None

    async def opportunity(self, opportunity_id: str) -> dict[str, Any]:
        return await self.crm.get("opportunities", opportunity_id)


async def eventually(
    check: Callable[[], Awaitable[T | None]], what: str, *, within_s: float = WITHIN_S
) -> T:
    """Poll ``check`` (another process's work: the host's) until it returns a value."""
    deadline = time.monotonic() + within_s
    while True:
        result = await check()
        if result is not None and result is not False:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within_s:.0f} s: {what}")
        await asyncio.sleep(0.2)


def customer(name: str, postal_code: str = "10115", city: str = "Berlin") -> dict[str, Any]:
    """A ``customerProfile`` of a customer of its own (``name`` unique per test)."""
    return {
        "name": name,
        "address": {"addressLine1": "1 Example Way", "city": city, "postalCode": postal_code,
                    "country": "DE"},
        "team": [{"firstName": "Ana", "lastName": "Example",
                  "email": f"ana.{uuid.uuid4().hex[:8]}@example.com"}],
    }  # fmt: skip


def unique(name: str) -> str:
    return f"{name} {uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def open_sandbox(
    environment: Mapping[str, str], storage_connection_string: str
) -> AsyncIterator[Sandbox]:
    """The stack as ``python -m sandbox up`` starts it from ``environment`` (an empty
    ``sync-jobs`` queue first: earlier modules share the storage), with the actors' clients."""
    async with QueueClient.from_connection_string(storage_connection_string, SYNC_JOBS_QUEUE) as q:
        with contextlib.suppress(Exception):  # ResourceNotFoundError: nothing to clear
            await q.clear_messages()
    stack = SandboxStack.from_environ(
        dict(environment),
        storage_connection_string=storage_connection_string,
        host_options={"visibility_timeout": 1},
    )
    async with stack, contextlib.AsyncExitStack() as clients:
        settings = stack.app_settings()
        yield Sandbox(
            stack=stack,
            microsoft=await clients.enter_async_context(
                httpx.AsyncClient(base_url=stack.partner_center_url, timeout=10)
            ),
            pc=await clients.enter_async_context(wiring.partner_center_client(settings)),
            crm=await clients.enter_async_context(wiring.dataverse_client(settings)),
        )


async def set_faults(base_url: str, faults: dict[str, Any] | None) -> None:
    """An emulator's injected faults (SPEC 9 control API ``/_emulator/faults``); None clears."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as control:
        if faults is None:
            answer = await control.delete("/_emulator/faults")
        else:
            answer = await control.put("/_emulator/faults", json=faults)
        assert answer.status_code in (200, 204), answer.text
