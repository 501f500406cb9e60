"""Injected failures (SPEC 9, ``PUT /_emulator/faults``), the same settings in both emulators.

Each emulator decides with ``Faults.draw`` whether a request fails and with which status, then
answers it in its own service's error shape (``sandbox/<service>/faults.py``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields
from typing import Any

from sandbox.kit.body import ControlRefusal, is_number


@dataclass
class Faults:
    error_rate: float = 0.0  # the share of API requests that fail
    statuses: list[int] = field(default_factory=lambda: [429, 500, 503])
    retry_after_s: float | None = 1.0  # on 429 and 503; None sends no Retry-After
    latency_ms: float = 0.0  # added to every API request
    drop_webhook_rate: float = 0.0  # the share of webhook deliveries never sent
    # Not in SPEC 9's example body: fail exactly the next N API requests (statuses in turn),
    # so tests can script "429, then success" without relying on chance.
    fail_next: int = 0
    _scripted: int = field(default=0, init=False, repr=False, compare=False)

    @classmethod
    def parse(cls, body: dict[str, Any]) -> Faults:
        """The settings of a ``PUT`` body; a missing one takes its default, an unknown one or a
        value out of range is refused."""
        unknown = set(body) - set(cls.settings())
        if unknown:
            raise ControlRefusal(f"Unknown fault settings: {', '.join(sorted(unknown))}.")
        faults = cls(**body)
        for name in ("error_rate", "drop_webhook_rate"):
            value = getattr(faults, name)
            if not is_number(value) or not 0 <= value <= 1:
                raise ControlRefusal(f"{name} must be a number from 0 to 1.", name)
        if not isinstance(faults.statuses, list) or not all(
            isinstance(s, int) and 400 <= s <= 599 for s in faults.statuses
        ):
            raise ControlRefusal("statuses must be a list of 4xx/5xx codes.", "statuses")
        if not isinstance(faults.fail_next, int) or faults.fail_next < 0:
            raise ControlRefusal("fail_next must be a non-negative integer.", "fail_next")
        if not is_number(faults.latency_ms) or faults.latency_ms < 0:
            raise ControlRefusal("latency_ms must be a non-negative number.", "latency_ms")
        retry = faults.retry_after_s
        if retry is not None and (not is_number(retry) or retry < 0):
            raise ControlRefusal(
                "retry_after_s must be a non-negative number or null.", "retry_after_s"
            )
        return faults

    @classmethod
    def settings(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.init]

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.settings()}

    def draw(self, rng: random.Random) -> int | None:
        """The status this API request fails with, or None: the scripted ``fail_next`` first,
        then ``error_rate`` by chance."""
        if not self.statuses:
            return None
        if self.fail_next > 0:
            self.fail_next -= 1
            status = self.statuses[self._scripted % len(self.statuses)]
            self._scripted += 1
            return status
        if self.error_rate and rng.random() < self.error_rate:
            return rng.choice(self.statuses)
        return None

    def retry_after(self, status: int) -> dict[str, str]:
        """The ``Retry-After`` header a throttled or unavailable answer carries."""
        if status in (429, 503) and self.retry_after_s is not None:
            return {"Retry-After": f"{self.retry_after_s:g}"}
        return {}
