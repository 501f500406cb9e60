"""The Dataverse push this app registers, and registering it through the Web API (reference:
dataverse-push-and-webhook-trust §1.2; Microsoft's docs ``register-web-hook``,
``reference/entities/serviceendpoint``, ``reference/entities/sdkmessageprocessingstep``).

One service endpoint (``contract`` 8 webhook, ``authtype`` 4 WebhookKey: Dataverse sends the
function key as ``?code=``, ``messageformat`` 2 JSON) named ``ENDPOINT_NAME``, and asynchronous
post-operation steps on it (a synchronous step's failure would fail the seller's save), each with
``asyncautodelete``:

* opportunity Create, and Update filtered to exactly the columns the mapping reads
  (``Columns.opportunity_select``, the mapping's extra columns included), so unrelated edits do
  not fire; Win and Lose where the environment has those message filters;
* solution row Create, Update (its columns) and Delete, each with a ``pre`` image of the row's
  opportunity lookup: a Delete's ``Target`` is only a reference, and an Update that did not
  change the lookup does not carry it — the image names the opportunity either way.

``register`` is idempotent: what exists and matches is left alone, a changed mapping updates
the filtering attributes, a changed key or URL updates the endpoint (the key is never readable
back, so the endpoint's description keeps a SHA-256 fingerprint of it, not the key). Only rows
of our endpoint are ever changed or removed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from shared.dataverse import DataverseClient, all_of, eq
from shared.sync.mapping import Columns

ENDPOINT_NAME = "Co-sell Sync dataverse_webhook"
WEBHOOK_ROUTE = "/api/webhooks/dataverse"
CONTRACT_WEBHOOK = 8
AUTH_WEBHOOK_KEY = 4
FORMAT_JSON = 2
STAGE_POST_OPERATION = 40
MODE_ASYNCHRONOUS = 1
IMAGE_PRE = 0
PRE_IMAGE_ALIAS = "pre"
# Columns every read selects that are not data a seller edits.
_NOT_FILTERED = frozenset({"modifiedon", "versionnumber"})


@dataclass(frozen=True)
class StepSpec:
    """One step we want: a message on a table, its filtering attributes (Update only) and the
    columns of its pre image (none: no image)."""

    message: str
    table: str  # logical name
    filtering_attributes: tuple[str, ...] = ()
    pre_image: tuple[str, ...] = ()
    optional: bool = False  # skipped where the environment has no such message filter

    @property
    def name(self) -> str:
        return f"Co-sell Sync: {self.message} of {self.table}"

    @property
    def filtering_text(self) -> str | None:
        return ",".join(self.filtering_attributes) or None


def logical_column(wire: str) -> str:
    """``_parentaccountid_value`` → ``parentaccountid`` (filtering attributes and images name
    logical attributes, the Web API reads lookups as ``_<name>_value``)."""
    return wire[1:-6] if wire.startswith("_") and wire.endswith("_value") else wire


def opportunity_filtering_attributes(columns: Columns) -> tuple[str, ...]:
    """Exactly the opportunity columns the sync reads, without the key and version columns."""
    read = (logical_column(c) for c in columns.opportunity_select)
    return tuple(sorted({c for c in read if c != "opportunityid" and c not in _NOT_FILTERED}))


def push_steps(columns: Columns) -> list[StepSpec]:
    """The steps of SPEC 3's ``dataverse_webhook`` for these columns and mapping."""
    solution = columns.schema.solution
    lookup = columns.opportunityid
    solution_columns = tuple(sorted({columns.name, columns.solutionidentifier, lookup}))
    return [
        StepSpec("Create", "opportunity"),
        StepSpec("Update", "opportunity", opportunity_filtering_attributes(columns)),
        StepSpec("Win", "opportunity", optional=True),
        StepSpec("Lose", "opportunity", optional=True),
        StepSpec("Create", solution.logical_name),
        StepSpec("Update", solution.logical_name, solution_columns, pre_image=(lookup,)),
        StepSpec("Delete", solution.logical_name, pre_image=(lookup,)),
    ]


def key_fingerprint(key: str) -> str:
    return "key sha256:" + hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class PushReport:
    """What ``register``/``show``/``unregister`` found or did, row by row."""

    endpoint_id: str | None = None
    url: str | None = None
    endpoint_action: str = "unchanged"
    steps: list[dict[str, Any]] = field(default_factory=list)
    failed_jobs: int = 0
    other_endpoints: int = 0

    @property
    def registered(self) -> bool:
        return self.endpoint_id is not None

    @property
    def changed(self) -> bool:
        return self.endpoint_action != "unchanged" or any(
            s["action"] not in ("unchanged", "listed") for s in self.steps
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "registered": self.registered,
            "endpoint_id": self.endpoint_id,
            "url": self.url,
            "endpoint": self.endpoint_action,
            "steps": self.steps,
            "failed_deliveries": self.failed_jobs,
            "other_webhook_endpoints": self.other_endpoints,
        }


class PushRegistrar:
    """Our service endpoint and steps in one Dataverse environment."""

    def __init__(self, dataverse: DataverseClient) -> None:
        self.dataverse = dataverse
        self._messages: dict[str, str] = {}

    async def endpoints(self) -> list[dict[str, Any]]:
        rows = self.dataverse.list_rows(
            "serviceendpoints",
            select=["serviceendpointid", "name", "url", "authtype", "description"],
            filter=eq("contract", CONTRACT_WEBHOOK),
        )
        return [row async for row in rows]

    async def ours(self) -> tuple[dict[str, Any] | None, int]:
        """Our endpoint (or None) and how many other webhook endpoints the environment has."""
        found = await self.endpoints()
        ours = [row for row in found if row.get("name") == ENDPOINT_NAME]
        return (ours[0] if ours else None), len(found) - len(ours)

    async def register(
        self, url: str, key: str, steps: Sequence[StepSpec], *, overwrite: bool = False
    ) -> PushReport:
        """Make ours match: ``url`` (without the key) and ``key`` (sent as ``?code=``).
        Raises ``EndpointInUse`` when ours points elsewhere and ``overwrite`` is not given."""
        endpoint, others = await self.ours()
        report = PushReport(url=url, other_endpoints=others)
        fingerprint = key_fingerprint(key)
        if endpoint is None:
            created = await self.dataverse.create(
                "serviceendpoints",
                {
                    "name": ENDPOINT_NAME,
                    "url": url,
                    "contract": CONTRACT_WEBHOOK,
                    "authtype": AUTH_WEBHOOK_KEY,
                    "authvalue": key,
                    "messageformat": FORMAT_JSON,
                    "description": fingerprint,
                },
                select=["serviceendpointid"],
            )
            report.endpoint_id, report.endpoint_action = (
                str(created["serviceendpointid"]),
                "created",
            )
        else:
            report.endpoint_id = str(endpoint["serviceendpointid"])
            if endpoint.get("url") != url and not overwrite:
                raise EndpointInUse(str(endpoint.get("url")))
            if endpoint.get("url") != url or endpoint.get("description") != fingerprint:
                await self.dataverse.update(
                    "serviceendpoints",
                    report.endpoint_id,
                    {"url": url, "authtype": AUTH_WEBHOOK_KEY, "authvalue": key,
                     "description": fingerprint},
                    select=["serviceendpointid"],
                )  # fmt: skip
                report.endpoint_action = "updated"
        existing = {
            step["_sdkmessagefilterid_value"]: step
            for step in await self._steps(report.endpoint_id)
        }
        wanted: set[str] = set()
        for spec in steps:
            filter_id = await self._filter(spec)
            if filter_id is None:
                report.steps.append(self._row(spec, "not available", None))
                continue
            wanted.add(filter_id)
            action = await self._ensure_step(
                report.endpoint_id, spec, filter_id, existing.get(filter_id)
            )
            report.steps.append(self._row(spec, action, existing.get(filter_id)))
        for filter_id, step in existing.items():
            if filter_id not in wanted:  # ours, from an older version: not wanted any more
                await self._delete_step(str(step["sdkmessageprocessingstepid"]))
                report.steps.append({"name": step.get("name"), "action": "removed"})
        report.failed_jobs = await self._failed(list(existing.values()))
        return report

    async def show(self) -> PushReport:
        endpoint, others = await self.ours()
        report = PushReport(other_endpoints=others)
        if endpoint is None:
            return report
        report.endpoint_id = str(endpoint["serviceendpointid"])
        report.url = endpoint.get("url")
        steps = await self._steps(report.endpoint_id)
        for step in steps:
            images = await self._images(str(step["sdkmessageprocessingstepid"]))
            report.steps.append(
                {
                    "name": step.get("name"),
                    "action": "listed",
                    "enabled": step.get("statecode") == 0,
                    "filtering_attributes": step.get("filteringattributes"),
                    "pre_image": images[0].get("attributes") if images else None,
                }
            )
        report.failed_jobs = await self._failed(steps)
        return report

    async def unregister(self) -> PushReport:
        """Remove our endpoint and its steps; other endpoints stay."""
        endpoint, others = await self.ours()
        report = PushReport(other_endpoints=others)
        if endpoint is None:
            return report
        endpoint_id = str(endpoint["serviceendpointid"])
        for step in await self._steps(endpoint_id):
            await self._delete_step(str(step["sdkmessageprocessingstepid"]))
            report.steps.append({"name": step.get("name"), "action": "removed"})
        await self.dataverse.delete("serviceendpoints", endpoint_id)
        report.endpoint_id, report.url, report.endpoint_action = (
            endpoint_id,
            endpoint.get("url"),
            "removed",
        )
        return report

    # -- steps ------------------------------------------------------------------------------

    async def _steps(self, endpoint_id: str) -> list[dict[str, Any]]:
        rows = self.dataverse.list_rows(
            "sdkmessageprocessingsteps",
            select=["sdkmessageprocessingstepid", "name", "filteringattributes", "statecode",
                    "stage", "mode", "asyncautodelete", "_sdkmessagefilterid_value"],
            filter=eq("_eventhandler_value", UUID(endpoint_id)),
        )  # fmt: skip
        return [row async for row in rows]

    async def _images(self, step_id: str) -> list[dict[str, Any]]:
        rows = self.dataverse.list_rows(
            "sdkmessageprocessingstepimages",
            select=["sdkmessageprocessingstepimageid", "entityalias", "imagetype", "attributes"],
            filter=eq("_sdkmessageprocessingstepid_value", UUID(step_id)),
        )
        return [row async for row in rows]

    async def _message(self, name: str) -> str | None:
        if name not in self._messages:
            row = await self.dataverse.first(
                "sdkmessages", select=["sdkmessageid"], filter=eq("name", name)
            )
            if row is None:
                return None
            self._messages[name] = str(row["sdkmessageid"])
        return self._messages[name]

    async def _filter(self, spec: StepSpec) -> str | None:
        message = await self._message(spec.message)
        if message is None:
            return None
        row = await self.dataverse.first(
            "sdkmessagefilters",
            select=["sdkmessagefilterid"],
            filter=all_of(
                eq("primaryobjecttypecode", spec.table), eq("_sdkmessageid_value", UUID(message))
            ),
        )
        return None if row is None else str(row["sdkmessagefilterid"])

    async def _ensure_step(
        self, endpoint_id: str, spec: StepSpec, filter_id: str, step: dict[str, Any] | None
    ) -> str:
        if step is None:
            message = await self._message(spec.message)
            created = await self.dataverse.create(
                "sdkmessageprocessingsteps",
                {
                    "name": spec.name,
                    "eventhandler_serviceendpoint@odata.bind": f"/serviceendpoints({endpoint_id})",
                    "sdkmessageid@odata.bind": f"/sdkmessages({message})",
                    "sdkmessagefilterid@odata.bind": f"/sdkmessagefilters({filter_id})",
                    "stage": STAGE_POST_OPERATION,
                    "mode": MODE_ASYNCHRONOUS,
                    "rank": 1,
                    "supporteddeployment": 0,
                    "asyncautodelete": True,
                    "filteringattributes": spec.filtering_text,
                },
                select=["sdkmessageprocessingstepid"],
            )
            await self._ensure_image(str(created["sdkmessageprocessingstepid"]), spec)
            return "created"
        step_id = str(step["sdkmessageprocessingstepid"])
        changes: dict[str, Any] = {}
        if (step.get("filteringattributes") or None) != spec.filtering_text:
            changes["filteringattributes"] = spec.filtering_text
        if step.get("statecode") != 0:
            changes.update(statecode=0, statuscode=1)  # enable (reference §1.2)
        if changes:
            await self.dataverse.update(
                "sdkmessageprocessingsteps", step_id, changes, select=["sdkmessageprocessingstepid"]
            )
        image_changed = await self._ensure_image(step_id, spec)
        return "updated" if changes or image_changed else "unchanged"

    async def _ensure_image(self, step_id: str, spec: StepSpec) -> bool:
        images = [i for i in await self._images(step_id) if i.get("entityalias") == PRE_IMAGE_ALIAS]
        if not spec.pre_image:
            return False
        attributes = ",".join(spec.pre_image)
        if not images:
            await self.dataverse.create(
                "sdkmessageprocessingstepimages",
                {
                    "name": PRE_IMAGE_ALIAS,
                    "entityalias": PRE_IMAGE_ALIAS,
                    "imagetype": IMAGE_PRE,
                    "messagepropertyname": "Target",
                    "attributes": attributes,
                    "sdkmessageprocessingstepid@odata.bind": (
                        f"/sdkmessageprocessingsteps({step_id})"
                    ),
                },
                select=["sdkmessageprocessingstepimageid"],
            )
            return True
        if images[0].get("attributes") != attributes:
            await self.dataverse.update(
                "sdkmessageprocessingstepimages",
                str(images[0]["sdkmessageprocessingstepimageid"]),
                {"attributes": attributes},
                select=["sdkmessageprocessingstepimageid"],
            )
            return True
        return False

    async def _delete_step(self, step_id: str) -> None:
        for image in await self._images(step_id):
            await self.dataverse.delete(
                "sdkmessageprocessingstepimages", str(image["sdkmessageprocessingstepimageid"])
            )
        await self.dataverse.delete("sdkmessageprocessingsteps", step_id)

    async def _failed(self, steps: list[dict[str, Any]]) -> int:
        """Failed deliveries (System Jobs, ``statuscode`` 31) of our steps."""
        count = 0
        for step in steps:
            rows = self.dataverse.list_rows(
                "asyncoperations",
                select=["asyncoperationid"],
                filter=all_of(
                    eq("_owningextensionid_value", UUID(str(step["sdkmessageprocessingstepid"]))),
                    eq("statuscode", 31),
                ),
            )
            count += len([row async for row in rows])
        return count

    @staticmethod
    def _row(spec: StepSpec, action: str, step: dict[str, Any] | None) -> dict[str, Any]:
        return {
            "name": spec.name,
            "action": action,
            "filtering_attributes": spec.filtering_text,
            "pre_image": ",".join(spec.pre_image) or None,
        }


class EndpointInUse(Exception):
    """Our endpoint points at another URL (another deployment's): replacing it needs
    ``--overwrite``."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.url = url
