"""A local Dataverse Web API emulator (SPEC section 9): ``create_app()`` returns the ASGI app."""

from sandbox.dataverse.app import Emulator, create_app, emulator_of
from sandbox.dataverse.limits import Faults, Limits

__all__ = ["Emulator", "Faults", "Limits", "create_app", "emulator_of"]
