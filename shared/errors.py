"""The typed errors callers branch on.

One small hierarchy, like httpx's: catch ``CosellError`` for everything, or a subclass for the
case you handle. Messages name what is wrong and, where it helps, what to do about it.

What happened is named once for every service, as azure-core's ``ResourceNotFoundError`` family
is: ``NotFoundError``, ``AlreadyExistsError``, ``PreconditionFailedError``, ``ThrottledError``,
``AuthenticationFailedError`` and ``ConnectionFailedError``. Partner Center, Dataverse and the
state stores subclass them (beside their own base class) for the details, so the engine can catch
"someone changed it since we read it" without knowing which service said so.
"""

from __future__ import annotations


class CosellError(Exception):
    """Base class of every error raised by Co-sell Sync."""


class NotFoundError(CosellError):
    """The record (row, referral, table...) does not exist."""


class AlreadyExistsError(CosellError):
    """A record that was to be created exists already (someone else created it first)."""


class PreconditionFailedError(CosellError):
    """The record changed since its etag was read (a lost race); re-read and try again."""


class ThrottledError(CosellError):
    """The service still refuses for load after the retries; ``retry_after`` is its last hint
    in seconds (None when it gave none)."""

    retry_after: float | None = None


class AuthenticationFailedError(CosellError):
    """No token could be obtained, or the service refused the one we sent."""


class ConnectionFailedError(CosellError):
    """No answer at all (a network error or a timeout), after the retries."""


class SettingsError(CosellError):
    """An app setting is missing or has a wrong value; the message names each one."""


class StateError(CosellError):
    """A problem with the sync state in Table Storage."""


class ConcurrencyError(StateError, PreconditionFailedError):
    """Someone else changed the row since it was read (a lost race); re-read and try again."""


class RowExistsError(ConcurrencyError, AlreadyExistsError):
    """A row that was to be created exists already (someone else created it first); a lost
    race too, so catching ``ConcurrencyError`` covers it."""


class InvalidKeyError(StateError, ValueError):
    """A PartitionKey or RowKey that Table Storage would refuse."""


class EntityTooLargeError(StateError, ValueError):
    """An entity that would exceed a Table Storage limit (property size, count or entity size)."""


class JobDecodeError(CosellError, ValueError):
    """A ``sync-jobs`` message that is not a valid job; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed sync job: {reason}")
        self.reason = reason
