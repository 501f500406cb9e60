"""The host's own errors."""

from __future__ import annotations


class HostError(RuntimeError):
    """The app or its settings cannot be hosted (a missing setting, a signature mismatch)."""


class InvocationError(Exception):
    """Raised inside the host when a trigger cannot be bound; carries nothing of the payload."""
