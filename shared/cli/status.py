"""``cosell status``: the ``/api/health`` report as tables — with the stored out-of-sync counts
(``shared.drift``) — plus links counted by sync status and the newest sync errors (from the
links' last results)."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

from azure.core.exceptions import AzureError

from shared.cli._context import Context
from shared.cli._parser import add_command
from shared.dataverse import DataverseError
from shared.drift import KINDS
from shared.errors import CosellError
from shared.health import HealthReport, check_health
from shared.runtime import Runtime
from shared.state import LINKS_TABLE

LAST_ERRORS = 5


def add_parser(commands: Any) -> None:
    add_command(
        commands,
        "status",
        help="show health: queue and poison depth, cursor ages, problems, links by sync "
        "status and the last sync errors",
        examples=("cosell status", "cosell status --json | jq .queues"),
        notes="Exit status 0 when healthy, 1 when degraded (the problems say why).",
        handler=run,
    )


async def run(ctx: Context) -> int:
    runtime = Runtime.from_settings(ctx.settings)
    try:
        report = await check_health(runtime)
    finally:
        await runtime.close()
    links, errors = await _links_by_status(ctx)
    dataverse = await _dataverse_reachable(ctx)
    document = report.model_dump(mode="json")
    document["links"] = links
    document["last_errors"] = errors
    document["dataverse"] = dataverse
    healthy = report.status == "healthy" and dataverse["reachable"]
    out = ctx.out
    if out.json_mode:
        out.json(document)
        return 0 if healthy else 1
    out.pairs(
        [
            ("status", report.status),
            ("version", report.version),
            ("checked at", report.checked_at),
            ("dataverse", dataverse["detail"]),
        ],
        title="Co-sell Sync",
    )
    out.line()
    out.table(
        [(name, depth) for name, depth in report.queues.items()],
        ("queue", "messages"),
        title="Queues",
        empty="(storage did not answer)",
    )
    out.line()
    out.table(
        [
            (name, cursor.watermark, _age(cursor.age_seconds))
            for name, cursor in sorted(report.cursors.items())
        ],
        ("cursor", "watermark", "last moved"),
        title="Cursors",
        empty="(none yet: the timers have not run)",
    )
    out.line()
    _drift(ctx, report)
    # Fields the health report may gain later are shown too, rather than silently dropped.
    shown = {"status", "version", "checked_at", "queues", "cursors", "problems", "drift"}
    extra = [(k, v) for k, v in document.items() if k not in shown | {"links", "last_errors"}]
    if extra:
        out.line()
        out.pairs([(k, json.dumps(v) if isinstance(v, dict | list) else v) for k, v in extra])
    out.line()
    out.table(
        [(state, count) for state, count in links.items()],
        ("last sync", "links"),
        title="Links by sync status",
        empty="(no links yet)",
    )
    out.line()
    out.table(
        [(e["at"], e["referral_id"], e["message"]) for e in errors],
        ("at", "referral", "last error"),
        title="Last sync errors",
    )
    out.line()
    problems = [*report.problems, *([] if dataverse["reachable"] else [dataverse["detail"]])]
    out.table([(p,) for p in problems], ("problem",), title="Problems")
    return 0 if healthy else 1


async def _dataverse_reachable(ctx: Context) -> dict[str, Any]:
    """One ``WhoAmI``: health checks tokens and storage but calls no API, so an environment
    that is down, or an application user that was removed, shows here (the CLI's own check;
    the health endpoint stays cheap)."""
    if not ctx.settings.dataverse_url:
        return {"reachable": False, "detail": "not checked: DATAVERSE_URL is not set"}
    started = time.monotonic()
    try:
        me = await (await ctx.dataverse()).who_am_i()
    except (DataverseError, CosellError, OSError) as exc:
        return {"reachable": False, "detail": f"Dataverse did not answer WhoAmI: {exc}"}
    ms = (time.monotonic() - started) * 1000
    return {
        "reachable": True,
        "detail": f"reachable (WhoAmI {ms:.0f} ms, application user {me.user_id})",
        "ms": round(ms),
    }


def _drift(ctx: Context, report: HealthReport) -> None:
    """The stored out-of-sync counts (``shared.drift``), by kind."""
    found = report.drift
    if found is None:
        ctx.out.line("Out of sync: not counted yet (the reconcile timer, or `cosell drift`)")
        return
    ctx.out.table(
        [
            (info.title, found.counts.get(kind, 0), found.settled.get(kind, 0))
            for kind, info in KINDS.items()
        ],
        ("out of sync", "count", "settled"),
        title=f"Out of sync (counted {_age(found.age_seconds)} by {found.source or '?'}; "
        "`cosell drift` lists them)",
    )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


async def _links_by_status(ctx: Context) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """How many links ended their last sync synced / error / pending, and the newest errors
    (one scan of the link partition, reading only the last-result column)."""
    counts: Counter[str] = Counter()
    errors: list[dict[str, Any]] = []
    table = ctx.tables().get_table_client(LINKS_TABLE)
    try:
        async with table:
            async for entity in table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": "ref"}, select=["RowKey", "LastResult"]
            ):
                result = _last_result(entity.get("LastResult")) or {"status": "never synced"}
                status = str(result.get("status", "unknown"))
                counts[status] += 1
                if status in ("error", "failed"):
                    errors.append(
                        {
                            "referral_id": entity.get("RowKey"),
                            "at": result.get("at"),
                            "message": result.get("message", ""),
                        }
                    )
    except AzureError:  # no table yet, or storage down (check_health reports that)
        return {}, []
    errors.sort(key=lambda e: str(e["at"] or ""), reverse=True)
    return dict(sorted(counts.items())), errors[:LAST_ERRORS]


def _last_result(raw: object) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        value = json.loads(str(raw))
    except ValueError:
        return {"status": "unknown"}
    return value if isinstance(value, dict) else {"status": "unknown"}
