"""Audit text: readable lines, bounded size with the oldest lines dropped."""

from __future__ import annotations

from shared.sync.audit import append_audit, audit_lines, describe_changes
from shared.sync.deal import Deal
from shared.sync.merge import Change, FieldPlan


def test_changes_read_as_old_to_new() -> None:
    text = describe_changes([Change("deal_value", 100.0, 250.0), Change("notes", None, "Hi")])

    assert text == "deal value 100.0 → 250.0; notes (empty) → Hi"


def test_audit_lines_name_direction_conflicts_and_problems() -> None:
    plan = FieldPlan(
        merged=Deal(),
        to_crm={"notes": Change("notes", "a", "b")},
        conflicts=("notes: changed in both systems; kept the Partner Center value",),
    )

    lines = audit_lines(plan, problems=["Add at least one solution."])

    assert "✔ from Partner Center: notes a → b" in lines[0]
    assert "⚠ conflict: notes" in lines[1]
    assert lines[2].endswith("✖ Add at least one solution.")


def test_audit_keeps_newest_lines_within_the_limit() -> None:
    existing = "\n".join(f"line {n}" for n in range(1000))

    text = append_audit(existing, ["newest"], limit=200)

    assert len(text) <= 200
    assert text.endswith("newest")
    assert "line 0\n" not in text
    assert text.splitlines()[-2] == "line 999"
