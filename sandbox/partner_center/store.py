"""The emulator's referrals, in memory, with eTags, timestamps and the write rules of §1.1/§2.3."""

from __future__ import annotations

import copy
import itertools
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from .errors import ApiError, invalid
from .jsonpatch import apply_patch, split_pointer
from .rules import (
    CONTRACT_DEFAULTS,
    READ_ONLY,
    SET_BY_MICROSOFT,
    check_transition,
    is_guid,
    normalise_enums,
    validate_referral,
)

Side = Literal["partner", "microsoft"]
ChangeKind = Literal["created", "updated"]

MICROSOFT = {"organizationId": "msft", "organizationName": "Microsoft"}
# Unanswered incoming referrals expire after 14 days (§2.3).
EXPIRY = timedelta(days=14)
# `lastModifiedVia` ("Referral Last Modified By" in the connector's contract): who wrote last.
# The service's values are undocumented (UNCERTAIN); the emulator tells its two writers apart.
VIA_PARTNER_API = "API"
VIA_MICROSOFT = "Microsoft"


@dataclass
class Change:
    kind: ChangeKind
    referral: dict[str, Any]
    side: Side  # "microsoft" = Microsoft's referral of a co-sell engagement → related-* events


ChangeListener = Callable[[Change], None]


def normalise_etag(value: str) -> str:
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    return text.strip('"')


class ReferralStore:
    """Referrals by id. Every write gets a new eTag and ``updatedDateTime``."""

    def __init__(
        self,
        *,
        organization_id: str = "00000000-0000-4000-8000-0000000c0a50",
        organization_name: str = "Contoso Partner (emulator)",
        mpn_id: str = "6100001",
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        seed: int | None = None,
    ) -> None:
        self.organization_id = organization_id
        self.organization_name = organization_name
        self.mpn_id = mpn_id  # the partner's MPN id, in `mpnId` of the referrals it owns
        self._clock = clock
        self._random = random.Random(seed)
        self._referrals: dict[str, dict[str, Any]] = {}
        self._sides: dict[str, Side] = {}
        self._counter = itertools.count(1)
        self._last_time = datetime.min.replace(tzinfo=UTC)
        self.listeners: list[ChangeListener] = []

    def reset(self) -> None:
        self._referrals.clear()
        self._sides.clear()

    def __len__(self) -> int:
        return len(self._referrals)

    def all(self) -> list[dict[str, Any]]:
        return list(self._referrals.values())

    def side(self, referral_id: str) -> Side:
        return self._sides.get(referral_id, "partner")

    def get(self, referral_id: str) -> dict[str, Any]:
        referral = self._referrals.get(referral_id.lower())
        if referral is None:
            raise ApiError(
                404, "itemNotFound", f"Referral '{referral_id}' was not found.", target="referral"
            )
        return referral

    # -- writes --------------------------------------------------------------------------------

    def create(self, body: Any, *, incoming: bool = False) -> dict[str, Any]:
        """A partner's POST (outgoing deal, starts Active/Accepted, §2.3) or, with ``incoming``,
        a referral Microsoft sends the partner (New/Pending, invitedBy msft)."""
        if not isinstance(body, dict):
            raise invalid("The request body must be a referral object.")
        # Microsoft may send a referral that already carries its own CRM id and grading.
        read_only = READ_ONLY - SET_BY_MICROSOFT if incoming else READ_ONLY
        referral = {k: copy.deepcopy(v) for k, v in body.items() if k not in read_only}
        normalise_enums(referral)
        validate_referral(referral)
        engagement = body.get("engagementId")
        if engagement is not None and not is_guid(engagement):
            raise invalid(f"The engagementId '{engagement}' is not a GUID.", "engagementId")
        now = self._now()
        referral_id = self._new_id()
        referral.update(
            id=referral_id,
            engagementId=(
                engagement or str(uuid.UUID(int=self._random.getrandbits(128), version=4))
            ).lower(),
            createdDateTime=now,
            updatedDateTime=now,
        )
        side: Side = "microsoft" if _targets_microsoft(referral) else "partner"
        if incoming:
            referral.update(self._owner())
            referral["direction"] = "Incoming"
            referral["status"] = "New"
            if referral.get("substatus") not in ("Pending", "Received"):
                referral["substatus"] = "Pending"
            referral.setdefault("qualification", "SalesQualified")
            invite = referral.setdefault("inviteContext", {})
            if isinstance(invite, dict):
                invite.setdefault("invitedBy", dict(MICROSOFT))
            referral["expirationDateTime"] = _iso(self._clock() + EXPIRY)
        elif side == "microsoft":
            # The Microsoft side of a co-sell waits for a Microsoft seller (§2.4, §7.2).
            referral.update(MICROSOFT)
            referral.update(direction="Outgoing", status="New", substatus="Pending")
            referral["expirationDateTime"] = _iso(self._clock() + EXPIRY)
        else:
            referral.update(self._owner())
            referral.update(direction="Outgoing", status="Active", substatus="Accepted")
            referral["acceptedDateTime"] = now  # outgoing: accepted at creation (§2.1)
        if side == "partner":
            referral["mpnId"] = self.mpn_id
        by_partner = side == "partner" and not incoming
        referral["lastModifiedVia"] = VIA_PARTNER_API if by_partner else VIA_MICROSOFT
        _complete(referral)
        referral["eTag"] = self._etag()
        self._referrals[referral_id] = referral
        self._sides[referral_id] = side
        self._notify(Change("created", referral, side))
        if side == "partner" and not incoming and _asks_microsoft_for_help(referral):
            self._create_microsoft_side(referral)
        return referral

    def patch(
        self, referral_id: str, operations: Any, *, if_match: str | None, microsoft: bool = False
    ) -> dict[str, Any]:
        """JSON Patch ``replace``/``add``; ``microsoft`` = a Microsoft-side change (control API),
        which may set read-only properties such as ``trackingInfo``."""
        current = self.get(referral_id)
        self._check_etag(current, if_match)
        if not microsoft and isinstance(operations, list):
            for operation in operations:
                if isinstance(operation, dict):
                    head = split_pointer(operation.get("path"))[0]
                    if head in READ_ONLY:
                        raise invalid(f"The property '{head}' cannot be updated.", head)
        updated = copy.deepcopy(current)
        apply_patch(updated, operations)
        return self._commit(current, updated, via=VIA_MICROSOFT if microsoft else VIA_PARTNER_API)

    def replace(self, referral_id: str, body: Any, *, if_match: str | None) -> dict[str, Any]:
        """PUT: the whole referral (obsolete but served, §1.1). ``If-Match`` is required."""
        current = self.get(referral_id)
        if not if_match:
            raise invalid("The If-Match header is required.", "If-Match")
        self._check_etag(current, if_match)
        if not isinstance(body, dict):
            raise invalid("The request body must be a referral object.")
        updated = {k: copy.deepcopy(v) for k, v in body.items() if k not in READ_ONLY}
        for key in READ_ONLY - {"links", "eTag"}:
            if key in current:
                updated[key] = copy.deepcopy(current[key])
        return self._commit(current, updated, via=VIA_PARTNER_API)

    def seed(self, body: dict[str, Any]) -> dict[str, Any]:
        """Create without events (test fixtures and benchmarks)."""
        listeners, self.listeners = self.listeners, []
        try:
            return self.create(body)
        finally:
            self.listeners = listeners

    # -- internals -----------------------------------------------------------------------------

    def _commit(
        self, current: dict[str, Any], updated: dict[str, Any], *, via: str
    ) -> dict[str, Any]:
        normalise_enums(updated)
        validate_referral(updated)
        check_transition(current, updated)
        now = self._now()
        if updated.get("status") == "Active" and not updated.get("acceptedDateTime"):
            updated["acceptedDateTime"] = now
        if updated.get("status") == "Closed" and current.get("status") != "Closed":
            updated["closedDateTime"] = now
        updated["updatedDateTime"] = now
        updated["lastModifiedVia"] = via
        _complete(updated)  # a PUT body may leave contract properties out: they show as null
        updated["eTag"] = self._etag()
        current.clear()
        current.update(updated)
        self._notify(Change("updated", current, self.side(current["id"])))
        return current

    def _check_etag(self, current: dict[str, Any], if_match: str | None) -> None:
        if if_match is None or if_match.strip() == "*":
            return  # If-Match is optional on PATCH (§1.1)
        if normalise_etag(if_match) != normalise_etag(current["eTag"]):
            raise ApiError(
                412,
                "preconditionFailed",
                "The referral was modified since it was read: the If-Match eTag does not match.",
                target="eTag",
            )

    def _create_microsoft_side(self, partner_referral: dict[str, Any]) -> None:
        # One-call co-sell (Shared + assistanceRequestCode): the emulator adds Microsoft's
        # referral to the engagement, as the two-step recipe would (§7.2, shape UNCERTAIN).
        engagement = partner_referral["engagementId"]
        if any(
            r["engagementId"] == engagement and self.side(r["id"]) == "microsoft"
            for r in self._referrals.values()
        ):
            return
        body: dict[str, Any] = {
            k: copy.deepcopy(partner_referral[k])
            for k in ("name", "type", "customerProfile", "consent", "details", "inviteContext")
            if k in partner_referral
        }
        body["engagementId"] = engagement
        body["target"] = [{"type": "BusinessProfileLocation", "id": "msft"}]
        self.create(body)

    def _new_id(self) -> str:
        return str(uuid.UUID(int=self._random.getrandbits(128), version=4))

    def _owner(self) -> dict[str, str]:
        return {"organizationId": self.organization_id, "organizationName": self.organization_name}

    def _notify(self, change: Change) -> None:
        for listener in self.listeners:
            listener(change)

    def _now(self) -> str:
        # Strictly increasing, so ordering by updatedDateTime is total within the emulator.
        now = max(self._clock(), self._last_time + timedelta(microseconds=1))
        self._last_time = now
        return _iso(now)

    def _etag(self) -> str:
        # Same look as the real ones: a quoted GUID-like string, passed verbatim (§2.1).
        return f'"{next(self._counter):08x}-0000-0000-0000-{self._random.getrandbits(48):012x}"'


def _complete(referral: dict[str, Any]) -> None:
    """Every contract property present, as the service's serializer writes them (null when
    unset), so clients meet the whole shape (``rules.CONTRACT_DEFAULTS``)."""
    for name, default in CONTRACT_DEFAULTS.items():
        referral.setdefault(name, copy.deepcopy(default))


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _targets_microsoft(referral: dict[str, Any]) -> bool:
    targets = referral.get("target")
    return isinstance(targets, list) and any(
        isinstance(t, dict)
        and str(t.get("type", "")).lower() == "businessprofilelocation"
        and str(t.get("id", "")).lower() == "msft"
        for t in targets
    )


def _asks_microsoft_for_help(referral: dict[str, Any]) -> bool:
    invite = referral.get("inviteContext") or {}
    code = invite.get("assistanceRequestCode") if isinstance(invite, dict) else None
    return referral.get("type") == "Shared" and code not in (None, "", "Unknown")
