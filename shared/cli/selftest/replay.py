"""Record the real services' answers, then ask the emulators the same questions.

``Recorder`` is a transport wrapper (the clients take a transport, so nothing is patched): each
request and answer passes through unchanged and is kept, in memory only, labelled with the
selftest step that made it. ``replay`` then sends every recorded request, in order, to the
in-process emulators: same method, path, query and body, with the real hosts swapped for the
emulators', the token swapped for the sandbox's, and the ids and ETags the real service handed
out swapped for the ones the emulator handed out for the same request (``pair_values``). That
is "the same request against the emulator" even for the engine's calls, whose ids the real
service chose.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

Service = Literal["partner center", "dataverse"]
SANDBOX_AUTHORIZATION = "Bearer sandbox"
# Throttled answers are the real service's protection, not an answer to the request: the retry
# that follows is recorded too, and replaying the 429 would only compare it with a 200.
NOT_REPLAYED_STATUSES = frozenset({429})
_GUID = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}")
_ETAG_KEYS = frozenset({"etag", "@odata.etag"})
_PAIRED_HEADERS = ("etag", "odata-entityid", "location")
_DROPPED_REQUEST_HEADERS = frozenset({"host", "content-length", "authorization", "cookie"})


@dataclass
class Exchange:
    """One request and its answer (bodies are kept for the replay, never reported)."""

    step: str
    service: Service
    method: str
    url: str
    request_headers: list[tuple[str, str]]
    request_body: bytes
    status: int
    headers: dict[str, str]
    body: Any  # parsed JSON, or None

    @property
    def path(self) -> str:
        return httpx.URL(self.url).path

    @property
    def query_names(self) -> list[str]:
        return [name for name, _ in httpx.URL(self.url).params.multi_items()]


def parse_json(content: bytes) -> Any:
    if not content:
        return None
    try:
        return json.loads(content)
    except ValueError:
        return None


def _headers(response: httpx.Response) -> dict[str, str]:
    return {k.lower(): v for k, v in response.headers.items()}


@dataclass
class Recorder:
    """Keeps every exchange of the transports it made; ``step`` labels the next ones."""

    step: str = ""
    exchanges: list[Exchange] = field(default_factory=list)

    def transport(self, service: Service, inner: httpx.AsyncBaseTransport) -> RecordingTransport:
        return RecordingTransport(self, service, inner)


class RecordingTransport(httpx.AsyncBaseTransport):
    def __init__(self, recorder: Recorder, service: Service, inner: httpx.AsyncBaseTransport):
        self._recorder = recorder
        self._service = service
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        response = await self._inner.handle_async_request(request)
        try:
            raw = b"".join([chunk async for chunk in response.aiter_raw()])
        finally:
            await response.aclose()
        # Decoded (gzip...) as the client will see it, for the shape; the raw bytes go on.
        decoded = httpx.Response(response.status_code, headers=response.headers, content=raw)
        self._recorder.exchanges.append(
            Exchange(
                step=self._recorder.step,
                service=self._service,
                method=request.method,
                url=str(request.url),
                request_headers=list(request.headers.items()),
                request_body=body,
                status=response.status_code,
                headers=_headers(response),
                body=parse_json(decoded.content),
            )
        )
        return httpx.Response(
            response.status_code,
            headers=response.headers,
            stream=httpx.ByteStream(raw),
            request=request,
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def pair_values(real: Any, emulator: Any) -> dict[str, str]:
    """Ids (GUIDs) and ETags found at the same place of two answers to the same request: what
    the real service calls X, the emulator calls Y. Lists are paired element by element."""
    pairs: dict[str, str] = {}
    _pair(real, emulator, None, pairs)
    return pairs


def _pair(real: Any, emulator: Any, key: str | None, pairs: dict[str, str]) -> None:
    if isinstance(real, Mapping) and isinstance(emulator, Mapping):
        for name, value in real.items():
            if name in emulator:
                _pair(value, emulator[name], str(name), pairs)
    elif isinstance(real, list) and isinstance(emulator, list):
        for mine, theirs in zip(real, emulator, strict=False):
            _pair(mine, theirs, key, pairs)
    elif (
        isinstance(real, str)
        and isinstance(emulator, str)
        and real != emulator
        and (
            (key or "").lower() in _ETAG_KEYS
            or (_GUID.fullmatch(real) and _GUID.fullmatch(emulator))
        )
    ):
        pairs.setdefault(real, emulator)


def pair_headers(real: Mapping[str, str], emulator: Mapping[str, str]) -> dict[str, str]:
    """The same for headers: the ETag itself, the GUID inside OData-EntityId and Location."""
    pairs: dict[str, str] = {}
    for name in _PAIRED_HEADERS:
        mine, theirs = real.get(name), emulator.get(name)
        if not mine or not theirs or mine == theirs:
            continue
        if name == "etag":
            pairs[mine] = theirs
            continue
        a, b = _GUID.findall(mine), _GUID.findall(theirs)
        for x, y in zip(a, b, strict=False):
            if x != y:
                pairs.setdefault(x, y)
    return pairs


@dataclass
class Rewriter:
    """Turns a real request into the emulator's: hosts (by URL prefix) and paired values."""

    prefixes: Mapping[str, str]  # real base URL → emulator base URL
    values: dict[str, str] = field(default_factory=dict)

    def learn(self, pairs: Mapping[str, str]) -> None:
        for real, emulator in pairs.items():
            self.values.setdefault(real, emulator)
            if _GUID.fullmatch(real):
                self.values.setdefault(real.lower(), emulator.lower())

    def text(self, text: str) -> str:
        for real, emulator in sorted(self.prefixes.items(), key=lambda p: -len(p[0])):
            text = text.replace(real.rstrip("/"), emulator.rstrip("/"))
        for real, emulator in self.values.items():
            if _GUID.fullmatch(real):
                text = text.replace(real, emulator)
        return text

    def header(self, name: str, value: str) -> str:
        if name.lower() in ("if-match", "if-none-match"):
            return self.values.get(value, value)
        return self.text(value)

    def request(self, exchange: Exchange) -> httpx.Request:
        headers = [
            (name, self.header(name, value))
            for name, value in exchange.request_headers
            if name.lower() not in _DROPPED_REQUEST_HEADERS
        ]
        headers.append(("Authorization", SANDBOX_AUTHORIZATION))
        body = exchange.request_body
        if body:
            with contextlib.suppress(UnicodeDecodeError):
                body = self.text(body.decode("utf-8")).encode("utf-8")
        return httpx.Request(
            exchange.method, self.text(exchange.url), headers=headers, content=body or None
        )


async def replay(
    exchanges: Sequence[Exchange],
    *,
    clients: Mapping[Service, httpx.AsyncClient],
    rewriter: Rewriter,
) -> list[Exchange | None]:
    """The emulators' answers to the recorded requests, in order (``None`` where a request is
    not replayed: a throttled answer)."""
    answers: list[Exchange | None] = []
    for real in exchanges:
        if real.status in NOT_REPLAYED_STATUSES:
            answers.append(None)
            continue
        request = rewriter.request(real)
        response = await clients[real.service].send(request)
        content = await response.aread()
        answer = Exchange(
            step=real.step,
            service=real.service,
            method=request.method,
            url=str(request.url),
            request_headers=[],
            request_body=b"",
            status=response.status_code,
            headers=_headers(response),
            body=parse_json(content),
        )
        rewriter.learn(pair_values(real.body, answer.body))
        rewriter.learn(pair_headers(real.headers, answer.headers))
        answers.append(answer)
    return answers


__all__ = [
    "Exchange",
    "Recorder",
    "RecordingTransport",
    "Rewriter",
    "Service",
    "pair_headers",
    "pair_values",
    "replay",
]
