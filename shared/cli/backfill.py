"""``cosell backfill``: a sync job for every referral and/or every flagged opportunity.

By default the jobs go to ``sync-jobs`` (reason ``backfill``) and the app's workers run them at
their own pace; ``--inline`` runs them here through the engine, a few at a time. Either way the
ids are listed first, so the progress bar knows its total.

``--dry-run`` plans every sync through the engine (``SyncEngine.sync(dry_run=True)``: the
reads, the plan, no write anywhere, not even a queue message or a table) and lists what the
backfill would create (an opportunity, a referral, a lead), update (the fields, by side) or
refuse (the validation reasons); a pair found from both sides is listed once.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter
from datetime import UTC, datetime, time
from typing import Any

from shared.cli._context import Context
from shared.cli._output import Progress
from shared.cli._parser import add_command
from shared.crm_schema import crm_schema
from shared.dataverse import Filter, eq, ge
from shared.errors import CosellError
from shared.jobs import JobKind, SyncJob
from shared.sync.result import SyncResult
from shared.sync.steps import (
    AdoptOpportunity,
    CloseOpportunity,
    CreateLead,
    CreateOpportunity,
    CreateReferral,
    PatchReferral,
    WriteContact,
    WriteCrmId,
    WriteOpportunity,
)

ENQUEUE_CHUNK = 100
MAX_FAILURES_SHOWN = 20


def since(value: str) -> datetime:
    """argparse type: an ISO date or date-time; dates are midnight UTC, naive times UTC."""
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO date (2026-11-01) or date-time (2026-11-01T08:00:00Z)"
        ) from None
    if len(value.strip()) == 10:  # a date only
        parsed = datetime.combine(parsed.date(), time(), tzinfo=UTC)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def add_parser(commands: Any) -> None:
    parser = add_command(
        commands,
        "backfill",
        help="enqueue (or run with --inline) a sync of every referral / flagged opportunity",
        examples=(
            "cosell backfill",
            "cosell backfill --since 2026-11-01 --direction pc-to-crm",
            "cosell backfill --direction crm-to-pc --inline --concurrency 4",
        ),
        notes="pc-to-crm: every referral (updated since --since); crm-to-pc: every opportunity "
        "with the sync flag on (modified since --since); both: both. Progress goes to stderr. "
        "--dry-run reads each record (a few reads per sync) and writes nothing. Exit status 1 "
        "when listing failed or, with --inline, any sync ended in an error.",
        handler=run,
    )
    parser.add_argument(
        "--since",
        type=since,
        metavar="DATE",
        help="only records updated since this date (UTC), e.g. 2026-11-01",
    )
    parser.add_argument(
        "--direction",
        choices=("pc-to-crm", "crm-to-pc", "both"),
        default="both",
        help="which side to start from (default both)",
    )
    parser.add_argument(
        "--inline", action="store_true", help="run the syncs here instead of enqueueing them"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="list what would be created or changed (plans each sync; writes nothing)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=8,
        help="syncs at a time with --inline (default 8; Dataverse throttling still applies)",
    )


async def run(ctx: Context) -> int:
    args, out = ctx.args, ctx.out
    jobs: list[SyncJob] = []
    found: dict[str, int] = {}
    if args.direction in ("pc-to-crm", "both"):
        ids = await _referral_ids(ctx, args.since)
        found["referrals"] = len(ids)
        jobs += _jobs("referral", ids)
    if args.direction in ("crm-to-pc", "both"):
        ids = await _opportunity_ids(ctx, args.since)
        found["opportunities"] = len(ids)
        jobs += _jobs("opportunity", ids)
    out.note("found " + ", ".join(f"{n} {what}" for what, n in found.items()))
    document: dict[str, Any] = {
        "direction": args.direction,
        "since": args.since,
        "inline": args.inline,
        "found": found,
    }
    if args.dry_run:
        document.update(await _dry_run(ctx, jobs, max(1, args.concurrency)))
        document["dry_run"] = True
        if out.json_mode:
            out.json(document)
        else:
            _dry_run_summary(ctx, document)
        return 0
    if args.inline:
        outcomes, failures = await _run_inline(ctx, jobs, max(1, args.concurrency))
        document.update(outcomes=dict(sorted(outcomes.items())), failures=failures)
        failed = outcomes.get("error", 0)
    else:
        document["enqueued"] = await _enqueue(ctx, jobs)
        failed = 0
    if out.json_mode:
        out.json(document)
    else:
        _summary(ctx, document)
    return 1 if failed else 0


def _jobs(kind: JobKind, ids: list[str]) -> list[SyncJob]:
    return [SyncJob.now(kind, i, reason="backfill") for i in ids]


async def _referral_ids(ctx: Context, since_at: datetime | None) -> list[str]:
    pc = await ctx.partner_center()
    # Unquoted DateTimeOffset literal, as the service's own paging links write it (§1.2).
    where = f"updatedDateTime ge {_iso(since_at)}" if since_at else None
    seen: dict[str, None] = {}
    async for referral in pc.list_referrals(filter=where, select=["id"]):
        if referral.id:
            seen.setdefault(referral.id.lower(), None)
    return list(seen)


async def _opportunity_ids(ctx: Context, since_at: datetime | None) -> list[str]:
    dataverse = await ctx.dataverse()
    flag = crm_schema(ctx.settings.crm_column_prefix).sync_with_partner_center.logical_name
    where: Filter = eq(flag, True)
    if since_at is not None:
        where = where & ge("modifiedon", since_at)
    seen: dict[str, None] = {}
    async for row in dataverse.list_rows(
        "opportunities", select=["opportunityid"], filter=where, orderby=["opportunityid"]
    ):
        seen.setdefault(str(row["opportunityid"]).lower(), None)
    return list(seen)


async def _enqueue(ctx: Context, jobs: list[SyncJob]) -> int:
    queue = ctx.queue()
    await queue.create_queue()
    progress = ctx.out.progress("enqueue", len(jobs))
    sent = 0
    for start in range(0, len(jobs), ENQUEUE_CHUNK):
        chunk = jobs[start : start + ENQUEUE_CHUNK]
        sent += await queue.enqueue_many(chunk)
        progress.advance(len(chunk))
    progress.finish()
    return sent


async def _run_inline(
    ctx: Context, jobs: list[SyncJob], concurrency: int
) -> tuple[Counter[str], list[dict[str, Any]]]:
    engine = await ctx.engine()
    progress: Progress = ctx.out.progress("sync", len(jobs))
    outcomes: Counter[str] = Counter()
    failures: list[dict[str, Any]] = []
    limit = asyncio.Semaphore(concurrency)

    async def one(job: SyncJob) -> None:
        async with limit:
            try:
                result = await engine.sync(job)
                outcome, problems = str(result.outcome), list(result.problems or [])
            except CosellError as exc:  # the worker would retry it; here it is reported
                outcome, problems = "error", [str(exc)]
            outcomes[outcome] += 1
            if outcome == "error":
                failures.append({"kind": job.kind, "id": str(job.id), "problems": problems})
            progress.advance()

    await asyncio.gather(*(one(job) for job in jobs))
    progress.finish()
    return outcomes, failures


_CREATES = {CreateOpportunity: "opportunity", CreateReferral: "referral", CreateLead: "lead"}
_UPDATES = {
    PatchReferral: "referral",
    WriteCrmId: "referral",
    WriteOpportunity: "opportunity",
    CloseOpportunity: "opportunity",
    WriteContact: "contact",
    AdoptOpportunity: "opportunity",
}


async def _dry_run(ctx: Context, jobs: list[SyncJob], concurrency: int) -> dict[str, Any]:
    """Each job planned by the engine (no write); what it would create, update or refuse."""
    engine = await ctx.engine(dry_run=True)
    progress: Progress = ctx.out.progress("plan", len(jobs))
    limit = asyncio.Semaphore(concurrency)
    planned: list[dict[str, Any] | None] = [None] * len(jobs)

    async def one(n: int, job: SyncJob) -> None:
        async with limit:
            try:
                planned[n] = _would(job, await engine.sync(job, dry_run=True))
            except CosellError as exc:
                planned[n] = {"action": "unknown", "kind": job.kind, "id": str(job.id),
                              "referral_id": None, "opportunity_id": None,
                              "what": f"could not plan: {type(exc).__name__}"}  # fmt: skip
            progress.advance()

    await asyncio.gather(*(one(n, job) for n, job in enumerate(jobs)))
    progress.finish()
    rows: list[dict[str, Any]] = []
    pairs: set[tuple[str | None, str | None]] = set()
    unchanged = 0
    for row in planned:
        if row is None or row["action"] == "none":
            unchanged += 1
            continue
        pair = (row["referral_id"], row["opportunity_id"])
        if pair != (None, None) and pair in pairs:
            continue  # the same pair, planned from its other side
        pairs.add(pair)
        rows.append(row)
    order = {"create": 0, "update": 1, "refuse": 2, "unknown": 3}
    rows.sort(key=lambda r: (order.get(r["action"], 9), r["kind"], r["id"]))
    return {"would": rows, "unchanged": unchanged}


def _would(job: SyncJob, result: SyncResult) -> dict[str, Any]:
    """One planned sync as a row: create / update / refuse / none, and what."""
    created = [what for step in result.steps for kind, what in _CREATES.items()
               if isinstance(step, kind)]  # fmt: skip
    updated = sorted({what for step in result.steps for kind, what in _UPDATES.items()
                      if isinstance(step, kind)})  # fmt: skip
    fields = result.plan
    changes = []
    if fields is not None:
        if fields.to_crm:
            changes.append("CRM: " + ", ".join(sorted(fields.to_crm)))
        if fields.to_pc:
            changes.append("Partner Center: " + ", ".join(sorted(fields.to_pc)))
    if created:
        action, what = "create", "create " + " and ".join(dict.fromkeys(created))
    elif result.outcome == "error":
        action, what = "refuse", "; ".join(result.problems)
    elif updated or changes:
        action, what = "update", "; ".join(changes) or "update " + ", ".join(updated)
    else:
        action, what = "none", str(result.outcome)
    return {
        "action": action,
        "kind": job.kind,
        "id": str(job.id),
        "referral_id": result.referral_id,
        "opportunity_id": result.opportunity_id,
        "what": what,
    }


def _dry_run_summary(ctx: Context, document: dict[str, Any]) -> None:
    out = ctx.out
    rows = document["would"]
    counts = Counter(r["action"] for r in rows)
    pairs: list[tuple[str, Any]] = [("direction", document["direction"])]
    if document["since"]:
        pairs.append(("since", document["since"]))
    pairs += [(f"found {what}", n) for what, n in document["found"].items()]
    pairs += [(f"would {action}", counts.get(action, 0)) for action in ("create", "update")]
    pairs += [("would be refused", counts.get("refuse", 0)), ("unchanged", document["unchanged"])]
    out.pairs(pairs, title="Backfill (dry run: nothing written, nothing enqueued)")
    out.line()
    out.table(
        [(r["action"], r["kind"], r["id"], r["referral_id"] if r["kind"] == "opportunity"
          else r["opportunity_id"], r["what"]) for r in rows],
        ("would", "kind", "id", "other side", "what"),
        title="What the backfill would do",
        empty="(nothing: every record is in sync)",
    )  # fmt: skip


def _summary(ctx: Context, document: dict[str, Any]) -> None:
    out = ctx.out
    rows: list[tuple[str, Any]] = [("direction", document["direction"])]
    if document["since"]:
        rows.append(("since", document["since"]))
    rows += [(f"found {what}", n) for what, n in document["found"].items()]
    if "enqueued" in document:
        rows.append(("jobs enqueued to sync-jobs", document["enqueued"]))
    else:
        rows += [(f"outcome {name}", n) for name, n in document["outcomes"].items()]
    out.pairs(rows, title="Backfill")
    failures = document.get("failures") or []
    if failures:
        out.line()
        out.table(
            [(f["kind"], f["id"], "; ".join(f["problems"])) for f in failures[:MAX_FAILURES_SHOWN]],
            ("kind", "id", "problem"),
            title=f"Failures ({len(failures)})",
        )
        if len(failures) > MAX_FAILURES_SHOWN:
            out.line(f"  ... and {len(failures) - MAX_FAILURES_SHOWN} more (see --json)")
    if "enqueued" in document:
        out.line()
        out.line("The app's workers run the jobs; follow them with `cosell status`.")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
