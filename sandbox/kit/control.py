"""The control API both emulators serve under ``/_emulator/`` (SPEC 9): ``GET health``,
``POST reset``, ``GET stats``, ``PUT|DELETE faults``. No token; each emulator adds its own
routes (Partner Center: Microsoft's side of a referral, webhooks; Dataverse: limits, pushes)."""

from __future__ import annotations

from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.kit.body import ControlRefusal, read_object
from sandbox.kit.faults import Faults


class Controlled(Protocol):
    """What the control API needs of an emulator's state (``app.state.emulator``)."""

    faults: Faults

    def reset(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...


def controlled(request: Request) -> Controlled:
    emulator: Controlled = request.app.state.emulator
    return emulator


def routes(*, service: str, prefix: str = "") -> list[Route]:
    """The shared control routes, at ``prefix`` (``/_emulator`` unless mounted there)."""

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "service": service})

    return [
        Route(f"{prefix}/health", health, methods=["GET"]),
        Route(f"{prefix}/reset", reset, methods=["POST"]),
        Route(f"{prefix}/stats", stats, methods=["GET"]),
        Route(f"{prefix}/faults", put_faults, methods=["PUT"]),
        Route(f"{prefix}/faults", delete_faults, methods=["DELETE"]),
    ]


async def reset(request: Request) -> Response:
    controlled(request).reset()
    return Response(status_code=204)


async def stats(request: Request) -> Response:
    return JSONResponse(controlled(request).stats())


async def put_faults(request: Request) -> Response:
    emulator = controlled(request)
    try:
        emulator.faults = Faults.parse(await read_object(request, "faults"))
    except ControlRefusal as refusal:
        return refusal.response()
    return JSONResponse(emulator.faults.as_dict())


async def delete_faults(request: Request) -> Response:
    controlled(request).faults = Faults()
    return Response(status_code=204)
