"""Spans recorded in memory for tests (the SDK's ``InMemorySpanExporter``), without touching
the process-wide tracer provider: ``shared.telemetry.use_provider`` routes the app's spans —
its own and the clients' dependency spans — to a provider of the test's own."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from shared.telemetry import use_provider


@contextmanager
def recording() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with use_provider(provider):
        yield exporter
    provider.shutdown()


def named(spans: Sequence[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def one(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = named(spans, name)
    assert len(found) == 1, f"{len(found)} spans named {name!r}: {[s.name for s in spans]}"
    return found[0]


def texts(span: ReadableSpan) -> Iterator[str]:
    """Every text a span would send: its name, status, attribute and event keys and values."""
    yield span.name
    if span.status.description:
        yield span.status.description
    for key, value in (span.attributes or {}).items():
        yield key
        yield from _values(value)
    for event in span.events:
        yield event.name
        for key, value in (event.attributes or {}).items():
            yield key
            yield from _values(value)
    for link in span.links:
        for key, value in (link.attributes or {}).items():
            yield key
            yield from _values(value)


def _values(value: object) -> Iterator[str]:
    if isinstance(value, str | bool | int | float):
        yield str(value)
    else:
        for item in value:  # type: ignore[attr-defined]
            yield str(item)


def ancestors(span: ReadableSpan, spans: Sequence[ReadableSpan]) -> list[ReadableSpan]:
    """The span's parents, nearest first, among ``spans``."""
    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    chain: list[ReadableSpan] = []
    parent = span.parent
    while parent is not None and parent.span_id in by_id:
        found = by_id[parent.span_id]
        chain.append(found)
        parent = found.parent
    return chain
