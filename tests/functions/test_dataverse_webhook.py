"""``dataverse_webhook``: Dataverse's push observed as HTTP answers and queue messages (issue 16).

The bodies follow Microsoft's sample RemoteExecutionContext in
learn.microsoft.com/power-apps/developer/data-platform/use-webhooks (data-contract JSON: key/value
collections, typed values, ``\\/Date(ms)\\/`` dates; the size-exceeded header) — reference:
dataverse-push-and-webhook-trust §1.1.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import azure.functions as func
import pytest

import function_app
from sandbox.dataverse import emulator_of
from shared.dataverse import parse_remote_context
from shared.dataverse._remote_context import parse_date

from .conftest import App

CONTRACTS = "http://schemas.microsoft.com/xrm/2011/Contracts"
OPPORTUNITY = "5d3a2b10-7c4e-4f6a-9b8c-0123456789ab"
SELLER = "11111111-2222-4333-8444-555555555555"


def entity(logical_name: str, row_id: str, **attributes: Any) -> dict[str, Any]:
    return {
        "__type": f"Entity:{CONTRACTS}",
        "Attributes": [{"key": k, "value": v} for k, v in attributes.items()],
        "EntityState": None,
        "FormattedValues": [],
        "Id": row_id,
        "KeyAttributes": [],
        "LogicalName": logical_name,
        "RelatedEntities": [],
        "RowVersion": None,
    }


def reference(logical_name: str, row_id: str) -> dict[str, Any]:
    return {"__type": f"EntityReference:{CONTRACTS}", "Id": row_id, "LogicalName": logical_name,
            "Name": None, "KeyAttributes": [], "RowVersion": None}  # fmt: skip


def context(
    message: str = "Update",
    table: str = "opportunity",
    row_id: str = OPPORTUNITY,
    *,
    target: dict[str, Any] | None = None,
    pre: dict[str, Any] | None = None,
    user: str = SELLER,
) -> dict[str, Any]:
    """A body shaped like Microsoft's sample (async PostOperation: Stage 40, Mode 1, Depth 1)."""
    if target is None:
        target = entity(
            table, row_id,
            estimatedvalue={"__type": f"Money:{CONTRACTS}", "Value": 1000},
            modifiedon="/Date(1764000000000)/",
        )  # fmt: skip
    return {
        "BusinessUnitId": str(uuid.uuid4()),
        "CorrelationId": str(uuid.uuid4()),
        "Depth": 1,
        "InitiatingUserId": user,
        "InputParameters": [{"key": "Target", "value": target}],
        "IsExecutingOffline": False,
        "IsInTransaction": False,
        "IsOfflinePlayback": False,
        "IsolationMode": 1,
        "MessageName": message,
        "Mode": 1,
        "OperationCreatedOn": "/Date(1764000000500-0700)/",
        "OperationId": str(uuid.uuid4()),
        "OrganizationId": str(uuid.uuid4()),
        "OrganizationName": "contoso",
        "OutputParameters": [],
        "OwningExtension": reference("sdkmessageprocessingstep", str(uuid.uuid4())),
        "ParentContext": None,
        "PostEntityImages": [],
        "PreEntityImages": [{"key": "pre", "value": pre}] if pre else [],
        "PrimaryEntityId": row_id,
        "PrimaryEntityName": table,
        "RequestId": str(uuid.uuid4()),
        "SecondaryEntityName": "none",
        "SharedVariables": [],
        "Stage": 40,
        "UserId": user,
    }


def wire(body: dict[str, Any]) -> bytes:
    # Dataverse's serializer escapes the slashes of dates: "\/Date(…)\/".
    return json.dumps(body).replace('"/Date(', '"\\/Date(').replace(')/"', ')\\/"').encode()


async def deliver(body: bytes | dict[str, Any], **headers: str) -> tuple[int, dict[str, Any]]:
    raw = wire(body) if isinstance(body, dict) else body
    request = func.HttpRequest(
        method="POST",
        url="/api/webhooks/dataverse",
        headers={"Content-Type": "application/json", **headers},
        body=raw,
    )
    response = await function_app.dataverse_webhook(request)
    return response.status_code, json.loads(response.get_body())


def test_data_contract_dates_and_values_are_read() -> None:
    assert parse_date("/Date(1506384247000)/") == datetime(2017, 9, 26, 0, 4, 7, tzinfo=UTC)
    # The offset is the sender's zone: the instant is the milliseconds.
    assert parse_date("/Date(1506409448000-0700)/") == datetime(2017, 9, 26, 7, 4, 8, tzinfo=UTC)
    parsed = parse_remote_context(wire(context()), {})
    assert parsed.target is not None
    assert parsed.target.attributes["estimatedvalue"] == 1000
    assert parsed.target.modified_on() == datetime.fromtimestamp(1764000000, UTC)
    assert parsed.operation_created_on == datetime.fromtimestamp(1764000000.5, UTC)


async def test_an_opportunity_update_enqueues_one_job(app: App) -> None:
    status, answer = await deliver(
        context(),
        **{"x-ms-dynamics-entity-name": "opportunity", "x-ms-dynamics-request-name": "Update"},
    )
    assert (status, answer["enqueued"]) == (202, True)
    [job] = await app.jobs()
    assert (job.kind, str(job.id), str(job.reason)) == (
        "opportunity", OPPORTUNITY, "webhook:dataverse-update"
    )  # fmt: skip


async def test_a_solution_row_delete_is_a_job_of_its_opportunity(app: App) -> None:
    """The Delete's Target is an EntityReference; the pre image names the opportunity."""
    row_id = str(uuid.uuid4())
    pre = entity("cosell_solution", row_id,
                 cosell_opportunityid=reference("opportunity", OPPORTUNITY))  # fmt: skip
    body = context(
        "Delete", "cosell_solution", row_id, target=reference("cosell_solution", row_id), pre=pre
    )
    status, _ = await deliver(body)
    assert status == 202
    [job] = await app.jobs()
    assert (str(job.id), str(job.reason)) == (OPPORTUNITY, "webhook:dataverse-delete")


async def test_the_size_exceeded_case_still_names_the_opportunity(app: App) -> None:
    body = context()
    for key in ("InputParameters", "PreEntityImages", "PostEntityImages", "ParentContext"):
        del body[key]
    status, _ = await deliver(body, **{"x-ms-dynamics-msg-size-exceeded": "true"})
    assert status == 202
    assert [str(j.id) for j in await app.jobs()] == [OPPORTUNITY]


async def test_our_own_write_enqueues_nothing(app: App) -> None:
    """InitiatingUserId = the application user (WhoAmI, asked once)."""
    ours = emulator_of(app.dataverse_app).store.caller.user_id
    status, answer = await deliver(context(user=ours))
    assert (status, answer["enqueued"]) == (202, False)
    assert await app.jobs() == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"not json", 400),
        (b"[]", 400),
        (wire(context(table="account")), 400),
        (wire(context(message="Assign")), 400),
        (wire({**context(), "PrimaryEntityId": "nope"}), 400),
        (wire({k: v for k, v in context().items() if k != "MessageName"}), 400),
        (b" " * (256 * 1024 + 1), 413),
    ],
)
async def test_bad_input_is_refused_and_nothing_enqueued(
    app: App, body: bytes, status: int
) -> None:
    assert (await deliver(body))[0] == status
    assert await app.jobs() == []


async def test_headers_that_contradict_the_body_are_refused(app: App) -> None:
    status, _ = await deliver(context(), **{"x-ms-dynamics-entity-name": "account"})
    assert status == 400
    assert await app.jobs() == []
