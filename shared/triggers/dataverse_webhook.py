"""``dataverse_webhook``: Dataverse's push of a changed opportunity or solution row (SPEC 3).

Dataverse posts the ``RemoteExecutionContext`` of each committed Create/Update/Delete to the
service endpoint that ``cosell webhook register`` made (reference:
dataverse-push-and-webhook-trust §1; Microsoft's docs ``use-webhooks``, ``register-web-hook``).
The push carries no signature: the endpoint's ``WebhookKey`` authentication sends the function
key as ``?code=``, and the Functions host refuses a missing or wrong key with 401 before this
code runs (auth level FUNCTION; the sandbox host compares keys in constant time as Azure does).

The push is a hint, never the truth: it becomes one ``opportunity`` job per opportunity it names
(a solution row names its opportunity through its lookup, in ``Target`` or, for an Update that
did not change it and for a Delete, in the ``pre`` image the step registers), and the engine
reads the rows itself. Checks, cheapest first: size (413), the body (400: not JSON, no GUID, a
table or message this app does not sync), then the echo tests that keep our own writes free of
remote calls — the push was initiated by the application user (``WhoAmI``, asked once per
process), or the link already holds the pushed row's version — then one queue write. The
answer is 202 within milliseconds; ``poll_dataverse`` stays as the safety net for lost pushes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from uuid import UUID

from azure.core.exceptions import AzureError

from shared.crm_schema import CrmSchema, crm_schema
from shared.dataverse import (
    MAX_CONTEXT_BYTES,
    RemoteContextError,
    RemoteExecutionContext,
    parse_remote_context,
)
from shared.errors import CosellError, SettingsError
from shared.jobs import SyncJob
from shared.runtime import Runtime, get_runtime
from shared.telemetry import SPAN_DATAVERSE_WEBHOOK, annotate, span
from shared.triggers.echo import Seen, is_echo
from shared.triggers.webhook import ENQUEUE_DEADLINE_S, WebhookAnswer, log_answer

logger = logging.getLogger(__name__)

# The messages the registered steps push (and the opportunity's close messages, should a
# customer add steps for them); each becomes the job reason ``webhook:dataverse-<message>``.
MESSAGES = frozenset({"create", "update", "delete", "win", "lose"})


async def handle_dataverse_push(
    body: bytes, headers: Mapping[str, str], *, runtime: Runtime | None = None
) -> WebhookAnswer:
    """Check one push and enqueue its jobs; never raises for bad input."""
    started = time.perf_counter()
    with span(SPAN_DATAVERSE_WEBHOOK):
        answer = await _handle(body, headers, runtime)
        annotate(outcome=answer.outcome, status=answer.status)
    log_answer(logger, "dataverse_webhook", answer, body_bytes=len(body), started=started)
    return answer


async def _handle(
    body: bytes, headers: Mapping[str, str], runtime: Runtime | None
) -> WebhookAnswer:
    if len(body) > MAX_CONTEXT_BYTES:
        return WebhookAnswer(413, f"the body is larger than {MAX_CONTEXT_BYTES} bytes", "too_large")
    try:
        context = parse_remote_context(body, headers)
    except RemoteContextError as exc:
        return WebhookAnswer(exc.status, str(exc), "invalid_push")
    try:
        runtime = runtime or get_runtime()
    except SettingsError as exc:
        logger.error("dataverse_webhook: the app settings are wrong: %s", exc)
        return WebhookAnswer(503, "the service is not configured; retry later", "not_configured")
    schema = crm_schema(runtime.settings.crm_column_prefix)
    message = context.message_name.lower()
    if message not in MESSAGES:
        return WebhookAnswer(
            400, f"the message {context.message_name!r} is not synced", "invalid_push"
        )
    if context.primary_entity_name not in ("opportunity", schema.solution.logical_name):
        return WebhookAnswer(
            400, f"the table {context.primary_entity_name!r} is not synced", "invalid_push"
        )
    opportunities = opportunities_named(context, schema)
    annotate(
        opportunity_id=str(opportunities[0]) if len(opportunities) == 1 else None,
        opportunity_ids=[str(o) for o in opportunities] if len(opportunities) > 1 else None,
        reason=f"webhook:dataverse-{message}",
    )
    if not opportunities:
        # A solution row without its lookup (size exceeded, or not attached): nothing to sync
        # by push; a later edit of the opportunity, or the poll, carries it.
        return WebhookAnswer(202, "no opportunity named; nothing to sync", "no_opportunity")
    initiator = context.initiating_user_id
    if initiator is not None and initiator == await runtime.application_user_id():
        return WebhookAnswer(202, "our own write; nothing to sync", "echo")
    key = ("dataverse", context.operation_id, context.primary_entity_id, message)
    if context.operation_id is not None and not runtime.recent_events.add(key):
        return WebhookAnswer(202, "duplicate push; already queued", "duplicate")
    reason = f"webhook:dataverse-{message}"
    observed = _observed_at(context)
    try:
        # Dataverse waits for the answer (60 s, reference §1.1): a storage account that hangs
        # gets a 503, and Dataverse's one retry, within seconds.
        async with asyncio.timeout(ENQUEUE_DEADLINE_S):
            await runtime.ensure_storage()
            fresh = [o for o in opportunities if not await _covered(runtime, context, o)]
            jobs = [
                SyncJob(kind="opportunity", id=o, reason=reason, observed_at=observed)
                for o in fresh
            ]
            if jobs:
                await runtime.jobs.enqueue_many(jobs)
    except (AzureError, TimeoutError) as exc:
        runtime.recent_events.discard(key)
        logger.error("dataverse_webhook: enqueue failed: %s", type(exc).__name__)
        # A 503 makes Dataverse try once more (reference §1.1: 502/503/504 are retried).
        return WebhookAnswer(
            503, "the push could not be queued; retry later", "storage_unavailable"
        )
    annotate(enqueued=len(jobs))
    if not jobs:
        return WebhookAnswer(202, "already synced; nothing to do", "echo")
    logger.info(
        "dataverse_webhook enqueued %d opportunity job(s) (%s %s)",
        len(jobs),
        context.message_name,
        context.primary_entity_name,
        extra={"job_ids": [str(j.id) for j in jobs], "reason": reason},
    )
    return WebhookAnswer(202, "accepted", "enqueued", enqueued=True)


def opportunities_named(context: RemoteExecutionContext, schema: CrmSchema) -> list[UUID]:
    """The opportunities a push is about: the row itself, or the solution row's opportunity —
    both of them when an Update moved the row from one opportunity to another (pre image and
    Target), so the one it left drops it too."""
    if context.primary_entity_name == "opportunity":
        return [context.primary_entity_id]
    lookup = schema.solution_opportunity.logical_name
    found: dict[UUID, None] = {}
    for entity in context.entities():
        opportunity = entity.lookup_id(lookup)
        if opportunity is not None:
            found[opportunity] = None
    return list(found)


def _observed_at(context: RemoteExecutionContext) -> datetime:
    target = context.target
    modified = target.modified_on() if target is not None else None
    return modified or context.operation_created_on or datetime.now(UTC)


async def _covered(runtime: Runtime, context: RemoteExecutionContext, opportunity: UUID) -> bool:
    """The link already holds the pushed row's version: our write, or a repeated push. A
    Delete leaves no version behind, so it is never covered."""
    target = context.target
    modified = target.modified_on() if target is not None else None
    if target is None or modified is None or context.message_name.lower() == "delete":
        return False
    kind = "opportunity" if context.primary_entity_name == "opportunity" else "solutions"
    try:
        return await is_echo(
            runtime.links(), str(opportunity), {kind: Seen(modified, target.version())}
        )
    except (AzureError, CosellError) as exc:
        logger.warning("dataverse_webhook: link unreadable (%s); enqueued", type(exc).__name__)
        return False
