"""The control API under ``/_emulator/`` (SPEC section 9): health, reset, stats, faults, limits."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.dataverse.limits import Faults, Limits

if TYPE_CHECKING:
    from sandbox.dataverse.app import Emulator


def _emulator(request: Request) -> Emulator:
    emulator: Emulator = request.app.state.emulator
    return emulator


async def _json_object(request: Request) -> dict[str, Any] | Response:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        return JSONResponse({"error": "the body is not valid JSON"}, status_code=400)
    if not isinstance(body, dict):
        return JSONResponse({"error": "the body must be a JSON object"}, status_code=400)
    return body


def _number(body: dict[str, Any], key: str, default: float, *, minimum: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
        raise ValueError(f"{key} must be a number >= {minimum:g}")
    return float(value)


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok", "service": "dataverse"})


async def reset(request: Request) -> Response:
    _emulator(request).reset()
    return Response(status_code=204)


async def stats(request: Request) -> Response:
    return JSONResponse(_emulator(request).stats())


async def faults(request: Request) -> Response:
    emulator = _emulator(request)
    if request.method == "DELETE":
        emulator.faults = Faults()
        return Response(status_code=204)
    body = await _json_object(request)
    if isinstance(body, Response):
        return body
    try:
        statuses = body.get("statuses", [429, 500, 503])
        if not isinstance(statuses, list) or not all(
            isinstance(s, int) and 400 <= s <= 599 for s in statuses
        ):
            raise ValueError("statuses must be a list of HTTP error statuses")
        rate = _number(body, "error_rate", 0.0, minimum=0.0)
        if rate > 1:
            raise ValueError("error_rate must be between 0 and 1")
        emulator.faults = Faults(
            error_rate=rate,
            statuses=list(statuses),
            retry_after_s=_number(body, "retry_after_s", 1.0, minimum=0.0),
            latency_ms=_number(body, "latency_ms", 0.0, minimum=0.0),
            drop_webhook_rate=_number(body, "drop_webhook_rate", 0.0, minimum=0.0),
        )
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse(asdict(emulator.faults))


async def limits(request: Request) -> Response:
    emulator = _emulator(request)
    if request.method == "PUT":
        body = await _json_object(request)
        if isinstance(body, Response):
            return body
        current = emulator.protection.limits
        try:
            emulator.protection.set(
                Limits(
                    requests=int(_number(body, "requests", current.requests, minimum=1)),
                    window_s=_number(body, "window_s", current.window_s, minimum=0.001),
                    concurrent=int(_number(body, "concurrent", current.concurrent, minimum=1)),
                )
            )
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
    return JSONResponse(asdict(emulator.protection.limits))


routes = [
    Route("/health", health, methods=["GET"]),
    Route("/reset", reset, methods=["POST"]),
    Route("/stats", stats, methods=["GET"]),
    Route("/faults", faults, methods=["PUT", "DELETE"]),
    Route("/limits", limits, methods=["GET", "PUT"]),
]
