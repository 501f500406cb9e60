"""Typed Dataverse errors: one small hierarchy under ``CosellError``.

Callers branch on the class; each error keeps the HTTP status and Dataverse's own ``code`` and
``message`` (reference section 7.1: classify by status first, then code, then text). Each class is
also the shared error of its idea (``shared.errors``: ``NotFoundError``...), so a caller that does
not care which service failed can catch that instead.
"""

from __future__ import annotations

import json
import re

import httpx

from shared.errors import (
    AlreadyExistsError,
    AuthenticationFailedError,
    ConnectionFailedError,
    CosellError,
    NotFoundError,
    PreconditionFailedError,
    ThrottledError,
)
from shared.retry import parse_retry_after

# Codes that decide the class regardless of status (reference section 7.3).
OBJECT_DOES_NOT_EXIST = "0x80040217"
CONCURRENCY_VERSION_MISMATCH = "0x80060882"
DUPLICATE_RECORD = "0x80040237"


class DataverseError(CosellError):
    """Any failed Dataverse call; ``status`` is None when no response arrived."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str = "",
        method: str = "",
        url: str = "",
    ) -> None:
        where = f"{method} {url}: " if method else ""
        shown = f"{status} " if status is not None else ""
        super().__init__(f"{where}{shown}{code + ' ' if code else ''}{message}".strip())
        self.status = status
        self.code = code
        self.message = message
        self.method = method
        self.url = url


class InvalidRequest(DataverseError):
    """400: a payload or query Dataverse refuses (unknown column, wrong type, bad filter...)."""


class AuthenticationFailed(DataverseError, AuthenticationFailedError):
    """401: the token is missing, expired or not valid for this environment."""


class AccessDenied(DataverseError):
    """403: the application user lacks a privilege."""


class NotFound(DataverseError, NotFoundError):
    """404: the row (or table, or currency) does not exist."""


class PreconditionFailed(DataverseError, PreconditionFailedError):
    """412: the row changed since its etag was read (``If-Match``); re-read and merge again."""


class AlreadyExists(DataverseError, AlreadyExistsError):
    """A row with this primary (or alternate) key exists already (DuplicateRecord)."""


class Throttled(DataverseError, ThrottledError):
    """429 after the retries: service protection limits still refuse the call;
    ``retry_after`` is the last Retry-After Dataverse sent, in seconds."""


class ServiceError(DataverseError):
    """5xx after the retries, or an answer that is not what the Web API returns."""


class ConnectionFailed(DataverseError, ConnectionFailedError):
    """No answer at all: a timeout or a network error, after the retries."""


_BY_CODE: dict[str, type[DataverseError]] = {
    DUPLICATE_RECORD: AlreadyExists,
    CONCURRENCY_VERSION_MISMATCH: PreconditionFailed,
    OBJECT_DOES_NOT_EXIST: NotFound,
}
# Older documented error bodies carry ``"code": ""`` (or ``"0x0"``) and only a message
# (reference section 7.1; learn.microsoft.com/power-apps/developer/data-platform/webapi/
# compose-http-requests-handle-errors). Then the message decides, by the texts Microsoft documents
# for these codes (learn.microsoft.com/troubleshoot/power-platform/dataverse/user-permissions/
# client-errors: "Cannot insert duplicate key", "Contact With Ids = <guid> Do Not Exist"). A
# duplicate key is a 412 in the status map, so without this it would pass for a stale etag.
_BY_MESSAGE: tuple[tuple[re.Pattern[str], type[DataverseError]], ...] = (
    (
        re.compile(r"matching key values already exists|cannot insert duplicate key", re.I),
        AlreadyExists,
    ),
    (re.compile(r"\bwith ids?\s*=\s*\S.*\b(?:does|do) not exist", re.I), NotFound),
    (re.compile(r"version of the existing record doesn't match", re.I), PreconditionFailed),
)
_NO_CODE = ("", "0x0")
_BY_STATUS: dict[int, type[DataverseError]] = {
    400: InvalidRequest,
    401: AuthenticationFailed,
    403: AccessDenied,
    404: NotFound,
    412: PreconditionFailed,
    429: Throttled,
}


def error_from_response(response: httpx.Response) -> DataverseError:
    """The typed error for a failed response, carrying Dataverse's ``code`` and ``message``."""
    code, message = "", response.reason_phrase or "request failed"
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        body = None
    detail = body.get("error") if isinstance(body, dict) else None
    if isinstance(detail, dict):
        code = str(detail.get("code") or "")
        message = str(detail.get("message") or message)
    status = response.status_code
    cls = _BY_STATUS.get(status, ServiceError if status >= 500 else DataverseError)
    # UNCERTAIN (reference 7.3): DuplicateRecord is mapped to 412 by the server's status map, but
    # other answers may use another status; the code decides, then the message, then the status.
    known = _hex_code(code)
    if known in _BY_CODE:
        cls = _BY_CODE[known]
    elif known in _NO_CODE:
        cls = next((found for text, found in _BY_MESSAGE if text.search(message)), cls)
    error = cls(
        message,
        status=status,
        code=code,
        method=response.request.method,
        url=response.request.url.path,
    )
    if isinstance(error, Throttled):
        error.retry_after = parse_retry_after(response.headers.get("Retry-After"))
    return error


def _hex_code(code: str) -> str:
    """``code`` as the lower-case hex the Web API sends; the SDK's decimal form
    (``-2147220937``) is the same number as ``0x80040237``."""
    text = code.strip().lower()
    if re.fullmatch(r"-?\d+", text):
        return f"0x{int(text) & 0xFFFFFFFF:08x}" if int(text) else "0x0"
    return text
