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

import base64
import binascii
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError
from azure.storage.queue import QueueMessage
from azure.storage.queue.aio import QueueClient

from shared.cli._context import Context
from shared.cli._output import confirm
from shared.cli._parser import add_command, add_group
from shared.errors import CosellError, JobDecodeError
from shared.failures import last_failure
from shared.jobs import POISON_QUEUE, SYNC_JOBS_QUEUE, SyncJob, decode_job
from shared.state import HistoryEntry, LinkResult
from shared.storage import queue_client

PEEK_MAX = 32  # the Queue service's limit for one peek
REPLAY_LEASE_S = 120  # messages being replayed stay hidden from other readers meanwhile


@dataclass
class PoisonMessage:
    message_id: str
    inserted_on: datetime | None
    job: SyncJob | None
    reason: str
    body_excerpt: str
    text: str  # the message as the host reads it (after base64)
    enveloped: bool = False  # written by the app with its reason (a message that is not a job)

    def keys(self) -> set[str]:
        """What an operator may name it by: the message id, and its job's record id."""
        keys = {self.message_id.lower()}
        if self.job is not None:
            keys.add(str(self.job.id))
        return keys

    def matches(self, wanted: set[str]) -> bool:
        return bool(self.keys() & wanted)


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


def decode_message(message: QueueMessage) -> PoisonMessage:
    """Read a poison message whatever its shape; never raises."""
    raw = str(message.content or "")
    try:
        text = base64.b64decode(raw, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = raw  # written without the host's base64 encoding
    reason: str | None = None
    body: str = text
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict) and "body" in data and "reason" in data:
        reason = str(data["reason"])
        inner = data["body"]
        body = inner if isinstance(inner, str) else json.dumps(inner)
    job: SyncJob | None
    try:
        job = decode_job(body)
    except JobDecodeError as exc:
        job = None
        reason = reason or f"not a valid job: {exc.reason}"
    return PoisonMessage(
        message_id=str(message.id),
        inserted_on=message.inserted_on,
        job=job,
        reason=reason or "failed on every retry (maxDequeueCount); no failure recorded",
        # The decoded body can name a referral id at most; bodies are capped for display.
        body_excerpt=body[:200],
        text=text,
        enveloped=isinstance(data, dict) and "body" in data and "reason" in data,
    )


def _poison_client(ctx: Context) -> QueueClient:
    client = queue_client(ctx.settings, POISON_QUEUE)
    ctx.stack.push_async_callback(client.close)
    return client


async def list_poison(ctx: Context) -> int:
    client = _poison_client(ctx)
    try:
        peeked = await client.peek_messages(max_messages=PEEK_MAX)
        depth = (await client.get_queue_properties()).approximate_message_count or 0
    except ResourceNotFoundError:
        peeked, depth = [], 0
    messages = [decode_message(m) for m in peeked]
    found: dict[str, _Recorded] = {}
    if not ctx.args.no_reasons:
        found = await _recorded(ctx, [m.job for m in messages if m.job is not None])
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
                "reason": failure.summary if failure and not m.enveloped else m.reason,
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


@dataclass
class _Recorded:
    failure: HistoryEntry | None  # the newest failed attempt in the history
    link_error: str | None  # the link's last result, when it is an error (a refusal)


async def _recorded(ctx: Context, jobs: list[SyncJob]) -> dict[str, _Recorded]:
    """What the app recorded about each job (best effort, a few point reads each): its newest
    failed attempt from the history (``shared.failures.last_failure``) and the error its link
    or opportunity index row holds."""
    links, history = ctx.links(), ctx.history()
    found: dict[str, _Recorded] = {}
    try:
        for job in jobs:
            result: LinkResult | None = None
            if job.kind == "referral":
                link = await links.get_link(str(job.id))
                result = link.last_result if link else None
            else:
                index = await links.get_opportunity_index(str(job.id))
                result = index.last_result if index else None
                if index is not None and index.referral_id and result is None:
                    link = await links.get_link(index.referral_id)
                    result = link.last_result if link else None
            error = result.message if result and result.status == "error" else None
            found[str(job.id)] = _Recorded(await last_failure(links, history, job), error or None)
    except (AzureError, CosellError):
        pass  # reasons are extra information; the listing stands without them
    return found


async def replay_poison(ctx: Context) -> int:
    args, out = ctx.args, ctx.out
    if bool(args.all) == bool(args.ids):
        out.error("give either --all or one or more message/job ids")
        return 2
    wanted = {i.strip().strip("{}").lower() for i in args.ids}
    client = _poison_client(ctx)
    jobs = ctx.queue(SYNC_JOBS_QUEUE)
    await jobs.create_queue()
    replayed: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    matched: set[str] = set()

    async def replay(message: QueueMessage, decoded: PoisonMessage) -> bool:
        if not (args.all or decoded.matches(wanted)):
            return False
        matched.update(decoded.keys())
        if decoded.job is None:
            skipped.append({"message_id": decoded.message_id, "reason": decoded.reason})
            return False
        await jobs.enqueue(decoded.job)
        await client.delete_message(message)
        replayed.append(
            {"message_id": decoded.message_id, "kind": decoded.job.kind, "id": decoded.job.id}
        )
        return True

    await _each_message(client, replay)
    missing = sorted(wanted - matched)
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
    wanted = {i.strip().strip("{}").lower() for i in args.ids}
    client = _poison_client(ctx)
    deleted: list[dict[str, Any]] = []
    matched: set[str] = set()

    async def delete(message: QueueMessage, decoded: PoisonMessage) -> bool:
        chosen = args.all or (args.malformed and decoded.job is None) or decoded.matches(wanted)
        if not chosen:
            return False
        matched.update(decoded.keys())
        await client.delete_message(message)
        deleted.append({"message_id": decoded.message_id,
                        "id": str(decoded.job.id) if decoded.job else None,
                        "reason": decoded.reason})  # fmt: skip
        return True

    await _each_message(client, delete)
    missing = sorted(wanted - matched)
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


async def _each_message(
    client: QueueClient, act: Callable[[QueueMessage, PoisonMessage], Awaitable[bool]]
) -> None:
    """Hand every poison message to ``act`` once; True means it took the message away, else
    the message is made visible again at once (not after the lease)."""
    untouched: list[tuple[QueueMessage, str]] = []
    try:
        # Received (not peeked) so each message can be deleted with its pop receipt; each stays
        # hidden for the lease, so this loop sees every message once and then ends.
        async for message in client.receive_messages(
            messages_per_page=PEEK_MAX, visibility_timeout=REPLAY_LEASE_S
        ):
            decoded = decode_message(message)
            if not await act(message, decoded):
                untouched.append((message, decoded.text))
    except ResourceNotFoundError:
        pass  # no poison queue: nothing was ever poisoned
    for message, text in untouched:
        # The SDK re-sends the content through the client's base64 encoder, so it gets the
        # decoded text; given nothing, it would encode the raw base64 a second time.
        await client.update_message(message, content=text, visibility_timeout=0)
