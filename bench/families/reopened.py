"""**Reopened deals** (class 6): once most of Microsoft's pairs are linked (still in the
creation phase, faults and kills on), the seller closes some linked opportunities as Won; at
once a Partner Center edit of the notes arrives while the opportunity is closed (when it beats
the sync that closes the referral: Partner Center refuses it after); once the referral is
Closed/Won and the pair said why it could not take the edit (the link's last result: a closed
row cannot be written, so not the opportunity), the seller reopens the opportunity (PATCH
statecode 0 / statuscode 1) and edits its deal value. These pairs get no round edits. Check:
the Closed referral never changes again (Partner Center refuses it), the opportunity is open
with the seller's value and the notes Partner Center sent while it was closed, the audit gives
the reason, and no job of these pairs went to the poison queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx

from bench.families.model import Families, FamilyProblems, Observed, Reopened
from bench.families.plumbing import Edited, Retried, wait_for
from shared.dataverse import DataverseClient
from shared.errors import CosellError
from shared.partner_center import PartnerCenterClient, Referral
from shared.state import LinkStore

# Class 6, reopened deals.
CLOSED_REASON = "the opportunity is closed in Dynamics 365 and cannot be edited"
# Waits, in ``FamilySizes.patience_s``: twice it for the Won to reach Partner Center (kills,
# faults, a 6 s lease), once for the pair to say why it could not take the edit.
REOPEN_EVERY_S = 0.5  # the seller closes one deal after another, not all in one second


async def _edit_unless_closed(pc: PartnerCenterClient, referral_id: str, notes: str) -> bool:
    """A Partner Center edit of the notes, given up once the referral is Closed (Partner Center
    refuses every change then). True if it was taken."""
    for attempt in range(10):
        try:
            current = await pc.get_referral(referral_id)
            if current.details is not None and current.details.notes == notes:
                return True  # an earlier attempt landed after all
            if str(current.status) == "Closed":
                return False
            operation = [{"op": "replace", "path": "/details/notes", "value": notes}]
            await pc.patch_referral(referral_id, operation, etag=current.e_tag)
            return True
        except (CosellError, httpx.HTTPError):
            await asyncio.sleep(0.1 * (attempt + 1))
    return False


def _closed_view(referral: Referral) -> dict[str, Any]:
    """What must not change on a Closed referral."""
    details = referral.details
    return {
        "status": f"{referral.status}/{referral.substatus}",
        "eTag": referral.e_tag,
        "updatedDateTime": referral.updated_date_time,
        "name": referral.name,
        "dealValue": details.deal_value if details else None,
        "notes": details.notes if details else None,
    }


async def reopen_deals(
    pc: PartnerCenterClient,
    crm: DataverseClient,
    links: LinkStore,
    families: Families,
    ids: Mapping[int, tuple[str, str | None]],
    edited: Edited,
    retried: Retried,
) -> None:
    """Class 6, reopened deals (``ids``: pair number → referral and opportunity ids). One deal
    after another: the seller wins the opportunity; a Partner Center edit of the notes follows
    at once (taken only while the referral is not yet Closed); once the referral is Closed/Won
    and the pair said why the closed row could not take the edit, the seller reopens the
    opportunity and changes its deal value."""

    async def one(deal: Reopened, delay: float) -> None:
        await asyncio.sleep(delay)
        referral_id, opportunity_id = ids[deal.number]
        if not opportunity_id:
            deal.problems.append("never linked, so never closed")
            return
        deal.referral_id, deal.opportunity_id = referral_id.lower(), opportunity_id.lower()

        async def win() -> None:
            row = await crm.get("opportunities", opportunity_id, select=["statecode"])
            if row.get("statecode") == 0:  # not an earlier attempt that landed
                await crm.win_opportunity(opportunity_id)

        await retried(win)
        notes = f"notes {deal.number} edited in Partner Center while the deal is closed"
        if await _edit_unless_closed(pc, referral_id, notes):
            deal.closed_edit = notes
            edited(deal.number, "pc", "notes", notes)

        async def closed() -> Referral | None:
            referral = await pc.get_referral(referral_id)
            return referral if str(referral.status) == "Closed" else None

        wait_closed_s, wait_error_s = 2 * families.sizes.patience_s, families.sizes.patience_s
        referral = await wait_for(closed, wait_closed_s)
        if referral is None:
            deal.problems.append(
                f"the Won opportunity's referral not Closed after {wait_closed_s:.0f} s"
            )
            return
        deal.closed = _closed_view(referral)
        if deal.closed_edit is not None:

            async def said() -> bool:
                link = await links.get_link(referral_id)
                result = link.last_result if link is not None else None
                return bool(result and result.status == "error" and CLOSED_REASON in result.message)

            deal.error_seen = bool(await wait_for(said, wait_error_s))
            if not deal.error_seen:
                deal.problems.append(
                    f"the pair did not say why within {wait_error_s:.0f} s of the closed edit "
                    f"(link: {await _last_result(links, referral_id)})"
                )

        async def reopen() -> Any:
            return await crm.update(
                "opportunities", opportunity_id, {"statecode": 0, "statuscode": 1}
            )

        await retried(reopen)
        deal.reopened = True
        value = 300000 + deal.number

        async def seller_edit() -> Any:
            return await crm.update("opportunities", opportunity_id, {"estimatedvalue": value})

        await retried(seller_edit)
        deal.seller_value = value
        edited(deal.number, "crm", "deal_value", value)

    deals = sorted(families.reopened.values(), key=lambda d: d.number)
    await asyncio.gather(*(one(d, i * REOPEN_EVERY_S) for i, d in enumerate(deals)))


async def _last_result(links: LinkStore, referral_id: str) -> str:
    link = await links.get_link(referral_id)
    result = link.last_result if link is not None else None
    return f"{result.status}: {result.message}" if result is not None else "none"


async def check_reopened(found: FamilyProblems, families: Families, seen: Observed) -> None:
    """Class 6: the Closed referral never changes; the reopened opportunity holds the seller's
    deal value and the notes Partner Center sent while it was closed, with the reason in the
    audit; no job of the pair in the poison queue."""
    for number, deal in sorted(families.reopened.items()):
        label = f"pair {number} (referral {deal.referral_id or 'none'}, reopened deal)"
        found.unequal += [f"{label}: {p}" for p in deal.problems]
        ids = [i for i in (deal.referral_id, deal.opportunity_id) if i]
        poisoned = [text for text in seen.poison if any(i in text.lower() for i in ids)]
        if poisoned:
            found.lost.append(f"{label}: {len(poisoned)} job(s) in the poison queue: "
                              f"{poisoned[0][:200]!r}")  # fmt: skip
        if deal.closed is None:
            continue
        now = _closed_view(await seen.pc.get_referral(deal.referral_id))
        if now != deal.closed:
            changed = {k: (deal.closed[k], now[k]) for k in now if now[k] != deal.closed[k]}
            found.lost.append(f"{label}: the Closed referral changed: {changed}")
        if now["status"] != "Closed/Won":
            found.unequal.append(f"{label}: referral {now['status']}, expected Closed/Won")
        rows = seen.opportunities.get(deal.referral_id, [])
        if not rows:
            continue
        row = rows[0]
        if deal.reopened and (row.get("statecode"), row.get("statuscode")) != (0, 1):
            found.unequal.append(f"{label}: opportunity state {row.get('statecode')}/"
                                 f"{row.get('statuscode')}, reopened as 0/1")  # fmt: skip
        value = row.get("estimatedvalue")
        if deal.seller_value is not None and (
            value is None or float(value) != float(deal.seller_value)
        ):
            found.lost.append(f"{label}: the seller's deal value {deal.seller_value} after "
                              f"reopening became {value!r}")  # fmt: skip
        if deal.closed_edit is not None:
            if row.get("description") != deal.closed_edit:
                found.lost.append(f"{label}: notes {deal.closed_edit!r}, taken by Partner Center "
                                  f"while closed, are {row.get('description')!r} in the "
                                  "reopened opportunity")  # fmt: skip
            if CLOSED_REASON not in str(row.get("cosell_audit") or ""):
                found.unequal.append(f"{label}: the audit never says the closed opportunity "
                                     "could not take Partner Center's edit")  # fmt: skip
