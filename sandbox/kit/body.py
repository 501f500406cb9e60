"""A control request's JSON body: an object, numbers within bounds, and the one refusal the
control API answers when a body will not do (400, ``{"error": {"code", "message", "target"}}``,
the shape Partner Center's API uses, reference §5)."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse


class ControlRefusal(Exception):
    """A control request the emulator will not take; ``target`` names the setting."""

    def __init__(self, message: str, target: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.target = target

    def response(self) -> JSONResponse:
        error: dict[str, Any] = {"code": "invalidRequest", "message": self.message}
        if self.target is not None:
            error["target"] = self.target
        return JSONResponse({"error": error}, status_code=400)


async def read_object(request: Request, what: str) -> dict[str, Any]:
    """The body as a JSON object; an empty body is ``{}`` (every setting at its default)."""
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise ControlRefusal("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ControlRefusal(f"The {what} body must be an object.")
    return body


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def number(
    body: dict[str, Any], key: str, default: float, *, minimum: float, maximum: float | None = None
) -> float:
    """``body[key]`` (or ``default``), refused unless a number from ``minimum`` to ``maximum``."""
    value = body.get(key, default)
    if not is_number(value) or value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum:g}" if maximum is None else f"from {minimum:g} to {maximum:g}"
        raise ControlRefusal(f"{key} must be a number {bounds}.", key)
    return float(value)
