"""The health report behind ``GET /api/health`` and ``cosell status`` (SPEC section 3).

Healthy (200) when settings load, storage answers, nothing waits in the poison queue, no
cursor has stalled and nothing settled is out of sync; degraded (503) otherwise, with every
problem named in ``problems``.

The out-of-sync counts (``drift``) are not computed here: health must stay cheap (a load
balancer may call it every few seconds), and finding drift reads every referral and flagged
opportunity. The ``reconcile_partner_center`` timer (and ``cosell drift``) computes them with
``shared.drift`` and stores a small summary row; health reads that row (one point read) and
reports its counts and age. Changes younger than the summary's grace were in flight when it
was computed and do not degrade health; validation failures, which wait on a seller, are
counted but do not degrade it either.
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
from shared.drift import load_summary
from shared.errors import CosellError, SettingsError
from shared.failures import last_failure
from shared.jobs import POISON_QUEUE, SYNC_JOBS_QUEUE, decode_job
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


class DriftHealth(BaseModel):
    """The stored drift summary (``shared.drift``), as health reports it."""

    checked_at: datetime
    age_seconds: float
    counts: dict[str, int]
    settled: dict[str, int]
    source: str = ""


class HealthReport(BaseModel):
    status: Literal["healthy", "degraded"]
    version: str = __version__
    checked_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    cursors: dict[str, CursorHealth] = Field(default_factory=dict)
    queues: dict[str, int] = Field(default_factory=dict)
    tokens: dict[str, str] = Field(default_factory=dict)
    last_error: str | None = None
    drift: DriftHealth | None = None  # None until the first scan
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
    out_of_sync: DriftHealth | None = None
    moment = now or datetime.now(UTC)
    try:
        async with asyncio.timeout(10):
            jobs, poison = await asyncio.gather(
                runtime.jobs.get_depth(), runtime.poison.get_depth()
            )
            queues = {SYNC_JOBS_QUEUE: jobs, POISON_QUEUE: poison}
            cursors = await _cursors(runtime, problems, moment)
            out_of_sync = await _drift(runtime, problems, moment)
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
        drift=out_of_sync,
        problems=problems,
    )


async def _drift(runtime: Runtime, problems: list[str], now: datetime) -> DriftHealth | None:
    """The stored drift summary (one point read); its settled counts name the problems."""
    try:
        summary = await load_summary(runtime.cursors())
    except ResourceNotFoundError:  # table not created yet: nothing has run
        return None
    if summary is None:
        return None
    problems.extend(summary.problems())
    return DriftHealth(
        checked_at=summary.checked_at,
        age_seconds=max(0.0, (now - summary.checked_at).total_seconds()),
        counts=summary.counts,
        settled=summary.settled,
        source=summary.source,
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
    """The reason of the oldest poisoned message: the one the worker wrote in a malformed
    message's envelope, or for a job the host poisoned after its retries (its copy carries
    none) the failure the engine recorded at its last attempt (``shared.failures``)."""
    text = await runtime.poison.peek_first()
    if text is None:
        return None
    try:
        body = json.loads(base64.b64decode(text))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(body, dict) or "body" not in body:
        said = f"a job failed {MAX_ATTEMPTS} times"
        try:
            job = decode_job(json.dumps(body))
            entry = await last_failure(runtime.links(), runtime.history(), job)
        except (CosellError, AzureError):
            entry = None
        if entry is not None and entry.failure is not None:
            return f"{said}: {entry.failure.summary}"[:300]
        return f"{said}; see `cosell poison list` and `cosell history`"
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
