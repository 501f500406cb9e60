"""The families' own checks, one a family in its module, run in turn; and how the backfill
counts a failed sync a family causes on purpose."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from bench.families.collisions import check_collisions
from bench.families.contacts import check_contacts
from bench.families.leads import check_leads
from bench.families.model import UNKNOWN_CURRENCY, Families, FamilyProblems, Observed
from bench.families.oversize import OVERSIZE_REASON, check_oversize
from bench.families.races import check_races
from bench.families.related import check_related
from bench.families.reopened import check_reopened
from shared.dataverse import DataverseClient
from shared.partner_center import PartnerCenterClient
from shared.state import LinkStore

# One a family, in this order (each adds to the same lists).
CHECKS = (check_races, check_related, check_contacts, check_oversize, check_reopened, check_leads,
          check_collisions)  # fmt: skip


async def check_families(
    families: Families,
    referral_of: Mapping[int, str],
    opportunities: Mapping[str, list[dict[str, Any]]],
    pc: PartnerCenterClient,
    crm: DataverseClient,
    links: LinkStore,
    poison: Sequence[str] = (),
) -> FamilyProblems:
    """The families' own checks (the run's field-by-field check covers their pairs too, but
    the fields ``Families.not_compared`` names). ``opportunities``: the opportunity rows (with
    ``cosell_audit`` and ``cosell_syncstatus``) by lower-case ``cosell_referralid``;
    ``poison``: the text of every message in the poison queue."""
    found = FamilyProblems()
    seen = Observed(referral_of, opportunities, pc, crm, links, poison)
    for check in CHECKS:
        await check(found, families, seen)
    return found


def refused_by_design(problems: Sequence[str]) -> str | None:
    """How the backfill counts a failed sync that a family causes on purpose, or None: the
    unknown currency named, or nothing but oversize values (another problem is a real one)."""
    if UNKNOWN_CURRENCY in " ".join(problems):
        return "currency refused"
    if problems and all(OVERSIZE_REASON in p for p in problems):
        return "oversize refused"
    return None
