"""Partner Center's own routes of the control API under ``/_emulator/`` (SPEC 9; health, reset,
stats and faults are the kit's, ``sandbox.kit.control``) and the webhook registration API (§4.1)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import ApiError
from .referrals import emulator, entity, read_json
from .rules import PARTNER_PATCH_PATHS
from .webhooks import SUPPORTED_EVENTS

# -- /_emulator/ -----------------------------------------------------------------------------


async def get_patch_paths(request: Request) -> Response:
    return JSONResponse(_patch_paths(emulator(request).strict_patch_paths))


async def put_patch_paths(request: Request) -> Response:
    """``{"strict": true}``: refuse JSON Patch paths the connector does not list (400 naming
    the path); ``false``: take any path, as the emulator does by default."""
    body = await read_json(request)
    if (
        not isinstance(body, dict)
        or set(body) != {"strict"}
        or not isinstance(body["strict"], bool)
    ):
        raise ApiError(400, "invalidRequest", 'The body must be {"strict": true|false}.')
    state = emulator(request)
    state.strict_patch_paths = body["strict"]
    return JSONResponse(_patch_paths(state.strict_patch_paths))


def _patch_paths(strict: bool) -> dict[str, object]:
    return {"strict": strict, "paths": list(PARTNER_PATCH_PATHS)}


async def microsoft_create_referral(request: Request) -> Response:
    """Microsoft sends the partner a new incoming referral; fires ``referral-created``."""
    state = emulator(request)
    referral = state.store.create(await read_json(request), incoming=True)
    return entity(state, referral, 201)


async def microsoft_patch_referral(request: Request) -> Response:
    """A Microsoft-side JSON Patch (e.g. a Microsoft seller accepts the co-sell and sets
    ``trackingInfo.microsoftMsxId``). Fires ``referral-updated``, or ``related-referral-updated``
    when the referral is Microsoft's side of an engagement."""
    state = emulator(request)
    referral = state.store.patch(
        request.path_params["referral_id"],
        await read_json(request),
        if_match=request.headers.get("if-match"),
        microsoft=True,
    )
    return entity(state, referral)


async def certificate(request: Request) -> Response:
    """The signing certificate ``x-ms-certificate-url`` names (its AIA points at this host)."""
    state = emulator(request)
    signing = state.dispatcher.signing
    name = request.path_params["name"]
    if name == "signing.cer":
        return Response(signing.leaf_der(state.base_url), media_type="application/pkix-cert")
    if name == "signing.pem":
        return Response(signing.leaf_pem(state.base_url), media_type="application/x-pem-file")
    if name == "root.pem":
        return Response(signing.root_pem, media_type="application/x-pem-file")
    raise ApiError(404, "itemNotFound", "No such certificate.")


async def issuer_certificate(request: Request) -> Response:
    """The issuing CA, at the leaf's AIA ``caIssuers`` URL, DER like Microsoft's ``.crt``s."""
    signing = emulator(request).dispatcher.signing
    if request.path_params["name"] != "intermediate.cer":
        raise ApiError(404, "itemNotFound", "No such certificate.")
    return Response(signing.intermediate_der, media_type="application/pkix-cert")


async def wait_idle(request: Request) -> Response:
    """Returns once every queued webhook delivery has finished (demo and tests)."""
    await emulator(request).dispatcher.idle()
    return JSONResponse(emulator(request).stats()["webhooks"])


# -- /webhooks/v1/registration (§4.1) -----------------------------------------------------------


async def list_events(request: Request) -> Response:
    return JSONResponse(list(SUPPORTED_EVENTS))


async def register(request: Request) -> Response:
    registration = emulator(request).dispatcher.register(await read_json(request))
    return JSONResponse(registration.body())


async def update_registration(request: Request) -> Response:
    registration = emulator(request).dispatcher.update(await read_json(request))
    return JSONResponse(registration.body())


async def get_registration(request: Request) -> Response:
    registration = emulator(request).dispatcher.current()
    return JSONResponse(
        {"WebhookUrl": registration.webhook_url, "WebhookEvents": registration.events}
    )


async def send_test_event(request: Request) -> Response:
    state = emulator(request)
    registration = state.dispatcher.current()
    if "test-created" not in registration.events:
        raise ApiError(
            400, "invalidRequest", "Register the 'test-created' event to send test events."
        )
    if not state.allow_test_event():
        return JSONResponse(
            {"statusCode": 429, "message": "Rate limit is exceeded. Try again in 60 seconds."},
            status_code=429,
            headers={"Retry-After": "60"},
        )
    record = state.send_test_event()
    return JSONResponse({"correlationId": record.correlation_id})


async def test_event_result(request: Request) -> Response:
    state = emulator(request)
    record = state.dispatcher.test_events.get(request.path_params["correlation_id"])
    if record is None:
        raise ApiError(404, "itemNotFound", "No test event with this correlation id.")
    return JSONResponse(record.body(state.store.organization_id))
