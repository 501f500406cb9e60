"""**Oversize values** (class 6): some of Microsoft's referrals carry a name over the
opportunity name's 300 characters or notes over the description's 2,000, as sent or through a
Partner Center edit in the first round. Check: Partner Center keeps its long value, the
opportunity holds it cut to fit (creation) or the value before the edit (update), shows sync
status Error with the reason in the audit, and every other field converges (the run's own
check, which leaves the oversize field to this one).
"""

from __future__ import annotations

from typing import Any

from bench.common import without_mark
from bench.families.model import SYNC_STATUS_ERROR, Families, FamilyProblems, Observed

OVERSIZE_NAME_CHARS = 340  # the opportunity name holds 300, with the ✔/✖ mark
OVERSIZE_NOTES_CHARS = 2400  # the description holds 2,000
OVERSIZE_REASON = "characters; the opportunity"  # crm_limits.refusals: "... holds N"


def long_value(number: int, name: str) -> str:
    """A Partner Center value over its opportunity column's limit (no trailing blank)."""
    if name == "name":
        head = f"Chaos deal {number} with a name far too long for Dynamics 365 "
        size = OVERSIZE_NAME_CHARS
    else:
        head, size = f"notes {number} far too long for the description: ", OVERSIZE_NOTES_CHARS
    filler = "0123456789" * (size // 10 + 1)
    return (head + filler)[:size]


def with_oversize(families: Families, number: int, body: dict[str, Any]) -> dict[str, Any]:
    """Microsoft's referral body with the long value of an oversize pair sent that way."""
    oversize = families.oversize.get(number)
    if oversize is None or not oversize.on_create:
        return body
    if oversize.field == "name":
        return {**body, "name": oversize.value}
    return {**body, "details": {**body["details"], "notes": oversize.value}}


def oversize_edit(families: Families, number: int) -> tuple[str, str] | None:
    """The first round's Partner Center edit of an oversize pair: (field, long value)."""
    oversize = families.oversize.get(number)
    if oversize is None or oversize.on_create:
        return None
    return oversize.field, oversize.value


def drop_unlinked_oversize_edits(families: Families, linked: set[int]) -> None:
    """The run edits only pairs linked when the edits begin: an oversize pair whose long value
    was to come by edit and is not linked then leaves the family."""
    families.oversize = {n: o for n, o in families.oversize.items() if o.on_create or n in linked}


def _short(value: Any) -> str:
    text = str(value)
    return repr(text if len(text) <= 50 else text[:47] + "...") + f" ({len(text)} characters)"


async def check_oversize(found: FamilyProblems, families: Families, seen: Observed) -> None:
    """Class 6: Partner Center keeps its long value, the opportunity holds it cut to fit (as
    sent) or the value before the edit, and says Error with the reason."""
    for number, oversize in sorted(families.oversize.items()):
        referral_id = seen.referral_of.get(number, "")
        how = "as sent" if oversize.on_create else "by a Partner Center edit"
        label = f"pair {number} (referral {referral_id}, oversize {oversize.field} {how})"
        rows = seen.opportunities.get(referral_id, []) if referral_id else []
        if not rows:
            continue  # the run's check reports it missing
        referral = await seen.pc.get_referral(referral_id)
        details = referral.details
        pc_value = referral.name if oversize.field == "name" else (details and details.notes)
        if pc_value != oversize.value:
            found.lost.append(f"{label}: Partner Center's value {_short(oversize.value)} became "
                              f"{_short(pc_value)}")  # fmt: skip
        row = rows[0]
        crm_value = (
            without_mark(row.get("name")) if oversize.field == "name" else row.get("description")
        )
        if crm_value != oversize.crm_value:
            found.lost.append(f"{label}: the opportunity holds {_short(crm_value)}, expected "
                              f"{_short(oversize.crm_value)}")  # fmt: skip
        if row.get("cosell_syncstatus") != SYNC_STATUS_ERROR:
            found.unequal.append(f"{label}: sync status {row.get('cosell_syncstatus')!r}, "
                                 f"expected Error ({SYNC_STATUS_ERROR})")  # fmt: skip
        audit = str(row.get("cosell_audit") or "")
        if f"has {len(oversize.value)} {OVERSIZE_REASON}" not in audit:
            found.unequal.append(f"{label}: the audit does not give the reason (ends "
                                 f"{audit[-160:]!r})")  # fmt: skip
