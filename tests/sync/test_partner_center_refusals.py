"""Partner Center refusing one field of a patch never fails the pair (issue 15, item 2).

Microsoft's certified "Partner Center Referrals" connector lists the JSON Patch paths a partner
may patch (microsoft/PowerPlatformConnectors,
certified-connectors/PartnerCenterReferrals/apiDefinition.swagger.json, the ``path`` enum of
``UpdateReferralDetails``). ``/name`` and ``/inviteContext/assistanceRequestCode`` are not in
it; whether the service refuses them is UNCERTAIN. These tests run the Partner Center emulator
in its strict mode (``PUT /_emulator/patch-paths``), which refuses unlisted paths with a 400
naming the path: the sync must send every other field on the listed leaf paths, drop only the
refused one, say which in the opportunity's audit, and not try it again until it changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from shared.partner_center import PatchOperation, Referral
from shared.sync.mapping import LISTED_PATCH_PATHS, REFERRAL_PATHS, referral_patch
from shared.sync.merge import Change
from tests.sync.conftest import World, incoming_cosell

PATCH_ROUTE = "PATCH /v1.0/engagements/referrals/{referral_id}"
UNLISTED = {"/name", "/inviteContext/assistanceRequestCode"}


async def strict(world: World) -> None:
    response = await world.pc_http.put("/_emulator/patch-paths", json={"strict": True})
    assert response.status_code == 200, response.text


async def accepted_pair(world: World) -> tuple[str, str]:
    """A referral from Microsoft, its opportunity, and the co-sell accepted in CRM."""
    referral_id = await world.incoming()
    created = await world.sync_referral(referral_id)
    assert created.opportunity_id is not None
    await world.edit_opportunity(created.opportunity_id, statuscode=1)  # On Hold → In Progress
    assert (await world.sync_opportunity(created.opportunity_id)).outcome == "synced"
    return referral_id, created.opportunity_id


async def patches(world: World) -> int:
    stats = (await world.pc_http.get("/_emulator/stats")).json()
    return int(stats["requests"].get(PATCH_ROUTE, 0))


async def test_a_refused_name_is_left_out_the_rest_lands_and_the_audit_says_which(
    world: World,
) -> None:
    await strict(world)
    referral_id, opportunity_id = await accepted_pair(world)
    before = await world.referral(referral_id)
    sent = await patches(world)

    await world.edit_opportunity(opportunity_id, name="Contoso - renamed", estimatedvalue=250000)
    result = await world.sync_opportunity(opportunity_id, reason="poll")

    assert result.outcome == "synced"
    referral = await world.referral(referral_id)
    assert referral.details is not None and referral.details.deal_value == 250000
    assert referral.name == before.name  # Partner Center kept its name
    opportunity = await world.opportunity(opportunity_id)
    assert opportunity["name"] == "✔ Contoso - renamed"  # the seller's name stays, still ✔
    assert opportunity["cosell_syncstatus"] == 1  # Synced: one field is not a failed pair
    audit = opportunity["cosell_audit"]
    assert "⚠ name not taken by Partner Center" in audit
    assert "'/name'" in audit  # Partner Center's own reason, naming the path
    assert any("name not taken by Partner Center" in note for note in result.notes)
    assert await patches(world) == sent + 2  # the refused one, then the one without /name


async def test_the_refused_field_is_not_sent_again_until_the_seller_changes_it(
    world: World,
) -> None:
    await strict(world)
    referral_id, opportunity_id = await accepted_pair(world)
    await world.edit_opportunity(opportunity_id, name="Contoso - renamed")
    await world.sync_opportunity(opportunity_id)
    sent = await patches(world)
    writes = await world.writes()

    again = await world.sync_opportunity(opportunity_id, reason="poll")
    from_pc = await world.sync_referral(referral_id, reason="reconcile")

    assert again.outcome == from_pc.outcome == "no_change"
    assert await world.writes() == writes  # no retry loop, nothing for the poison queue
    await world.edit_opportunity(opportunity_id, description="Kick-off booked")
    await world.sync_opportunity(opportunity_id)
    referral = await world.referral(referral_id)
    assert referral.details is not None and referral.details.notes == "Kick-off booked"
    assert await patches(world) == sent + 1  # the notes only: /name was not tried again

    await world.edit_opportunity(opportunity_id, name="Contoso - renamed twice")
    result = await world.sync_opportunity(opportunity_id)
    assert result.outcome == "synced"
    assert await patches(world) == sent + 2  # tried again once it changed: refused, alone
    audit = (await world.opportunity(opportunity_id))["cosell_audit"]
    assert audit.count("⚠ name not taken by Partner Center") == 2


async def test_the_refusal_of_a_crm_to_pc_change_alone_is_written_to_the_audit_at_once(
    world: World,
) -> None:
    """A change that only goes to Partner Center waits for the next opportunity write for its
    audit line; a refusal does not wait: the seller must see why the field did not sync."""
    await strict(world)
    _, opportunity_id = await accepted_pair(world)
    await world.edit_opportunity(opportunity_id, name="Contoso - renamed")

    result = await world.sync_opportunity(opportunity_id)

    assert result.outcome == "synced"
    audit = (await world.opportunity(opportunity_id))["cosell_audit"]
    assert "⚠ name not taken by Partner Center" in audit


async def test_in_strict_mode_the_other_fields_sync_on_listed_paths(world: World) -> None:
    await strict(world)
    referral_id, opportunity_id = await accepted_pair(world)

    await world.edit_opportunity(
        opportunity_id,
        estimatedvalue=99000,
        description="Scoped",
        estimatedclosedate="2027-09-30",
        cosell_visibletomicrosoft=True,
    )
    result = await world.sync_opportunity(opportunity_id)

    assert result.outcome == "synced"
    assert not any("not taken" in note for note in result.notes)
    details = (await world.referral(referral_id)).details
    assert details is not None
    assert (details.deal_value, details.notes) == (99000, "Scoped")
    assert details.closing_date_time is not None
    assert details.closing_date_time.date().isoformat() == "2027-09-30"


def answer_first_patch(
    body: dict[str, object],
) -> Callable[[httpx.AsyncBaseTransport], httpx.AsyncBaseTransport]:
    """A transport in front of the emulator whose first referral PATCH gets this 400."""

    class FirstPatchRefused(httpx.AsyncBaseTransport):
        def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
            self.inner, self.pending = inner, True

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            if self.pending and request.method == "PATCH":
                self.pending = False
                return httpx.Response(400, content=json.dumps(body).encode(),
                                      headers={"Content-Type": "application/json"})  # fmt: skip
            return await self.inner.handle_async_request(request)

    return FirstPatchRefused


async def test_a_refusal_that_names_the_path_only_in_its_message_drops_that_field(
    world: World,
) -> None:
    """The real service's ``target`` for a refused path is UNCERTAIN (reference §5 shows
    ``"target": "referral"``): the path named in the message is enough."""
    referral_id, opportunity_id = await accepted_pair(world)
    refusal = {
        "error": {
            "code": "invalidRequest",
            "message": "Updating '/details/notes' is not allowed for this referral.",
            "target": "referral",
        }
    }
    pc, engine = world.engine_with_partner_center(answer_first_patch(refusal))
    async with pc:
        await world.edit_opportunity(opportunity_id, description="Kick-off", estimatedvalue=7)
        from shared.jobs import SyncJob

        result = await engine.sync(SyncJob.now("opportunity", opportunity_id, reason="poll"))

    assert result.outcome == "synced"
    details = (await world.referral(referral_id)).details
    assert details is not None and details.deal_value == 7 and details.notes != "Kick-off"
    audit = (await world.opportunity(opportunity_id))["cosell_audit"]
    assert "⚠ notes not taken by Partner Center" in audit


async def test_a_400_that_names_no_field_sent_still_fails_the_pair_with_its_reason(
    world: World,
) -> None:
    _, opportunity_id = await accepted_pair(world)
    refusal = {"error": {"code": "invalidRequest", "message": "The referral is locked."}}
    pc, engine = world.engine_with_partner_center(answer_first_patch(refusal))
    async with pc:
        await world.edit_opportunity(opportunity_id, estimatedvalue=7)
        from shared.jobs import SyncJob

        result = await engine.sync(SyncJob.now("opportunity", opportunity_id, reason="poll"))

    assert result.outcome == "error"
    assert any("The referral is locked." in problem for problem in result.problems)


@pytest.mark.parametrize("field", sorted(REFERRAL_PATHS))
def test_each_field_is_patched_on_its_listed_leaf_path(field: str) -> None:
    """The connector's list is what we send, not whole parent objects: a referral as Partner
    Center returns it has ``details``, ``consent`` and ``customerProfile``."""
    referral = Referral.model_validate({**incoming_cosell(), "id": "r", "externalReferenceId": "x"})
    from shared.sync.mapping import referral_to_deal

    deal = referral_to_deal(referral, link_template="{id}")
    operations = referral_patch({field: Change(field, None, None)}, deal, referral)

    assert [o.path for o in operations] == [REFERRAL_PATHS[field]]
    expected = REFERRAL_PATHS[field] in LISTED_PATCH_PATHS or REFERRAL_PATHS[field] in UNLISTED
    assert expected


def test_a_missing_member_is_added_on_its_leaf_and_a_missing_parent_whole() -> None:
    body = incoming_cosell()
    body["details"] = {"dealValue": 1}  # no notes member, no requirements object
    referral = Referral.model_validate({**body, "id": "r"})
    from shared.sync.mapping import referral_to_deal

    deal = referral_to_deal(referral, link_template="{id}").model_copy(
        update={"notes": "n", "solutions": ("SOL-1",)}
    )
    changes = {f: Change(f, None, None) for f in ("notes", "solutions")}

    operations = referral_patch(changes, deal, referral)

    assert operations == [
        PatchOperation.add("/details/notes", "n"),
        # RFC 6902 refuses an add below a missing object: the nearest missing parent, whole.
        PatchOperation.add(
            "/details/requirements", {"solutions": [{"type": "Name", "id": "SOL-1"}]}
        ),
    ]
