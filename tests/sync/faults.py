"""Faults injected below our code: a storage transport that drops chosen requests."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import ServiceRequestError
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.rest import HttpRequest


class FailingTableTransport(AioHttpTransport):
    """Fails ``times`` requests whose body contains ``marker`` (as a crash would).

    ``method`` picks inserts (POST) or replaces (PUT); ``after`` lets that many matching
    requests through first (to fail the second write of one sync, say).
    """

    def __init__(
        self, marker: str, *, times: int = 1, method: str = "POST", after: int = 0
    ) -> None:
        super().__init__()
        self.marker = marker.encode()
        self.remaining = times
        self.method = method
        self.passing = after

    async def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        body = request.body if isinstance(request, HttpRequest) else getattr(request, "data", b"")
        if isinstance(body, str):
            body = body.encode()
        if self.remaining and request.method == self.method and body and self.marker in body:
            if self.passing:
                self.passing -= 1
                return await super().send(request, **kwargs)
            self.remaining -= 1
            raise ServiceRequestError("injected: the worker died here")
        return await super().send(request, **kwargs)
