"""The three-way merge: (base, Partner Center deal, CRM deal) → a field plan. Pure: no I/O.

Which way each field flows after creation is the ``OWNERSHIP`` table (SPEC 4.1). For fields
that flow both ways: changed on one side only → copied to the other; changed on both to
different values → a conflict settled by ``CONFLICT_POLICY`` and reported.

Special rules (SPEC 4.1, 4.3):
* visibility to Microsoft only ever goes false → true;
* a zero or empty CRM deal value never overwrites a real one;
* Partner Center takes only the transitions it allows and nothing once Closed. A CRM change it
  cannot take is *blocked*: reported once, remembered with the base, and not reported again
  until the CRM value changes once more (so a refused change is never retried in a loop).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.partner_center import ReferralStatus
from shared.sync.deal import Deal, DealStatus
from shared.sync.status import to_partner_center

ConflictPolicy = Literal["newest", "partner_center", "crm"]
DATAVERSE_HALF_SECOND = timedelta(milliseconds=500)


class Flow(StrEnum):
    BOTH = "both"
    PC_TO_CRM = "pc_to_crm"
    CRM_TO_PC = "crm_to_pc"
    ON_CREATE = "on_create"
    OFF = "off"  # never written after creation (SPEC 13 ``direction``)


# SPEC 4.1, "Direction after creation". One row per Deal field; close_reason is detail only.
OWNERSHIP: dict[str, Flow] = {
    "name": Flow.BOTH,
    "deal_value": Flow.BOTH,
    "currency": Flow.BOTH,
    "close_date": Flow.BOTH,
    "notes": Flow.BOTH,
    "status": Flow.BOTH,
    "help_needed": Flow.CRM_TO_PC,
    "visible_to_microsoft": Flow.BOTH,
    "solutions": Flow.CRM_TO_PC,
    "contact": Flow.BOTH,
    "customer": Flow.ON_CREATE,
    "referral_id": Flow.PC_TO_CRM,
    "referral_link": Flow.PC_TO_CRM,
    "microsoft_crm_id": Flow.PC_TO_CRM,
    "external_reference_id": Flow.CRM_TO_PC,
    "program": Flow.PC_TO_CRM,
}


class InFlight(BaseModel):
    """The merged deal a sync is writing, the fields it sends to each side, and what the
    receiving side held when the sync read it (JSON values; absent in records written before
    they were kept)."""

    model_config = ConfigDict(frozen=True)

    deal: Deal
    to_pc: tuple[str, ...] = ()
    to_crm: tuple[str, ...] = ()
    pc_had: dict[str, Any] = Field(default_factory=dict)
    crm_had: dict[str, Any] = Field(default_factory=dict)


class SyncBase(BaseModel):
    """What the link stores as the merge base: the last synced deal and blocked CRM values."""

    model_config = ConfigDict(frozen=True)

    deal: Deal
    blocked: dict[str, Any] = Field(default_factory=dict)  # field → CRM value (JSON) refused
    # Audit lines of CRM → Partner Center changes, written with the next opportunity write
    # (a write of their own would cost a fourth remote call per change, SPEC 11).
    pending_audit: tuple[str, ...] = ()
    # What a sync set out to write, saved before its first write and cleared with the new base
    # (see ``settle_in_flight``).
    in_flight: InFlight | None = None
    # field → the CRM value (JSON) that stands in for a Partner Center value Dataverse cannot
    # hold (a currency it does not have). It is ours, not the seller's: it counts as unchanged
    # and never goes to Partner Center. ``ANY_STAND_IN``: whatever the new record got.
    stand_ins: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class Change:
    """One field to write on one side: its value there now, and the value to write."""

    field: str
    old: Any
    new: Any


@dataclass(frozen=True)
class FieldPlan:
    """The merge's decision for every field: the merged deal and what goes to each side."""

    merged: Deal
    to_pc: dict[str, Change] = field(default_factory=dict)
    to_crm: dict[str, Change] = field(default_factory=dict)
    conflicts: tuple[str, ...] = ()
    blocked: dict[str, Any] = field(default_factory=dict)
    newly_blocked: tuple[str, ...] = ()  # reasons to report in this sync
    stand_ins: dict[str, Any] = field(default_factory=dict)
    # Partner Center values Dataverse cannot hold, in plain words: the pair is in error.
    refused_by_crm: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.to_pc and not self.to_crm

    def in_flight(self) -> InFlight:
        return InFlight(
            deal=self.merged,
            to_pc=tuple(self.to_pc),
            to_crm=tuple(self.to_crm),
            pc_had={name: to_json_value(c.old) for name, c in self.to_pc.items()},
            crm_had={name: to_json_value(c.old) for name, c in self.to_crm.items()},
        )

    def base(self, *, pending_audit: tuple[str, ...] = ()) -> SyncBase:
        return SyncBase(
            deal=self.merged,
            blocked=self.blocked,
            pending_audit=pending_audit,
            stand_ins=self.stand_ins,
        )


def to_json_value(value: Any) -> Any:
    """A Deal field's value as JSON data (for the stored base and the history)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def settle_in_flight(base: SyncBase, pc: Deal, crm: Deal) -> SyncBase:
    """The base to merge against when the last sync stopped before saving its result (a host
    restart, a timeout whose write landed anyway, or a 412 from the second side after the
    first was written).

    For each field that sync sent to a side, what that *receiving* side holds now decides:
    * the value sent: the write landed, so the written value is the base. Otherwise a later
      edit on the other side would look like a conflict with our own write;
    * what it held when the sync read it: the write did not land; the old base stays;
    * anything else: someone edited the receiving side after the sync read it (before or after
      our write landed), so that edit is newer than the value sent. The value sent becomes the
      base, so the edit wins as a one-sided change. Left as a conflict, the record-level
      ``newest`` policy could keep the sender's value: our own write may have made the
      sender's record the newer one (a lost edit seen in the chaos run).
    The sending side is no evidence: it held that value before the sync.
    """
    flight = base.in_flight
    if flight is None:
        return base
    settled: dict[str, Any] = {}
    for names, side, had in (
        (flight.to_pc, pc, flight.pc_had),
        (flight.to_crm, crm, flight.crm_had),
    ):
        for name in names:
            sent, now = value_of(flight.deal, name), value_of(side, name)
            edited_since = name in had and to_json_value(now) != had[name]
            if now == sent or edited_since:
                settled[name] = sent
    deal = with_values(base.deal, settled)
    return base.model_copy(update={"deal": deal, "in_flight": None})


EXTRA = "extra."  # the Deal field name of a mapped extra column: "extra.<column>"


def value_of(deal: Deal, name: str) -> Any:
    """A Deal field's value by merge name (a built-in field, or ``extra.<column>``)."""
    if name.startswith(EXTRA):
        return deal.extra.get(name.removeprefix(EXTRA))
    return getattr(deal, name)


def with_values(deal: Deal, values: Mapping[str, Any]) -> Deal:
    """``deal`` with the fields named in ``values`` (merge names) set."""
    extra = {n.removeprefix(EXTRA): v for n, v in values.items() if n.startswith(EXTRA)}
    update = {n: v for n, v in values.items() if not n.startswith(EXTRA)}
    if extra:
        update["extra"] = {**deal.extra, **extra}
    return deal.model_copy(update=update)


def merge(
    base: SyncBase | None,
    pc: Deal,
    crm: Deal,
    *,
    policy: ConflictPolicy,
    pc_updated_at: datetime | None = None,
    crm_modified_on: datetime | None = None,
    pc_status: str | None = None,
    crm_cannot_hold: Mapping[str, str] | None = None,
    pc_cannot_take: Mapping[str, str] | None = None,
    ownership: Mapping[str, Flow] | None = None,
) -> FieldPlan:
    """Decide every field. ``pc_status`` is the referral's raw status (New/Active/Closed);
    ``crm_cannot_hold`` names the fields whose Partner Center value Dataverse cannot take, with
    the reason (e.g. a currency the org does not have): they are not written either way;
    ``pc_cannot_take`` the fields whose CRM value Partner Center cannot be sent (blocked, with
    the reason). ``ownership``: each field's flow (default ``OWNERSHIP``; the mapping narrows
    it and adds its extra fields, SPEC 13)."""
    cannot_hold = crm_cannot_hold or {}
    cannot_take = pc_cannot_take or {}
    old_stand_ins = base.stand_ins if base else {}
    stand_ins: dict[str, Any] = {}
    refused_by_crm: list[str] = []
    merged: dict[str, Any] = {}
    to_pc: dict[str, Change] = {}
    to_crm: dict[str, Change] = {}
    conflicts: list[str] = []
    old_blocked = base.blocked if base else {}
    blocked: dict[str, Any] = {}
    newly_blocked: list[str] = []
    pc_closed = pc_status == ReferralStatus.CLOSED
    crm_newer = _crm_is_newer(pc_updated_at, crm_modified_on)

    for name, flow in (ownership or OWNERSHIP).items():
        p, actual = value_of(pc, name), value_of(crm, name)
        b = value_of(base.deal, name) if base else None
        # A field the mapping added since the base was saved has no base of its own.
        has_base = base is not None and (
            not name.startswith(EXTRA) or name.removeprefix(EXTRA) in base.deal.extra
        )
        # The CRM value PC refused earlier: already reported, so it counts as unchanged.
        still_blocked = name in old_blocked and to_json_value(actual) == old_blocked[name]
        # Our stand-in for a value Dataverse could not hold: not a seller's edit either.
        stand_in = old_stand_ins.get(name, _NONE)
        is_stand_in = stand_in is not _NONE and stand_in in (ANY_STAND_IN, to_json_value(actual))
        c = b if (still_blocked or is_stand_in) else actual

        value, conflict = _decide(name, flow, p, c, b, has_base, policy, crm_newer)
        if name in cannot_hold and base is None:
            # No base to tell a seller's choice from what Dataverse put in place of a value it
            # cannot hold (a creation interrupted before its link): CRM's is the stand-in.
            value, conflict = p, False
        if conflict:
            winner = "Partner Center" if value == p else "Dynamics 365"
            conflicts.append(f"{name}: changed in both systems; kept the {winner} value")
        send_pc = flow in (Flow.BOTH, Flow.CRM_TO_PC) and value != p
        send_crm = flow in (Flow.BOTH, Flow.PC_TO_CRM) and value != (actual if is_stand_in else c)
        if send_crm and name in cannot_hold and value == p:
            # Dataverse cannot take PC's value: CRM keeps what it has, as our stand-in, and
            # the pair says why until the value can be written.
            refused_by_crm.append(cannot_hold[name])
            stand_ins[name] = to_json_value(actual)
            send_crm = False
        if still_blocked and not send_crm:
            blocked[name] = old_blocked[name]  # the seller's edit stays; so does the block
        if send_pc:
            reason = cannot_take.get(name) or _refused_by_partner_center(
                name, value, pc_closed, pc_status
            )
            if reason:
                # PC keeps its value and the base follows PC; CRM keeps the user's edit.
                blocked[name] = to_json_value(actual)
                if old_blocked.get(name) != blocked[name]:
                    newly_blocked.append(reason)
                value, send_pc, send_crm = p, False, False
        merged[name] = value
        if send_pc:
            to_pc[name] = Change(name, p, value)
        if send_crm:
            to_crm[name] = Change(name, actual, value)

    merged["close_reason"] = pc.close_reason if pc.status is merged["status"] else crm.close_reason
    merged["extra"] = {
        n.removeprefix(EXTRA): merged.pop(n) for n in list(merged) if n.startswith(EXTRA)
    }
    return FieldPlan(
        merged=Deal.model_validate(merged),
        to_pc=to_pc,
        to_crm=to_crm,
        conflicts=tuple(conflicts),
        blocked=blocked,
        newly_blocked=tuple(newly_blocked),
        stand_ins=stand_ins,
        refused_by_crm=tuple(refused_by_crm),
    )


_NONE = object()
ANY_STAND_IN = "*"  # a new record's stand-in, whatever Dataverse gave it (read on the next sync)


def _decide(
    name: str,
    flow: Flow,
    p: Any,
    c: Any,
    b: Any,
    has_base: bool,
    policy: ConflictPolicy,
    crm_newer: bool,
) -> tuple[Any, bool]:
    """(merged value, was it a conflict?) for one field."""
    if flow is Flow.ON_CREATE:
        return (c if c is not None else p), False
    if flow is Flow.OFF:
        return (b if has_base else p), False  # written by nobody: the base stays as it was
    if flow is Flow.PC_TO_CRM:
        # An empty PC value never clears CRM (e.g. the Microsoft CRM id comes and stays).
        return (p if _present(p) else c), False
    if flow is Flow.CRM_TO_PC:
        return (c if _present(c) else p), False
    if name == "visible_to_microsoft":
        # Only ever false → true: whoever says true wins; None means "not set" on both.
        return (None if p is None and c is None else bool(p) or bool(c)), False
    if name == "deal_value" and not c and p:
        return p, False  # a 0/empty CRM value never overwrites a real one
    if p == c:
        return p, False
    if has_base and p == b:
        return c, False  # changed in CRM only
    if has_base and c == b:
        return p, False  # changed in Partner Center only
    keep_crm = policy == "crm" or (policy == "newest" and crm_newer)
    return (c if keep_crm else p), has_base


def _present(value: Any) -> bool:
    return value not in (None, "", ())


def _crm_is_newer(pc_updated_at: datetime | None, crm_modified_on: datetime | None) -> bool:
    if crm_modified_on is None:
        return False
    if pc_updated_at is None:
        return True
    if crm_modified_on.microsecond == 0:
        # Dataverse stamps ``modifiedon`` to the second: the edit happened somewhere in it.
        # Its middle is the best guess, and right whenever the two edits are more than half a
        # second apart (the start made a CRM edit 0.7 s after a Partner Center one lose).
        crm_modified_on += DATAVERSE_HALF_SECOND
    return crm_modified_on > pc_updated_at


def _refused_by_partner_center(
    name: str, value: Any, pc_closed: bool, pc_status: str | None
) -> str | None:
    """Why Partner Center cannot take this change, in plain words, or None if it can."""
    if pc_closed:
        return f"{name} not sent to Partner Center: the referral is Closed and cannot change"
    refused_move = (
        name == "status"
        and isinstance(value, DealStatus)
        and pc_status is not None
        and to_partner_center(value, current=pc_status) is None
    )
    if refused_move:
        return (
            f"status not sent to Partner Center: a referral cannot move from {pc_status} to {value}"
        )
    return None
