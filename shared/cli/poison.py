"""``cosell poison list|replay|delete``: jobs that ended in ``sync-jobs-poison`` (SPEC 7).

A poison message is either a job as the host moved it (its base64 body, after the last retry)
or an envelope ``{"reason": ..., "body": ...}`` written by the app for a message it could not
decode. The host's copy carries no reason, so ``list`` looks up the one the engine recorded at
the job's last failed attempt (``shared.failures``: the history row of its deal, by the job's
ids) — e.g. "Dataverse 500 on GET opportunities(…)". ``replay`` sends the job back to
``sync-jobs`` and only then deletes it from poison, so a crash in between leaves a duplicate
job (harmless: the engine reads current state), never a lost one. ``delete`` removes messages
for good (one malformed message keeps health at 503 until it is gone), after a confirmation
unless ``--yes``.
"""

from __future__ import annotations

from typing import Any

from azure.storage.queue.aio import QueueClient

from shared import poison
from shared.cli._context import Context
from shared.cli._output import confirm
from shared.cli._parser import add_command, add_group
from shared.jobs import POISON_QUEUE, SYNC_JOBS_QUEUE
from shared.storage import queue_client

# What the dashboard shares (shared.poison), under the names this module has always had.
PoisonMessage = poison.PoisonMessage
decode_message = poison.decode_message
PEEK_MAX = poison.PEEK_MAX
REPLAY_LEASE_S = poison.REPLAY_LEASE_S


def add_parser(commands: Any) -> None:
    group = add_group(commands, "poison", help=f"list, replay or delete jobs in {POISON_QUEUE}")
    listing = add_command(
        group,
        "list",
        help=f"show the messages in {POISON_QUEUE} and why they are there",
        examples=("cosell poison list", "cosell poison list --json"),
        handler=list_poison,
    )
    listing.add_argument(
        "--no-reasons",
        action="store_true",
        help="do not look up each job's recorded failure (history) and link error",
    )
    replay = add_command(
        group,
        "replay",
        help=f"move messages back to {SYNC_JOBS_QUEUE} (all, or by message or job id)",
        examples=(
            "cosell poison replay --all",
            "cosell poison replay 6f1f8a5e-3d4c-4b2a-9e8f-000000000001",
        ),
        notes="An ID is a poison message id or the referral/opportunity id of its job. "
        "Messages that are not valid jobs stay in the poison queue. Exit status 1 when an ID "
        "was not found or a message could not be replayed.",
        handler=replay_poison,
    )
    replay.add_argument("ids", nargs="*", metavar="ID", help="message ids or job ids")
    replay.add_argument("--all", action="store_true", help="replay every message")
    delete = add_command(
        group,
        "delete",
        help=f"delete messages from {POISON_QUEUE} for good (by id, the malformed ones, or all)",
        examples=(
            "cosell poison delete --malformed",
            "cosell poison delete 6f1f8a5e-3d4c-4b2a-9e8f-000000000001 --yes",
        ),
        notes="An ID is a poison message id or the referral/opportunity id of its job; "
        "--malformed picks the messages that are not valid jobs (they can never be replayed). "
        "Asks first unless --yes (and refuses without --yes when not on a terminal). Exit "
        "status 1 when an ID was not found.",
        handler=delete_poison,
    )
    delete.add_argument("ids", nargs="*", metavar="ID", help="message ids or job ids")
    delete.add_argument("--malformed", action="store_true", help="the messages that are not jobs")
    delete.add_argument("--all", action="store_true", help="every message")
    delete.add_argument("--yes", action="store_true", help="do not ask first")


def _poison_client(ctx: Context) -> QueueClient:
    client = queue_client(ctx.settings, POISON_QUEUE)
    ctx.stack.push_async_callback(client.close)
    return client


async def list_poison(ctx: Context) -> int:
    client = _poison_client(ctx)
    messages, depth = await poison.peek(client)
    found: dict[str, poison.Recorded] = {}
    if not ctx.args.no_reasons:
        jobs = [m.job for m in messages if m.job is not None]
        found = await poison.recorded(ctx.links(), ctx.history(), jobs)
    rows = []
    for m in messages:
        recorded = found.get(str(m.job.id)) if m.job else None
        entry = recorded.failure if recorded else None
        failure = entry.failure if entry else None
        rows.append(
            {
                "message_id": m.message_id,
                "inserted_on": m.inserted_on,
                "kind": m.job.kind if m.job else None,
                "id": str(m.job.id) if m.job else None,
                "job_reason": str(m.job.reason) if m.job else None,
                # The host's copy of a job has no reason: the one recorded at its last attempt.
                "reason": poison.reason_of(m, recorded),
                "failure": failure,
                "failed_at": entry.at if entry else None,
                "last_sync_error": recorded.link_error if recorded else None,
                "body": None if m.job else m.body_excerpt,
            }
        )
    out = ctx.out
    if out.json_mode:
        out.json({"queue": POISON_QUEUE, "depth": depth, "messages": rows})
        return 0
    out.table(
        [
            (
                r["message_id"],
                r["inserted_on"],
                r["kind"],
                r["id"],
                r["reason"],
                r["last_sync_error"],
            )
            for r in rows
        ],
        ("message id", "poisoned at", "kind", "id", "reason", "last sync error"),
        title=f"{POISON_QUEUE}: {depth} message(s)",
        empty="(empty)",
    )
    if depth > len(rows):
        out.line(f"  ... showing the first {len(rows)}; `cosell poison replay --all` takes all")
    return 0


async def replay_poison(ctx: Context) -> int:
    args, out = ctx.args, ctx.out
    if bool(args.all) == bool(args.ids):
        out.error("give either --all or one or more message/job ids")
        return 2
    outcome = await poison.replay(
        _poison_client(ctx), ctx.queue(SYNC_JOBS_QUEUE), ids=args.ids, every=bool(args.all)
    )
    replayed: list[dict[str, Any]] = [
        {"message_id": m.message_id, "kind": m.job.kind, "id": m.job.id}
        for m in outcome.done
        if m.job is not None
    ]
    skipped = [{"message_id": m.message_id, "reason": m.reason} for m in outcome.skipped]
    missing = outcome.not_found
    document = {"replayed": replayed, "skipped": skipped, "not_found": missing}
    if out.json_mode:
        out.json(document)
    else:
        out.table(
            [(r["message_id"], r["kind"], r["id"]) for r in replayed],
            ("message id", "kind", "id"),
            title=f"Replayed to {SYNC_JOBS_QUEUE}: {len(replayed)}",
        )
        if skipped:
            out.line()
            out.table(
                [(s["message_id"], s["reason"]) for s in skipped],
                ("message id", "reason"),
                title="Left in the poison queue (not a valid job)",
            )
        if missing:
            out.line()
            out.line(f"Not found in {POISON_QUEUE}: {', '.join(missing)}")
    return 1 if skipped or missing else 0


async def delete_poison(ctx: Context) -> int:
    args, out = ctx.args, ctx.out
    if sum((bool(args.ids), bool(args.malformed), bool(args.all))) != 1:
        out.error("give one of: message/job ids, --malformed or --all")
        return 2
    what = (
        "every message"
        if args.all
        else "the malformed messages"
        if args.malformed
        else (f"the messages {', '.join(args.ids)}")
    )
    if not args.yes and not confirm(f"Delete {what} from {POISON_QUEUE} for good?"):
        out.error("nothing deleted: not confirmed (pass --yes to skip the question)")
        return 2
    outcome = await poison.delete(
        _poison_client(ctx), ids=args.ids, malformed=bool(args.malformed), every=bool(args.all)
    )
    deleted: list[dict[str, Any]] = [
        {"message_id": m.message_id, "id": str(m.job.id) if m.job else None, "reason": m.reason}
        for m in outcome.done
    ]
    missing = outcome.not_found
    if out.json_mode:
        out.json({"deleted": deleted, "not_found": missing})
    else:
        out.table(
            [(d["message_id"], d["id"] or "—", d["reason"]) for d in deleted],
            ("message id", "job id", "reason"),
            title=f"Deleted from {POISON_QUEUE}: {len(deleted)}",
        )
        if missing:
            out.line()
            out.line(f"Not found in {POISON_QUEUE}: {', '.join(missing)}")
    return 1 if missing else 0
