"""What one emulator holds for customization besides rows: its system tables and their seed,
the unpublished form customizations, the privileges its operator lacks, the import delay and
the imports running in the background; and the control route ``/_emulator/customization``.

``GET /_emulator/customization`` → ``{"missing_privileges": [...], "import_delay_ms": 20,
"unpublished_forms": [...], "publishes": n, "imports": n}``; ``PUT`` with any of
``missing_privileges`` (privilege names the operator's identity then lacks: a request that needs
one answers 403, ``access.py``) and ``import_delay_ms`` (the pause before each component of a
solution import, so a poller sees the progress rise); ``DELETE`` gives the privileges back.
``POST /_emulator/reset`` returns the system tables to their seed and gives the privileges back
(the import delay stays, like the limits).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from sandbox.dataverse import forms, import_job, installed, privileges, roles, solutions, views
from sandbox.dataverse.schema import Schema
from sandbox.dataverse.store import Store

DEFAULT_IMPORT_DELAY_MS = 20.0


def add_tables(schema: Schema) -> Schema:
    """The customization tables, added to one emulator's schema."""
    for module in (solutions, privileges, roles, forms, views, import_job):
        module.add_tables(schema)
    return schema


class Customizing:
    def __init__(self) -> None:
        self.missing: set[str] = set()  # privilege names the operator lacks
        self.import_delay_ms = DEFAULT_IMPORT_DELAY_MS
        self.pending_forms: forms.Pending = {}
        self.publishes = 0
        self.imports = 0
        self.tasks: set[asyncio.Task[None]] = set()

    def seed(self, store: Store) -> None:
        """A new store (start or reset): the seeded rows, and nothing pending or missing."""
        self.missing = set()
        self.pending_forms = {}
        self.publishes = 0
        self.imports = 0
        for module in (solutions, roles, privileges, forms, views):
            module.seed(store)
        if store.schema.custom_schema:
            installed.seed(store)  # the org has the app's customisations, not only its columns

    def stats(self, store: Store) -> dict[str, Any]:
        return {
            "solutions": solutions.stats(store),  # components per solution
            "publishes": self.publishes,
            "solution_imports": self.imports,
        }

    def report(self) -> dict[str, Any]:
        return {
            "missing_privileges": sorted(self.missing),
            "import_delay_ms": self.import_delay_ms,
            "unpublished_forms": sorted(self.pending_forms),
            "publishes": self.publishes,
            "imports": self.imports,
            "imports_running": len(self.tasks),
        }

    def start(self, work: Any) -> None:
        """Run a coroutine (an asynchronous import) in the background."""
        task = asyncio.get_running_loop().create_task(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def idle(self) -> None:
        """Wait until every background import has finished (tests)."""
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)


def _refuse(message: str) -> Response:
    return JSONResponse({"error": message}, status_code=400)


async def _control(request: Request) -> Response:
    customizing: Customizing = request.app.state.customizing
    if request.method == "PUT":
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            return _refuse("the body must be a JSON object")
        if not isinstance(body, dict):
            return _refuse("the body must be a JSON object")
        missing = body.get("missing_privileges", sorted(customizing.missing))
        delay = body.get("import_delay_ms", customizing.import_delay_ms)
        if not isinstance(missing, list) or not all(isinstance(m, str) for m in missing):
            return _refuse('expected {"missing_privileges": ["prvCreateEntity", ...]}')
        if isinstance(delay, bool) or not isinstance(delay, int | float) or delay < 0:
            return _refuse('expected {"import_delay_ms": >= 0}')
        customizing.missing = set(missing)
        customizing.import_delay_ms = float(delay)
    elif request.method == "DELETE":
        customizing.missing = set()
    return JSONResponse(customizing.report())


routes = [Route("/customization", _control, methods=["GET", "PUT", "DELETE"])]
