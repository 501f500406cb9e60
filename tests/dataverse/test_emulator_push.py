"""The Dataverse emulator's push to webhooks, and registering it (issue 16).

Microsoft's docs: learn.microsoft.com/power-apps/developer/data-platform/use-webhooks (body,
headers, 256 KB, 60 s, one retry on 502/503/504, failures as System Jobs),
.../register-web-hook, .../reference/entities/serviceendpoint and
.../reference/entities/sdkmessageprocessingstep (reference: dataverse-push-and-webhook-trust §1).
"""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest

from sandbox.dataverse import Emulator, push
from shared.crm_mapping import load_mapping
from shared.dataverse import DataverseClient, parse_remote_context
from shared.dataverse_push import (
    EndpointInUse,
    PushRegistrar,
    opportunity_filtering_attributes,
    push_steps,
)
from shared.sync.mapping import Columns

HOOK = "https://cosell.example.com/api/webhooks/dataverse"


class Receiver:
    """The webhook: answers with the statuses given, in turn (then 202)."""

    def __init__(self, *statuses: int) -> None:
        self.statuses = list(statuses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return httpx.Response(self.statuses.pop(0) if self.statuses else 202)


@pytest.fixture
def receiver(emulator: Emulator) -> Receiver:
    hook = Receiver()
    emulator.push.transport = httpx.MockTransport(hook)
    return hook


async def registered(client: DataverseClient, columns: Columns | None = None) -> PushRegistrar:
    registrar = PushRegistrar(client)
    await registrar.register(HOOK, "the-key", push_steps(columns or Columns()))
    return registrar


async def opportunity(client: DataverseClient, **values: object) -> str:
    row = await client.create("opportunities", {"name": "Contoso", **values})
    return str(row["opportunityid"])


async def test_an_update_pushes_only_the_changed_columns_with_the_key_and_headers(
    client: DataverseClient, emulator: Emulator, receiver: Receiver
) -> None:
    """use-webhooks: Target holds the changed columns plus key and modifiedon/modifiedby;
    dates are \\/Date(ms)\\/; x-ms-dynamics-* headers; WebhookKey is sent as ?code=."""
    await registered(client)
    row_id = await opportunity(client)
    await emulator.push.idle()
    receiver.requests.clear()

    await client.update("opportunities", row_id, {"estimatedvalue": 1000})
    await emulator.push.idle()

    [request] = receiver.requests
    assert request.url.params["code"] == "the-key"
    assert request.headers["x-ms-dynamics-request-name"] == "Update"
    assert request.headers["x-ms-dynamics-entity-name"] == "opportunity"
    assert request.headers["x-ms-dynamics-organization"]
    assert request.headers["x-ms-correlation-request-id"]
    assert b'"\\/Date(' in request.content
    context = parse_remote_context(request.content, request.headers)
    assert context.target is not None
    assert set(context.target.attributes) == {
        "estimatedvalue", "modifiedon", "modifiedby", "opportunityid"
    }  # fmt: skip
    assert context.target.attributes["estimatedvalue"] == 1000  # Money's Value
    assert str(context.initiating_user_id) == emulator.store.caller.user_id


async def test_filtering_attributes_keep_unrelated_edits_quiet(
    client: DataverseClient, emulator: Emulator, receiver: Receiver
) -> None:
    """sdkmessageprocessingstep.filteringattributes: the Update step fires only when one of
    them changed; it is exactly the columns the mapping reads, its extra columns included."""
    mapping = load_mapping(
        text='{"extra": [{"referral": "details.notes", "crm": "description", "direction": "both"}]}'
    )
    columns = Columns(mapping=mapping)
    assert "description" in opportunity_filtering_attributes(columns)
    assert "stepname" not in opportunity_filtering_attributes(columns)
    await registered(client, columns)
    row_id = await opportunity(client)
    await emulator.push.idle()
    receiver.requests.clear()

    await client.update("opportunities", row_id, {"stepname": "not synced"})
    await emulator.push.idle()
    assert receiver.requests == []

    await client.update("opportunities", row_id, {"description": "synced"})
    await emulator.push.idle()
    assert len(receiver.requests) == 1


async def test_a_solution_delete_names_its_opportunity_in_the_pre_image(
    client: DataverseClient, emulator: Emulator, receiver: Receiver
) -> None:
    """use-webhooks: on Delete the Target is an EntityReference; the step's pre image carries
    the row's lookup to its opportunity."""
    await registered(client)
    row_id = await opportunity(client)
    solution = await client.create(
        "cosell_solutions",
        {"cosell_name": "S", "cosell_opportunityid@odata.bind": f"/opportunities({row_id})"},
        select=["cosell_solutionid"],
    )
    await emulator.push.idle()
    receiver.requests.clear()

    await client.delete("cosell_solutions", solution["cosell_solutionid"])
    await emulator.push.idle()

    [request] = receiver.requests
    context = parse_remote_context(request.content, request.headers)
    assert context.message_name == "Delete"
    assert context.target is not None and context.target.attributes == {}
    assert str(context.pre_images["pre"].lookup_id("cosell_opportunityid")) == row_id


@pytest.mark.parametrize(
    ("statuses", "attempts", "delivered"),
    [((503,), 2, True), ((502, 504), 2, False), ((500,), 1, False), ((404,), 1, False)],
)
async def test_only_502_503_504_get_one_more_attempt_and_failures_are_system_jobs(
    client: DataverseClient,
    emulator: Emulator,
    receiver: Receiver,
    statuses: tuple[int, ...],
    attempts: int,
    delivered: bool,
) -> None:
    """use-webhooks: any non-2xx fails; only 502, 503 and 504 are retried, once; a failed
    asynchronous step is an asyncoperations row with statuscode 31, owned by the step."""
    await registered(client)
    row_id = await opportunity(client)
    await emulator.push.idle()
    receiver.requests.clear()
    receiver.statuses = list(statuses)

    await client.update("opportunities", row_id, {"estimatedvalue": 5})
    await emulator.push.idle()

    assert len(receiver.requests) == attempts
    jobs = [r.values for r in emulator.store.tables["asyncoperations"].values()]
    if delivered:
        assert jobs == []  # asyncautodelete: a success leaves no System Job
    else:
        [job] = jobs
        assert job["statuscode"] == 31
        step = next(
            s for s in emulator.store.tables["sdkmessageprocessingsteps"].values()
            if s.values["name"] == "Co-sell Sync: Update of opportunity"
        )  # fmt: skip
        assert job["_owningextensionid_value"] == step.values["sdkmessageprocessingstepid"]
    assert emulator.push.timeout_s == 60.0


async def test_a_body_over_256_kb_loses_inputs_and_images_and_says_so(
    client: DataverseClient,
    emulator: Emulator,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """use-webhooks: over 256 KB, ParentContext, InputParameters and the images are dropped
    and x-ms-dynamics-msg-size-exceeded is sent."""
    await registered(client)
    monkeypatch.setattr(push, "MAX_BODY_BYTES", 100)  # every body is "too large"
    await opportunity(client)
    await emulator.push.idle()

    [request] = receiver.requests
    assert request.headers["x-ms-dynamics-msg-size-exceeded"] == "true"
    context = parse_remote_context(request.content, request.headers)
    assert context.size_exceeded and context.target is None
    assert context.primary_entity_name == "opportunity"


async def test_a_rolled_back_change_set_pushes_nothing(
    client: DataverseClient, emulator: Emulator, receiver: Receiver
) -> None:
    await registered(client)
    await emulator.push.idle()
    receiver.requests.clear()

    def roll_back() -> None:
        with emulator.store.atomic():
            emulator.store.create("opportunities", {"name": "rolled back"})
            raise RuntimeError

    with pytest.raises(RuntimeError):
        roll_back()
    await emulator.push.idle()
    assert receiver.requests == []


async def test_faults_drop_pushes(
    client: DataverseClient,
    emulator: Emulator,
    receiver: Receiver,
    control: httpx.AsyncClient,
) -> None:
    await registered(client)
    assert (await control.put("push", json={"drop_rate": 1.0})).status_code == 200
    await opportunity(client)
    await emulator.push.idle()
    assert receiver.requests == []
    assert (await control.get("push")).json()["stats"]["dropped"] == 1


async def test_registering_twice_changes_nothing_and_a_new_mapping_updates_the_filter(
    client: DataverseClient, emulator: Emulator, receiver: Receiver
) -> None:
    """register-web-hook, done idempotently: the second run finds everything in place."""
    registrar = await registered(client)
    again = await registrar.register(HOOK, "the-key", push_steps(Columns()))
    assert not again.changed

    mapping = load_mapping(
        text='{"extra": [{"referral": "details.notes", "crm": "stepname", "direction": "both"}]}'
    )
    changed = await registrar.register(HOOK, "the-key", push_steps(Columns(mapping=mapping)))
    assert [s["action"] for s in changed.steps if s["action"] != "unchanged"] == ["updated"]
    rotated = await registrar.register(HOOK, "new-key", push_steps(Columns(mapping=mapping)))
    assert rotated.endpoint_action == "updated"

    with pytest.raises(EndpointInUse):
        await registrar.register(HOOK + "-elsewhere", "k", push_steps(Columns()))


async def test_unregister_removes_ours_only(
    client: DataverseClient, emulator: Emulator, receiver: Receiver
) -> None:
    """Deleting an endpoint deletes its steps; another product's endpoint stays."""
    other = await client.create(
        "serviceendpoints",
        {"name": "Another product", "url": "https://other.example.com/hook", "contract": 8,
         "authtype": 4, "authvalue": "x", "messageformat": 2},
        select=["serviceendpointid"],
    )  # fmt: skip
    registrar = await registered(client)
    report = await registrar.unregister()

    assert report.endpoint_action == "removed"
    rows: Callable[[str], list[str]] = lambda table: list(emulator.store.tables[table])  # noqa: E731
    assert rows("serviceendpoints") == [other["serviceendpointid"]]
    assert rows("sdkmessageprocessingsteps") == []
    assert rows("sdkmessageprocessingstepimages") == []
