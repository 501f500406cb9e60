"""``python -m sandbox demo`` (``make demo``): a scripted co-sell story, both ways, measured.

It starts the whole sandbox (Azurite, both emulators, the local Functions host running
``function_app.py``), then plays what Microsoft, the partner's sellers and Dynamics 365 do, and
waits for the product to carry each change across. Each step's latency is measured from the
action to the moment the other system shows the result; the table at the end lists them.
Nothing is shortcut: webhooks, Dataverse's push (the seller edits as a person, through
``MSCRMCallerID``), the poll timer as the safety net and the queue do the work.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from sandbox.dataverse import push
from sandbox.partner_center.samples import cosell_referral_from_microsoft
from sandbox.stack import SandboxStack
from shared import wiring
from shared.dataverse import DataverseClient, eq
from shared.partner_center import PartnerCenterClient, Referral

TIMEOUT_S = 30.0


@dataclass
class Step:
    title: str
    outcome: str = ""
    latency_s: float | None = None
    ok: bool = False


class Story:
    """The actors of the story and a stopwatch."""

    def __init__(self, stack: SandboxStack, pc: PartnerCenterClient, crm: DataverseClient) -> None:
        self.stack = stack
        self.pc = pc
        self.crm = crm
        self.steps: list[Step] = []

    async def wait_for(
        self, title: str, act: Callable[[], Awaitable[Any]], done: Callable[[], Awaitable[Any]]
    ) -> Any:
        """Do ``act``, then poll ``done`` until it returns something truthy; time it."""
        step = Step(title)
        self.steps.append(step)
        print(f"  … {title}", flush=True)
        started = time.perf_counter()
        await act()
        while time.perf_counter() - started < TIMEOUT_S:
            result = await done()
            if result:
                step.latency_s = time.perf_counter() - started
                step.ok = True
                step.outcome = result if isinstance(result, str) else "done"
                return result
            await asyncio.sleep(0.1)
        step.outcome = f"not seen within {TIMEOUT_S:.0f} s"
        return None

    async def opportunity_for(self, referral_id: str) -> dict[str, Any] | None:
        return await self.crm.first(
            "opportunities",
            filter=eq("cosell_referralid", referral_id),
            select=["opportunityid", "name", "estimatedvalue", "statecode", "statuscode",
                    "cosell_referrallink", "cosell_syncstatus", "cosell_audit"],
        )  # fmt: skip

    async def referral(self, referral_id: str) -> Referral:
        return await self.pc.get_referral(referral_id)


async def play(stack: SandboxStack) -> list[Step]:
    """The story; returns its steps (each ok or not) for the table."""
    settings = stack.app_settings()
    async with (
        httpx.AsyncClient(base_url=stack.partner_center_url) as microsoft,
        wiring.partner_center_client(settings) as pc,
        # The seller edits Dynamics 365 as a person (not as the app's user), so each edit is
        # pushed to dataverse_webhook as someone else's change (sandbox/dataverse/push.py).
        wiring.dataverse_client(settings, transport=push.seller_transport()) as crm,
    ):
        story = Story(stack, pc, crm)
        await incoming_referral(story, microsoft)
        await outgoing_referral(story)
    return story.steps


async def incoming_referral(story: Story, microsoft: httpx.AsyncClient) -> None:
    ids: dict[str, str] = {}

    async def send() -> None:
        response = await microsoft.post(
            "/_emulator/microsoft/referrals", json=cosell_referral_from_microsoft()
        )
        response.raise_for_status()
        ids["referral"] = response.json()["id"]

    async def opportunity_appears() -> str | None:
        row = await story.opportunity_for(ids["referral"])
        if row is None or not str(row["name"]).startswith("✔ "):
            return None
        ids["opportunity"] = row["opportunityid"]
        return f"opportunity '{row['name']}' (On Hold) with account, contact, referral link"

    await story.wait_for(
        "Microsoft sends a co-sell referral → opportunity in Dynamics 365",
        send,
        opportunity_appears,
    )
    if "opportunity" not in ids:
        return

    async def accept() -> None:
        await story.crm.update("opportunities", ids["opportunity"], {"statuscode": 1})

    async def accepted() -> str | None:
        referral = await story.referral(ids["referral"])
        return "referral Active/Accepted" if str(referral.status) == "Active" else None

    await story.wait_for("Seller moves it On Hold → In Progress → accepted", accept, accepted)

    async def edit_in_partner_center() -> None:
        referral = await story.referral(ids["referral"])
        operations = [{"op": "replace", "path": "/details/dealValue", "value": 180000}]
        await story.pc.patch_referral(ids["referral"], operations, etag=referral.e_tag)

    async def value_in_crm() -> str | None:
        row = await story.opportunity_for(ids["referral"])
        return "estimated revenue 180,000" if row and row["estimatedvalue"] == 180000 else None

    await story.wait_for(
        "Deal value edited in Partner Center → CRM", edit_in_partner_center, value_in_crm
    )

    async def edit_in_crm() -> None:
        await story.crm.update("opportunities", ids["opportunity"], {"estimatedvalue": 215000})

    async def value_in_partner_center() -> str | None:
        details = (await story.referral(ids["referral"])).details
        return "dealValue 215,000" if details and details.deal_value == 215000 else None

    await story.wait_for(
        "Deal value edited in CRM → Partner Center", edit_in_crm, value_in_partner_center
    )

    async def win() -> None:
        await story.crm.win_opportunity(ids["opportunity"])

    async def won() -> str | None:
        referral = await story.referral(ids["referral"])
        done = (str(referral.status), str(referral.substatus)) == ("Closed", "Won")
        return "referral Closed/Won" if done else None

    await story.wait_for("Seller closes it as won → referral Closed/Won", win, won)


async def outgoing_referral(story: Story) -> None:
    crm = story.crm
    account_id, contact_id, opportunity_id = (str(uuid.uuid4()) for _ in range(3))

    async def flag_without_country() -> None:
        await crm.create("accounts", {"name": "Fabrikam Ltd", "address1_postalcode": "10115"},
                         row_id=account_id)  # fmt: skip
        await crm.create(
            "contacts",
            {"firstname": "Ben", "lastname": "Example", "emailaddress1": "ben@example.com"},
            row_id=contact_id,
        )
        await crm.create(
            "opportunities",
            {
                "name": "Fabrikam - analytics platform",
                "estimatedvalue": 90000,
                "estimatedclosedate": "2027-06-30",
                "parentaccountid@odata.bind": f"/accounts({account_id})",
                "parentcontactid@odata.bind": f"/contacts({contact_id})",
                "cosell_helpneeded": 100000001,  # CustomerTechnicalArchitecture
                "cosell_syncwithpartnercenter": True,
            },
            row_id=opportunity_id,
        )
        await crm.create(
            "cosell_solutions",
            {"cosell_name": "Analytics accelerator", "cosell_solutionidentifier": "SOL-12345-ABC",
             "cosell_opportunityid@odata.bind": f"/opportunities({opportunity_id})"},
        )  # fmt: skip

    async def refused() -> str | None:
        row = await crm.get("opportunities", opportunity_id, select=["name", "cosell_audit"])
        audit = str(row.get("cosell_audit") or "")
        if not str(row["name"]).startswith("✖ ") or "country" not in audit:
            return None
        return "✖ in name; audit: " + audit.splitlines()[-1].split("✖ ", 1)[-1][:48]

    await story.wait_for(
        "Seller flags a co-sell opportunity without a country → refused",
        flag_without_country,
        refused,
    )

    async def fix_country() -> None:
        await crm.update("accounts", account_id, {"address1_country": "DE"})
        await crm.update("opportunities", opportunity_id, {"description": "Country fixed"})

    async def referral_created() -> str | None:
        row = await crm.get("opportunities", opportunity_id, select=["name", "cosell_referralid"])
        referral_id = row.get("cosell_referralid")
        if not referral_id:
            return None
        referral = await story.referral(str(referral_id))
        team = referral.customer_profile.team if referral.customer_profile else None
        solutions = referral.details.requirements.solutions if (
            referral.details and referral.details.requirements
        ) else None  # fmt: skip
        if referral.external_reference_id != opportunity_id or not team or not solutions:
            return None
        return f"Shared referral with contact and {solutions[0].id}; id written back"

    await story.wait_for(
        "Seller fixes the country → referral created",
        fix_country,
        referral_created,
    )


def table(steps: list[Step]) -> str:
    """The readable table of the story."""
    rows = [("#", "Step", "Result", "Latency")]
    for number, step in enumerate(steps, start=1):
        latency = f"{step.latency_s:.2f} s" if step.latency_s is not None else "—"
        mark = "✔" if step.ok else "✖"
        rows.append((str(number), step.title, f"{mark} {step.outcome}", latency))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for index, row in enumerate(rows):
        lines.append("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


async def demo(stack: SandboxStack) -> int:
    async with stack:
        print(f"Sandbox up: Functions host {stack.host_url}, Partner Center emulator "
              f"{stack.partner_center_url}, Dataverse {stack.dataverse_url}\n")  # fmt: skip
        steps = await play(stack)
    print()
    print(table(steps))
    failed = [s for s in steps if not s.ok]
    print()
    if failed:
        print(f"{len(failed)} step(s) did not complete.")
        return 1
    poll = stack.settings.get("DATAVERSE_POLL_SCHEDULE", "")
    crm_path = (
        "go by Dataverse push (the poll timer, " + repr(poll) + ", is the safety net)"
        if stack.push_url is not None
        else f"wait for the poll timer ({poll!r})"
    )
    print(f"All {len(steps)} steps completed. Dynamics 365 → Partner Center steps {crm_path}; "
          "Partner Center → Dynamics 365 steps go by webhook.")  # fmt: skip
    return 0
