"""shared.telemetry (issue 18): the set-up's three modes, the attribute rules, clean URLs, the
``traceparent`` of jobs, and retries and 429s as events on a call's dependency span."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import format_span_id, format_trace_id

from shared.dataverse._throttle import AdaptiveThrottle, ThrottledTransport
from shared.jobs import JobQueue, SyncJob, decode_job
from shared.retry import RetryPolicy, RetryTransport
from shared.telemetry import (
    ATTR_OUTCOME,
    ATTR_REFERRAL_ID,
    DATAVERSE,
    EVENT_RETRY,
    EVENT_THROTTLED,
    PARTNER_CENTER,
    annotate,
    continued_from,
    current_traceparent,
    route_of,
    safe_url,
    span,
    trace_id_of,
    traced,
    traced_transport,
    valid_traceparent,
)
from tests.tracing import one, recording

ROOT = Path(__file__).resolve().parents[2]
GUID = "5d3a2b10-7c4e-4f6a-9b8c-0123456789ab"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    with recording() as exporter:
        yield exporter


async def _no_sleep(_: float) -> None:
    return None


# -- attributes ---------------------------------------------------------------------------------


def test_span_sets_listed_attributes_and_refuses_others(spans: InMemorySpanExporter) -> None:
    with span("sync_job", referral_id=GUID, outcome=None, steps=("CreateOpportunity",)):
        annotate(outcome="created", remote_calls=3, conflicts=0)
    recorded = one(spans.get_finished_spans(), "sync_job")
    assert dict(recorded.attributes or {}) == {
        ATTR_REFERRAL_ID: GUID,
        "cosell.steps": ("CreateOpportunity",),
        ATTR_OUTCOME: "created",
        "cosell.remote_calls": 3,
        "cosell.conflicts": 0,
    }
    with pytest.raises(ValueError, match="customer_name"), span("sync_job", customer_name="x"):
        pass


def test_a_failed_span_records_the_error_type_not_its_message(
    spans: InMemorySpanExporter,
) -> None:
    with pytest.raises(KeyError), span("sync.apply"):
        raise KeyError("Fabrikam Ltd, ana@example.com")
    recorded = one(spans.get_finished_spans(), "sync.apply")
    assert recorded.status.description == "KeyError"
    assert recorded.events == ()  # no exception event: its message would quote the record
    assert "Fabrikam" not in json.dumps(dict(recorded.attributes or {}))


async def test_traced_names_the_handler_span_and_counts_what_it_enqueued(
    spans: InMemorySpanExporter,
) -> None:
    class Report:
        enqueued = 4

    @traced("poll_dataverse")
    async def poll() -> Report:
        return Report()

    await poll()
    recorded = one(spans.get_finished_spans(), "poll_dataverse")
    assert (recorded.attributes or {})["cosell.enqueued"] == 4


def test_without_a_provider_nothing_is_recorded_and_no_traceparent_is_made() -> None:
    with span("sync_job", referral_id=GUID) as current:
        assert not current.is_recording()
        assert current_traceparent() is None


# -- URLs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "cleaned", "route"),
    [
        (
            "https://contoso.crm.dynamics.com/api/data/v9.2/accounts?$filter=name eq 'Fabrikam'",
            "https://contoso.crm.dynamics.com/api/data/v9.2/accounts",
            "accounts",
        ),
        (
            f"https://contoso.crm.dynamics.com/api/data/v9.2/opportunities({GUID})?$select=name",
            f"https://contoso.crm.dynamics.com/api/data/v9.2/opportunities({GUID})",
            "opportunities(…)",
        ),
        (
            "https://contoso.crm.dynamics.com/api/data/v9.2/contacts(emailaddress1='a@example.com')",
            "https://contoso.crm.dynamics.com/api/data/v9.2/contacts(…)",
            "contacts(…)",
        ),
        (
            f"https://api.partner.microsoft.com/v1.0/engagements/referrals/{GUID}",
            f"https://api.partner.microsoft.com/v1.0/engagements/referrals/{GUID}",
            "referrals/(…)",
        ),
        (
            "https://user:secret@api.partnercenter.microsoft.com/webhooks/v1/registration",
            "https://api.partnercenter.microsoft.com/webhooks/v1/registration",
            "registration",
        ),
    ],
    ids=["filter", "guid-key", "alternate-key", "pc-referral", "credentials"],
)
def test_urls_are_recorded_without_query_credentials_or_alternate_keys(
    url: str, cleaned: str, route: str
) -> None:
    assert safe_url(url) == cleaned
    assert route_of(url) == route


# -- traceparent --------------------------------------------------------------------------------


def test_traceparent_is_validated_and_its_trace_id_read() -> None:
    assert valid_traceparent(TRACEPARENT.upper()) == TRACEPARENT
    for bad in ("", "00-xyz", "00-" + "0" * 32 + "-00f067aa0ba902b7-01", 42, None):
        assert valid_traceparent(bad) is None
    assert trace_id_of(TRACEPARENT) == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace_id_of(None) is None
    assert continued_from(None) is None and continued_from(TRACEPARENT) is not None


def test_a_job_carries_an_optional_traceparent_and_old_messages_decode() -> None:
    old = '{"kind":"referral","id":"%s","reason":"poll","observed_at":"2026-11-27T10:00:00Z"}'
    job = decode_job(old % GUID)
    assert job.traceparent is None
    assert job.to_json() == old % GUID  # no traceparent key: older workers read it too

    traced_job = job.model_copy(update={"traceparent": TRACEPARENT})
    assert json.loads(traced_job.to_json())["traceparent"] == TRACEPARENT
    assert decode_job(traced_job.to_json()) == traced_job

    # Only for correlation: a malformed one is dropped, not a reason to poison the job.
    odd = json.loads(old % GUID) | {"traceparent": "not-a-traceparent"}
    assert decode_job(json.dumps(odd)).traceparent is None


class _FakeQueue:
    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send_message(self, content: str, *, visibility_timeout: int | None = None) -> None:
        self.sent.append(content)

    async def close(self) -> None:
        return None


async def test_enqueue_stamps_the_current_span_s_traceparent(
    spans: InMemorySpanExporter,
) -> None:
    fake = _FakeQueue()
    queue = JobQueue(fake)  # type: ignore[arg-type]
    job = SyncJob(kind="referral", id=GUID, reason="poll", observed_at=datetime.now(UTC))  # type: ignore[arg-type]

    await queue.enqueue(job)  # outside any span: as before
    with span("poll_dataverse") as current:
        await queue.enqueue(job)
        context = current.get_span_context()

    plain, stamped = (decode_job(text) for text in fake.sent)
    assert plain.traceparent is None
    assert stamped.traceparent is not None
    assert stamped.traceparent.startswith(
        f"00-{format_trace_id(context.trace_id)}-{format_span_id(context.span_id)}-"
    )


# -- dependency spans, retries and 429s ---------------------------------------------------------


async def test_retries_are_events_on_the_call_s_one_dependency_span(
    spans: InMemorySpanExporter,
) -> None:
    answers = iter(
        [
            httpx.Response(503, headers={"Retry-After": "2"}),
            httpx.Response(500),
            httpx.Response(200, json={}, headers={"request-id": "pc-42"}),
        ]
    )
    inner = httpx.MockTransport(lambda request: next(answers))
    retry = RetryTransport(inner, RetryPolicy(sleep=_no_sleep, base_delay=0.25, jitter=0))
    async with httpx.AsyncClient(transport=traced_transport(retry, PARTNER_CENTER)) as client:
        response = await client.get(
            f"https://api.partner.microsoft.com/v1.0/engagements/referrals/{GUID}",
            headers={"client-request-id": "ours-1"},
        )
    assert response.status_code == 200

    [call] = spans.get_finished_spans()
    assert call.name == "Partner Center GET referrals/(…)"
    attributes = dict(call.attributes or {})
    assert attributes["cosell.pc.request_id"] == "pc-42"
    assert attributes["cosell.pc.client_request_id"] == "ours-1"
    assert attributes["peer.service"] == PARTNER_CENTER
    retries = [dict(e.attributes or {}) for e in call.events if e.name == EVENT_RETRY]
    assert retries == [
        {"attempt": 1, "status": 503, "delay_s": 2.0, "retry_after_s": 2.0},
        {"attempt": 2, "status": 500, "delay_s": 0.5},
    ]


async def test_a_connection_error_retry_names_the_error_type(
    spans: InMemorySpanExporter,
) -> None:
    calls = 0

    def flaky(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200)

    retry = RetryTransport(httpx.MockTransport(flaky), RetryPolicy(sleep=_no_sleep, jitter=0))
    async with httpx.AsyncClient(transport=traced_transport(retry, DATAVERSE)) as client:
        await client.get("https://contoso.crm.dynamics.com/api/data/v9.2/WhoAmI")

    [call] = spans.get_finished_spans()
    [event] = call.events
    assert (event.name, dict(event.attributes or {})) == (
        EVENT_RETRY,
        {"attempt": 1, "error": "ConnectError", "delay_s": 0.5},
    )


async def test_a_dataverse_429_is_a_throttled_event_then_a_retry(
    spans: InMemorySpanExporter,
) -> None:
    answers = iter([httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(200)])
    throttle = AdaptiveThrottle(8)
    inner = ThrottledTransport(httpx.MockTransport(lambda request: next(answers)), throttle)
    retry = RetryTransport(inner, RetryPolicy(sleep=_no_sleep, jitter=0))
    async with httpx.AsyncClient(transport=traced_transport(retry, DATAVERSE)) as client:
        await client.get("https://contoso.crm.dynamics.com/api/data/v9.2/opportunities")

    [call] = spans.get_finished_spans()
    assert call.name == "Dataverse GET opportunities"
    assert [e.name for e in call.events] == [EVENT_THROTTLED, EVENT_RETRY]
    throttled = dict(call.events[0].attributes or {})
    assert throttled == {"status": 429, "retry_after_s": 0.0, "limit": 4, "throttled": 1}
    assert dict(call.events[1].attributes or {})["status"] == 429


# -- set-up -------------------------------------------------------------------------------------


def _configure_in_a_new_process(
    env: dict[str, str], then: str = ""
) -> subprocess.CompletedProcess[str]:
    """``configure_telemetry`` sets the process-wide provider once: each mode in its own process."""
    code = textwrap.dedent(
        """
        from shared.telemetry import configure_telemetry, span
        print(configure_telemetry())
        """
    ) + textwrap.dedent(then)
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "APPLICATIONINSIGHTS_"))
    }
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


def test_telemetry_is_off_without_a_connection_string_or_a_console_switch() -> None:
    ran = _configure_in_a_new_process(
        {}, "with span('sync_job') as s:\n    print(s.is_recording())\n"
    )
    assert ran.stdout.split() == ["off", "False"]


def test_the_console_switch_prints_spans_on_stderr() -> None:
    ran = _configure_in_a_new_process(
        {"OTEL_TRACES_EXPORTER": "console"},
        f"with span('sync_job', referral_id='{GUID}'):\n    pass\n",
    )
    assert ran.stdout.split() == ["console"]
    printed = json.loads(ran.stderr[ran.stderr.index("{") :])
    assert printed["name"] == "sync_job"
    assert printed["attributes"][ATTR_REFERRAL_ID] == GUID


def test_a_connection_string_configures_azure_monitor_without_its_global_httpx_patch() -> None:
    ran = _configure_in_a_new_process(
        {
            "APPLICATIONINSIGHTS_CONNECTION_STRING": (
                "InstrumentationKey=00000000-0000-0000-0000-000000000000;"
                "IngestionEndpoint=http://127.0.0.1:9/"
            ),
        },
        """
        from opentelemetry import trace
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        print(isinstance(trace.get_tracer_provider(), TracerProvider))
        print(HTTPXClientInstrumentor().is_instrumented_by_opentelemetry)
        import os
        os._exit(0)  # skip the exporters' flush to the unreachable endpoint
        """,
    )
    assert ran.stdout.split() == ["azure_monitor", "True", "False"]
