"""**Derived ids that collide** (class 7): some of Microsoft's referrals name two solutions
whose ids differ only by case (``SOL-CASE-A`` and ``sol-case-a``). The product derives each
solution row's id from the opportunity and the solution id; derived case-blind, both rows got
one id, the deep insert collided with itself, restarted into the poison queue and the referral
never synced (tests/sync/test_engine_incoming.py). Check: each such opportunity exists once,
with a solution row for each of the two ids, exactly as Partner Center spells them, and no
poison message names the referral.
"""

from __future__ import annotations

import uuid
from typing import Any

from bench.families.model import Families, FamilyProblems, Observed
from shared.dataverse import eq
from shared.errors import CosellError

CASE_TWINS = ("SOL-CASE-A", "sol-case-a")


def with_case_twins(families: Families, number: int, body: dict[str, Any]) -> dict[str, Any]:
    """Microsoft's referral body, naming the two case twins beside its own solutions."""
    if number not in families.case_twins:
        return body
    details = body["details"]
    requirements = details.get("requirements") or {}
    solutions = [*requirements.get("solutions", []),
                 *({"type": "Name", "id": twin} for twin in CASE_TWINS)]  # fmt: skip
    return {**body, "details": {**details, "requirements": {**requirements,
                                                            "solutions": solutions}}}  # fmt: skip


async def check_collisions(found: FamilyProblems, families: Families, seen: Observed) -> None:
    """Class 7: a row each for solution ids that differ only by case; never poisoned."""
    for number in sorted(families.case_twins):
        referral_id = seen.referral_of.get(number, "")
        rows = seen.opportunities.get(referral_id.lower(), [])
        if len(rows) != 1:
            found.unequal.append(
                f"case twins {number} (referral {referral_id}): {len(rows)} opportunities"
            )
            continue
        opportunity_id = str(rows[0]["opportunityid"])
        try:
            names = {
                str(row.get("cosell_solutionidentifier"))
                async for row in seen.crm.list_rows(
                    "cosell_solutions",
                    select=["cosell_solutionidentifier"],
                    filter=eq("_cosell_opportunityid_value", uuid.UUID(opportunity_id)),
                )
            }
        except CosellError as exc:
            found.unequal.append(f"case twins {number}: solutions unreadable ({exc})")
            continue
        if not set(CASE_TWINS) <= names:
            found.lost.append(
                f"case twins {number} (opportunity {opportunity_id}): solution rows {sorted(names)}"
            )
        if any(referral_id and referral_id.lower() in text.lower() for text in seen.poison):
            found.unequal.append(f"case twins {number}: a job for it is in the poison queue")
