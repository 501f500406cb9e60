"""When Partner Center refuses one field of a patch: which one, and what the sync does then.

The connector's contract lists the paths a partner may patch (``mapping.LISTED_PATCH_PATHS``);
whether the service refuses others, or a value it finds invalid, with a 400 that names the path
is UNCERTAIN (reference dataverse-push-and-webhook-trust.md §3). So one refused operation must
not fail the pair: ``sides.PartnerCenterSide.patch_keeping_the_rest`` sends the patch again
without the field the 400 names (a 400 changes nothing, so the eTag still holds), and the steps
after the patch are revised here (pure):

* the field is *blocked* as ``merge`` blocks a change Partner Center cannot take: the base
  follows Partner Center's value, the seller's CRM value is remembered, and the change is not
  sent again until the seller changes it once more (no retry loop, no poison queue);
* a ``⚠`` line in the opportunity's audit says which field Partner Center would not take and
  why, written with this sync's opportunity write, or by one of its own if there is none.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from shared.partner_center import PartnerCenterError, PatchOperation
from shared.sync.audit import append_audit, field_label, show_value
from shared.sync.deal import Deal
from shared.sync.mapping import Columns, field_of_path
from shared.sync.merge import SyncBase, to_json_value
from shared.sync.snapshot import CrmOpportunity
from shared.sync.steps import SaveLink, Step, WriteOpportunity

MAX_WAITING_LINES = 20  # as ``plan.MAX_PENDING_AUDIT``: lines waiting for a closed opportunity


def refused_operations(
    error: PartnerCenterError, operations: Sequence[PatchOperation]
) -> tuple[str, list[PatchOperation]] | None:
    """The field a 400 names among ``operations`` and every operation that writes it (a status
    is three paths), or None when it names none of them (then the whole patch is refused).

    The error may name the path in ``target`` (as a pointer, ``/details/dealValue``, or dotted,
    ``details.dealValue``, as the validation errors do) or only in its message.
    """
    if error.status != 400:
        return None
    for operation in sorted(operations, key=lambda o: -len(o.path)):  # most specific first
        if _names(error, operation.path):
            field = field_of_path(operation.path) or operation.path
            return field, [o for o in operations if (field_of_path(o.path) or o.path) == field]
    return None


def _names(error: PartnerCenterError, path: str) -> bool:
    target = (error.target or "").strip()
    pointer = target if target.startswith("/") else "/" + target.replace(".", "/")
    if target and (
        pointer.lower() == path.lower() or pointer.lower().startswith(path.lower() + "/")
    ):
        return True
    message = error.message or ""
    forms = [path]
    if path.count("/") > 1:  # a dotted one-word path ("status") is any word in a sentence
        forms.append(path.strip("/").replace("/", "."))
    return any(
        re.search(rf"(?<![\w/.~]){re.escape(form)}(?![\w/.~-])", message, re.IGNORECASE)
        for form in forms
    )


def refusal_lines(refused: Mapping[str, str], pc: Deal, *, now: datetime) -> list[str]:
    """One audit line per refused field: what Partner Center keeps, and its reason."""
    stamp = now.strftime("%Y-%m-%d %H:%M:%SZ")
    return [
        f"{stamp} ⚠ {field_label(field)} not taken by Partner Center (it keeps "
        f"{show_value(getattr(pc, field, None))}): {reason.rstrip('. ')}. Dynamics 365 keeps "
        "its value; it is sent again when it changes"
        for field, reason in refused.items()
    ]


def blocked_base(base: SyncBase, refused: Iterable[str], pc: Deal, crm: Deal) -> SyncBase:
    """The base with each refused field blocked: Partner Center's value as the base, the
    seller's CRM value remembered (``merge`` then treats it as unchanged until it changes)."""
    fields = [f for f in refused if f in Deal.model_fields]
    deal = base.deal.model_copy(update={f: getattr(pc, f) for f in fields})
    blocked = {**base.blocked, **{f: to_json_value(getattr(crm, f)) for f in fields}}
    return base.model_copy(update={"deal": deal, "blocked": blocked})


def revise_after_refusal(
    steps: Sequence[Step],
    refused: Mapping[str, str],
    *,
    pc: Deal,
    opportunity: CrmOpportunity | None,
    columns: Columns,
    now: datetime,
) -> list[Step]:
    """The steps still to run once Partner Center refused ``refused`` (field → its reason):
    the audit line goes with the opportunity write (one is added if the plan had none), and
    the link's base blocks the fields."""
    lines = refusal_lines(refused, pc, now=now)
    revised: list[Step] = []
    written = opportunity is None
    for step in steps:
        if (
            isinstance(step, WriteOpportunity)
            and opportunity
            and step.opportunity_id == opportunity.id
        ):
            if not written:
                audit = step.columns.get(columns.audit, opportunity.row.get(columns.audit))
                step = replace(
                    step, columns={**step.columns, columns.audit: append_audit(audit, lines)}
                )
                written = True
        elif isinstance(step, SaveLink):
            base = (
                blocked_base(step.base, refused, pc, opportunity.deal) if opportunity else step.base
            )
            if not written and opportunity is not None:
                waiting = [*base.pending_audit, *lines]
                if opportunity.row.get("statecode") in (1, 2):
                    # Dataverse refuses edits of a closed opportunity: shown once reopened.
                    base = base.model_copy(
                        update={"pending_audit": tuple(waiting[-MAX_WAITING_LINES:])}
                    )
                else:
                    audit = append_audit(opportunity.row.get(columns.audit), waiting)
                    revised.append(WriteOpportunity(opportunity.id, {columns.audit: audit}))
                    base = base.model_copy(update={"pending_audit": ()})
                written = True
            step = replace(step, base=base)
        revised.append(step)
    return revised
