"""Status mapping between Partner Center and Dataverse (SPEC 4.3), and the transition rules.

Partner Center: New (Pending/Received) → Active (Accepted) → Closed (Won/Lost/Declined/Expired);
New may move to New/Active/Closed, Active to Active/Closed, Closed is terminal (reference §2.3).
Dataverse: statecode Open 0 / Won 1 / Lost 2; statuscode On Hold 2, In Progress 1, Won 3,
Canceled 4, Out-Sold 5. Won and Lost are reached only through WinOpportunity / LoseOpportunity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from shared.partner_center import ReferralStatus, ReferralSubstatus
from shared.sync.deal import DealStatus

# Dataverse opportunity state and status codes (SPEC 4.3).
OPEN: Final = 0
WON: Final = 1
LOST: Final = 2
IN_PROGRESS: Final = 1
ON_HOLD: Final = 2
WON_STATUS: Final = 3
CANCELED: Final = 4
OUT_SOLD: Final = 5

_PC_ORDER = {ReferralStatus.NEW: 0, ReferralStatus.ACTIVE: 1, ReferralStatus.CLOSED: 2}


@dataclass(frozen=True)
class PcStatus:
    status: ReferralStatus
    substatus: ReferralSubstatus


@dataclass(frozen=True)
class CrmStatus:
    statecode: int
    statuscode: int

    @property
    def closed(self) -> bool:
        return self.statecode in (WON, LOST)


def from_partner_center(
    status: str | None, substatus: str | None
) -> tuple[DealStatus | None, str | None]:
    """Canonical status and close reason of a referral."""
    if status == ReferralStatus.NEW:
        return DealStatus.NEW, None
    if status == ReferralStatus.ACTIVE:
        return DealStatus.ACTIVE, None
    if status == ReferralStatus.CLOSED:
        if substatus == ReferralSubstatus.WON:
            return DealStatus.WON, None
        # Lost, Declined, Expired (and anything undocumented) all end the deal unsuccessfully.
        return DealStatus.LOST, (substatus or "Lost").lower()
    return None, None


def to_partner_center(target: DealStatus, *, current: str | None) -> PcStatus | None:
    """The referral status for ``target``, or None if Partner Center cannot move there.

    Closing as lost while the referral is still New declines it (SPEC 4.3).
    """
    if current == ReferralStatus.CLOSED:
        return None  # terminal
    lost = ReferralSubstatus.DECLINED if current == ReferralStatus.NEW else ReferralSubstatus.LOST
    wanted = {
        DealStatus.NEW: PcStatus(ReferralStatus.NEW, ReferralSubstatus.PENDING),
        DealStatus.ACTIVE: PcStatus(ReferralStatus.ACTIVE, ReferralSubstatus.ACCEPTED),
        DealStatus.WON: PcStatus(ReferralStatus.CLOSED, ReferralSubstatus.WON),
        DealStatus.LOST: PcStatus(ReferralStatus.CLOSED, lost),
    }[target]
    order = _PC_ORDER.get(ReferralStatus(current)) if current in _PC_ORDER else None
    if order is not None and _PC_ORDER[wanted.status] < order:
        return None  # Active → New is not a transition Partner Center allows
    return wanted


def from_crm(statecode: int | None, statuscode: int | None) -> tuple[DealStatus | None, str | None]:
    """Canonical status and close reason of an opportunity."""
    if statecode == OPEN:
        return (DealStatus.NEW if statuscode == ON_HOLD else DealStatus.ACTIVE), None
    if statecode == WON:
        return DealStatus.WON, None
    if statecode == LOST:
        return DealStatus.LOST, "declined" if statuscode == CANCELED else "lost"
    return None, None


def to_crm(target: DealStatus, *, close_reason: str | None = None) -> CrmStatus:
    """The opportunity state: Declined/Expired close as Canceled, Lost as Out-Sold."""
    if target is DealStatus.NEW:
        return CrmStatus(OPEN, ON_HOLD)
    if target is DealStatus.ACTIVE:
        return CrmStatus(OPEN, IN_PROGRESS)
    if target is DealStatus.WON:
        return CrmStatus(WON, WON_STATUS)
    return CrmStatus(LOST, CANCELED if close_reason in ("declined", "expired") else OUT_SOLD)
