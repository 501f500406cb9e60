"""``partner_center_webhook``: check a Partner Center event and enqueue one job (SPEC 3, 8).

The order of the checks is the cheapest first and never lets unchecked input cause work:
size (413), signature when ``WEBHOOK_SIGNATURE_MODE=verify`` (401; 400 without the certificate-URL
or algorithm header), then the body's JSON schema, ``ResourceName``, ``EventName`` and the GUID at
the end of ``ResourceUri`` (400). The
``ResourceUri`` itself is never fetched (no SSRF): the job carries only the id, and the engine
calls the configured Partner Center URL with it. Partner Center is never called here, so the
answer takes one queue write.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import httpx
from azure.core.exceptions import AzureError
from pydantic import ValidationError

from shared.errors import SettingsError
from shared.jobs import SyncJob
from shared.partner_center import (
    MAX_EVENT_BYTES,
    SignatureError,
    WebhookEventError,
    WebhookEventName,
    parse_webhook_event,
)
from shared.runtime import Runtime, get_runtime
from shared.telemetry import SPAN_PC_WEBHOOK, annotate, span

logger = logging.getLogger(__name__)
ENQUEUE_DEADLINE_S = 5.0  # storage must take the job within this, or the answer is 503


@dataclass(frozen=True)
class WebhookAnswer:
    """The HTTP answer: status, a message for the caller, whether a job was enqueued, and
    ``outcome``, a fixed word for the log (the message may quote the caller's input)."""

    status: int
    message: str
    outcome: str
    enqueued: bool = False

    def to_json(self) -> str:
        return json.dumps({"message": self.message, "enqueued": self.enqueued})


async def handle_webhook(
    body: bytes, headers: Mapping[str, str], *, runtime: Runtime | None = None
) -> WebhookAnswer:
    """Validate one callback and enqueue its job; never raises for bad input."""
    started = time.perf_counter()
    with span(SPAN_PC_WEBHOOK):
        answer = await _handle(body, headers, runtime)
        annotate(outcome=answer.outcome, status=answer.status, enqueued=int(answer.enqueued))
    log_answer(logger, "webhook", answer, body_bytes=len(body), started=started)
    return answer


def log_answer(
    log_to: logging.Logger, function: str, answer: WebhookAnswer, *, body_bytes: int, started: float
) -> None:
    """One line per answer of an HTTP trigger: status, outcome and sizes only — the body is the
    caller's and the headers carry its credentials."""
    log = log_to.info if answer.status < 400 else log_to.warning
    log(
        "%s answered %s (%s)",
        function,
        answer.status,
        answer.outcome,
        extra={
            "status": answer.status,
            "outcome": answer.outcome,
            "enqueued": answer.enqueued,
            "body_bytes": body_bytes,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )


async def _handle(
    body: bytes, headers: Mapping[str, str], runtime: Runtime | None
) -> WebhookAnswer:
    if len(body) > MAX_EVENT_BYTES:
        return WebhookAnswer(413, f"the body is larger than {MAX_EVENT_BYTES} bytes", "too_large")
    try:
        runtime = runtime or get_runtime()
    except SettingsError as exc:
        logger.error("webhook: the app settings are wrong: %s", exc)
        return WebhookAnswer(503, "the service is not configured; retry later", "not_configured")
    if runtime.settings.webhook_signature_mode == "verify":
        refused = await _verify(runtime, body, headers)
        if refused is not None:
            return refused
    try:
        event = parse_webhook_event(body)
    except WebhookEventError as exc:
        return WebhookAnswer(
            exc.status, str(exc), "too_large" if exc.status == 413 else "invalid_event"
        )
    name = str(event.event_name)
    if name == WebhookEventName.TEST_CREATED:
        # Partner Center's registration check (reference §4.1): acknowledge, sync nothing.
        return WebhookAnswer(202, "test event received", "test_event")
    referral_id = str(uuid.UUID(event.resource_id or ""))  # parse_webhook_event checked it
    annotate(referral_id=referral_id, job_kind="referral", job_id=referral_id)
    changed_at = event.resource_change_utc_date
    try:
        job = SyncJob.model_validate(
            {
                "kind": "referral",
                "id": referral_id,
                "reason": f"webhook:{name}",
                "observed_at": changed_at or datetime.now(UTC),
            }
        )
        annotate(reason=str(job.reason))
    except ValidationError:
        return WebhookAnswer(400, "the event cannot be turned into a sync job", "invalid_event")
    return await _enqueue(runtime, job, dedupe=changed_at is not None)


async def _verify(
    runtime: Runtime, body: bytes, headers: Mapping[str, str]
) -> WebhookAnswer | None:
    try:
        verifier = runtime.webhook_verifier()
        await verifier.verify(body, headers)
    except SignatureError as exc:
        # 401, or 400 for a missing certificate-URL or algorithm header (Microsoft's sample).
        return WebhookAnswer(exc.status, f"signature not verified: {exc}", "bad_signature")
    except SettingsError as exc:
        # Fail closed, as for any signature that cannot be verified (SPEC 8: 401); without
        # trusted roots only reconcile_partner_center brings Partner Center changes in.
        logger.warning("webhook: signature verification is not configured: %s", exc)
        return WebhookAnswer(
            401, "signature not verified: verification is not configured", "not_configured"
        )
    except httpx.HTTPError as exc:
        # The certificate host did not answer: a 5xx makes Partner Center deliver again.
        logger.warning("webhook: signing certificate unavailable: %s", type(exc).__name__)
        return WebhookAnswer(
            503,
            "the signing certificate could not be downloaded; retry later",
            "certificate_unavailable",
        )
    return None


async def _enqueue(runtime: Runtime, job: SyncJob, *, dedupe: bool) -> WebhookAnswer:
    # Partner Center retries deliveries and may send one change more than once (reference
    # §4.3): the same referral and change time within a few seconds is enqueued once.
    key = (job.id, job.observed_at)
    if dedupe and not runtime.recent_events.add(key):
        return WebhookAnswer(202, "duplicate event; already queued", "duplicate")
    try:
        # Partner Center waits for the answer: a storage account that hangs gets a 503 (and
        # Partner Center's retry) within seconds, not the SDK's whole retry budget.
        async with asyncio.timeout(ENQUEUE_DEADLINE_S):
            await runtime.ensure_storage()
            await runtime.jobs.enqueue(job)
    except (AzureError, TimeoutError) as exc:
        runtime.recent_events.discard(key)
        logger.error("webhook: enqueue failed: %s", type(exc).__name__)
        return WebhookAnswer(
            503, "the event could not be queued; retry later", "storage_unavailable"
        )
    logger.info(
        "webhook enqueued referral %s (%s)",
        job.id,
        job.reason,
        extra={"job_kind": job.kind, "job_id": str(job.id), "reason": str(job.reason)},
    )
    return WebhookAnswer(202, "accepted", "enqueued", enqueued=True)
