"""The typed errors callers branch on.

One small hierarchy, like httpx's: catch ``CosellError`` for everything, or a subclass for the
case you handle. Messages name what is wrong and, where it helps, what to do about it.
"""

from __future__ import annotations


class CosellError(Exception):
    """Base class of every error raised by Co-sell Sync."""


class SettingsError(CosellError):
    """An app setting is missing or has a wrong value; the message names each one."""


class StateError(CosellError):
    """A problem with the sync state in Table Storage."""


class ConcurrencyError(StateError):
    """Someone else changed the row since it was read (a lost race); re-read and try again."""


class AlreadyExistsError(ConcurrencyError):
    """A row that was to be created exists already (someone else created it first)."""


class InvalidKeyError(StateError, ValueError):
    """A PartitionKey or RowKey that Table Storage would refuse."""


class EntityTooLargeError(StateError, ValueError):
    """An entity that would exceed a Table Storage limit (property size, count or entity size)."""


class JobDecodeError(CosellError, ValueError):
    """A ``sync-jobs`` message that is not a valid job; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"malformed sync job: {reason}")
        self.reason = reason
