"""Audit text for ``cosell_audit`` (SPEC 4.4 step 7). Pure: the caller gives the time.

Audit lines are plain words a seller can read in the opportunity form, newest last; the text
is bounded (oldest lines dropped) so a long-lived deal never hits the column's limit.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from shared.sync.merge import Change, FieldPlan

MAX_AUDIT_CHARS = 8000
_LABELS = {
    "name": "name",
    "deal_value": "deal value",
    "currency": "currency",
    "close_date": "close date",
    "notes": "notes",
    "status": "status",
    "help_needed": "help needed",
    "visible_to_microsoft": "visible to Microsoft",
    "solutions": "solutions",
    "contact": "contact",
    "referral_id": "referral id",
    "referral_link": "referral link",
    "microsoft_crm_id": "Microsoft CRM id",
    "external_reference_id": "CRM id",
    "program": "program",
}


def field_label(field: str) -> str:
    """A Deal field's name in the words of the audit ("deal value"); a mapped extra field by
    its column (``extra.cr1a2_region`` → ``cr1a2_region``)."""
    return _LABELS.get(field, field.removeprefix("extra."))


def show_value(value: Any) -> str:
    """A Deal field's value as the audit shows it (short, "(empty)" for nothing)."""
    if value is None or value == () or value == "":
        return "(empty)"
    if hasattr(value, "model_dump"):
        parts = [str(v) for v in value.model_dump().values() if v]
        return " ".join(parts) or "(empty)"
    if isinstance(value, tuple | list):
        return ", ".join(str(v) for v in value)
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def describe_changes(changes: Iterable[Change]) -> str:
    """``deal value 100.0 → 250.0; notes (empty) → Kick-off``."""
    return "; ".join(
        f"{field_label(c.field)} {show_value(c.old)} → {show_value(c.new)}" for c in changes
    )


def audit_lines(
    plan: FieldPlan | None,
    *,
    problems: Iterable[str] = (),
    notes: Iterable[str] = (),
    now: datetime | None = None,
) -> list[str]:
    """The lines one sync adds to the audit (empty when there is nothing worth saying)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M:%SZ")
    lines: list[str] = [f"{stamp} {note}" for note in notes]
    if plan is not None:
        if plan.to_crm:
            lines.append(f"{stamp} ✔ from Partner Center: {describe_changes(plan.to_crm.values())}")
        if plan.to_pc:
            lines.append(f"{stamp} ✔ to Partner Center: {describe_changes(plan.to_pc.values())}")
        lines.extend(f"{stamp} ⚠ conflict: {c}" for c in plan.conflicts)
        lines.extend(f"{stamp} ⚠ {b}" for b in plan.newly_blocked)
    lines.extend(f"{stamp} ✖ {p}" for p in problems)
    return lines


def append_audit(existing: str | None, lines: list[str], *, limit: int = MAX_AUDIT_CHARS) -> str:
    """The audit text with ``lines`` appended, oldest lines dropped to stay within ``limit``."""
    kept = [line for line in (existing or "").splitlines() if line.strip()] + lines
    while kept and len("\n".join(kept)) > limit:
        kept.pop(0)
    text = "\n".join(kept)
    return text[-limit:]
