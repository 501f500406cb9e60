"""``cosell history ID``: the syncs of one deal, newest first.

History rows are keyed by referral id, or by opportunity id while a deal has no referral yet
(SPEC 5), so an opportunity id is resolved to its referral and both keys are read. Each row
names its trace id and Partner Center's request id, the ids support asks for (issue 18).
"""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import ResourceNotFoundError

from shared.cli._context import Context
from shared.cli._output import cell
from shared.cli._parser import add_command
from shared.cli.sync import DIRECTIONS, guid
from shared.state import HistoryEntry
from shared.telemetry import trace_id_of

_ARROWS = dict(DIRECTIONS.values())


def add_parser(commands: Any) -> None:
    parser = add_command(
        commands,
        "history",
        help="show the sync history of one deal (referral or opportunity id), newest first",
        examples=(
            "cosell history 6f1f8a5e-3d4c-4b2a-9e8f-000000000001",
            "cosell history 6f1f8a5e-3d4c-4b2a-9e8f-000000000001 --limit 5 --json",
        ),
        handler=run,
    )
    parser.add_argument("id", metavar="ID", type=guid, help="a referral id or an opportunity id")
    parser.add_argument("--limit", type=int, default=20, help="how many syncs to show (default 20)")


async def run(ctx: Context) -> int:
    args, out = ctx.args, ctx.out
    limit = max(1, args.limit)
    links = ctx.links()
    referral_id: str | None = None
    opportunity_id: str | None = None
    try:
        link = await links.get_link_by_opportunity(args.id)
        if link is not None:
            referral_id, opportunity_id = link.referral_id, link.opportunity_id
        else:
            link = await links.get_link(args.id)
            if link is not None:
                referral_id, opportunity_id = link.referral_id, link.opportunity_id
    except ResourceNotFoundError:
        link = None
    keys = [k for k in dict.fromkeys((referral_id, opportunity_id, args.id)) if k]
    store = ctx.history()
    entries: list[HistoryEntry] = []
    for key in keys:
        try:
            entries += await store.list_entries(key, limit=limit)
        except ResourceNotFoundError:
            break  # no history table yet: nothing has synced
    entries.sort(key=lambda e: e.at, reverse=True)
    entries = entries[:limit]
    document = {
        "id": args.id,
        "referral_id": referral_id,
        "opportunity_id": opportunity_id,
        "entries": entries,
    }
    if out.json_mode:
        out.json(document)
        return 0
    out.pairs(
        [("referral", referral_id or "-"), ("opportunity", opportunity_id or "-")],
        title=f"History of {args.id}" + ("" if link else " (no link found)"),
    )
    out.line()
    out.table(
        [
            (
                e.at,
                e.outcome,
                e.reason,
                _ARROWS.get(e.direction, e.direction),
                "; ".join(
                    f"{c.field}: {cell(c.old, width=20)} → {cell(c.new, width=20)}"
                    for c in e.changes
                ),
                "; ".join(e.conflicts + e.errors),
                e.duration_ms,
                e.remote_calls,
                _support_ids(e),
            )
            for e in entries
        ],
        (
            "at",
            "outcome",
            "reason",
            "direction",
            "changes",
            "conflicts/errors",
            "ms",
            "calls",
            "trace / PC request id",
        ),
        title=f"Syncs, newest first ({len(entries)})",
        empty="(no syncs recorded)",
    )
    return 0


def _support_ids(entry: HistoryEntry) -> str:
    """The ids to hand to support: the trace id (App Insights' operation_Id) and Partner
    Center's request id (of the failed call, else of the sync's last call)."""
    request_id = (entry.failure.request_id if entry.failure else None) or entry.pc_request_id
    ids = [trace_id_of(entry.trace_parent) or "-", request_id or "-"]
    return " / ".join(ids) if any(i != "-" for i in ids) else "-"
