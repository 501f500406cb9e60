"""An injected fault (``sandbox.kit.faults``) answered as Dataverse answers errors: the service
protection code for 429, a generic platform error otherwise (reference 6, 7)."""

from __future__ import annotations

import random

from sandbox.dataverse.errors import REQUESTS_LIMIT, DataverseFault
from sandbox.kit.faults import Faults

GENERIC_ERROR = "0x80040216"  # "An unexpected error occurred."


def injected_fault(faults: Faults, rng: random.Random) -> DataverseFault | None:
    """The error this request is answered with, if ``faults`` make it fail."""
    status = faults.draw(rng)
    if status is None:
        return None
    code = REQUESTS_LIMIT if status == 429 else GENERIC_ERROR
    return DataverseFault(status, code, f"Injected fault ({status}).", faults.retry_after(status))
