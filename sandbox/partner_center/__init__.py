"""The Partner Center emulator (SPEC 9): ``create_app()`` returns the ASGI app."""

from .app import DEFAULT_TOKEN, create_app
from .signing import SigningAuthority

__all__ = ["DEFAULT_TOKEN", "SigningAuthority", "create_app"]
