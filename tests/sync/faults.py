"""Faults injected below our code: a storage transport that drops chosen requests."""

from __future__ import annotations

from typing import Any

from azure.core.exceptions import ServiceRequestError
from azure.core.pipeline.transport import AioHttpTransport
from azure.core.rest import HttpRequest


class FailingTableTransport(AioHttpTransport):
    """Fails the first ``times`` inserts whose body contains ``marker`` (as a crash would)."""

    def __init__(self, marker: str, *, times: int = 1) -> None:
        super().__init__()
        self.marker = marker.encode()
        self.remaining = times

    async def send(self, request: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        body = request.body if isinstance(request, HttpRequest) else getattr(request, "data", b"")
        if isinstance(body, str):
            body = body.encode()
        if self.remaining and request.method == "POST" and body and self.marker in body:
            self.remaining -= 1
            raise ServiceRequestError("injected: the worker died here")
        return await super().send(request, **kwargs)
