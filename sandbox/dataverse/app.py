"""The Dataverse emulator: an ASGI app serving ``/api/data/v9.2/`` and the ``/_emulator/``
control API. ``create_app()`` builds one with its own in-memory data.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from sandbox.dataverse import batch, control, push
from sandbox.dataverse.api import API_PREFIX, DataApi, json_response
from sandbox.dataverse.errors import DataverseFault
from sandbox.dataverse.faults import injected_fault
from sandbox.dataverse.limits import Limits, ServiceProtection
from sandbox.dataverse.metadata import MetadataApi
from sandbox.dataverse.schema import Schema
from sandbox.dataverse.store import Caller
from sandbox.kit.faults import Faults
from shared.crm_schema import DEFAULT_PREFIX

_TEMPLATE_PARTS = (
    (re.compile(r"\([0-9a-fA-F-]{36}\)"), "({id})"),
    (re.compile(r"\(LogicalName='[^']*'\)"), "(LogicalName={name})"),
)


def route_template(method: str, path: str) -> str:
    """``PATCH /api/data/v9.2/opportunities({id})``: how stats group requests."""
    for pattern, replacement in _TEMPLATE_PARTS:
        path = pattern.sub(replacement, path)
    return f"{method} {path}"


class Emulator:
    """The state of one emulator: schema and rows, limits, faults and request statistics."""

    def __init__(
        self,
        *,
        token: str,
        limits: Limits | None,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        seed: int | None,
        custom_schema: bool = True,
        column_prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self.token = token
        self.custom_schema = custom_schema
        self.column_prefix = column_prefix
        self._wall_clock = wall_clock
        self.push = push.Dispatcher(self)  # Dataverse's webhook push (sandbox/dataverse/push.py)
        self.store: push.PushStore = push.PushStore(
            self._schema(), dispatcher=self.push, caller=Caller(), wall_clock=wall_clock
        )
        self.protection = ServiceProtection(limits, clock=clock)
        self.faults = Faults()
        self.rng = random.Random(seed)
        self.requests: Counter[str] = Counter()
        self.batched: Counter[str] = Counter()  # the inner operations of $batch requests
        self.statuses: Counter[int] = Counter()
        self.faults_injected = 0
        self.data = DataApi(self)
        self.metadata = MetadataApi(self)

    def reset(self) -> None:
        """Empty all data and drop what the metadata API created, back to the schema the emulator
        started with (bare or not); currencies stay (SPEC 9); faults and limits stay."""
        self.store = push.PushStore(
            self._schema(),
            dispatcher=self.push,
            caller=self.store.caller,
            wall_clock=self._wall_clock,
        )
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
            "solutions": self.store.schema.solution_components,  # MSCRM.SolutionUniqueName
        }

    async def serve(self, request: Request) -> Response:
        path = request.path_params["path"]
        self.requests[route_template(request.method, API_PREFIX + path)] += 1
        response = await self._serve(request, path)
        self.statuses[response.status_code] += 1
        return response

    def count_batched(self, method: str, path: str) -> None:
        """One inner operation of a ``$batch`` (``path`` under the service root)."""
        self.batched[route_template(method, API_PREFIX + path)] += 1

    async def _serve(self, request: Request, path: str) -> Response:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            # reference 7.3: AccessTokenExpired / the request is not authenticated
            return _error(
                DataverseFault(
                    401,
                    "0x8005F101",
                    "The requested resource requires authentication.",
                    {"WWW-Authenticate": "Bearer"},
                )
            )
        try:
            self.protection.enter()
        except DataverseFault as fault:
            return _error(fault)
        try:
            faults = self.faults
            # Yield at least once so concurrent requests overlap as they would on a server.
            await asyncio.sleep(faults.latency_ms / 1000)
            injected = injected_fault(faults, self.rng)
            if injected is not None:
                self.faults_injected += 1
                return _error(injected)
            if path == "$batch":
                return await batch.handle(self, request)
            response = await self.metadata.handle(request, path)
            if response is None:
                response = await self.data.handle(request, path)
            return response
        except DataverseFault as fault:
            return _error(fault)
        finally:
            self.protection.leave()


def _error(fault: DataverseFault) -> Response:
    return json_response(fault.body(), fault.status, fault.headers)


def create_app(
    *,
    token: str = "sandbox",  # noqa: S107 - the sandbox's well-known bearer token
    limits: Limits | None = None,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
    seed: int | None = None,
    custom_schema: bool = True,
    column_prefix: str = DEFAULT_PREFIX,
) -> Starlette:
    """A fresh emulator. ``clock`` drives the service-protection window (inject a fake one to
    run long windows in virtual time); ``wall_clock`` stamps ``createdon``/``modifiedon``.
    ``custom_schema=False`` starts from an org without this app's columns and tables (standard
    tables only), as ``cosell schema apply`` finds a new environment; otherwise the app's custom
    columns and tables are there with ``column_prefix`` (``CRM_COLUMN_PREFIX``)."""
    emulator = Emulator(
        token=token,
        limits=limits,
        clock=clock,
        wall_clock=wall_clock,
        seed=seed,
        custom_schema=custom_schema,
        column_prefix=column_prefix,
    )

    async def serve(request: Request) -> Response:
        return await emulator.serve(request)

    app = Starlette(
        routes=[
            Route(
                API_PREFIX + "{path:path}",
                serve,
                methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            ),
            Mount("/_emulator", routes=[*control.routes, *push.routes]),
        ]
    )
    app.add_middleware(push.ActingUser)
    app.state.emulator = emulator
    return app


def emulator_of(app: Starlette) -> Emulator:
    """The state behind an app made by ``create_app`` (tests arrange and inspect through it)."""
    emulator: Emulator = app.state.emulator
    return emulator
