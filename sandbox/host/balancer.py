"""A round-robin front door for several host instances (the sandbox's stand-in for Azure's).

In Azure every request to ``<app>.azurewebsites.net`` goes through a front end that spreads
requests over the app's instances; the ``Host`` header stays the public one, so a function sees
the app's URL whatever instance runs it. ``RoundRobin`` does that for the sandbox's instances: it
forwards each request (method, path, query, headers with ``Host``, body) to the next instance in
turn and streams nothing (answers are small here). An instance that refuses the connection (a
stopped or killed process) is skipped for the next one, so the webhooks registered on the front
door keep being delivered while one instance is down; with every instance down it answers 502.
Only a refused connection is retried: a request that reached an instance is never sent twice.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import httpx
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

# Connection-level headers a proxy does not pass on; content-length is set again for the body.
_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "content-length",
    }
)


class RoundRobin:
    """An ASGI app forwarding each request to the next of ``upstreams`` (base URLs)."""

    def __init__(self, upstreams: Sequence[str], *, timeout_s: float = 230.0) -> None:
        self.upstreams = [url.rstrip("/") for url in upstreams]
        self._turn = itertools.count()
        # 230 s: what Azure's front end waits for an HTTP function at most.
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s, connect=5.0))
        self.forwarded: dict[str, int] = dict.fromkeys(self.upstreams, 0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP]
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        first = next(self._turn)
        for offset in range(len(self.upstreams)):
            upstream = self.upstreams[(first + offset) % len(self.upstreams)]
            try:
                answer = await self._client.request(
                    request.method, upstream + target, headers=headers, content=body
                )
            except httpx.ConnectError:
                continue  # not reached: safe to try the next instance
            self.forwarded[upstream] += 1
            response = Response(answer.content, status_code=answer.status_code)
            response.raw_headers = [
                (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in answer.headers.multi_items()
                if k.lower() not in _HOP and k.lower() != "content-encoding"
            ] + [(b"content-length", str(len(answer.content)).encode())]
            await response(scope, receive, send)
            return
        await Response("no host instance answers", status_code=502)(scope, receive, send)

    async def aclose(self) -> None:
        await self._client.aclose()
