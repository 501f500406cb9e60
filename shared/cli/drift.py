"""``cosell drift``: what is out of sync right now (SPEC 10), a thin call into ``shared.drift``.

It also stores the counts it found as the summary ``/api/health`` reads (the
``reconcile_partner_center`` timer refreshes it too), so health agrees with what was just seen.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from azure.core.exceptions import AzureError

from shared import drift
from shared.cli._context import Context
from shared.cli._parser import add_command
from shared.wiring import cursor_store

MAX_SHOWN = 50  # items per kind in the table (--json has all)


def add_parser(commands: Any) -> None:
    parser = add_command(
        commands,
        "drift",
        help="list what is out of sync now: referrals without opportunities, flagged "
        "opportunities without referrals, validation failures, lagging pairs, refusals, "
        "failed jobs",
        examples=(
            "cosell drift",
            "cosell drift --json | jq '.counts'",
            "cosell drift --kind referral_without_opportunity --json",
        ),
        notes="Reads every referral, every opportunity with the sync flag on and the link "
        "table (paged list queries, no call per record). Changes younger than --grace are in "
        "flight and listed, but not counted against health. The counts are stored for "
        "/api/health and `cosell status`. Exit status 0 when nothing settled is out of sync "
        "(validation failures, which wait on a seller, do not count), 1 otherwise.",
        handler=run,
    )
    parser.add_argument(
        "--kind",
        choices=list(drift.KINDS),
        action="append",
        metavar="KIND",
        help="only this kind (repeatable): " + ", ".join(drift.KINDS),
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=drift.GRACE.total_seconds(),
        metavar="SECONDS",
        help=f"changes younger than this are in flight (default {drift.GRACE.total_seconds():g})",
    )


async def run(ctx: Context) -> int:
    args, out = ctx.args, ctx.out
    grace = timedelta(seconds=max(0.0, args.grace))
    report = await drift.find_drift(
        pc=await ctx.partner_center(),
        dataverse=await ctx.dataverse(),
        links=ctx.links(),
        settings=ctx.settings,
    )
    summary = report.summary(grace=grace, source="cosell drift")
    try:
        store = cursor_store(ctx.tables())
        ctx.stack.push_async_callback(store.close)
        await store.create_table()
        await drift.save_report(store, report, summary)  # the dashboard's list too
    except AzureError as exc:  # the listing stands; health keeps its last summary
        out.note(f"the counts were not stored for /api/health: {type(exc).__name__}")
    kinds = set(args.kind or drift.KINDS)
    items = [i for i in report.items if i.kind in kinds]
    cutoff = report.checked_at - grace
    failing = any(
        n and drift.KINDS[kind].degrades and kind in kinds  # type: ignore[index]
        for kind, n in summary.settled.items()
    )
    if out.json_mode:
        out.json(
            {
                "checked_at": report.checked_at,
                "read": report.read,
                "counts": summary.counts,
                "settled": summary.settled,
                "grace_s": summary.grace_s,
                "items": [
                    {**i.model_dump(mode="json"), "in_flight": _in_flight(i, cutoff)} for i in items
                ],
            }
        )
        return 1 if failing else 0
    out.table(
        [
            (drift.KINDS[kind].title, summary.counts[kind], summary.settled[kind])
            for kind in drift.KINDS
            if kind in kinds
        ],
        ("out of sync", "now", f"older than {grace.total_seconds():g}s"),
        title=f"Drift at {report.checked_at.isoformat(timespec='seconds')} ("
        + ", ".join(f"{n} {what}" for what, n in report.read.items())
        + " read)",
    )
    for kind, info in drift.KINDS.items():
        listed = [i for i in items if i.kind == kind]
        if not listed:
            continue
        out.line()
        out.table(
            [
                (
                    i.referral_id,
                    i.opportunity_id,
                    i.name,
                    i.since,
                    ("(in flight) " if _in_flight(i, cutoff) else "") + i.detail,
                )
                for i in listed[:MAX_SHOWN]
            ],
            ("referral", "opportunity", "name", "since", "detail"),
            title=f"{info.title} ({len(listed)}): {info.meaning}",
        )
        if len(listed) > MAX_SHOWN:
            out.line(f"  ... and {len(listed) - MAX_SHOWN} more (see --json)")
        out.line(f"  what to do: {info.what_to_do}")
    return 1 if failing else 0


def _in_flight(item: drift.DriftItem, cutoff: Any) -> bool:
    return item.since is not None and item.since > cutoff
