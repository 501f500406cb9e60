"""Dataverse push end to end (issue 16 acceptance): the poll set to once an hour in the
environment of ``python -m sandbox up`` (``SandboxStack.from_environ``), so only the push can
carry a CRM change across in seconds. Real sockets: Azurite, both emulators under uvicorn, the
local Functions host on function_app.py; the stack registers the push as ``cosell webhook
register`` does (a WebhookKey service endpoint and asynchronous post-operation steps).

Microsoft's docs behind each step (reference: dataverse-push-and-webhook-trust §1):
learn.microsoft.com/power-apps/developer/data-platform/use-webhooks (the RemoteExecutionContext
body, its headers, 256 KB, 60 s, retries on 502/503/504 only),
.../register-web-hook (serviceendpoint ``contract`` 8, ``authtype`` 4 WebhookKey sent as
``?code=``, steps), .../reference/entities/serviceendpoint and
.../reference/entities/sdkmessageprocessingstep (``filteringattributes``, ``stage`` 40,
``mode`` 1, ``asyncautodelete``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import httpx
import pytest
import pytest_asyncio

from sandbox.dataverse import emulator_of, push
from sandbox.partner_center.samples import cosell_referral_from_microsoft
from sandbox.stack import PORT_VARIABLES, SandboxStack
from shared import wiring
from shared.dataverse import DataverseClient, eq
from shared.partner_center import PartnerCenterClient, Referral

pytestmark = pytest.mark.asyncio(loop_scope="module")
T = TypeVar("T")

HOURLY = "0 0 * * * *"
ENVIRONMENT = {
    **{variable: "0" for variable, _ in PORT_VARIABLES.values()},
    "DATAVERSE_POLL_SCHEDULE": HOURLY,
}
WITHIN_S = 2.0  # the acceptance: visible on the referral within 2 s


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def stack(storage_connection_string: str) -> AsyncIterator[SandboxStack]:
    running = SandboxStack.from_environ(
        ENVIRONMENT,
        storage_connection_string=storage_connection_string,
        host_options={"visibility_timeout": 1},
    )
    async with running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def actors(
    stack: SandboxStack,
) -> AsyncIterator[tuple[PartnerCenterClient, DataverseClient, DataverseClient]]:
    """Partner Center, the seller in Dynamics 365 (a person: ``MSCRMCallerID``), and a client
    that writes as the app's own user."""
    settings = stack.app_settings()
    async with (
        wiring.partner_center_client(settings) as pc,
        wiring.dataverse_client(settings, transport=push.seller_transport()) as seller,
        wiring.dataverse_client(settings) as app_user,
    ):
        yield pc, seller, app_user


async def eventually(check: Callable[[], Awaitable[T | None]], *, within_s: float) -> T | None:
    deadline = time.monotonic() + within_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            return None
        await asyncio.sleep(0.05)


async def linked_pair(
    stack: SandboxStack, pc: PartnerCenterClient, crm: DataverseClient
) -> tuple[str, str]:
    """Microsoft sends a co-sell referral; the webhook path makes its opportunity."""
    async with httpx.AsyncClient(base_url=stack.partner_center_url) as microsoft:
        answer = await microsoft.post(
            "/_emulator/microsoft/referrals", json=cosell_referral_from_microsoft()
        )
        answer.raise_for_status()
        referral_id = str(answer.json()["id"])

    async def made() -> str | None:
        row = await crm.first("opportunities", filter=eq("cosell_referralid", referral_id))
        return row["opportunityid"] if row and str(row["name"]).startswith("✔ ") else None

    opportunity_id = await eventually(made, within_s=30)
    assert opportunity_id, "the referral's opportunity was not made"
    return referral_id, str(opportunity_id)


def solution_ids(referral: Referral) -> list[str]:
    requirements = referral.details.requirements if referral.details else None
    return [str(s.id) for s in (requirements.solutions or [])] if requirements else []


async def test_the_push_is_registered_and_the_poll_runs_hourly(stack: SandboxStack) -> None:
    """register-web-hook: one service endpoint (contract 8, WebhookKey) and async
    post-operation steps with asyncautodelete; serviceendpoint: authvalue is never read back."""
    assert stack.settings["DATAVERSE_POLL_SCHEDULE"] == HOURLY
    store = emulator_of(stack.dataverse_app).store
    endpoints = list(store.tables["serviceendpoints"].values())
    assert [(e.values["contract"], e.values["authtype"]) for e in endpoints] == [(8, 4)]
    assert endpoints[0].values["authvalue"] is None  # never readable back
    steps = [s.values for s in store.tables["sdkmessageprocessingsteps"].values()]
    assert {(s["stage"], s["mode"], s["asyncautodelete"]) for s in steps} == {(40, 1, True)}


async def test_a_deal_value_edited_in_crm_reaches_partner_center_within_2_s(
    stack: SandboxStack,
    actors: tuple[PartnerCenterClient, DataverseClient, DataverseClient],
) -> None:
    """use-webhooks: Dataverse posts the RemoteExecutionContext of the committed Update
    (only the changed columns in Target); dataverse_webhook enqueues the opportunity, the
    engine reads it and patches the referral — no poll involved (it runs hourly)."""
    pc, seller, _ = actors
    referral_id, opportunity_id = await linked_pair(stack, pc, seller)

    started = time.perf_counter()
    await seller.update("opportunities", opportunity_id, {"estimatedvalue": 321000})

    async def visible() -> bool:
        details = (await pc.get_referral(referral_id)).details
        return bool(details and details.deal_value == 321000)

    assert await eventually(visible, within_s=WITHIN_S), "dealValue not patched within 2 s"
    assert time.perf_counter() - started < WITHIN_S


async def test_a_deleted_solution_row_leaves_the_referral_within_2_s(
    stack: SandboxStack,
    actors: tuple[PartnerCenterClient, DataverseClient, DataverseClient],
) -> None:
    """use-webhooks / register-web-hook: a Delete step on the solutions table posts an
    EntityReference Target; the step's pre image names the opportunity, so the deletion is a
    change of it (a modifiedon poll could never see it)."""
    pc, seller, _ = actors
    referral_id, opportunity_id = await linked_pair(stack, pc, seller)
    identifier = f"SOL-{uuid.uuid4().hex[:8].upper()}"
    row = await seller.create(
        "cosell_solutions",
        {"cosell_name": "Push accelerator", "cosell_solutionidentifier": identifier,
         "cosell_opportunityid@odata.bind": f"/opportunities({opportunity_id})"},
        select=["cosell_solutionid"],
    )  # fmt: skip

    async def listed() -> bool:
        return identifier in solution_ids(await pc.get_referral(referral_id))

    assert await eventually(listed, within_s=WITHIN_S), "the new solution row was not shared"

    started = time.perf_counter()
    await seller.delete("cosell_solutions", row["cosell_solutionid"])

    async def removed() -> bool:
        return identifier not in solution_ids(await pc.get_referral(referral_id))

    assert await eventually(removed, within_s=WITHIN_S), "the deletion did not reach the referral"
    assert time.perf_counter() - started < WITHIN_S


async def test_our_own_writes_cost_no_remote_call(
    stack: SandboxStack,
    actors: tuple[PartnerCenterClient, DataverseClient, DataverseClient],
) -> None:
    """use-webhooks: the push names the InitiatingUserId; a write by the app's own user
    (WhoAmI's) is pushed like any other, and dataverse_webhook drops it without a job: neither
    Partner Center nor Dataverse hears of it again."""
    pc, seller, app_user = actors
    _, opportunity_id = await linked_pair(stack, pc, seller)
    await asyncio.sleep(1.0)  # the pair's own sync and its echoes settle
    dispatcher = emulator_of(stack.dataverse_app).push
    pc_state = stack.partner_center_app.state.emulator
    dataverse = emulator_of(stack.dataverse_app)
    delivered = dispatcher.stats.delivered
    before_pc = pc_state.stats()["requests_total"]
    before_dv = sum(dataverse.requests.values())

    await app_user.update("opportunities", opportunity_id, {"description": "our own write"})
    await dispatcher.idle()
    assert dispatcher.stats.delivered == delivered + 1  # Dataverse pushed it (202)
    await asyncio.sleep(1.0)  # a job, had one been queued, would have run by now

    assert pc_state.stats()["requests_total"] == before_pc
    # Only our own write itself reached Dataverse: no job read the opportunity again.
    assert sum(dataverse.requests.values()) == before_dv + 1
    last = dispatcher.deliveries[-1]
    assert (last.message, last.entity, last.ok) == ("Update", "opportunities", True)


async def test_a_wrong_key_gets_401_and_bad_bodies_400_or_413(stack: SandboxStack) -> None:
    """use-webhooks: "the endpoint must refuse requests whose authentication does not match";
    the WebhookKey is the function key as ?code= (register-web-hook)."""
    url = stack.function_url("dataverse_webhook")
    base = url.split("?", 1)[0]
    body: dict[str, Any] = {
        "MessageName": "Update",
        "PrimaryEntityName": "opportunity",
        "PrimaryEntityId": str(uuid.uuid4()),
        "InputParameters": [],
    }
    async with httpx.AsyncClient(timeout=10) as http:
        assert (await http.post(f"{base}?code=wrong", json=body)).status_code == 401
        assert (await http.post(base, json=body)).status_code == 401
        assert (await http.post(url, content=b"not json")).status_code == 400
        wrong_table = {**body, "PrimaryEntityName": "account"}
        assert (await http.post(url, json=wrong_table)).status_code == 400
        no_id = {**body, "PrimaryEntityId": "not-a-guid"}
        assert (await http.post(url, json=no_id)).status_code == 400
        assert (await http.post(url, content=b" " * (256 * 1024 + 1))).status_code == 413
