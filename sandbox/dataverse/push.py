"""Dataverse's push to webhooks, emulated (reference: dataverse-push-and-webhook-trust §1;
Microsoft's docs ``use-webhooks``, ``register-web-hook``, ``reference/entities/serviceendpoint``
and ``reference/entities/sdkmessageprocessingstep``).

Registration is data, as in Dataverse: the tables ``serviceendpoints`` (``contract`` 8 = webhook,
``authtype`` 4 WebhookKey / 5 HttpHeader / 6 HttpQueryString, ``authvalue`` never read back),
``sdkmessages`` and ``sdkmessagefilters`` (seeded, like the platform's),
``sdkmessageprocessingsteps`` (``eventhandler_serviceendpoint@odata.bind``, ``stage``, ``mode``,
``filteringattributes``, ``asyncautodelete``, enabled while ``statecode`` is 0),
``sdkmessageprocessingstepimages`` (``entityalias``, ``imagetype`` 0 pre / 1 post / 2 both,
``attributes``) and ``asyncoperations`` (the System Jobs of failed deliveries). Deleting an
endpoint deletes its steps (cascade).

After a write is committed (a single request, or the whole ``$batch`` change set; nothing when it
rolls back), every matching enabled step gets the serialised ``RemoteExecutionContext``: on
Create the new row's columns, on Update only the changed columns (plus the key, ``modifiedon``
and ``modifiedby``) and only when one of the step's filtering attributes is among them, on Delete
an ``EntityReference``; images as registered. Dates are data-contract ``\\/Date(ms)\\/``. Headers
``x-ms-dynamics-organization``, ``-entity-name``, ``-request-name``,
``x-ms-correlation-request-id``; a body over 256 KB loses ``ParentContext``,
``InputParameters`` and both images and carries ``x-ms-dynamics-msg-size-exceeded``. Each
delivery waits 60 s at most; only 502, 503 and 504 get exactly one more attempt; a failure
becomes an ``asyncoperations`` row with ``statuscode`` 31 (Failed) owned by the step.

The initiating user is the caller's (``WhoAmI``'s), or the one the request impersonates with the
documented ``MSCRMCallerID`` header: the sandbox's "seller" writes that way, so the app can tell
its own writes from a person's as it does against a real environment (where the seller simply is
another user). UNCERTAIN: for an impersonated request Dataverse may report the impersonated user
as ``UserId`` and the caller as ``InitiatingUserId``; the app never impersonates, so either is
fine for it.

Faults: ``drop_webhook_rate`` of ``PUT /_emulator/faults`` drops pushes, and
``PUT /_emulator/push`` (``{"drop_rate": 0.1, "delay_ms": 500}``) drops or delays them;
``GET /_emulator/push`` reports deliveries (the last 200 of them) and those settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import random
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from sandbox.dataverse.schema import (
    ACTIVE_STATES,
    Column,
    Kind,
    Schema,
    Table,
    add_system_columns,
    parse_datetime,
)
from sandbox.dataverse.store import Record, Row, Store
from sandbox.kit.faults import Faults

CONTRACTS = "http://schemas.microsoft.com/xrm/2011/Contracts"
MAX_BODY_BYTES = 256 * 1024
TIMEOUT_S = 60.0
RETRIED_STATUSES = frozenset({502, 503, 504})
ORGANIZATION = "sandbox.crm.dynamics.com"
# Messages the emulator pushes. UNCERTAIN: closing an opportunity is its own Win/Lose message
# (the platform's sdkmessage names); whether an Update step also fires then is not documented.
MESSAGES = ("Create", "Update", "Delete", "Win", "Lose")
_NAMESPACE = uuid.UUID("2f0e6b3a-64a3-4b0c-9f31-51d4d5e1a7c2")
# Stamped on every write: sent in Target on Update besides the changed columns (reference §1.1).
_ALWAYS = ("modifiedon", "_modifiedby_value")
_UNCHANGED = frozenset({"versionnumber", "createdon", "_createdby_value"})
_SETTING = re.compile(r"""<setting\s+name="(?P<name>[^"]*)"\s+value="(?P<value>[^"]*)"\s*/>""")

acting_user: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "acting_user", default=None
)


def message_id(name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"sdkmessage:{name}"))


def filter_id(message: str, logical_name: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"sdkmessagefilter:{message}:{logical_name}"))


# -- tables -----------------------------------------------------------------------------------


def _table(logical: str, entity_set: str, key: str, name: str, states: Any = None) -> Table:
    table = Table(logical, entity_set, key, name)
    add_system_columns(table, states or ACTIVE_STATES)
    table.add(Column(name, Kind.STRING, max_length=256))
    return table


def add_push_tables(schema: Schema) -> Schema:
    """The registration tables, added to one emulator's schema."""
    endpoint = _table("serviceendpoint", "serviceendpoints", "serviceendpointid", "name")
    for column in (
        Column("url", Kind.STRING, max_length=2000),
        Column("contract", Kind.PICKLIST, options={1: "OneWay", 8: "Webhook"}),
        Column(
            "authtype",
            Kind.PICKLIST,
            options={4: "WebhookKey", 5: "HttpHeader", 6: "HttpQueryString"},
        ),
        Column("authvalue", Kind.STRING, max_length=2048),
        Column("messageformat", Kind.PICKLIST, options={1: "BinaryXML", 2: "Json", 3: "TextXML"}),
        Column("description", Kind.MEMO, max_length=2000),
    ):
        endpoint.add(column)
    message = _table("sdkmessage", "sdkmessages", "sdkmessageid", "name")
    message_filter = _table("sdkmessagefilter", "sdkmessagefilters", "sdkmessagefilterid", "name")
    message_filter.add(Column("primaryobjecttypecode", Kind.STRING, max_length=100))
    message_filter.add(Column("sdkmessageid", Kind.LOOKUP, targets={"sdkmessageid": "sdkmessages"}))
    step = _table(
        "sdkmessageprocessingstep",
        "sdkmessageprocessingsteps",
        "sdkmessageprocessingstepid",
        "name",
    )
    for column in (
        Column(
            "stage",
            Kind.PICKLIST,
            options={10: "Pre-validation", 20: "Pre-operation", 40: "Post-operation"},
        ),
        Column("mode", Kind.PICKLIST, options={0: "Synchronous", 1: "Asynchronous"}),
        Column("rank", Kind.INTEGER, minimum=0, maximum=2_147_483_647),
        Column(
            "supporteddeployment", Kind.PICKLIST, options={0: "Server", 1: "Offline", 2: "Both"}
        ),
        Column("asyncautodelete", Kind.BOOLEAN),
        Column("filteringattributes", Kind.MEMO, max_length=100_000),
        Column("description", Kind.MEMO, max_length=2000),
        Column(
            "eventhandler",
            Kind.LOOKUP,
            targets={"eventhandler_serviceendpoint": "serviceendpoints"},
        ),
        Column("sdkmessageid", Kind.LOOKUP, targets={"sdkmessageid": "sdkmessages"}),
        Column(
            "sdkmessagefilterid", Kind.LOOKUP, targets={"sdkmessagefilterid": "sdkmessagefilters"}
        ),
    ):
        step.add(column)
    image = _table(
        "sdkmessageprocessingstepimage", "sdkmessageprocessingstepimages",
        "sdkmessageprocessingstepimageid", "name",
    )  # fmt: skip
    for column in (
        Column("entityalias", Kind.STRING, max_length=256),
        Column("imagetype", Kind.PICKLIST, options={0: "PreImage", 1: "PostImage", 2: "Both"}),
        Column("messagepropertyname", Kind.STRING, max_length=256),
        Column("attributes", Kind.MEMO, max_length=100_000),
        Column("sdkmessageprocessingstepid", Kind.LOOKUP,
               targets={"sdkmessageprocessingstepid": "sdkmessageprocessingsteps"}),
    ):  # fmt: skip
        image.add(column)
    # statecode Ready/Suspended/Locked/Completed and their statuscodes (31 = Failed).
    job_states = {0: (0,), 1: (10,), 2: (20, 21, 22), 3: (30, 31, 32)}
    job = _table("asyncoperation", "asyncoperations", "asyncoperationid", "name", job_states)
    for column in (
        Column("operationtype", Kind.INTEGER, minimum=0, maximum=2_147_483_647),
        Column("message", Kind.MEMO, max_length=100_000),
        Column("friendlymessage", Kind.MEMO, max_length=100_000),
        Column("primaryentitytype", Kind.STRING, max_length=100),
        Column("owningextensionid", Kind.LOOKUP,
               targets={"owningextensionid": "sdkmessageprocessingsteps"}),
    ):  # fmt: skip
        job.add(column)
    for table in (endpoint, message, message_filter, step, image, job):
        schema.tables[table.entity_set] = table
    return schema


# -- committed changes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One committed write: the message, the row before and after (None where there is none),
    the columns the write changed (wire names) and the user it ran as."""

    message: str
    entity_set: str
    row_id: str
    before: Row | None
    after: Row | None
    targets: dict[str, str]
    changed: frozenset[str]
    user_id: str
    extra_inputs: tuple[tuple[str, Any], ...] = ()


class PushStore(Store):
    """The emulator's store, telling the dispatcher about every committed write."""

    def __init__(self, schema: Schema, *, dispatcher: Dispatcher, **options: Any) -> None:
        self.dispatcher = dispatcher
        self._pending: list[Change] = []
        self._secrets: dict[str, str] = {}  # serviceendpoint id → authvalue (never read back)
        super().__init__(add_push_tables(schema), **options)

    def reset(self) -> None:
        self._pending = []
        super().reset()
        self._seed_messages()

    def _seed_messages(self) -> None:
        tables = [t.logical_name for t in self.schema.tables.values()]
        for name in MESSAGES:
            super().create("sdkmessages", {"sdkmessageid": message_id(name), "name": name})
            for logical in tables:
                body = {
                    "sdkmessagefilterid": filter_id(name, logical),
                    "name": f"{name} {logical}",
                    "primaryobjecttypecode": logical,
                    "sdkmessageid@odata.bind": f"/sdkmessages({message_id(name)})",
                }
                super().create("sdkmessagefilters", body)

    @contextlib.contextmanager
    def atomic(self) -> Iterator[None]:
        outer = self._journal is None
        try:
            with super().atomic():
                yield
        except BaseException:
            if outer:
                self._pending.clear()
            raise
        if outer:
            self._flush()

    def _record(self, change: Change) -> None:
        self._pending.append(change)
        if self._journal is None:  # not inside a change set: committed now
            self._flush()

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        for change in pending:
            self.dispatcher.publish(self, change)

    def _user(self) -> str:
        return acting_user.get() or self.caller.user_id

    def _secret(self, entity_set: str, body: Row) -> tuple[Row, str | None]:
        if entity_set != "serviceendpoints" or "authvalue" not in body:
            return body, None
        body = dict(body)
        value = body.pop("authvalue")
        return body, value if isinstance(value, str) else None

    def create(self, entity_set: str, body: Row) -> Record:
        body, secret = self._secret(entity_set, body)
        record = super().create(entity_set, body)
        table = self.table(entity_set)
        row_id = record.values[table.primary_key]
        if secret is not None:
            self._secrets[row_id] = secret
        self._record(self._change("Create", entity_set, row_id, None, record))
        return record

    def update(
        self,
        entity_set: str,
        row_id: str,
        body: Row,
        *,
        if_match: str | None = None,
        if_none_match: str | None = None,
    ) -> tuple[Record, bool]:
        body, secret = self._secret(entity_set, body)
        existing = self.find(entity_set, row_id)
        before = dict(existing.values) if existing is not None else None
        record, created = super().update(
            entity_set, row_id, body, if_match=if_match, if_none_match=if_none_match
        )
        if secret is not None:
            self._secrets[row_id.lower()] = secret
        sent = {k for k in body if k in record.values}
        message = "Create" if created else "Update"
        self._record(self._change(message, entity_set, row_id.lower(), before, record, sent))
        return record, created

    def delete(self, entity_set: str, row_id: str, *, if_match: str | None = None) -> None:
        record = self.get(entity_set, row_id)
        before, targets = dict(record.values), dict(record.targets)
        with self.atomic():
            super().delete(entity_set, row_id, if_match=if_match)
            if entity_set == "serviceendpoints":
                self._cascade(row_id.lower())
            change = Change(
                "Delete", entity_set, row_id.lower(), before, None, targets, frozenset(),
                self._user(),
            )  # fmt: skip
            self._record(change)

    def _cascade(self, endpoint_id: str) -> None:
        """Deleting an endpoint deletes its steps and their images (reference §1.2)."""
        steps = [
            step_id
            for step_id, step in self.tables["sdkmessageprocessingsteps"].items()
            if step.values.get("_eventhandler_value") == endpoint_id
        ]
        for step_id in steps:
            for image_id, image in list(self.tables["sdkmessageprocessingstepimages"].items()):
                if image.values.get("_sdkmessageprocessingstepid_value") == step_id:
                    super().delete("sdkmessageprocessingstepimages", image_id)
            super().delete("sdkmessageprocessingsteps", step_id)
        self._secrets.pop(endpoint_id, None)

    def close_opportunity(self, won: bool, body: Row) -> None:
        before_rows = {k: dict(r.values) for k, r in self.tables["opportunities"].items()}
        super().close_opportunity(won, body)
        for row_id, record in self.tables["opportunities"].items():
            before = before_rows.get(row_id)
            if before is not None and before.get("versionnumber") != record.values["versionnumber"]:
                inputs = (
                    ("Status", body.get("Status")),
                    ("OpportunityClose", body.get("OpportunityClose")),
                )
                change = self._change(
                    "Win" if won else "Lose", "opportunities", row_id, before, record
                )
                self._record(replace(change, extra_inputs=inputs))

    def _change(
        self,
        message: str,
        entity_set: str,
        row_id: str,
        before: Row | None,
        record: Record,
        sent: Iterable[str] = (),
    ) -> Change:
        after = dict(record.values)
        if before is None:
            changed = frozenset(k for k, v in after.items() if v is not None)
        else:
            diff = {k for k, v in after.items() if before.get(k) != v}
            changed = frozenset((diff | set(sent)) - _UNCHANGED)
        return Change(
            message, entity_set, row_id, before, after, dict(record.targets), changed, self._user()
        )

    def secret_of(self, endpoint_id: str) -> str | None:
        return self._secrets.get(endpoint_id)


# -- delivery ---------------------------------------------------------------------------------


@dataclass
class PushSettings:
    drop_rate: float = 0.0
    delay_ms: float = 0.0


@dataclass
class PushStats:
    changes: int = 0
    attempts: int = 0
    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    truncated: int = 0


@dataclass
class Delivery:
    step: str
    message: str
    entity: str
    row_id: str
    url: str
    statuses: list[int | str] = field(default_factory=list)
    ok: bool = False
    sent_at: float = 0.0
    size_exceeded: bool = False


class Dispatcher:
    """Finds the steps a committed change matches and posts the context to their endpoints."""

    def __init__(
        self,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout_s: float = TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.faults = Faults()  # the emulator's (``state.Emulator`` hands them over)
        self.transport = transport
        self.timeout_s = timeout_s
        self.clock = clock
        self.settings = PushSettings()
        self.stats = PushStats()
        self.deliveries: deque[Delivery] = deque(maxlen=200)
        self._tasks: set[asyncio.Task[None]] = set()
        self._rng = random.Random(0)

    def reset(self) -> None:
        self.stats = PushStats()
        self.deliveries.clear()

    def publish(self, store: PushStore, change: Change) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # seeding outside the server: nothing is listening yet
            return
        for step in self._matching(store, change):
            endpoint = store.find("serviceendpoints", step.values.get("_eventhandler_value") or "")
            if endpoint is None or endpoint.values.get("contract") != 8:
                continue
            self.stats.changes += 1
            drop = max(self.settings.drop_rate, self.faults.drop_webhook_rate)
            if drop and self._rng.random() < drop:
                self.stats.dropped += 1
                continue
            headers, body, exceeded = self._request(store, change, step)
            url = self._url(endpoint.values.get("url") or "", endpoint, store, headers)
            delivery = Delivery(
                str(step.values["name"]), change.message, change.entity_set, change.row_id, url,
                size_exceeded=exceeded,
            )  # fmt: skip
            task = loop.create_task(self._deliver(store, step, delivery, headers, body))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _matching(self, store: PushStore, change: Change) -> list[Record]:
        table = store.table(change.entity_set)
        wanted = filter_id(change.message, table.logical_name)
        found = []
        for step in store.tables.get("sdkmessageprocessingsteps", {}).values():
            values = step.values
            if values.get("statecode") != 0 or values.get("_sdkmessagefilterid_value") != wanted:
                continue
            if change.message == "Update" and not _filtered_in(values, change.changed):
                continue
            found.append(step)
        return sorted(found, key=lambda s: s.values.get("rank") or 0)

    def _url(self, url: str, endpoint: Record, store: PushStore, headers: dict[str, str]) -> str:
        secret = store.secret_of(endpoint.values["serviceendpointid"]) or ""
        kind = endpoint.values.get("authtype")
        if kind == 4:  # WebhookKey: the Azure Functions key, as ?code= (reference §1.2)
            return str(httpx.URL(url).copy_merge_params({"code": secret}))
        settings = {m["name"]: m["value"] for m in _SETTING.finditer(secret)}
        if kind == 5:
            headers.update(settings)
        elif kind == 6:
            return str(httpx.URL(url).copy_merge_params(settings))
        return url

    def _request(
        self, store: PushStore, change: Change, step: Record
    ) -> tuple[dict[str, str], bytes, bool]:
        context = remote_execution_context(store, change, step, now=self.clock())
        headers = {
            "Content-Type": "application/json",
            "x-ms-dynamics-organization": ORGANIZATION,
            "x-ms-dynamics-entity-name": store.table(change.entity_set).logical_name,
            "x-ms-dynamics-request-name": change.message,
            "x-ms-correlation-request-id": context["CorrelationId"],
        }
        body = _serialise(context)
        exceeded = len(body) > MAX_BODY_BYTES
        if exceeded:
            self.stats.truncated += 1
            for key in ("ParentContext", "InputParameters", "PreEntityImages", "PostEntityImages"):
                context.pop(key, None)
            headers["x-ms-dynamics-msg-size-exceeded"] = "true"
            body = _serialise(context)
        return headers, body, exceeded

    async def _deliver(
        self,
        store: PushStore,
        step: Record,
        delivery: Delivery,
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        if self.settings.delay_ms:
            await asyncio.sleep(self.settings.delay_ms / 1000)
        delivery.sent_at = self.clock()
        self.deliveries.append(delivery)
        error = ""
        if self.transport is None and not _loopback(delivery.url):
            # Without a transport given (tests give one), the sandbox stays on this machine.
            delivery.statuses.append("not sent: the emulator posts to loopback URLs only")
            self.stats.failed += 1
            self._system_job(store, step, delivery, 31, "the endpoint is not a loopback URL")
            return
        async with httpx.AsyncClient(transport=self.transport, timeout=self.timeout_s) as http:
            for attempt in (1, 2):
                self.stats.attempts += 1
                try:
                    response = await http.post(delivery.url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    delivery.statuses.append(type(exc).__name__)
                    error = f"{type(exc).__name__} calling the endpoint"
                    break  # only 502/503/504 are retried (reference §1.1)
                delivery.statuses.append(response.status_code)
                if response.is_success:
                    delivery.ok = True
                    break
                error = f"the endpoint answered {response.status_code}"
                if response.status_code not in RETRIED_STATUSES or attempt == 2:
                    break
        if delivery.ok:
            self.stats.delivered += 1
            if not step.values.get("asyncautodelete"):
                self._system_job(store, step, delivery, 30, "")
            return
        self.stats.failed += 1
        self._system_job(store, step, delivery, 31, error)

    def _system_job(
        self, store: PushStore, step: Record, delivery: Delivery, status: int, error: str
    ) -> None:
        step_id = step.values["sdkmessageprocessingstepid"]
        Store.create(
            store,
            "asyncoperations",
            {
                "name": delivery.step,
                "operationtype": 1,  # System Event
                "statecode": 3,
                "statuscode": status,
                "message": error or None,
                "friendlymessage": error or None,
                "primaryentitytype": store.table(delivery.entity).logical_name,
                "owningextensionid@odata.bind": f"/sdkmessageprocessingsteps({step_id})",
            },
        )

    async def idle(self) -> None:
        """Wait until every delivery has finished (tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def report(self) -> dict[str, Any]:
        return {
            "settings": asdict(self.settings),
            "stats": asdict(self.stats),
            "pending": len(self._tasks),
            "deliveries": [asdict(d) for d in self.deliveries],
        }


def _loopback(url: str) -> bool:
    host = httpx.URL(url).host
    return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")


def _filtered_in(step: Row, changed: frozenset[str]) -> bool:
    text = step.get("filteringattributes") or ""
    wanted = {a.strip().lower() for a in str(text).split(",") if a.strip()}
    if not wanted:
        return True  # no filtering attributes: every Update
    return bool(wanted & {_logical(c) for c in changed})


def _logical(wire: str) -> str:
    return wire[1:-6] if wire.startswith("_") and wire.endswith("_value") else wire


# -- the RemoteExecutionContext -----------------------------------------------------------------


def remote_execution_context(
    store: PushStore, change: Change, step: Record, *, now: float
) -> dict[str, Any]:
    """The body Dataverse posts, in data-contract JSON (Microsoft's sample in ``use-webhooks``)."""
    table = store.table(change.entity_set)
    caller = store.caller
    if change.message == "Delete":
        target: dict[str, Any] = _reference(table.logical_name, change.row_id)
    else:
        assert change.after is not None
        columns = change.changed | {table.primary_key, *_ALWAYS}
        if change.message == "Create":
            columns = frozenset(k for k, v in change.after.items() if v is not None)
        target = _entity(store, table, change.row_id, change.after, change.targets, columns)
    inputs = [{"key": "Target", "value": target}]
    if change.message in ("Win", "Lose"):
        inputs = [{"key": k, "value": _input(v)} for k, v in change.extra_inputs]
    outputs = [{"key": "id", "value": change.row_id}] if change.message == "Create" else []
    pre, post = _images(store, table, change, step)
    return {
        "BusinessUnitId": caller.business_unit_id,
        "CorrelationId": str(uuid.uuid4()),
        "Depth": 1,
        "InitiatingUserId": change.user_id,
        "InputParameters": inputs,
        "IsExecutingOffline": False,
        "IsInTransaction": False,
        "IsOfflinePlayback": False,
        "IsolationMode": 1,
        "MessageName": change.message,
        "Mode": step.values.get("mode", 1),
        "OperationCreatedOn": _date_ms(now * 1000),
        "OperationId": str(uuid.uuid4()),
        "OrganizationId": caller.organization_id,
        "OrganizationName": "sandbox",
        "OutputParameters": outputs,
        "OwningExtension": {
            **_reference("sdkmessageprocessingstep", step.values["sdkmessageprocessingstepid"]),
            "Name": step.values.get("name"),
        },
        "ParentContext": None,
        "PostEntityImages": post,
        "PreEntityImages": pre,
        "PrimaryEntityId": change.row_id,
        "PrimaryEntityName": table.logical_name,
        "RequestId": str(uuid.uuid4()),
        "SecondaryEntityName": "none",
        "SharedVariables": [],
        "Stage": step.values.get("stage", 40),
        "UserId": change.user_id,
    }


def _images(
    store: PushStore, table: Table, change: Change, step: Record
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    pre: list[dict[str, Any]] = []
    post: list[dict[str, Any]] = []
    step_id = step.values["sdkmessageprocessingstepid"]
    for image in store.tables.get("sdkmessageprocessingstepimages", {}).values():
        values = image.values
        if values.get("_sdkmessageprocessingstepid_value") != step_id:
            continue
        wanted = {a.strip().lower() for a in str(values.get("attributes") or "").split(",")}
        wanted.discard("")
        alias = str(values.get("entityalias") or "image")
        kind = values.get("imagetype")
        for rows, source, kinds in ((pre, change.before, (0, 2)), (post, change.after, (1, 2))):
            if source is None or kind not in kinds:
                continue
            columns = frozenset(
                k
                for k, v in source.items()
                if v is not None and (not wanted or _logical(k) in wanted)
            )
            entity = _entity(store, table, change.row_id, source, change.targets, columns)
            rows.append({"key": alias, "value": entity})
    return pre, post


def _entity(
    store: PushStore,
    table: Table,
    row_id: str,
    values: Row,
    targets: dict[str, str],
    columns: Iterable[str],
) -> dict[str, Any]:
    attributes = []
    for wire in sorted(columns):
        if wire not in values or wire == "authvalue":
            continue
        column = table.by_wire_name(wire)
        value = values[wire]
        if column is not None:
            value = _typed(store, column, value, targets)
        attributes.append({"key": _logical(wire), "value": value})
    return {
        "__type": f"Entity:{CONTRACTS}",
        "Attributes": attributes,
        "EntityState": None,
        "FormattedValues": [],
        "Id": row_id,
        "KeyAttributes": [],
        "LogicalName": table.logical_name,
        "RelatedEntities": [],
        "RowVersion": None,  # UNCERTAIN whether Dataverse fills it in a step's Target
    }


def _typed(store: PushStore, column: Column, value: Any, targets: dict[str, str]) -> Any:
    if value is None:
        return None
    if column.kind is Kind.MONEY:
        return {"__type": f"Money:{CONTRACTS}", "Value": value}
    if column.kind in (Kind.PICKLIST, Kind.STATE, Kind.STATUS):
        return {"__type": f"OptionSetValue:{CONTRACTS}", "Value": value}
    if column.kind is Kind.LOOKUP:
        target_set = targets.get(column.name) or next(iter(column.targets.values()), "")
        target = store.schema.table(target_set)
        return {
            **_reference(target.logical_name if target else target_set, str(value)),
            "Name": None,
        }
    if column.kind is Kind.DATETIME:
        parsed = parse_datetime(str(value))
        return _date_ms(parsed.timestamp() * 1000) if parsed else value
    if column.kind is Kind.DATEONLY:
        day = datetime.fromisoformat(str(value)).replace(tzinfo=UTC)
        return _date_ms(day.timestamp() * 1000)
    return value


def _input(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        return {"__type": f"OptionSetValue:{CONTRACTS}", "Value": value}
    if isinstance(value, dict):
        attributes = [{"key": k.split("@", 1)[0], "value": v} for k, v in value.items()]
        empty = "00000000-0000-0000-0000-000000000000"
        return {"__type": f"Entity:{CONTRACTS}", "Attributes": attributes,
                "LogicalName": "opportunityclose", "Id": empty}  # fmt: skip
    return value


def _reference(logical_name: str, row_id: str) -> dict[str, Any]:
    return {
        "__type": f"EntityReference:{CONTRACTS}",
        "Id": row_id,
        "KeyAttributes": [],
        "LogicalName": logical_name,
        "Name": None,
        "RowVersion": None,
    }


def _date_ms(ms: float) -> str:
    return f"/Date({int(ms)})/"


def _serialise(context: dict[str, Any]) -> bytes:
    # The data-contract serializer escapes the slashes of a date ("\/Date(…)\/"); same JSON.
    text = json.dumps(context, ensure_ascii=False, separators=(",", ":"))
    return re.sub(r'"/Date\((-?\d+)\)/"', r'"\\/Date(\1)\\/"', text).encode("utf-8")


# -- impersonation and the control route --------------------------------------------------------


class ActingUser:
    """ASGI middleware: a request's ``MSCRMCallerID`` (documented impersonation header) names
    the user its writes run as, for the pushes they cause."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        user = None
        for name, value in scope.get("headers", []):
            if name.lower() == b"mscrmcallerid":
                user = value.decode("latin-1").strip().strip("{}").lower() or None
        token = acting_user.set(user)
        try:
            await self.app(scope, receive, send)
        finally:
            acting_user.reset(token)


@contextlib.contextmanager
def acting_as(user_id: str) -> Iterator[None]:
    """In-process writes (tests) as another user, like ``MSCRMCallerID`` over HTTP."""
    token = acting_user.set(user_id.lower())
    try:
        yield
    finally:
        acting_user.reset(token)


async def _control(request: Request) -> Response:
    dispatcher: Dispatcher = request.app.state.emulator.push
    if request.method == "PUT":
        try:
            body = json.loads(await request.body() or b"{}")
            drop = float(body.get("drop_rate", 0.0))
            delay = float(body.get("delay_ms", 0.0))
            if not 0 <= drop <= 1 or delay < 0:
                raise ValueError
        except (ValueError, TypeError, AttributeError):
            return JSONResponse(
                {"error": 'expected {"drop_rate": 0..1, "delay_ms": >= 0}'}, status_code=400
            )
        dispatcher.settings = PushSettings(drop_rate=drop, delay_ms=delay)
    elif request.method == "DELETE":
        dispatcher.settings = PushSettings()
    return JSONResponse(dispatcher.report())


routes = [Route("/push", _control, methods=["GET", "PUT", "DELETE"])]


# -- the sandbox's seller -----------------------------------------------------------------------

# A person's user in the sandbox (the app writes as WhoAmI's user): its writes are pushed as
# initiated by someone else, as a seller's are against a real environment.
SELLER_USER_ID = "4a5b6c7d-0000-4000-8000-00000000a002"


class _ActingAs(httpx.AsyncBaseTransport):
    def __init__(self, user_id: str, inner: httpx.AsyncBaseTransport) -> None:
        self._user_id = user_id
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["MSCRMCallerID"] = self._user_id
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def seller_transport(
    inner: httpx.AsyncBaseTransport | None = None, *, user_id: str = SELLER_USER_ID
) -> httpx.AsyncBaseTransport:
    """A transport whose requests impersonate the sandbox's seller (``MSCRMCallerID``): give it
    to ``shared.wiring.dataverse_client`` to edit the CRM as a person would."""
    return _ActingAs(user_id, inner or httpx.AsyncHTTPTransport())
