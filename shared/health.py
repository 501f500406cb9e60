"""The health report behind ``GET /api/health`` and ``cosell status`` (SPEC section 3).

Healthy (200) when settings load, storage answers, nothing waits in the poison queue and no
cursor has stalled; degraded (503) otherwise, with every problem named in ``problems``.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Literal

from azure.core.exceptions import AzureError, ResourceNotFoundError
from pydantic import BaseModel, Field

from shared import __version__
from shared.errors import SettingsError
from shared.jobs import POISON_QUEUE, SYNC_JOBS_QUEUE
from shared.ncrontab import parse_schedule
from shared.runtime import Runtime, get_runtime
from shared.settings import Settings

# A cursor that has not moved for this many timer periods means its timer stopped or fails.
STALL_PERIODS = 3
CURSOR_SCHEDULES = {
    "poll_dataverse": "dataverse_poll_schedule",
    "reconcile_partner_center": "partner_center_reconcile_schedule",
}


class CursorHealth(BaseModel):
    watermark: datetime
    age_seconds: float | None


class HealthReport(BaseModel):
    status: Literal["healthy", "degraded"]
    version: str = __version__
    checked_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    cursors: dict[str, CursorHealth] = Field(default_factory=dict)
    queues: dict[str, int] = Field(default_factory=dict)
    problems: list[str] = Field(default_factory=list)

    @property
    def http_status(self) -> int:
        return 200 if self.status == "healthy" else 503

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json"), indent=2)


async def check_health(
    runtime: Runtime | None = None, *, now: datetime | None = None
) -> HealthReport:
    """Build the report (cursor ages as of ``now``); never raises for a problem it can name."""
    problems: list[str] = []
    try:
        runtime = runtime or get_runtime()
    except SettingsError as exc:
        return HealthReport(status="degraded", problems=[str(exc)])
    queues: dict[str, int] = {}
    cursors: dict[str, CursorHealth] = {}
    try:
        async with asyncio.timeout(10):
            jobs, poison = await asyncio.gather(
                runtime.jobs.get_depth(), runtime.poison.get_depth()
            )
            queues = {SYNC_JOBS_QUEUE: jobs, POISON_QUEUE: poison}
            cursors = await _cursors(runtime, problems, now or datetime.now(UTC))
    except (AzureError, TimeoutError) as exc:
        problems.append(f"storage did not answer: {type(exc).__name__}")
    if queues.get(POISON_QUEUE):
        problems.append(
            f"{queues[POISON_QUEUE]} job(s) in {POISON_QUEUE}: see `cosell poison list`"
        )
    return HealthReport(
        status="degraded" if problems else "healthy",
        cursors=cursors,
        queues=queues,
        problems=problems,
    )


async def _cursors(runtime: Runtime, problems: list[str], now: datetime) -> dict[str, CursorHealth]:
    try:
        found = await runtime.cursors().list_cursors()
    except ResourceNotFoundError:  # table not created yet: no timer has run
        return {}
    result: dict[str, CursorHealth] = {}
    for cursor in found:
        age = cursor.age_seconds(now)
        result[cursor.name] = CursorHealth(watermark=cursor.watermark, age_seconds=age)
        limit = _stall_limit(runtime.settings, cursor.name, now)
        if age is not None and limit is not None and age > limit:
            problems.append(
                f"cursor {cursor.name} has not moved for {age:.0f}s "
                f"(more than {STALL_PERIODS} timer periods)"
            )
    return result


def _stall_limit(settings: Settings, name: str, now: datetime) -> float | None:
    field = CURSOR_SCHEDULES.get(name)
    if field is None:
        return None
    schedule = parse_schedule(str(getattr(settings, field)))
    first = schedule.next_after(now)
    period = (schedule.next_after(first) - first).total_seconds()
    return STALL_PERIODS * period + 60
