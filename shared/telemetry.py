"""Traces (issue 18): OpenTelemetry spans from the webhook or poll to the last Dataverse write.

**Set-up** (``configure_telemetry``, one line in ``function_app.py``), chosen by app settings:

* ``APPLICATIONINSIGHTS_CONNECTION_STRING`` set → the Azure Monitor distro
  (``azure-monitor-opentelemetry``) exports spans, the app's own log records (``shared.*``,
  their ``extra=`` fields as custom dimensions) and metrics to Application Insights. Its global
  httpx instrumentation is switched off: the two SaaS clients wrap their own transports
  (``traced_transport``), so every URL is cleaned before it is recorded. If the Python worker
  has already configured the distro (``PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=true``),
  that provider is used as it is. host.json's ``"telemetryMode": "OpenTelemetry"`` makes the
  Functions host emit OpenTelemetry too (Flex Consumption); ``PYTHON_ENABLE_OPENTELEMETRY=true``
  lets the worker hand the host's trace context to each invocation (docs/operate.md).
* else ``OTEL_TRACES_EXPORTER=console`` (the OpenTelemetry SDK's own variable) → spans are
  printed as JSON on stderr: the sandbox's switch (``OTEL_TRACES_EXPORTER=console make up``).
* else → off: the OpenTelemetry API's no-op tracer, nothing is recorded or sent.

**Spans** (names in ``SPAN_*``, attributes in ``ATTR_*``): each function's trigger, each sync
stage, and one dependency span per Partner Center or Dataverse call, with retries and 429s as
its events. Attributes are ids, counts, fixed words and statuses only — never a name, an
e-mail, an amount or any text from a CRM or Partner Center row (SPEC 8): ``span`` accepts
only the ``ATTR_*`` keys and scalar values, and URLs lose their query (a ``$filter`` quotes
customers) and every key in parentheses that is not a GUID.

**Correlation**: a job carries the W3C ``traceparent`` of the span that enqueued it
(``shared.jobs``), the worker's span continues that trace, and the history row keeps it with
Partner Center's request id, so ``cosell history ID`` names both for support.
"""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final, ParamSpec, TypeVar
from urllib.parse import urlsplit

import httpx
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACER_NAME: Final = "cosell"
CONNECTION_STRING_SETTING: Final = "APPLICATIONINSIGHTS_CONNECTION_STRING"
EXPORTER_SETTING: Final = "OTEL_TRACES_EXPORTER"  # "console": the sandbox's switch
APP_LOGGER: Final = "shared"  # the records the distro exports: the app's own

# Span names: one per function, one per sync stage (the dependency spans are named
# "<service> <METHOD> <path template>", e.g. "Dataverse POST opportunities").
SPAN_PC_WEBHOOK: Final = "partner_center_webhook"
SPAN_DATAVERSE_WEBHOOK: Final = "dataverse_webhook"
SPAN_POLL: Final = "poll_dataverse"
SPAN_RECONCILE: Final = "reconcile_partner_center"
SPAN_SYNC_JOB: Final = "sync_job"
SPAN_READ: Final = "sync.read"
SPAN_PLAN: Final = "sync.plan"
SPAN_APPLY: Final = "sync.apply"

# Attributes: ids, counts, fixed words and statuses. Nothing else may be set through ``span``.
ATTR_REFERRAL_ID: Final = "cosell.referral_id"
ATTR_OPPORTUNITY_ID: Final = "cosell.opportunity_id"
ATTR_OPPORTUNITY_IDS: Final = "cosell.opportunity_ids"  # a push naming several opportunities
ATTR_JOB_KIND: Final = "cosell.job.kind"
ATTR_JOB_ID: Final = "cosell.job.id"
ATTR_REASON: Final = "cosell.reason"
ATTR_OUTCOME: Final = "cosell.outcome"
ATTR_STATUS: Final = "http.response.status_code"  # a webhook's answer
ATTR_ENQUEUED: Final = "cosell.enqueued"  # jobs a trigger put on sync-jobs
ATTR_REMOTE_CALLS: Final = "cosell.remote_calls"
ATTR_CONFLICTS: Final = "cosell.conflicts"  # how many fields changed on both sides
ATTR_PROBLEMS: Final = "cosell.problems"  # how many validation problems
ATTR_STEPS: Final = "cosell.steps"  # the plan's step types, e.g. ["CreateOpportunity"]
ATTR_ATTEMPT: Final = "cosell.attempt"  # the engine's restart after a lost race (0 first)
ATTR_DELIVERY: Final = "messaging.message.delivery_count"  # the queue's dequeue count
ATTR_MESSAGE_ID: Final = "messaging.message.id"
ATTR_SERVICE: Final = "peer.service"  # "Partner Center" or "Dataverse"
ATTR_PC_REQUEST_ID: Final = "cosell.pc.request_id"  # Partner Center's request-id header
ATTR_PC_CLIENT_REQUEST_ID: Final = "cosell.pc.client_request_id"  # the one we sent
ATTRIBUTES: Final = frozenset(
    {
        ATTR_REFERRAL_ID,
        ATTR_OPPORTUNITY_ID,
        ATTR_OPPORTUNITY_IDS,
        ATTR_JOB_KIND,
        ATTR_JOB_ID,
        ATTR_REASON,
        ATTR_OUTCOME,
        ATTR_STATUS,
        ATTR_ENQUEUED,
        ATTR_REMOTE_CALLS,
        ATTR_CONFLICTS,
        ATTR_PROBLEMS,
        ATTR_STEPS,
        ATTR_ATTEMPT,
        ATTR_DELIVERY,
        ATTR_MESSAGE_ID,
    }
)

# Span events (on the dependency span of the call they belong to).
EVENT_RETRY: Final = "retry"  # attempt, status or error, delay_s
EVENT_THROTTLED: Final = "throttled"  # status 429, retry_after_s, limit (Dataverse in flight)

_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_GUID_TEXT = re.compile(rf"^\{{?{_GUID}\}}?$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")
_PARENTHESES = re.compile(r"\(([^)]*)\)")
_API_PREFIX = re.compile(r"^/(?:api/data/v\d+(?:\.\d+)*|v\d+(?:\.\d+)*/engagements|webhooks/v\d+)")
_W3C = TraceContextTextMapPropagator()

AttributeValue = str | bool | int | float | Sequence[str]
P = ParamSpec("P")
R = TypeVar("R")

_mode: str | None = None


def configure_telemetry(environ: Mapping[str, str] | None = None) -> str:
    """Set up tracing once per process from the app settings; returns what was chosen:
    ``"azure_monitor"``, ``"console"`` or ``"off"``. Never raises: telemetry must not stop
    the app from starting (a failure leaves it off and says why on stderr)."""
    global _mode
    if _mode is not None:
        return _mode
    env = os.environ if environ is None else environ
    try:
        if env.get(CONNECTION_STRING_SETTING, "").strip():
            _configure_azure_monitor(env[CONNECTION_STRING_SETTING].strip())
            _mode = "azure_monitor"
        elif env.get(EXPORTER_SETTING, "").strip().lower() == "console":
            _configure_console()
            _mode = "console"
        else:
            _mode = "off"
    except Exception as exc:  # noqa: BLE001 - start the app without telemetry, say why
        print(f"telemetry is off: {type(exc).__name__}: {exc}", file=sys.stderr)
        _mode = "off"
    return _mode


def _configure_azure_monitor(connection_string: str) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return  # the worker configured the distro already (PYTHON_APPLICATIONINSIGHTS_...)
    from azure.monitor.opentelemetry import configure_azure_monitor

    configure_azure_monitor(
        connection_string=connection_string,
        logger_name=APP_LOGGER,
        # The clients trace their own transports with clean URLs (traced_transport); the
        # distro's httpx instrumentation would record every request again, query included.
        instrumentation_options={"httpx": {"enabled": False}},
    )


def _configure_console() -> None:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "cosell-sync"}))
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    trace.set_tracer_provider(provider)


_override: trace.TracerProvider | None = None


def provider() -> trace.TracerProvider:
    """The provider spans go to: ``use_provider``'s in a test, else the global one (a no-op
    until ``configure_telemetry`` sets one)."""
    return _override if _override is not None else trace.get_tracer_provider()


@contextmanager
def use_provider(tracer_provider: trace.TracerProvider) -> Iterator[trace.TracerProvider]:
    """Send the app's spans (its own and the clients' dependency spans) to ``tracer_provider``
    inside the block, without touching the process-wide provider (tests: an in-memory one)."""
    global _override
    previous, _override = _override, tracer_provider
    try:
        yield tracer_provider
    finally:
        _override = previous


class _Tracer(trace.Tracer):
    """A tracer that asks ``provider()`` at each span, so that transports built before a
    provider was chosen (or while a test's was in use) trace to the one in force."""

    def __init__(self, name: str, version: str | None, schema_url: str | None) -> None:
        self._args = (name, version, schema_url)
        self._cached: tuple[trace.TracerProvider, trace.Tracer] | None = None

    def _current(self) -> trace.Tracer:
        current = provider()
        if self._cached is None or self._cached[0] is not current:
            name, version, schema_url = self._args
            self._cached = (current, current.get_tracer(name, version, schema_url))
        return self._cached[1]

    def start_span(self, *args: Any, **kwargs: Any) -> Span:
        return self._current().start_span(*args, **kwargs)

    def start_as_current_span(self, *args: Any, **kwargs: Any) -> Any:
        return self._current().start_as_current_span(*args, **kwargs)


class _Provider(trace.TracerProvider):
    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        *args: Any,
        **kwargs: Any,
    ) -> trace.Tracer:
        return _Tracer(instrumenting_module_name, instrumenting_library_version, schema_url)


_PROVIDER: Final = _Provider()


def tracer() -> trace.Tracer:
    """The app's tracer."""
    return _PROVIDER.get_tracer(TRACER_NAME)


def _checked(attributes: Mapping[str, AttributeValue | None]) -> dict[str, AttributeValue]:
    clean: dict[str, AttributeValue] = {}
    for key, value in attributes.items():
        if key not in ATTRIBUTES:
            raise ValueError(f"{key!r} is not a span attribute of this app (shared.telemetry)")
        if value is None:
            continue
        if isinstance(value, str | bool | int | float):
            clean[key] = value
        else:
            clean[key] = [str(v) for v in value]
    return clean


def set_attributes(span: Span, **attributes: AttributeValue | None) -> None:
    """Set app attributes (keyword names: the ``ATTR_*`` constants without ``cosell.``,
    dots as underscores) on a span; ``None`` values are left out."""
    span.set_attributes(_checked(_named(attributes)))


def _named(attributes: Mapping[str, AttributeValue | None]) -> dict[str, AttributeValue | None]:
    unknown = sorted(set(attributes) - set(_KEYWORDS))
    if unknown:
        raise ValueError(f"not span attributes of this app (shared.telemetry): {unknown}")
    return {_KEYWORDS[k]: v for k, v in attributes.items()}


def annotate(**attributes: AttributeValue | None) -> None:
    """``set_attributes`` on the current span (a no-op when nothing is recording)."""
    current = trace.get_current_span()
    if current.is_recording():
        set_attributes(current, **attributes)


_KEYWORDS: Final = {
    "referral_id": ATTR_REFERRAL_ID,
    "opportunity_id": ATTR_OPPORTUNITY_ID,
    "opportunity_ids": ATTR_OPPORTUNITY_IDS,
    "job_kind": ATTR_JOB_KIND,
    "job_id": ATTR_JOB_ID,
    "reason": ATTR_REASON,
    "outcome": ATTR_OUTCOME,
    "status": ATTR_STATUS,
    "enqueued": ATTR_ENQUEUED,
    "remote_calls": ATTR_REMOTE_CALLS,
    "conflicts": ATTR_CONFLICTS,
    "problems": ATTR_PROBLEMS,
    "steps": ATTR_STEPS,
    "attempt": ATTR_ATTEMPT,
    "delivery": ATTR_DELIVERY,
    "message_id": ATTR_MESSAGE_ID,
}


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: otel_context.Context | None = None,
    links: Sequence[Link] = (),
    **attributes: AttributeValue | None,
) -> Iterator[Span]:
    """A span of the app, current inside the block; an exception marks it failed (its type
    only is recorded: the message of a client error may quote record data)."""
    with tracer().start_as_current_span(
        name,
        context=parent,
        kind=kind,
        links=links,
        attributes=_checked(_named(attributes)),
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            current.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
            current.set_attribute("error.type", type(exc).__name__)
            raise


def traced(name: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Run an async trigger handler in a span ``name``; a report with an ``enqueued`` count
    (the poll's, the reconcile's) sets ``cosell.enqueued``."""

    def wrap(handler: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(handler)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            with span(name) as current:
                result = await handler(*args, **kwargs)
                enqueued = getattr(result, "enqueued", None)
                if isinstance(enqueued, int):
                    set_attributes(current, enqueued=enqueued)
                return result

        return run

    return wrap


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or None when nothing is being traced."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent")


def valid_traceparent(value: object) -> str | None:
    """``value`` if it is a well-formed W3C ``traceparent`` (version 00 shape), else None."""
    if isinstance(value, str) and _TRACEPARENT.match(value.strip().lower()):
        text = value.strip().lower()
        if text[3:35] != "0" * 32 and text[36:52] != "0" * 16:
            return text
    return None


def continued_from(traceparent: str | None) -> otel_context.Context | None:
    """The context to start a span in so that it continues ``traceparent``'s trace."""
    if not traceparent:
        return None
    extracted = _W3C.extract({"traceparent": traceparent})
    if not trace.get_current_span(extracted).get_span_context().is_valid:
        return None
    return extracted


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id (App Insights' ``operation_Id``) inside a ``traceparent``."""
    valid = valid_traceparent(traceparent)
    return valid[3:35] if valid else None


def add_event(name: str, **attributes: str | int | float | bool | None) -> None:
    """An event on the current span (the dependency span of the call being retried)."""
    current = trace.get_current_span()
    if current.is_recording():
        current.add_event(name, {k: v for k, v in attributes.items() if v is not None})


# Dependency spans ---------------------------------------------------------------------------


def safe_url(url: str | httpx.URL) -> str:
    """The URL as recorded: scheme, host and path; no query (a ``$filter`` quotes names) and
    no key in parentheses unless it is a GUID (an alternate key's values could be data)."""
    parts = urlsplit(str(url))
    path = _PARENTHESES.sub(
        lambda m: m.group(0) if _GUID_TEXT.match(m.group(1)) else "(…)", parts.path
    )
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}{path}"


def route_of(url: str | httpx.URL) -> str:
    """``/api/data/v9.2/opportunities(6f1f…)`` → ``opportunities(…)``: the span's name part."""
    path = _API_PREFIX.sub("", urlsplit(str(url)).path)
    path = _PARENTHESES.sub("(…)", path)
    path = re.sub(rf"/{_GUID}", "/(…)", path)
    return path.strip("/") or "/"


def _url_of(raw: httpx.URL | tuple[bytes, bytes, int | None, bytes]) -> httpx.URL:
    if isinstance(raw, httpx.URL):
        return raw
    scheme, host, port, target = raw  # the raw (httpcore) form
    netloc = host.decode() + (f":{port}" if port else "")
    return httpx.URL(f"{scheme.decode()}://{netloc}{target.decode()}")


def traced_transport(inner: httpx.AsyncBaseTransport, service: str) -> httpx.AsyncBaseTransport:
    """``inner`` wrapped in the OpenTelemetry httpx transport: one CLIENT span per call (the
    retries below it are its events), named ``"<service> <METHOD> <route>"``, with the URL
    cleaned by ``safe_url``. Per client, not a global patch of httpx."""
    from opentelemetry.instrumentation.httpx import (
        AsyncOpenTelemetryTransport,
        RequestInfo,
        ResponseInfo,
    )

    async def on_request(span: Span, request: RequestInfo) -> None:
        if not span.is_recording():
            return
        method = request.method.decode() if isinstance(request.method, bytes) else request.method
        url = _url_of(request.url)
        span.update_name(f"{service} {method} {route_of(url)}")
        cleaned = safe_url(url)
        span.set_attribute("http.url", cleaned)
        span.set_attribute("url.full", cleaned)
        span.set_attribute(ATTR_SERVICE, service)
        sent = httpx.Headers(request.headers).get("client-request-id")
        if sent:
            span.set_attribute(ATTR_PC_CLIENT_REQUEST_ID, sent)

    async def on_response(span: Span, request: RequestInfo, response: ResponseInfo) -> None:
        if not span.is_recording():
            return
        request_id = httpx.Headers(response.headers).get("request-id")
        if request_id and service == PARTNER_CENTER:
            span.set_attribute(ATTR_PC_REQUEST_ID, request_id)

    return AsyncOpenTelemetryTransport(
        inner, tracer_provider=_PROVIDER, request_hook=on_request, response_hook=on_response
    )


PARTNER_CENTER: Final = "Partner Center"
DATAVERSE: Final = "Dataverse"
