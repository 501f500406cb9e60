"""Traces (issue 18), with the functions run in-process against Azurite and both emulators and
their spans recorded in memory: one trace from a Partner Center webhook to the Dataverse write
of the referral's opportunity, the traceparent in the job and in the history row, the poll's
and the Dataverse push's spans, and no personal data in any span."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import azure.functions as func
import pytest
from azure.functions.timer import TimerRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, format_span_id, format_trace_id

import function_app
from shared.jobs import decode_job
from shared.telemetry import (
    ATTR_OPPORTUNITY_ID,
    ATTR_OUTCOME,
    ATTR_PC_REQUEST_ID,
    ATTR_REFERRAL_ID,
    ATTRIBUTES,
    SPAN_APPLY,
    SPAN_DATAVERSE_WEBHOOK,
    SPAN_PC_WEBHOOK,
    SPAN_PLAN,
    SPAN_POLL,
    SPAN_READ,
    SPAN_SYNC_JOB,
    trace_id_of,
)
from tests.partner_center.payloads import PRIVATE_DEAL, cosell_deal
from tests.tracing import ancestors, named, one, recording, texts

from .conftest import App
from .test_dataverse_webhook import context
from .test_dataverse_webhook import deliver as push
from .test_sync_job import message

DEAL_NAME = "Fabrikam - Azure migration for Ana Example"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with recording() as exporter:
        yield exporter


async def new_referral(app: App) -> str:
    """Microsoft's co-sell referral (no opportunity yet), with the fixture's people in it."""
    incoming = cosell_deal(name=DEAL_NAME)
    del incoming["externalReferenceId"]
    async with app.control() as control:
        response = await control.post("/_emulator/microsoft/referrals", json=incoming)
        assert response.status_code == 201
        return str(response.json()["id"])


async def webhook(referral_id: str) -> int:
    body = {
        "EventName": "referral-created",
        "ResourceUri": f"https://api.partnercenter.microsoft.com/engagements/v1/referrals/{referral_id}",
        "ResourceName": "referral",
        "ResourceChangeUtcDate": "2026-11-27T10:00:39.5485487+00:00",
    }
    request = func.HttpRequest(
        method="POST", url="/api/webhooks/partner-center", body=json.dumps(body).encode()
    )
    return (await function_app.partner_center_webhook(request)).status_code


async def run_queued_job(app: App) -> str:
    """What the host does with the one queued message: call the function, delete it; returns
    the message text."""
    [queued] = [m async for m in app.jobs_queue.receive_messages()]
    await function_app.sync_job(message(str(queued.content)))
    await app.jobs_queue.delete_message(queued)
    return str(queued.content)


async def webhook_to_dataverse(app: App, spans: InMemorySpanExporter) -> tuple[str, str]:
    referral_id = await new_referral(app)
    assert await webhook(referral_id) == 202
    text = await run_queued_job(app)
    return referral_id, text


async def test_one_trace_from_the_webhook_to_the_dataverse_write_of_one_referral(
    app: App, spans: InMemorySpanExporter
) -> None:
    referral_id, text = await webhook_to_dataverse(app, spans)
    finished = spans.get_finished_spans()

    received = one(finished, SPAN_PC_WEBHOOK)
    assert received.attributes is not None
    assert received.attributes[ATTR_REFERRAL_ID] == referral_id
    assert received.attributes[ATTR_OUTCOME] == "enqueued"
    trace_id = received.context.trace_id

    # The job carried the webhook span's traceparent ...
    job = decode_job(text)
    assert job.traceparent is not None
    assert job.traceparent[:52] == (
        f"00-{format_trace_id(trace_id)}-{format_span_id(received.context.span_id)}"
    )
    # ... so the worker's span continues that trace, as the webhook span's child.
    worker = one(finished, SPAN_SYNC_JOB)
    assert worker.kind is SpanKind.CONSUMER
    assert worker.context.trace_id == trace_id
    assert worker.parent is not None and worker.parent.span_id == received.context.span_id
    assert worker.attributes is not None
    assert worker.attributes[ATTR_REFERRAL_ID] == referral_id
    assert worker.attributes[ATTR_OUTCOME] == "created"
    assert worker.attributes["cosell.remote_calls"] > 0
    opportunity_id = worker.attributes[ATTR_OPPORTUNITY_ID]
    assert uuid.UUID(str(opportunity_id))

    # The three stages are the worker's children, the apply names the ids and its steps.
    for stage in (SPAN_READ, SPAN_PLAN, SPAN_APPLY):
        [found] = named(finished, stage)
        assert found.context.trace_id == trace_id
        assert worker in ancestors(found, finished)
    applied = one(finished, SPAN_APPLY)
    assert applied.attributes is not None
    assert applied.attributes[ATTR_REFERRAL_ID] == referral_id
    assert "CreateOpportunity" in str(applied.attributes["cosell.steps"])

    # The Dataverse POST of the opportunity is a dependency span of the same trace, under the
    # apply stage, the worker and the webhook.
    [post] = [s for s in finished if s.name == "Dataverse POST opportunities"]
    assert post.kind is SpanKind.CLIENT
    assert post.context.trace_id == trace_id
    chain = ancestors(post, finished)
    assert chain[0] is applied
    assert worker in chain and received in chain
    assert post.attributes is not None
    assert post.attributes["peer.service"] == "Dataverse"
    assert post.attributes["http.method"] == "POST"
    assert post.attributes["http.status_code"] in (201, 204)
    # Every call of the sync is in the trace: Partner Center's too, with its request id.
    pc_calls = [s for s in finished if s.name.startswith("Partner Center ")]
    assert pc_calls and all(s.context.trace_id == trace_id for s in pc_calls)
    assert all(s.attributes and s.attributes.get(ATTR_PC_REQUEST_ID) for s in pc_calls)

    # The history row keeps the trace and Partner Center's request id, for support.
    [row] = await app.runtime.history().list_entries(referral_id)
    assert row.outcome == "created"
    assert trace_id_of(row.trace_parent) == format_trace_id(trace_id)
    assert row.pc_request_id in {str(s.attributes.get(ATTR_PC_REQUEST_ID)) for s in pc_calls}


def _people_and_values() -> list[str]:
    """The referral fixture's personal data and free text: none may reach a span."""
    customer = PRIVATE_DEAL["customerProfile"]
    people = [*customer["team"], *PRIVATE_DEAL["team"]]
    return [
        "Fabrikam",
        "Ana Example",
        customer["name"],
        customer["address"]["addressLine1"],
        customer["address"]["city"],
        *(p["email"] for p in people),
        *(p["phoneNumber"] for p in people),
        *(p["lastName"] for p in people),
        "Need an Azure architect",  # the invite's notes
        "120000",  # the deal value
    ]


async def test_no_span_holds_personal_data_of_the_referral(
    app: App, spans: InMemorySpanExporter
) -> None:
    await webhook_to_dataverse(app, spans)
    finished = spans.get_finished_spans()
    assert len(finished) > 10

    forbidden = _people_and_values()
    for span in finished:
        sent = " | ".join(texts(span))
        leaked = [word for word in forbidden if word.lower() in sent.lower()]
        assert not leaked, f"{span.name} holds {leaked}: {sent}"
        # URLs go without query (a $filter quotes names) and without non-GUID keys.
        for key in ("http.url", "url.full"):
            url = str((span.attributes or {}).get(key, ""))
            assert "?" not in url and "'" not in url and "%27" not in url, url


def test_the_app_sets_only_its_own_attributes() -> None:
    assert all(a.startswith(("cosell.", "messaging.", "http.", "peer.")) for a in ATTRIBUTES)


async def test_app_spans_carry_only_listed_attributes(
    app: App, spans: InMemorySpanExporter
) -> None:
    await webhook_to_dataverse(app, spans)
    http_semconv = ("http.", "url.", "server.", "net.", "network.", "error.", "user_agent.")
    for span in spans.get_finished_spans():
        for key in span.attributes or {}:
            listed = key in ATTRIBUTES or key in ("error.type", "peer.service")
            assert listed or key.startswith(http_semconv) or key.startswith("cosell.pc."), (
                span.name,
                key,
            )


async def test_a_poll_is_one_trace_with_its_queries_and_its_jobs_carry_it(
    app: App, spans: InMemorySpanExporter
) -> None:
    await app.runtime.dataverse().create(
        "opportunities", {"name": "Flagged deal", "cosell_syncwithpartnercenter": True}
    )
    spans.clear()

    await function_app.poll_dataverse(TimerRequest(past_due=False))

    finished = spans.get_finished_spans()
    poll = one(finished, SPAN_POLL)
    assert poll.attributes is not None and poll.attributes["cosell.enqueued"] == 1
    queries = [s for s in finished if s.name.startswith("Dataverse GET ")]
    assert queries and all(poll in ancestors(q, finished) for q in queries)
    [job] = await app.jobs()
    assert trace_id_of(job.traceparent) == format_trace_id(poll.context.trace_id)


async def test_a_dataverse_push_names_its_opportunity_and_its_job_continues_the_trace(
    app: App, spans: InMemorySpanExporter
) -> None:
    status, _ = await push(
        context(),
        **{"x-ms-dynamics-entity-name": "opportunity", "x-ms-dynamics-request-name": "Update"},
    )
    assert status == 202

    received = one(spans.get_finished_spans(), SPAN_DATAVERSE_WEBHOOK)
    assert received.attributes is not None
    assert received.attributes[ATTR_OPPORTUNITY_ID] == context()["PrimaryEntityId"]
    assert received.attributes["cosell.reason"] == "webhook:dataverse-update"
    assert received.attributes[ATTR_OUTCOME] == "enqueued"
    [job] = await app.jobs()
    assert trace_id_of(job.traceparent) == format_trace_id(received.context.trace_id)


async def test_a_job_without_traceparent_starts_its_own_trace(
    app: App, spans: InMemorySpanExporter
) -> None:
    referral_id = await new_referral(app)
    old_style = json.dumps(
        {
            "kind": "referral",
            "id": referral_id,
            "reason": "reconcile",
            "observed_at": "2026-11-27T10:00:00Z",
        }
    )

    await function_app.sync_job(message(old_style))

    worker = one(spans.get_finished_spans(), SPAN_SYNC_JOB)
    assert worker.parent is None
    assert worker.attributes is not None and worker.attributes[ATTR_OUTCOME] == "created"
