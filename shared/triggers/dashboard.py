"""``dashboard``: the admin's web page, ``GET /api/dashboard`` and its form posts (SPEC 3).

The Functions host has checked the function key before this runs (auth level FUNCTION), as for
every HTTP function. A GET renders the page (``shared.dashboard``: bounded reads, see
``shared.dashboard.data``). A POST is one of the page's forms — ``replay`` or ``delete`` of a
poison message, ``scan`` for drift — and is done only when the browser's ``Origin`` names this
host and the form's token is valid for that action and message (``shared.dashboard.csrf``);
otherwise the answer is 403 and nothing changes. A done action answers 303 back to the page
(post/redirect/get) with a notice key, which the page turns into fixed words.

The page forbids scripts, frames and outside assets by its Content-Security-Policy, is never
cached, and sends no referrer to other sites (the form actions carry the key as ``?code=``, as
the page's own address does).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlencode, urlsplit

from shared.dashboard import actions, csrf, render
from shared.dashboard.data import gather
from shared.errors import SettingsError
from shared.runtime import Runtime, get_runtime

logger = logging.getLogger(__name__)

MAX_FORM_BYTES = 4096
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class DashboardAnswer:
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)
    mimetype: str = "text/html"


async def handle_dashboard(
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    params: Mapping[str, str],
    *,
    runtime: Runtime | None = None,
    now: float | None = None,
) -> DashboardAnswer:
    """The page (GET) or one of its actions (POST); never raises for bad input."""
    key = _presented_key(headers, params)
    try:
        runtime = runtime or get_runtime()
    except SettingsError as exc:
        logger.error("dashboard: the app settings are wrong: %s", exc)
        return _message(503, "The app settings are wrong", str(exc))
    if method.upper() == "POST":
        return await _post(runtime, url, headers, body, params, key, now)
    notice = render_notice(params.get("notice"))
    data = await gather(runtime)

    def tokens(action: str, target: str) -> str:
        return csrf.issue(key, action, target, now=now)

    html = render.page(data, action_url=_action_url(params), tokens=tokens, notice=notice)
    return DashboardAnswer(200, html, dict(HEADERS))


def render_notice(key: str | None) -> str | None:
    return actions.NOTICES.get(key or "")


async def _post(
    runtime: Runtime,
    url: str,
    headers: Mapping[str, str],
    body: bytes,
    params: Mapping[str, str],
    key: str,
    now: float | None,
) -> DashboardAnswer:
    started = time.perf_counter()
    if len(body) > MAX_FORM_BYTES:
        return _message(413, "Refused", "The form is too large.")
    if not csrf.same_origin(url, headers):
        logger.warning("dashboard: POST refused (origin)")
        return _message(403, "Refused", "The form did not come from this page (Origin).")
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items() if v}
    action, target, token = form.get("action", ""), form.get("message", ""), form.get("token", "")
    if action not in actions.ACTIONS or not csrf.valid(key, token, action, target, now=now):
        logger.warning("dashboard: POST refused (token)")
        return _message(
            403, "Refused", "The form's token is missing, stale or forged: reload the page."
        )
    if action != "scan" and not target:
        return _message(400, "Refused", "No message named.")
    if action == "delete" and form.get("confirm") != "yes":
        return _message(400, "Not deleted", "Tick “sure” beside Delete to delete for good.")
    notice = await actions.run(runtime, action, target)
    logger.info(
        "dashboard %s: %s",
        action,
        notice,
        extra={"action": action, "notice": notice,
               "duration_ms": round((time.perf_counter() - started) * 1000, 1)},
    )  # fmt: skip
    location = f"{urlsplit(url).path}?{urlencode({**_code(params), 'notice': notice})}"
    return DashboardAnswer(303, "", {**HEADERS, "Location": location})


def _presented_key(headers: Mapping[str, str], params: Mapping[str, str]) -> str:
    """The function key the host accepted (``?code=`` or ``x-functions-key``): the CSRF
    tokens' secret."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return params.get("code") or lowered.get("x-functions-key") or ""


def _code(params: Mapping[str, str]) -> dict[str, str]:
    return {"code": params["code"]} if params.get("code") else {}


def _action_url(params: Mapping[str, str]) -> str:
    """Where the forms post: this page, with the key as it came (a header needs nothing)."""
    code = _code(params)
    return f"?{urlencode(code)}" if code else "?"


def _message(status: int, title: str, text: str) -> DashboardAnswer:
    html = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{render.esc(title)}</title></head><body><h1>{render.esc(title)}</h1>"
        f"<p>{render.esc(text)}</p></body></html>"
    )
    return DashboardAnswer(status, html, dict(HEADERS))
