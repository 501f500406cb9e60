"""An injected fault (``sandbox.kit.faults``) answered as Partner Center answers errors: the
throttling sample body for 429, ``{"error": {"code", "message"}}`` otherwise (reference §5)."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from sandbox.kit.faults import Faults


def injected_response(status: int, faults: Faults) -> JSONResponse:
    body: dict[str, Any]
    if status == 429:  # the throttling sample body (§5)
        body = {
            "statusCode": 429,
            "message": f"Rate limit is exceeded. Try again in {faults.retry_after_s:g} seconds.",
        }
    else:
        code = "serviceNotAvailable" if status == 503 else "generalException"
        body = {"error": {"code": code, "message": "Injected fault (emulator)."}}
    return JSONResponse(body, status_code=status, headers=faults.retry_after(status))
