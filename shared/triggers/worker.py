"""``sync_job``: run the engine for one ``sync-jobs`` message (SPEC 3, SPEC 7).

Three endings, so that a job never loses an update:

* the engine completes → the function returns and the host deletes the message;
* the engine raises (a transient failure) → the engine has recorded why (``shared.failures``:
  a history row per failed attempt, the link's last result), the exception propagates, the
  host makes the message visible again after ``visibilityTimeout`` and moves it to
  ``sync-jobs-poison`` after ``maxDequeueCount`` attempts (host.json; reference:
  azure-functions-platform §2.1) — its copy of the job carries no reason, so ``cosell poison
  list`` looks the recorded one up by the job's ids;
* the message is not a job at all → retrying cannot help, so it goes to ``sync-jobs-poison`` at
  once with the reason, and the function returns normally (no crash loop);
* the engine defers (another sync holds the lease on a creation) → the job is queued again,
  invisible until the lease expires, and the function returns: waiting costs no dequeue, so
  it never pushes the job towards the poison queue.

The run is a ``sync_job`` span (CONSUMER) that continues the trace of the job's ``traceparent``
(the webhook's, the poll's or the reconcile's span that enqueued it), linked to the host's
invocation when the host gave one; its attributes are the job's ids, reason, delivery count,
outcome, remote calls and conflicts (``shared.telemetry``).
"""

from __future__ import annotations

import json
import logging
import math
from datetime import datetime

from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind

from shared.errors import JobDecodeError
from shared.jobs import SyncJob, decode_job
from shared.runtime import Runtime, get_runtime
from shared.telemetry import SPAN_SYNC_JOB, continued_from, set_attributes, span

logger = logging.getLogger(__name__)

# A queue message holds 64 KiB of base64, i.e. 48 KiB of UTF-8 JSON: the original text is cut
# until the envelope fits; what is kept is enough to see what went wrong.
MAX_ENVELOPE_BYTES = 48 * 1024 - 256
MAX_REASON_CHARS = 4096
MAX_DEFER_S = 7 * 24 * 3600  # the Queue service's longest visibility timeout


async def run_sync_job(
    body: bytes | str,
    *,
    message_id: str | None = None,
    dequeue_count: int | None = None,
    insertion_time: datetime | None = None,
    runtime: Runtime | None = None,
) -> None:
    """Decode and run one job; raises what the engine raises (the host retries)."""
    runtime = runtime or get_runtime()
    try:
        job = decode_job(body)
    except JobDecodeError as exc:
        with span(SPAN_SYNC_JOB, kind=SpanKind.CONSUMER, message_id=message_id, outcome="poisoned"):
            await poison(runtime, body, exc.reason)
        logger.warning(
            "sync_job: message %s is not a job, moved to sync-jobs-poison: %s",
            message_id,
            exc.reason,
            extra={"message_id": message_id, "poison_reason": exc.reason},
        )
        return
    parent = continued_from(job.traceparent)
    host = trace.get_current_span().get_span_context()
    with span(
        SPAN_SYNC_JOB,
        kind=SpanKind.CONSUMER,
        parent=parent,
        # The host's invocation (in Azure) stays reachable from the continued trace.
        links=[Link(host)] if parent is not None and host.is_valid else [],
        job_kind=job.kind,
        job_id=str(job.id),
        referral_id=str(job.id) if job.kind == "referral" else None,
        opportunity_id=str(job.id) if job.kind == "opportunity" else None,
        reason=str(job.reason),
        delivery=dequeue_count,
        message_id=message_id,
    ) as current:
        await _run(runtime, job, message_id, dequeue_count, insertion_time, current)


async def _run(
    runtime: Runtime,
    job: SyncJob,
    message_id: str | None,
    dequeue_count: int | None,
    insertion_time: datetime | None,
    current: Span,
) -> None:
    await runtime.ensure_storage()
    context = {
        "message_id": message_id,
        "dequeue_count": dequeue_count,
        "job_kind": job.kind,
        "job_id": str(job.id),
        "reason": str(job.reason),
    }
    try:
        result = await runtime.engine().sync(
            job, enqueued_at=insertion_time, delivery=dequeue_count
        )
    except Exception as exc:
        # The engine has recorded why (a history row, the link's last result: what `cosell
        # poison list` shows once the host gives up). Ids and the error type only here: error
        # messages of the clients may quote record data.
        logger.warning(
            "sync_job: %s %s (%s) failed on attempt %s with %s; the host will retry it",
            job.kind,
            job.id,
            job.reason,
            dequeue_count,
            type(exc).__name__,
            extra=context,
        )
        raise
    if result.outcome == "deferred":
        # A little past the lease's end, so the retry finds it expired (or the work done).
        delay = min(MAX_DEFER_S, math.ceil(result.retry_after or 0) + 1)
        await runtime.jobs.enqueue(job, visibility_timeout=delay)
        context["deferred_s"] = delay
    set_attributes(
        current,
        outcome=result.outcome,
        referral_id=result.referral_id,
        opportunity_id=result.opportunity_id,
        remote_calls=result.remote_calls,
        conflicts=len(result.plan.conflicts) if result.plan is not None else 0,
        problems=len(result.problems),
    )
    logger.info(
        "sync_job: %s %s (%s) -> %s in %d ms with %d remote calls",
        job.kind,
        job.id,
        job.reason,
        result.outcome,
        result.duration_ms,
        result.remote_calls,
        extra={
            **context,
            "outcome": result.outcome,
            "duration_ms": result.duration_ms,
            "remote_calls": result.remote_calls,
            "problems": len(result.problems),
        },
    )


async def poison(runtime: Runtime, body: bytes | str, reason: str) -> None:
    """Put ``{"reason": ..., "body": <original text>}`` on ``sync-jobs-poison`` (base64, as the
    host writes poison messages), creating the queue if needed, like the host does."""
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    await runtime.ensure_storage()
    await runtime.poison_queue.send_message(envelope(reason, text))


def envelope(reason: str, text: str) -> str:
    """The poison message; the body is cut (and the reason says so) if it would not fit."""
    reason = reason[:MAX_REASON_CHARS]
    message = json.dumps({"reason": reason, "body": text}, ensure_ascii=False)
    keep = len(text)
    while len(message.encode()) > MAX_ENVELOPE_BYTES:
        # JSON escapes and multi-byte characters make the size per character vary: halve.
        keep //= 2
        message = json.dumps(
            {"reason": f"{reason} (body cut to {keep} characters)", "body": text[:keep]},
            ensure_ascii=False,
        )
    return message
