"""``cosell sync referral|opportunity ID [--dry-run]``: one sync, inline, with its plan.

The engine does the work (``SyncEngine.sync``); this module only builds the job and prints what
it returns: the field-by-field plan and the typed steps, in order. With ``--dry-run`` the engine
reads and plans but runs no step (that is the dry run: "show the plan"), and the CLI creates
nothing either (no table, no history row).
"""

from __future__ import annotations

import argparse
import uuid
from typing import TYPE_CHECKING, Any

from shared.cli._context import Context
from shared.cli._output import Output
from shared.cli._parser import add_command, add_group
from shared.jobs import SyncJob

if TYPE_CHECKING:  # imported lazily at run time: `--help` works even if the engine does not
    from shared.sync import SyncResult

DIRECTIONS = {"to_crm": ("pc_to_crm", "PC → CRM"), "to_pc": ("crm_to_pc", "CRM → PC")}


def guid(value: str) -> str:
    """argparse type: a GUID in any case, with or without braces."""
    try:
        return str(uuid.UUID(value.strip().strip("{}")))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a GUID (e.g. 6f1f8a5e-3d4c-4b2a-9e8f-000000000001)"
        ) from None


def add_parser(commands: Any) -> None:
    group = add_group(commands, "sync", help="sync one referral or opportunity now, inline")
    for kind, other in (("referral", "opportunity"), ("opportunity", "referral")):
        parser = add_command(
            group,
            kind,
            help=f"sync the {kind} with ID and its linked {other}; print the plan",
            examples=(
                f"cosell sync {kind} 6f1f8a5e-3d4c-4b2a-9e8f-000000000001 --dry-run",
                f"cosell sync {kind} 6f1f8a5e-3d4c-4b2a-9e8f-000000000001 --json",
            ),
            notes="The plan lists each field to write (old → new, and which way), the steps "
            "that write them, conflicts and validation failures. --dry-run computes it and "
            "writes nothing anywhere. "
            "Exit status 1 when the sync ended in an error or the record was not found.",
            handler=run,
        )
        parser.add_argument("id", metavar="ID", type=guid, help=f"the {kind} id (a GUID)")
        parser.add_argument(
            "--dry-run", action="store_true", help="compute and print the plan; write nothing"
        )
        parser.set_defaults(kind=kind)


async def run(ctx: Context) -> int:
    args = ctx.args
    engine = await ctx.engine(dry_run=args.dry_run)
    job = SyncJob.now(args.kind, args.id, reason="manual")
    result = await engine.sync(job, dry_run=args.dry_run)
    document = result_document(result)
    if ctx.out.json_mode:
        ctx.out.json(document)
    else:
        print_result(ctx.out, document)
    if document["outcome"] == "error":
        ctx.out.note("cosell: the sync ended in an error: " + "; ".join(document["problems"]))
        return 1
    missing = [n for n in document["notes"] if str(n).endswith("not found")]
    if document["outcome"] == "skipped" and missing:
        # A mistyped id is the operator's failure, even though the engine calls it a skip.
        ctx.out.note(f"cosell: nothing synced: {'; '.join(missing)}")
        return 1
    return 0


def result_document(result: SyncResult) -> dict[str, Any]:
    """A ``SyncResult`` as plain data: the plan's changes as rows with their direction."""
    plan = result.plan
    changes: list[dict[str, Any]] = []
    if plan is not None:
        for side, (direction, _) in DIRECTIONS.items():
            planned: dict[str, Any] = getattr(plan, side)
            changes += [
                {"field": c.field, "direction": direction, "old": c.old, "new": c.new}
                for c in planned.values()
            ]
    return {
        "outcome": result.outcome,
        "referral_id": result.referral_id,
        "opportunity_id": result.opportunity_id,
        "dry_run": result.dry_run,
        "changes": changes,
        "conflicts": list(plan.conflicts) if plan else [],
        "validation_failures": list(plan.newly_blocked) if plan else [],
        "problems": list(result.problems),
        "notes": list(result.notes),
        "steps": [step.describe() for step in result.steps],
        "remote_calls": result.remote_calls,
        "duration_ms": result.duration_ms,
    }


def print_result(out: Output, document: dict[str, Any]) -> None:
    labels = dict(DIRECTIONS.values())
    mode = " (dry run: nothing written)" if document["dry_run"] else ""
    out.pairs(
        [
            ("outcome", f"{document['outcome']}{mode}"),
            ("referral", document["referral_id"]),
            ("opportunity", document["opportunity_id"]),
            ("remote calls", document["remote_calls"]),
            ("duration", f"{document['duration_ms']} ms"),
        ],
        title="Sync",
    )
    out.line()
    out.table(
        [
            (c["field"], labels.get(c["direction"], c["direction"]), c["old"], c["new"])
            for c in document["changes"]
        ],
        ("field", "direction", "old", "new"),
        title="Plan" + (" (would write)" if document["dry_run"] else ""),
        empty="(nothing to change)",
    )
    out.line()
    # Whole lines, not a table: a step names ids, and a table would cut them.
    out.line("Steps" + (" (would run)" if document["dry_run"] else "") + ":")
    for n, text in enumerate(document["steps"], start=1):
        out.line(f"  {n}. {text}")
    if not document["steps"]:
        out.line("  (nothing to do)")
    for title, key in (
        ("Conflicts", "conflicts"),
        ("Validation failures (nothing sent to Partner Center)", "validation_failures"),
        ("Problems", "problems"),
        ("Notes", "notes"),
    ):
        if document[key]:
            out.line()
            out.line(f"{title}:")
            for item in document[key]:
                out.line(f"  - {item}")
