"""Dataverse's own route of the control API under ``/_emulator/`` (SPEC section 9): ``GET|PUT
limits``, the service protection limits. Health, reset, stats and faults are the kit's
(``sandbox.kit.control``), as in the Partner Center emulator."""

from __future__ import annotations

from dataclasses import asdict

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.dataverse.limits import Limits
from sandbox.dataverse.state import Emulator
from sandbox.kit import control
from sandbox.kit.body import ControlRefusal, number, read_object


async def limits(request: Request) -> Response:
    emulator: Emulator = request.app.state.emulator
    if request.method == "PUT":
        current = emulator.protection.limits
        try:
            body = await read_object(request, "limits")
            emulator.protection.set(
                Limits(
                    requests=int(number(body, "requests", current.requests, minimum=1)),
                    window_s=number(body, "window_s", current.window_s, minimum=0.001),
                    concurrent=int(number(body, "concurrent", current.concurrent, minimum=1)),
                )
            )
        except ControlRefusal as refusal:
            return refusal.response()
    return JSONResponse(asdict(emulator.protection.limits))


routes = [
    *control.routes(service="dataverse"),
    Route("/limits", limits, methods=["GET", "PUT"]),
]
