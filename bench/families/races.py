"""**Creation races under throttling** (class 1): opportunities a seller made in Dataverse
(account with an ISO country, contact, a solution row, help needed, so the referral is Shared)
get the sync flag while Partner Center answers ``BURST`` (more 429/503 with Retry-After than
the run's own fault model), and 2-3 ``poll`` jobs for each are enqueued at once, on top of the
one the Dataverse poll makes. Check: one referral per opportunity (``externalReferenceId``),
linked both ways.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Mapping
from typing import Any

from bench.common import job
from bench.families.contacts import seed_shared_contacts, shared_contact_of
from bench.families.model import RACE_JOBS, Families, FamilyProblems, Observed, SellerOpportunity
from bench.families.plumbing import Retried, send_all
from shared.dataverse import DataverseClient
from shared.jobs import JobQueue

# Partner Center while the seller's opportunities are created: a third of its answers 429/503
# with Retry-After, so a creating sync often waits in its POST while another job for the same
# opportunity runs (issue 13: 3 of 10 trials made two referrals at 50 % 503).
BURST = {"error_rate": 0.3, "statuses": [429, 503], "retry_after_s": 1,
         "drop_webhook_rate": 0.1}  # fmt: skip
HELP_NEEDED = 100000001  # CustomerTechnicalArchitecture: the referral is Shared


async def seed_seller_opportunities(
    crm: DataverseClient, families: Families, first_number: int
) -> None:
    """The seller's records, made before faults are on and with the sync flag off (the flag is
    the seller's click that starts the race, ``flag_and_race``); the shared contacts first
    (``contacts.seed_shared_contacts``)."""
    sizes = families.sizes
    await seed_shared_contacts(crm, families)

    async def one(index: int) -> None:
        number = first_number + index
        account_id, opportunity_id = str(uuid.uuid4()), str(uuid.uuid4())
        await crm.create(
            "accounts",
            {"name": f"Chaos seller customer {index} Ltd",
             "address1_postalcode": f"{20000 + index}", "address1_country": "DE"},
            row_id=account_id,
        )  # fmt: skip
        shared = shared_contact_of(families, index, number)
        if shared is not None:
            contact_id, email, edit = shared
        else:
            contact_id, email, edit = str(uuid.uuid4()), f"seller-own{index}@example.com", False
            await crm.create(
                "contacts",
                {"firstname": "Own", "lastname": f"Contact{index}", "emailaddress1": email},
                row_id=contact_id,
            )
        await crm.create(
            "opportunities",
            {
                "name": f"Chaos deal {number}",
                "estimatedvalue": 120000,
                "estimatedclosedate": "2027-06-30",
                "description": "Customer wants to move 40 VMs.",
                "parentaccountid@odata.bind": f"/accounts({account_id})",
                "customerid_account@odata.bind": f"/accounts({account_id})",
                "parentcontactid@odata.bind": f"/contacts({contact_id})",
                "cosell_helpneeded": HELP_NEEDED,
                "cosell_visibletomicrosoft": True,
                "cosell_syncwithpartnercenter": False,
            },
            row_id=opportunity_id,
        )
        await crm.create(
            "cosell_solutions",
            {"cosell_name": "SOL-12345-ABC", "cosell_solutionidentifier": "SOL-12345-ABC",
             "cosell_opportunityid@odata.bind": f"/opportunities({opportunity_id})"},
        )  # fmt: skip
        families.seller.append(SellerOpportunity(number, opportunity_id, email, edit))

    await asyncio.gather(*(one(i) for i in range(sizes.crm_created)))
    families.seller.sort(key=lambda s: s.number)


async def flag_and_race(
    crm: DataverseClient,
    queue: JobQueue,
    families: Families,
    rng: random.Random,
    retried: Retried,
) -> None:
    """The seller switches sync on, and 2-3 poll jobs for the opportunity arrive at once."""

    async def one(seller: SellerOpportunity) -> None:
        async def flag() -> Any:
            return await crm.update(
                "opportunities", seller.opportunity_id, {"cosell_syncwithpartnercenter": True},
                select=["modifiedon"],
            )  # fmt: skip

        row = await retried(flag)
        families.flagged_at[seller.number] = time.monotonic()
        observed = row.get("modifiedon") if isinstance(row, Mapping) else None
        runs = rng.choice(RACE_JOBS)
        racing = [job("opportunity", seller.opportunity_id, "poll", observed)] * runs
        await send_all(queue, racing, retried)
        families.race_jobs += runs

    await asyncio.gather(*(one(s) for s in families.seller))


async def check_races(found: FamilyProblems, families: Families, seen: Observed) -> None:
    """Class 1: one referral per seller opportunity, linked both ways."""
    for seller in families.seller:
        label = f"pair {seller.number} (opportunity {seller.opportunity_id})"
        made = [
            r.id.lower()
            async for r in seen.pc.list_referrals(
                filter=f"externalReferenceId eq '{seller.opportunity_id}'"
            )
            if r.id
        ]
        if len(made) != 1:
            found.duplicates.append(f"{label}: {len(made)} referrals with its externalReferenceId")
        ours = seen.referral_of.get(seller.number, "")
        if made and ours not in made:
            found.duplicates.append(f"{label}: linked to {ours or 'nothing'}, referrals {made}")
        rows = seen.opportunities.get(ours, []) if ours else []
        if ours and [r.get("opportunityid") for r in rows] != [seller.opportunity_id]:
            found.unequal.append(f"{label}: referral {ours} names opportunities "
                                 f"{[r.get('opportunityid') for r in rows]}")  # fmt: skip
        link = await seen.links.get_link_by_opportunity(seller.opportunity_id)
        if link is None or link.referral_id != ours:
            found.unequal.append(
                f"{label}: link {link and link.referral_id!r}, opportunity names {ours!r}"
            )
