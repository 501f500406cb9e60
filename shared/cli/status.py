"""``cosell status``: the ``/api/health`` report as tables, plus links counted by sync status."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from azure.core.exceptions import AzureError, ResourceNotFoundError

from shared.cli._context import Context
from shared.cli._parser import add_command
from shared.health import check_health
from shared.runtime import Runtime
from shared.state import LINKS_TABLE


def add_parser(commands: Any) -> None:
    add_command(
        commands,
        "status",
        help="show health: queue and poison depth, cursor ages, problems, links by sync status",
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
    links = await _links_by_status(ctx)
    document = report.model_dump(mode="json")
    document["links"] = links
    out = ctx.out
    if out.json_mode:
        out.json(document)
        return 0 if report.status == "healthy" else 1
    out.pairs(
        [
            ("status", report.status),
            ("version", report.version),
            ("checked at", report.checked_at),
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
    # Fields the health report may gain later are shown too, rather than silently dropped.
    shown = {"status", "version", "checked_at", "queues", "cursors", "problems"}
    extra = [(key, value) for key, value in document.items() if key not in shown | {"links"}]
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
    out.table([(p,) for p in report.problems], ("problem",), title="Problems")
    return 0 if report.status == "healthy" else 1


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


async def _links_by_status(ctx: Context) -> dict[str, int]:
    """How many links ended their last sync synced / error / pending (one partition scan of
    one small column; no personal data is read)."""
    counts: Counter[str] = Counter()
    table = ctx.tables().get_table_client(LINKS_TABLE)
    try:
        async with table:
            async for entity in table.query_entities(
                "PartitionKey eq @pk", parameters={"pk": "ref"}, select=["LastResult"]
            ):
                counts[_last_status(entity.get("LastResult"))] += 1
    except ResourceNotFoundError:
        return {}
    except AzureError:
        return {}  # check_health already reported that storage did not answer
    return dict(sorted(counts.items()))


def _last_status(raw: object) -> str:
    if not raw:
        return "never synced"
    try:
        value = json.loads(str(raw))
    except ValueError:
        return "unknown"
    return str(value.get("status", "unknown")) if isinstance(value, dict) else "unknown"
