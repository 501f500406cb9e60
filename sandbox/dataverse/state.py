"""Everything one Dataverse emulator instance holds: schema and rows, limits, faults and request
statistics (as ``sandbox/partner_center/state.py``). The HTTP side is ``app.py``.

The store and Dataverse's webhook push (``push.py``) are handed in by ``app.py``, so that this
module imports neither ``app`` nor ``push`` and the handlers (``api``, ``batch``, ``metadata``,
``control``) can name the state without an import circle.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Callable
from typing import Any, Protocol

from sandbox.dataverse.limits import Limits, ServiceProtection
from sandbox.dataverse.schema import Schema
from sandbox.dataverse.store import Caller, Store
from sandbox.kit.faults import Faults
from shared.crm_schema import DEFAULT_PREFIX

API_PREFIX = "/api/data/v9.2/"

_TEMPLATE_PARTS = (
    (re.compile(r"\([0-9a-fA-F-]{36}\)"), "({id})"),
    (re.compile(r"\(LogicalName='[^']*'\)"), "(LogicalName={name})"),
)

# A fresh store over a schema, for the caller WhoAmI answers (``push.PushStore`` in the app).
StoreFactory = Callable[[Schema, Caller], Store]


def route_template(method: str, path: str) -> str:
    """``PATCH /api/data/v9.2/opportunities({id})``: how stats group requests."""
    for pattern, replacement in _TEMPLATE_PARTS:
        path = pattern.sub(replacement, path)
    return f"{method} {path}"


class Deliveries(Protocol):
    delivered: int  # pushes a service endpoint accepted


class Pushes(Protocol):
    """What the state needs of Dataverse's webhook push (``push.Dispatcher``)."""

    faults: Faults  # the emulator's: their ``drop_webhook_rate`` drops pushes

    @property
    def stats(self) -> Deliveries: ...

    def reset(self) -> None: ...

    async def idle(self) -> None:
        """Wait until every delivery has finished (tests and the benchmark)."""


class Customizations(Protocol):
    """What the state needs of the customization side (``customizing.Customizing``)."""

    def stats(self, store: Store) -> dict[str, Any]: ...


class Emulator:
    """The state of one emulator: schema and rows, limits, faults and request statistics."""

    def __init__(
        self,
        *,
        token: str,
        limits: Limits | None,
        clock: Callable[[], float],
        seed: int | None,
        store: StoreFactory,
        push: Pushes,
        customizations: Customizations | None = None,
        custom_schema: bool = True,
        column_prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self.token = token
        self.custom_schema = custom_schema
        self.column_prefix = column_prefix
        self._new_store = store
        self.push = push  # Dataverse's webhook push (sandbox/dataverse/push.py)
        self.customizations = customizations  # solutions, forms, roles (customizing.py)
        self.store = store(self._schema(), Caller())
        self.protection = ServiceProtection(limits, clock=clock)
        self.faults = Faults()
        self.rng = random.Random(seed)
        self.requests: Counter[str] = Counter()
        self.batched: Counter[str] = Counter()  # the inner operations of $batch requests
        self.statuses: Counter[int] = Counter()
        self.faults_injected = 0

    @property
    def faults(self) -> Faults:
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        # The push reads the same object, so a fault changed in place drops pushes too.
        self._faults = faults
        self.push.faults = faults

    def reset(self) -> None:
        """Empty all data and drop what the metadata API created, back to the schema the emulator
        started with (bare or not); currencies stay (SPEC 9); faults and limits stay."""
        self.store = self._new_store(self._schema(), self.store.caller)
        self.push.reset()
        self.requests.clear()
        self.batched.clear()
        self.statuses.clear()
        self.faults_injected = 0
        self.protection.reset_counters()

    def _schema(self) -> Schema:
        return Schema(custom_schema=self.custom_schema, column_prefix=self.column_prefix)

    def stats(self) -> dict[str, Any]:
        return {
            "requests": dict(sorted(self.requests.items())),
            "total_requests": sum(self.requests.values()),
            # "requests" counts a $batch once, as HTTP requests; its operations are here
            "batched_operations": dict(sorted(self.batched.items())),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "throttled": self.protection.throttled,
            "in_flight": self.protection.in_flight,
            "peak_concurrent": self.protection.peak_in_flight,
            "faults_injected": self.faults_injected,
            "webhook_deliveries": self.push.stats.delivered,  # pushes to service endpoints
            "rows": {name: len(rows) for name, rows in sorted(self.store.tables.items())},
            # per solution its components, and how often customizations were published
            **(self.customizations.stats(self.store) if self.customizations else {}),
        }

    def count_request(self, method: str, path: str) -> None:
        """One HTTP request under the service root (``path`` relative to it)."""
        self.requests[route_template(method, API_PREFIX + path)] += 1

    def count_batched(self, method: str, path: str) -> None:
        """One inner operation of a ``$batch`` (``path`` under the service root)."""
        self.batched[route_template(method, API_PREFIX + path)] += 1
