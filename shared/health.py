"""The health report behind ``GET /api/health`` and ``cosell status`` (SPEC section 3).

Healthy (200) when settings load, storage answers, nothing waits in the poison queue and no
cursor has stalled; degraded (503) otherwise, with every problem named in ``problems``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
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
MAX_ATTEMPTS = 5  # host.json maxDequeueCount
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
    tokens: dict[str, str] = Field(default_factory=dict)
    last_error: str | None = None
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
    last_error = None
    if queues.get(POISON_QUEUE):
        problems.append(
            f"{queues[POISON_QUEUE]} job(s) in {POISON_QUEUE}: see `cosell poison list`"
        )
        last_error = await _poison_reason(runtime)
    tokens = await _tokens(runtime, problems)
    return HealthReport(
        status="degraded" if problems else "healthy",
        cursors=cursors,
        queues=queues,
        tokens=tokens,
        last_error=last_error,
        problems=problems,
    )


async def _tokens(runtime: Runtime, problems: list[str]) -> dict[str, str]:
    """Whether each SaaS token can be had now (cached tokens answer at once)."""
    status: dict[str, str] = {}
    checks = (("partner_center", runtime.partner_center), ("dataverse", runtime.dataverse))
    for name, client in checks:
        try:
            async with asyncio.timeout(10):
                await client().check_token()
            status[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any auth failure is reported, not raised
            status[name] = f"failed: {type(exc).__name__}"
            problems.append(f"{name} token: {exc}"[:300])
    return status


async def _poison_reason(runtime: Runtime) -> str | None:
    """The reason of the oldest poisoned message, when the worker recorded one (a malformed
    message's envelope); a job the host poisoned after its retries carries none."""
    text = await runtime.poison.peek_first()
    if text is None:
        return None
    try:
        body = json.loads(base64.b64decode(text))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(body, dict) or "body" not in body:
        return f"a job failed {MAX_ATTEMPTS} times; see `cosell poison list` and `cosell history`"
    reason = body.get("reason")
    return str(reason)[:300] if isinstance(reason, str) else None


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
