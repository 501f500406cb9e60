"""**Lead races** (class 3, ``SYNC_COSELL_ONLY=false`` for the whole run): Microsoft sends
marketplace leads with its co-sell referrals, which become Dataverse leads; as soon as its
lead exists, the seller qualifies each (an opportunity with ``originatingleadid``, valid for a
referral of its own, the lead Qualified) and flags that opportunity for sync within the same
poll interval (when creating it, or right after qualifying), and 2-3 extra ``poll`` jobs for
the opportunity and one for the referral race. Check: no partner-made referral for the
opportunity, the opportunity linked to Microsoft's referral, which is accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Mapping
from typing import Any

import httpx

from bench.common import job
from bench.families.model import RACE_JOBS, Families, FamilyProblems, LeadRace, Observed
from bench.families.plumbing import Retried, send_all, wait_for
from sandbox.partner_center.samples import cosell_referral_from_microsoft
from shared.dataverse import DataverseClient
from shared.errors import AlreadyExistsError, NotFoundError
from shared.jobs import JobQueue
from shared.sync.mapping import record_id

# Class 3, lead races: a marketplace lead as Microsoft sends it (tests/sync/test_leads.py).
LEAD_FIELDS: dict[str, Any] = {
    "type": "Independent",
    "qualification": "SalesQualified",
    "inviteContext": {"invitedBy": {"organizationId": "msft"}},
}
# For the Dataverse lead the product makes from Microsoft's lead: twice
# ``FamilySizes.patience_s`` (the queue's backlog grows with the run).


def marketplace_lead(number: int) -> dict[str, Any]:
    """A marketplace lead Microsoft sends (program "Marketplace lead"), a customer of its own."""
    body = cosell_referral_from_microsoft(name=f"Chaos lead {number}", **LEAD_FIELDS)
    profile = body["customerProfile"]
    body["customerProfile"] = {
        **profile,
        "name": f"Chaos lead customer {number} Ltd",
        "address": {**profile["address"], "postalCode": f"{30000 + number}"},
        "team": [{**profile["team"][0], "email": f"lead{number}@example.com"}],
    }
    return body


async def send_leads(control: httpx.AsyncClient, families: Families, first_number: int) -> None:
    """Microsoft sends the marketplace leads (``SYNC_COSELL_ONLY=false``: each becomes a lead)."""

    async def one(index: int) -> None:
        number = first_number + index
        answer = await control.post("/_emulator/microsoft/referrals", json=marketplace_lead(number))
        answer.raise_for_status()
        flagged_first = index % 2 == 0
        referral_id = str(answer.json()["id"]).lower()
        families.leads.append(LeadRace(number, referral_id, flagged_first=flagged_first))

    await asyncio.gather(*(one(i) for i in range(families.sizes.leads)))
    families.leads.sort(key=lambda lead: lead.number)


async def _create(crm: DataverseClient, entity_set: str, row: dict[str, Any], row_id: str,
                  retried: Retried) -> None:  # fmt: skip
    """The harness's own create, retried on faults; one that landed already is done."""

    async def create() -> None:
        with contextlib.suppress(AlreadyExistsError):
            await crm.create(entity_set, row, row_id=row_id)

    await retried(create)


async def qualify_leads(
    crm: DataverseClient,
    queue: JobQueue,
    families: Families,
    rng: random.Random,
    retried: Retried,
) -> None:
    """Class 3, lead races: once the product made the Dataverse lead, the seller qualifies it
    (an opportunity with ``originatingleadid``, the lead Qualified) and flags the opportunity
    within the same poll interval — flagged when created (before the lead is qualified) or
    right after qualifying — and 2-3 poll jobs for the opportunity plus one for the referral
    arrive at once."""

    # Picked before any wait, so the run's random stream does not depend on timing.
    runs_of = {lead.number: rng.choice(RACE_JOBS) for lead in families.leads}

    async def one(lead: LeadRace) -> None:
        lead_id = record_id("lead", lead.referral_id)

        async def made() -> bool:
            try:
                await crm.get("leads", lead_id, select=["leadid"])
            except NotFoundError:
                return False
            return True

        wait_s = 2 * families.sizes.patience_s
        if not await wait_for(made, wait_s):
            lead.problems.append(f"no Dataverse lead {lead_id} after {wait_s:.0f} s")
            return
        number = lead.number
        account_id, contact_id, opportunity_id = (str(uuid.uuid4()) for _ in range(3))
        await _create(crm, "accounts",
                      {"name": f"Chaos lead customer {number} Ltd",
                       "address1_postalcode": f"{30000 + number}", "address1_country": "DE"},
                      account_id, retried)  # fmt: skip
        await _create(crm, "contacts",
                      {"firstname": "Lee", "lastname": f"Lead{number}",
                       "emailaddress1": f"lead-qualified{number}@example.com"},
                      contact_id, retried)  # fmt: skip
        # Valid for a referral of its own (account country, contact, value, close date, a
        # solution row): if the product took it for the seller's own deal, it would POST one.
        opportunity = {
            "name": f"Chaos lead {number} qualified",
            "estimatedvalue": 45000,
            "estimatedclosedate": "2027-06-30",
            "description": "Qualified from a marketplace lead.",
            "parentaccountid@odata.bind": f"/accounts({account_id})",
            "customerid_account@odata.bind": f"/accounts({account_id})",
            "parentcontactid@odata.bind": f"/contacts({contact_id})",
            "originatingleadid@odata.bind": f"/leads({lead_id})",
            "cosell_visibletomicrosoft": True,
            "cosell_syncwithpartnercenter": lead.flagged_first,
        }
        await _create(crm, "opportunities", opportunity, opportunity_id, retried)
        lead.opportunity_id = opportunity_id
        await _create(crm, "cosell_solutions",
                      {"cosell_name": "SOL-12345-ABC", "cosell_solutionidentifier": "SOL-12345-ABC",
                       "cosell_opportunityid@odata.bind": f"/opportunities({opportunity_id})"},
                      str(uuid.uuid4()), retried)  # fmt: skip

        async def qualify() -> Any:
            return await crm.update(
                "leads", lead_id,
                {"statecode": 1, "statuscode": 3,
                 "qualifyingopportunityid@odata.bind": f"/opportunities({opportunity_id})"},
            )  # fmt: skip

        async def flag() -> Any:
            return await crm.update(
                "opportunities", opportunity_id, {"cosell_syncwithpartnercenter": True},
                select=["modifiedon"],
            )  # fmt: skip

        await retried(qualify)
        row = None if lead.flagged_first else await retried(flag)
        observed = row.get("modifiedon") if isinstance(row, Mapping) else None
        runs = runs_of[lead.number]
        racing = [job("opportunity", opportunity_id, "poll", observed)] * runs
        racing.append(job("referral", lead.referral_id, "poll", None))
        await send_all(queue, racing, retried)
        lead.jobs = runs + 1

    await asyncio.gather(*(one(lead) for lead in families.leads))


async def check_leads(found: FamilyProblems, families: Families, seen: Observed) -> None:
    """Class 3: one referral per qualified lead's deal (Microsoft's), linked both ways to the
    opportunity, and accepted."""
    for lead in families.leads:
        opportunity_id = lead.opportunity_id.lower()
        label = (f"lead {lead.number} (referral {lead.referral_id}, opportunity "
                 f"{opportunity_id or 'none'})")  # fmt: skip
        found.unequal += [f"{label}: {p}" for p in lead.problems]
        if not opportunity_id:
            continue
        made = [
            r.id.lower()
            async for r in seen.pc.list_referrals(
                filter=f"externalReferenceId eq '{opportunity_id}'"
            )
            if r.id and r.id.lower() != lead.referral_id
        ]
        if made:
            found.duplicates.append(f"{label}: partner referral(s) {made} for the lead's deal")
        rows = seen.opportunities.get(lead.referral_id, [])
        named = [str(r.get("opportunityid")).lower() for r in rows]
        if named != [opportunity_id]:
            found.duplicates.append(f"{label}: Microsoft's referral names opportunities {named}")
        link = await seen.links.get_link(lead.referral_id)
        if link is None or (link.opportunity_id or "").lower() != opportunity_id:
            found.unequal.append(f"{label}: link of the referral names "
                                 f"{link and link.opportunity_id!r}")  # fmt: skip
        by_opportunity = await seen.links.get_link_by_opportunity(opportunity_id)
        if by_opportunity is None or by_opportunity.referral_id.lower() != lead.referral_id:
            found.unequal.append(f"{label}: link of the opportunity names "
                                 f"{by_opportunity and by_opportunity.referral_id!r}")  # fmt: skip
        referral = await seen.pc.get_referral(lead.referral_id)
        if (str(referral.status), str(referral.substatus)) != ("Active", "Accepted"):
            found.unequal.append(f"{label}: referral {referral.status}/{referral.substatus}, "
                                 "expected Active/Accepted")  # fmt: skip
