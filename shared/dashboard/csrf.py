"""Cross-site request forgery protection for the dashboard's forms (issue 18).

The page is reached with the function key (auth level FUNCTION), so a forged request needs the
key first. Two checks stand behind that, both on every POST:

* **a token per form**: ``v1.<window>.<mac>``, ``mac`` = HMAC-SHA256 over the window, the action
  and its target (a poison message id), so a token for replaying one message cannot delete
  another. The window is ``WINDOW_S`` long and a token is taken in its own window and the next
  (30 to 60 minutes after the page was rendered); an older one is stale. The signing key is
  derived from the function key the request presented (the host has checked it): whoever can
  sign a token can call the app with that key anyway, and every instance of the app checks any
  token with no state kept (a per-process random key would fail on another instance or after a
  restart).
* **the request's origin**: the browser's ``Origin`` header (``Referer`` when it sends none) must
  name the host the request was sent to. A cross-site form carries its own site's origin;
  the page sends ``Referrer-Policy: same-origin``, which keeps ``Origin`` on same-origin posts.
  A POST with neither header is refused: every browser sends ``Origin`` on a form POST.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

WINDOW_S = 30 * 60
VERSION = "v1"
_CONTEXT = b"cosell-dashboard-csrf"


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode("utf-8"), _CONTEXT, hashlib.sha256).digest()


def _mac(secret: str, window: int, action: str, target: str) -> str:
    message = f"{window}|{action}|{target}".encode()
    return hmac.new(_key(secret), message, hashlib.sha256).hexdigest()[:32]


def _window(now: float | None) -> int:
    return int((time.time() if now is None else now) // WINDOW_S)


def issue(secret: str, action: str, target: str = "", *, now: float | None = None) -> str:
    """The token a form for ``action`` on ``target`` carries."""
    window = _window(now)
    return f"{VERSION}.{window}.{_mac(secret, window, action, target)}"


def valid(
    secret: str, token: str, action: str, target: str = "", *, now: float | None = None
) -> bool:
    """Whether ``token`` was issued with ``secret`` for this action and target, in this window
    or the one before."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION or not parts[1].isdigit():
        return False
    window = int(parts[1])
    if not 0 <= _window(now) - window <= 1:
        return False
    return hmac.compare_digest(parts[2], _mac(secret, window, action, target))


def same_origin(url: str, headers: Mapping[str, str]) -> bool:
    """Whether the request's ``Origin`` (or, without one, ``Referer``) names the host it was
    sent to: the request URL's host, or the ``Host`` / ``X-Forwarded-Host`` a front end passed."""
    lowered = {k.lower(): v for k, v in headers.items()}
    claimed = lowered.get("origin") or lowered.get("referer") or ""
    if not claimed or claimed == "null":
        return False
    origin = urlsplit(claimed)
    if origin.scheme not in ("http", "https") or not origin.netloc:
        return False
    hosts = {urlsplit(url).netloc.lower()}
    for name in ("host", "x-forwarded-host"):
        if lowered.get(name):
            hosts.add(lowered[name].split(",")[0].strip().lower())
    return origin.netloc.lower() in hosts
