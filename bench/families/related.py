"""**Related referrals by reconcile/backfill/manual** (class 2): a Shared referral makes
Partner Center create Microsoft's referral of the same engagement; jobs for that referral are
enqueued with reasons ``reconcile``, ``backfill``, ``manual`` (one per edit round). Check: no
opportunity and no link for Microsoft's referral.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from bench.common import job
from bench.families.model import Families, FamilyProblems, Observed
from bench.families.plumbing import Retried, send_all
from shared.jobs import JobQueue
from shared.partner_center import PartnerCenterClient

RELATED_REASONS = ("reconcile", "backfill", "manual")  # one per edit round, in turn


async def find_microsoft_referrals(
    pc: PartnerCenterClient,
    families: Families,
    referral_of: Mapping[int, str],
    retried: Retried,
) -> None:
    """Microsoft's referral of each seller opportunity's engagement (the one that is not ours)."""

    async def one(number: int, ours: str) -> None:
        async def find() -> str | None:
            referral = await pc.get_referral(ours)
            if not referral.engagement_id:
                return None
            async for other in pc.list_related_referrals(referral.engagement_id):
                if other.id and other.id.lower() != ours.lower():
                    return other.id.lower()
            return None

        found = await retried(find)
        if found:
            families.microsoft[number] = str(found)

    await asyncio.gather(*(one(n, r) for n, r in referral_of.items() if r))


async def enqueue_related(
    queue: JobQueue,
    families: Families,
    round_number: int,
    retried: Retried,
) -> None:
    """A job for each of Microsoft's referrals, as reconcile, backfill or a manual sync sends."""
    reason = RELATED_REASONS[round_number % len(RELATED_REASONS)]
    jobs = [job("referral", ms, reason, None) for ms in families.microsoft.values()]
    await send_all(queue, jobs, retried)
    families.related_jobs += len(jobs)


async def check_related(found: FamilyProblems, families: Families, seen: Observed) -> None:
    """Class 2: Microsoft's side of an engagement never becomes an opportunity or a link."""
    for number, microsoft in sorted(families.microsoft.items()):
        label = f"pair {number} (Microsoft's referral {microsoft})"
        if seen.opportunities.get(microsoft):
            found.duplicates.append(f"{label}: {len(seen.opportunities[microsoft])} opportunities")
        link = await seen.links.get_link(microsoft)
        if link is not None:
            found.duplicates.append(f"{label}: linked to opportunity {link.opportunity_id}")
    missing = {s.number for s in families.seller} - set(families.microsoft)
    found.unequal += [f"pair {n}: no Microsoft referral of its engagement" for n in missing]
