"""Typed errors of the Partner Center client.

Callers branch on the class (``PreconditionFailed`` → re-read and retry, ``NotFound``,
``Throttled``) or, for anything else, on ``code`` — never on ``message``, which the service does
not localise or promise to keep stable (reference §5). Each class is also the shared error of its
idea (``shared.errors``: ``PreconditionFailedError``...), so a caller that does not care which
service failed can catch that instead.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from shared.errors import (
    AuthenticationFailedError,
    ConnectionFailedError,
    CosellError,
    NotFoundError,
    PreconditionFailedError,
    ThrottledError,
)
from shared.retry import parse_retry_after


class PartnerCenterError(CosellError):
    """An error answer from Partner Center (or a response we could not understand).

    ``status`` is the HTTP status (0 when there was no response), ``code``/``message``/``target``
    come from the documented error body ``{"error": {"code", "message", "target"}}`` and
    ``request_id`` from the ``request-id`` response header, for Microsoft support. ``method``
    and ``url`` (its path, no query) name the call that failed, as Dataverse's errors do; the
    client sets them.
    """

    method: str = ""
    url: str = ""

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str | None = None,
        target: str | None = None,
        request_id: str | None = None,
        inner_code: str | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.request_id = request_id
        self.inner_code = inner_code
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [f"Partner Center answered {self.status}" if self.status else "Partner Center"]
        if self.code:
            parts.append(f"code={self.code}")
        if self.target:
            parts.append(f"target={self.target}")
        if self.request_id:
            parts.append(f"request-id={self.request_id}")
        return f"{' '.join(parts)}: {self.message}"


class PreconditionFailed(PartnerCenterError, PreconditionFailedError):
    """The referral changed since its eTag was read (412); read it again and re-apply."""


class NotFound(PartnerCenterError, NotFoundError):
    """The referral (or webhook registration) does not exist (404)."""


class Throttled(PartnerCenterError, ThrottledError):
    """Still 429 after the retry policy gave up; ``retry_after`` is the service's hint."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class PartnerCenterAuthError(PartnerCenterError, AuthenticationFailedError):
    """The service refused our token (401/403), or no token could be obtained."""


class ConnectionFailed(PartnerCenterError, ConnectionFailedError):
    """No answer after the retries: a timeout (``code="timeout"``) or a transport error such as
    a refused or dropped connection (``code="transportError"``); ``status`` is 0."""


class RefreshTokenRejected(PartnerCenterAuthError):
    """Entra refused the app+user refresh token (expired, revoked or consent withdrawn).

    Nothing retries this away: a Referrals admin has to sign in again and the new refresh token
    has to be stored in ``PARTNER_CENTER_REFRESH_TOKEN`` (Key Vault in Azure).
    """


# Codes that mean an eTag mismatch: `preconditionFailed` (412) and `resourceModified` (§5).
_ETAG_CODES = frozenset({"preconditionFailed", "resourceModified"})


def error_from_response(response: httpx.Response) -> PartnerCenterError:
    """Build the typed error for a non-success response (reads only the documented fields)."""
    status = response.status_code
    request_id = response.headers.get("request-id") or response.headers.get("MS-RequestId")
    code, message, target, inner = _parse_error_body(response)
    if not message:
        message = response.reason_phrase or "request failed"
    kwargs: dict[str, Any] = {
        "status": status,
        "code": code,
        "target": target,
        "request_id": request_id,
        "inner_code": inner,
    }
    if status == 412 or code in _ETAG_CODES:
        return PreconditionFailed(message, **kwargs)
    if status == 404:
        return NotFound(message, **kwargs)
    if status == 429:
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        return Throttled(message, retry_after=retry_after, **kwargs)
    if status in (401, 403):
        return PartnerCenterAuthError(message, **kwargs)
    return PartnerCenterError(message, **kwargs)


def _parse_error_body(
    response: httpx.Response,
) -> tuple[str | None, str | None, str | None, str | None]:
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        return None, None, None, None
    if not isinstance(body, dict):
        return None, None, None, None
    error = body.get("error")
    if isinstance(error, dict):
        inner = error.get("innerError")
        inner_code = inner.get("code") if isinstance(inner, dict) else None
        return (
            _text(error.get("code")),
            _text(error.get("message")),
            _text(error.get("target")),
            _text(inner_code),
        )
    # The throttling sample body is `{"statusCode": 429, "message": "..."}` (§5); the webhook
    # host may answer `{"code", "description"}` (UNCERTAIN), so both are read.
    return (
        _text(body.get("code")),
        _text(body.get("message") or body.get("description")),
        None,
        None,
    )


def _text(value: object) -> str | None:
    return None if value is None else str(value)
