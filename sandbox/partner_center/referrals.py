"""Referral routes (reference §1.1) and the list query with paging (§1.2)."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .errors import ApiError, invalid
from .odata import ODataError, parse_filter, parse_orderby, parse_select, parse_top
from .rules import check_patch_paths
from .state import EmulatorState


def emulator(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


async def read_json(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw or b"null")
    except ValueError:
        raise invalid("The request body is not valid JSON.") from None


def entity(state: EmulatorState, referral: dict[str, Any], status: int = 200) -> JSONResponse:
    body = {"@odata.context": f"{state.api_url}/$metadata#Referrals/$entity"}
    body.update(state.render(referral))
    return JSONResponse(body, status_code=status, headers={"ETag": referral["eTag"]})


async def create_referral(request: Request) -> Response:
    state = emulator(request)
    referral = state.store.create(await read_json(request))
    # 200 (the connector's swagger, the default) or 201 (the generic codes page): UNCERTAIN
    # (§1.1); create_app(create_status=...) says why and switches it.
    response = entity(state, referral, state.create_status)
    response.headers["Location"] = f"{state.api_url}/referrals/{referral['id']}"
    return response


async def get_referral(request: Request) -> Response:
    state = emulator(request)
    return entity(state, state.store.get(request.path_params["referral_id"]))


async def patch_referral(request: Request) -> Response:
    state = emulator(request)
    operations = await read_json(request)
    if state.strict_patch_paths:
        state.store.get(request.path_params["referral_id"])  # 404 before 400, as without it
        check_patch_paths(operations)
    referral = state.store.patch(
        request.path_params["referral_id"],
        operations,
        if_match=request.headers.get("if-match"),
    )
    # 204 by default; the referral with `Prefer: return=representation` (§1.1).
    if "return=representation" in request.headers.get("prefer", "").lower():
        return entity(state, referral)
    return Response(status_code=204, headers={"ETag": referral["eTag"]})


async def put_referral(request: Request) -> Response:
    state = emulator(request)
    referral = state.store.replace(
        request.path_params["referral_id"],
        await read_json(request),
        if_match=request.headers.get("if-match"),
    )
    return entity(state, referral)


async def list_referrals(request: Request) -> Response:
    state = emulator(request)
    query = request.query_params
    try:
        predicate = parse_filter(query["$filter"]) if query.get("$filter") else None
        order = parse_orderby(query.get("$orderby")) or [("createdDateTime", False)]
        select = parse_select(query.get("$select"))
        top = parse_top(query.get("$top"))
        skip = parse_top(query.get("$skip")) or 0
    except ODataError as exc:
        raise invalid(str(exc), "$filter" if "filter" in str(exc) else None) from None
    items = [r for r in state.store.all() if predicate is None or predicate(r)]
    items.sort(key=lambda r: str(r["id"]))
    for name, descending in reversed(order):  # stable sorts, last key first
        items.sort(key=lambda r: str(r.get(name) or ""), reverse=descending)
    total = len(items)
    token = query.get("$skiptoken")
    if token:
        position = _decode_token(token)
        items = [r for r in items if _after(r, position, order)]
    elif skip:
        items = items[skip:]
    size = state.page_size if top is None else min(state.page_size, top)
    page = items[:size]
    body: dict[str, Any] = {"@odata.context": f"{state.api_url}/$metadata#Referrals"}
    if query.get("$count", "").lower() == "true":
        body["@odata.count"] = total
    body["value"] = [_project(state.render(r), select) for r in page]
    remaining = None if top is None else top - len(page)
    if len(items) > len(page) and page and (remaining is None or remaining > 0):
        params = {k: v for k, v in query.items() if k not in ("$skiptoken", "$top", "$skip")}
        if remaining is not None:
            params["$top"] = str(remaining)
        params["$skiptoken"] = _encode_token(page[-1], order)
        body["@odata.nextLink"] = f"{state.api_url}/referrals?{urlencode(params)}"
    return JSONResponse(body)


def _project(referral: dict[str, Any], select: list[str] | None) -> dict[str, Any]:
    if select is None:
        return referral
    wanted = {name.lower() for name in select}
    return {k: v for k, v in referral.items() if k.lower() in wanted}


# Keyset paging: the token holds the sort values of the last referral served, so referrals
# created while a client pages through are neither skipped nor repeated.
def _encode_token(referral: dict[str, Any], order: list[tuple[str, bool]]) -> str:
    position = {"k": [str(referral.get(name) or "") for name, _ in order], "id": referral["id"]}
    return base64.urlsafe_b64encode(json.dumps(position).encode()).decode().rstrip("=")


def _decode_token(token: str) -> dict[str, Any]:
    try:
        padded = token + "=" * (-len(token) % 4)
        position = json.loads(base64.urlsafe_b64decode(padded))
        if isinstance(position, dict) and isinstance(position.get("k"), list):
            return position
    except ValueError:
        pass
    raise ApiError(400, "invalidRequest", "The $skiptoken is not valid.", target="$skiptoken")


def _after(
    referral: dict[str, Any], position: dict[str, Any], order: list[tuple[str, bool]]
) -> bool:
    for (name, descending), last in zip(order, position["k"], strict=False):
        value = str(referral.get(name) or "")
        if value != last:
            return (value > str(last)) != descending
    return str(referral["id"]) > str(position.get("id", ""))
