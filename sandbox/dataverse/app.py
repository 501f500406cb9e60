"""The Dataverse emulator: an ASGI app serving ``/api/data/v9.2/`` and the ``/_emulator/``
control API. ``create_app()`` builds one with its own in-memory data (``state.Emulator``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from sandbox.dataverse import batch, control, customizing, push
from sandbox.dataverse.api import DataApi, json_response
from sandbox.dataverse.customization import CustomizationApi
from sandbox.dataverse.errors import DataverseFault
from sandbox.dataverse.faults import injected_fault
from sandbox.dataverse.limits import Limits
from sandbox.dataverse.metadata import MetadataApi
from sandbox.dataverse.schema import Schema
from sandbox.dataverse.state import API_PREFIX, Emulator
from sandbox.dataverse.store import Caller, Store
from shared.crm_schema import DEFAULT_PREFIX


class _ServiceRoot:
    """``/api/data/v9.2/``: the bearer token, service protection and injected faults, then
    ``$batch``, the metadata API or the data API; every request and status counted."""

    def __init__(self, emulator: Emulator, customizations: customizing.Customizing) -> None:
        self.emulator = emulator
        self.data = DataApi(emulator)
        self.metadata = MetadataApi(emulator)
        self.customization = CustomizationApi(emulator, customizations, self.data)

    async def serve(self, request: Request) -> Response:
        path = request.path_params["path"]
        self.emulator.count_request(request.method, path)
        response = await self._serve(request, path)
        self.emulator.statuses[response.status_code] += 1
        return response

    async def _serve(self, request: Request, path: str) -> Response:
        emulator = self.emulator
        if request.headers.get("authorization") != f"Bearer {emulator.token}":
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
            emulator.protection.enter()
        except DataverseFault as fault:
            return _error(fault)
        try:
            faults = emulator.faults
            # Yield at least once so concurrent requests overlap as they would on a server.
            await asyncio.sleep(faults.latency_ms / 1000)
            injected = injected_fault(faults, emulator.rng)
            if injected is not None:
                emulator.faults_injected += 1
                return _error(injected)
            if path == "$batch":
                return await batch.handle(emulator, request, self.dispatch)
            return await self.dispatch(request, path)
        except DataverseFault as fault:
            return _error(fault)
        finally:
            emulator.protection.leave()

    async def dispatch(self, request: Request, path: str) -> Response:
        """One request (or one operation of a ``$batch``) through the customization, metadata
        or data API (the customization API also checks the caller's privileges)."""
        response = await self.customization.handle(request, path)
        if response is None:
            response = await self.metadata.handle(request, path)
        if response is None:
            response = await self.data.handle(request, path)
        return response


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
    dispatcher = push.Dispatcher()  # Dataverse's webhook push (sandbox/dataverse/push.py)
    customizations = customizing.Customizing()  # solutions, forms, roles … (customizing.py)

    def push_store(schema: Schema, caller: Caller) -> Store:
        store = push.PushStore(
            customizing.add_tables(schema),
            dispatcher=dispatcher,
            caller=caller,
            wall_clock=wall_clock,
        )
        customizations.seed(store)
        return store

    emulator = Emulator(
        token=token,
        limits=limits,
        clock=clock,
        seed=seed,
        store=push_store,
        push=dispatcher,
        customizations=customizations,
        custom_schema=custom_schema,
        column_prefix=column_prefix,
    )
    app = Starlette(
        routes=[
            Route(
                API_PREFIX + "{path:path}",
                _ServiceRoot(emulator, customizations).serve,
                methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
            ),
            Mount("/_emulator", routes=[*control.routes, *push.routes, *customizing.routes]),
        ]
    )
    app.add_middleware(push.ActingUser)
    app.state.emulator = emulator
    app.state.customizing = customizations
    return app


def emulator_of(app: Starlette) -> Emulator:
    """The state behind an app made by ``create_app`` (tests arrange and inspect through it)."""
    emulator: Emulator = app.state.emulator
    return emulator
