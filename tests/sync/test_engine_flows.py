"""Edits flowing both ways, echoes, conflicts, validation, closing (SPEC 4.3-4.6)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from shared.jobs import SyncJob
from shared.sync import SyncEngine
from shared.sync.plan import CLOCK_SKEW
from tests.sync.conftest import World, poll_job, sandbox_settings


def replace(path: str, value: object) -> dict[str, object]:
    return {"op": "replace", "path": path, "value": value}


async def linked_pair(world: World) -> tuple[str, str]:
    referral_id = await world.incoming()
    created = await world.sync_referral(referral_id)
    assert created.opportunity_id is not None
    # Accept the co-sell in CRM (On Hold → In Progress) so the referral is Active.
    await world.edit_opportunity(created.opportunity_id, statuscode=1)
    accepted = await world.sync_opportunity(created.opportunity_id)
    assert accepted.outcome == "synced"
    return referral_id, created.opportunity_id


async def test_moving_on_hold_to_in_progress_accepts_the_referral(world: World) -> None:
    referral_id, _ = await linked_pair(world)

    referral = await world.referral(referral_id)

    assert (str(referral.status), str(referral.substatus)) == ("Active", "Accepted")


async def test_deal_value_edited_in_partner_center_reaches_crm_in_three_calls(
    world: World,
) -> None:
    referral_id, opportunity_id = await linked_pair(world)
    await world.edit_referral(referral_id, replace("/details/dealValue", 250000))

    result = await world.sync_referral(referral_id, reason="webhook:referral-updated")

    assert result.outcome == "synced"
    assert (await world.opportunity(opportunity_id))["estimatedvalue"] == 250000
    assert result.remote_calls <= 3
    assert (
        "deal value 120000.0 → 250000.0"
        in (await world.opportunity(opportunity_id))["cosell_audit"]
    )


async def test_notes_edited_in_crm_reach_partner_center(world: World) -> None:
    referral_id, opportunity_id = await linked_pair(world)
    await world.edit_opportunity(opportunity_id, description="Kick-off booked")

    result = await world.sync_opportunity(opportunity_id, reason="poll")

    assert result.outcome == "synced"
    referral = await world.referral(referral_id)
    assert referral.details is not None and referral.details.notes == "Kick-off booked"
    assert result.remote_calls <= 3  # the opportunity (with everything), the referral, a PATCH


async def test_a_poll_job_for_a_second_the_link_already_covers_makes_no_remote_call(
    world: World,
) -> None:
    referral_id, opportunity_id = await linked_pair(world)
    await world.edit_opportunity(opportunity_id, description="Kick-off booked")
    edited = await world.opportunity(opportunity_id)
    world.later_in_dataverse(2)  # the sync's own write comes in a later second
    await world.edit_referral(referral_id, replace("/name", "Contoso - bigger migration"))
    await world.sync_referral(referral_id)  # takes the seller's edit along, writes the name
    requests_before = await world.requests()

    # The same change delivered twice (a second poll job for it, say).
    again = poll_job(edited)
    result = await world.engine.sync(again)

    assert result.outcome == "no_change"
    assert result.remote_calls == 0
    assert await world.requests() == requests_before


async def test_a_seller_edit_in_the_second_of_our_own_write_is_synced(world: World) -> None:
    """Issue 13, class 12: Dataverse stamps ``modifiedon`` to the second, so a seller's edit
    right after our write can carry the very ``modifiedon`` the link recorded. Taking it for
    our echo lost the edit; such a job is read, and the edit reaches Partner Center."""
    referral_id, opportunity_id = await linked_pair(world)
    world.freeze_dataverse_clock()
    await world.edit_referral(referral_id, replace("/name", "Contoso - bigger migration"))
    await world.sync_referral(referral_id)  # our write, in the frozen second
    ours = await world.opportunity(opportunity_id)
    await world.edit_opportunity(opportunity_id, description="Kick-off booked")
    seller = await world.opportunity(opportunity_id)
    assert seller["modifiedon"] == ours["modifiedon"]  # one second, two writes
    assert seller["versionnumber"] > ours["versionnumber"]

    result = await world.engine.sync(poll_job(seller))

    assert result.outcome == "synced"
    referral = await world.referral(referral_id)
    assert referral.details is not None and referral.details.notes == "Kick-off booked"


async def test_a_redelivered_poll_job_in_the_links_own_second_makes_no_remote_call(
    world: World,
) -> None:
    """Issue 13, class 12 and SPEC 11 ("duplicate event: 0"): a poll job stamped with the
    second the link holds is read once; delivered again, the link's versions were read after
    the message was enqueued (the queue's insertion time, reference azure-functions-platform
    §2.1), so they include whatever the poll saw: no remote call. Before, every redelivery of
    such a job cost two reads."""
    referral_id, opportunity_id = await linked_pair(world)
    world.freeze_dataverse_clock()
    await world.edit_referral(referral_id, replace("/name", "Contoso - bigger migration"))
    await world.sync_referral(referral_id)  # our write, in the frozen second
    await world.edit_opportunity(opportunity_id, description="Kick-off booked")
    job = poll_job(await world.opportunity(opportunity_id))
    enqueued = datetime.now(UTC)  # the poll enqueues it; a worker takes it a little later
    await asyncio.sleep(CLOCK_SKEW.total_seconds() + 0.1)
    first = await world.engine.sync(job, enqueued_at=enqueued)
    assert first.outcome == "synced"
    before = await world.requests()

    again = await world.engine.sync(job, enqueued_at=enqueued)

    assert (again.outcome, again.remote_calls) == ("no_change", 0)
    assert await world.requests() == before


async def test_a_poll_job_enqueued_after_the_links_read_is_read(world: World) -> None:
    """The other side of the rule above: a job enqueued after the link's versions were read
    may stand for a seller's edit in that very second, so it is read and the edit synced."""
    referral_id, opportunity_id = await linked_pair(world)
    world.freeze_dataverse_clock()
    await world.edit_referral(referral_id, replace("/name", "Contoso - bigger migration"))
    await world.sync_referral(referral_id)
    await world.edit_opportunity(opportunity_id, description="Kick-off booked")
    seller = await world.opportunity(opportunity_id)

    result = await world.engine.sync(
        poll_job(seller), enqueued_at=datetime.now(UTC) + timedelta(seconds=1)
    )

    assert result.outcome == "synced"
    referral = await world.referral(referral_id)
    assert referral.details is not None and referral.details.notes == "Kick-off booked"


async def test_duplicate_webhook_for_a_synced_change_makes_no_remote_call(world: World) -> None:
    referral_id, _ = await linked_pair(world)
    updated = await world.edit_referral(referral_id, replace("/details/notes", "New notes"))
    assert updated.updated_date_time is not None
    job = SyncJob(
        kind="referral",
        id=referral_id,  # type: ignore[arg-type]
        reason="webhook:referral-updated",
        observed_at=updated.updated_date_time,
    )
    await world.engine.sync(job)
    before = await world.requests()

    duplicate = await world.engine.sync(job)

    assert duplicate.outcome == "no_change"
    assert duplicate.remote_calls == 0
    assert await world.requests() == before


@pytest.mark.parametrize(
    ("policy", "winner"),
    [("partner_center", "PC notes"), ("crm", "CRM notes"), ("newest", "CRM notes")],
)
async def test_conflicting_edits_follow_the_policy_and_are_audited(
    world: World, policy: str, winner: str
) -> None:
    referral_id, opportunity_id = await linked_pair(world)
    engine = SyncEngine(
        pc=world.pc,
        dataverse=world.dataverse,
        links=world.links,
        history=world.history,
        settings=sandbox_settings(CONFLICT_POLICY=policy),
    )
    await world.edit_referral(referral_id, replace("/details/notes", "PC notes"))
    world.later_in_dataverse()  # the CRM edit is the newer one
    await world.edit_opportunity(opportunity_id, description="CRM notes")

    result = await engine.sync(SyncJob.now("opportunity", opportunity_id, reason="manual"))

    assert result.plan is not None
    assert any(c.startswith("notes: changed in both systems") for c in result.plan.conflicts)
    referral = await world.referral(referral_id)
    opportunity = await world.opportunity(opportunity_id)
    assert referral.details is not None and referral.details.notes == winner
    assert opportunity["description"] == winner
    assert "conflict: notes" in opportunity["cosell_audit"]


async def test_twice_in_a_row_the_second_sync_writes_nothing(world: World) -> None:
    referral_id, opportunity_id = await linked_pair(world)
    await world.edit_opportunity(opportunity_id, estimatedvalue=99000)
    await world.sync_opportunity(opportunity_id)
    before = await world.writes()

    await world.sync_opportunity(opportunity_id)
    await world.sync_referral(referral_id)

    assert await world.writes() == before


async def test_zero_crm_deal_value_never_overwrites_a_real_one(world: World) -> None:
    referral_id, opportunity_id = await linked_pair(world)
    await world.edit_opportunity(opportunity_id, estimatedvalue=0)

    await world.sync_opportunity(opportunity_id)

    referral = await world.referral(referral_id)
    assert referral.details is not None and referral.details.deal_value == 120000


async def test_opportunity_missing_country_contact_and_solution_is_refused_with_reasons(
    world: World,
) -> None:
    opportunity_id = await world.flagged_opportunity(country=None, contact=False, solutions=())
    pc_writes = (await world.writes())["pc"]

    result = await world.sync_opportunity(opportunity_id, reason="poll")

    assert result.outcome == "error"
    assert (await world.writes())["pc"] == pc_writes  # nothing sent to Partner Center
    opportunity = await world.opportunity(opportunity_id)
    assert opportunity["name"].startswith("✖ ")
    assert opportunity["cosell_syncstatus"] == 2
    audit = opportunity["cosell_audit"]
    assert "at least one solution" in audit
    assert "country" in audit
    assert "customer contact" in audit


async def test_fixing_the_data_and_editing_again_creates_the_referral(world: World) -> None:
    opportunity_id = await world.flagged_opportunity(solutions=())
    assert (await world.sync_opportunity(opportunity_id, reason="poll")).outcome == "error"
    await world.dataverse.create(
        "cosell_solutions",
        {
            "cosell_name": "SOL-1",
            "cosell_solutionidentifier": "SOL-77777-XYZ",
            "cosell_opportunityid@odata.bind": f"/opportunities({opportunity_id})",
        },
    )
    await world.edit_opportunity(opportunity_id, description="solution added")

    result = await world.sync_opportunity(opportunity_id, reason="poll")

    assert result.outcome == "created"
    assert result.referral_id is not None
    referral = await world.referral(result.referral_id)
    assert referral.external_reference_id == opportunity_id
    assert str(referral.type) == "Shared"
    assert referral.invite_context is not None
    assert str(referral.invite_context.assistance_request_code) == "CustomerTechnicalArchitecture"
    opportunity = await world.opportunity(opportunity_id)
    assert opportunity["cosell_referralid"] == result.referral_id
    assert opportunity["name"].startswith("✔ ")
    assert opportunity["cosell_syncstatus"] == 1


async def test_a_refused_opportunity_is_not_rewritten_by_its_own_echo(world: World) -> None:
    opportunity_id = await world.flagged_opportunity(country=None)
    await world.sync_opportunity(opportunity_id, reason="poll")
    written = await world.opportunity(opportunity_id)
    before = await world.writes()

    # Our own refusal write, delivered as a poll job (its second: read again, not written).
    await world.engine.sync(poll_job(written))
    await world.sync_opportunity(opportunity_id, reason="poll")  # same reasons: no new audit

    assert await world.writes() == before


async def test_winning_in_crm_closes_the_referral_won(world: World) -> None:
    referral_id, opportunity_id = await linked_pair(world)
    await world.dataverse.win_opportunity(opportunity_id)

    await world.sync_opportunity(opportunity_id)

    referral = await world.referral(referral_id)
    assert (str(referral.status), str(referral.substatus)) == ("Closed", "Won")


async def test_lost_in_partner_center_closes_the_opportunity_out_sold(world: World) -> None:
    referral_id, opportunity_id = await linked_pair(world)
    await world.edit_referral(
        referral_id, replace("/status", "Closed"), replace("/substatus", "Lost")
    )

    await world.sync_referral(referral_id)

    opportunity = await world.opportunity(opportunity_id)
    assert (opportunity["statecode"], opportunity["statuscode"]) == (2, 5)


async def test_closing_lost_in_crm_while_new_declines_the_referral(world: World) -> None:
    referral_id = await world.incoming()
    created = await world.sync_referral(referral_id)
    assert created.opportunity_id is not None
    await world.dataverse.lose_opportunity(created.opportunity_id, status=4)

    await world.sync_opportunity(created.opportunity_id)

    referral = await world.referral(referral_id)
    assert (str(referral.status), str(referral.substatus)) == ("Closed", "Declined")


async def test_a_closed_referral_is_never_written_again(world: World) -> None:
    _referral_id, opportunity_id = await linked_pair(world)
    await world.dataverse.win_opportunity(opportunity_id)
    await world.sync_opportunity(opportunity_id)
    pc_writes = (await world.writes())["pc"]

    await world.edit_opportunity(opportunity_id, statecode=0, statuscode=1)  # reopened in CRM
    first = await world.sync_opportunity(opportunity_id)
    second = await world.sync_opportunity(opportunity_id)

    assert (await world.writes())["pc"] == pc_writes
    assert first.plan is not None and first.plan.newly_blocked
    assert second.plan is not None and not second.plan.newly_blocked  # reported once
    opportunity = await world.opportunity(opportunity_id)
    assert "the referral is Closed" in opportunity["cosell_audit"]
    assert opportunity["statecode"] == 0  # the seller's reopening is left alone, not undone


async def test_observed_change_older_than_the_link_is_skipped_without_calls(
    world: World,
) -> None:
    referral_id, _ = await linked_pair(world)
    link = await world.links.get_link(referral_id)
    assert link is not None and link.referral_updated_at is not None
    stale = SyncJob(
        kind="referral",
        id=referral_id,  # type: ignore[arg-type]
        reason="webhook:referral-updated",
        observed_at=link.referral_updated_at - timedelta(seconds=5),
    )

    result = await world.engine.sync(stale)

    assert (result.outcome, result.remote_calls) == ("no_change", 0)


async def test_dry_run_writes_nothing_anywhere_and_shows_the_plan(world: World) -> None:
    referral_id, opportunity_id = await linked_pair(world)
    await world.edit_opportunity(opportunity_id, description="Dry notes", estimatedvalue=777)
    link_before = await world.links.get_link(referral_id)
    writes_before = await world.writes()
    history_before = await world.history.list_entries(referral_id, limit=100)

    result = await world.sync_opportunity(opportunity_id, dry_run=True)

    assert result.plan is not None
    assert set(result.plan.to_pc) == {"notes", "deal_value"}
    assert await world.writes() == writes_before
    assert await world.links.get_link(referral_id) == link_before
    assert await world.history.list_entries(referral_id, limit=100) == history_before


async def test_dry_run_of_a_new_referral_creates_nothing(world: World) -> None:
    referral_id = await world.incoming()

    result = await world.sync_referral(referral_id, dry_run=True)

    assert result.outcome == "created"
    assert result.plan is not None and "deal_value" in result.plan.to_crm
    assert await world.count("opportunities") == 0
    assert await world.count("accounts") == 0
    assert await world.links.get_link(referral_id) is None


async def test_each_sync_leaves_a_history_row_with_its_changes_and_calls(world: World) -> None:
    referral_id, opportunity_id = await linked_pair(world)
    await world.edit_opportunity(opportunity_id, estimatedvalue=64000)

    await world.sync_opportunity(opportunity_id, reason="poll")

    newest = (await world.history.list_entries(referral_id))[0]
    assert newest.outcome == "synced"
    assert newest.reason == "poll"
    assert newest.direction == "crm_to_pc"
    assert [(c.field, c.old, c.new) for c in newest.changes] == [("deal_value", 120000.0, 64000.0)]
    assert newest.remote_calls >= 3
    assert newest.duration_ms >= 0


async def test_microsoft_accepting_the_co_sell_brings_its_crm_id_into_the_opportunity(
    world: World,
) -> None:
    opportunity_id = await world.flagged_opportunity()
    created = await world.sync_opportunity(opportunity_id, reason="poll")
    assert created.outcome == "created" and created.referral_id is not None
    ours = await world.referral(created.referral_id)
    assert ours.engagement_id is not None
    related = [r async for r in world.pc.list_related_referrals(ours.engagement_id)]
    microsoft = next(r for r in related if r.id != ours.id)
    assert microsoft.id is not None
    response = await world.pc_http.post(
        f"/_emulator/microsoft/referrals/{microsoft.id}/patch",
        json=[
            {"op": "replace", "path": "/status", "value": "Active"},
            {"op": "replace", "path": "/substatus", "value": "Accepted"},
            {"op": "add", "path": "/trackingInfo", "value": {"microsoftMsxId": "7-MSXID0001"}},
        ],
    )
    assert response.status_code == 200

    result = await world.sync_referral(microsoft.id, reason="webhook:related-referral-updated")

    assert result.referral_id == created.referral_id
    opportunity = await world.opportunity(opportunity_id)
    assert opportunity["cosell_microsoftcrmid"] == "7-MSXID0001"
    assert (
        "Microsoft's referral of this engagement is now Active/Accepted"
        in (opportunity["cosell_audit"])
    )


async def test_switching_the_sync_flag_off_stops_the_pair_and_on_resumes_it(world: World) -> None:
    referral_id, opportunity_id = await linked_pair(world)
    await world.edit_opportunity(opportunity_id, cosell_syncwithpartnercenter=False)
    await world.edit_referral(referral_id, replace("/details/notes", "While paused"))

    paused = await world.sync_referral(referral_id)

    assert paused.outcome == "skipped"
    assert (await world.opportunity(opportunity_id))["description"] != "While paused"

    await world.edit_opportunity(opportunity_id, cosell_syncwithpartnercenter=True)
    resumed = await world.sync_opportunity(opportunity_id)

    assert resumed.outcome == "synced"
    assert (await world.opportunity(opportunity_id))["description"] == "While paused"


async def test_audit_of_a_change_sent_to_partner_center_goes_with_the_next_crm_write(
    world: World,
) -> None:
    referral_id, opportunity_id = await linked_pair(world)
    await world.edit_opportunity(opportunity_id, description="Seller's update")
    first = await world.sync_opportunity(opportunity_id, reason="poll")
    assert first.remote_calls <= 3  # no opportunity write just for the audit line
    audit_before = (await world.opportunity(opportunity_id))["cosell_audit"] or ""
    assert "to Partner Center: notes" not in audit_before

    await world.edit_referral(referral_id, replace("/details/dealValue", 131000))
    await world.sync_referral(referral_id)

    audit = (await world.opportunity(opportunity_id))["cosell_audit"]
    assert "to Partner Center: notes" in audit
    assert "from Partner Center: deal value" in audit
    assert audit.index("to Partner Center: notes") < audit.index("from Partner Center: deal")


@pytest.mark.parametrize("reason", ["reconcile", "backfill", "manual", "poll"])
async def test_microsofts_side_of_a_linked_engagement_never_becomes_a_second_opportunity(
    world: World, reason: str
) -> None:
    """Issue 13, class 2: only ``webhook:related-*`` jobs looked for the engagement's link, so
    Microsoft's referral arriving by reconcile, backfill or a manual sync was created anew."""
    opportunity_id = await world.flagged_opportunity()
    created = await world.sync_opportunity(opportunity_id, reason="poll")
    assert created.referral_id is not None
    ours = await world.referral(created.referral_id)
    assert ours.engagement_id is not None
    related = [r async for r in world.pc.list_related_referrals(ours.engagement_id)]
    microsoft = next(r for r in related if r.id != ours.id)
    assert microsoft.id is not None

    result = await world.sync_referral(microsoft.id, reason=reason)

    assert result.referral_id == created.referral_id
    assert await world.count("opportunities") == 1
    assert await world.links.get_link(microsoft.id) is None


async def test_a_new_referral_contact_never_renames_the_sellers_shared_contact(
    world: World,
) -> None:
    """Issue 13, class 5: the seller's contact sits on other opportunities too; a contact change
    from Partner Center renamed it in place. It gets a contact record of its own instead."""
    opportunity_id = await world.flagged_opportunity()  # with the seller's contact Ben Example
    seller_contact = (await world.opportunity(opportunity_id))["_parentcontactid_value"]
    created = await world.sync_opportunity(opportunity_id, reason="poll")
    assert created.referral_id is not None
    await world.edit_referral(
        created.referral_id,
        replace(
            "/customerProfile/team",
            [{"firstName": "Cy", "lastName": "New", "email": "cy@example.com"}],
        ),
    )

    await world.sync_referral(created.referral_id, reason="webhook:referral-updated")

    ben = await world.dataverse.get("contacts", seller_contact)
    assert (ben["firstname"], ben["emailaddress1"]) == ("Ben", "ben@example.com")
    opportunity = await world.opportunity(opportunity_id)
    assert opportunity["_parentcontactid_value"] != seller_contact
    cy = await world.dataverse.get("contacts", opportunity["_parentcontactid_value"])
    assert cy["emailaddress1"] == "cy@example.com"


async def test_an_opportunity_deleted_in_crm_puts_the_pair_in_error_not_synced(
    world: World,
) -> None:
    """Issue 13, class 8: later Partner Center edits vanished while the link still said
    ✔ synced. The pair now says why, in its last result and in the history."""
    referral_id, opportunity_id = await linked_pair(world)
    await world.dataverse.delete("opportunities", opportunity_id)
    await world.edit_referral(referral_id, replace("/details/notes", "After the delete"))

    result = await world.sync_referral(referral_id, reason="webhook:referral-updated")
    again = await world.sync_referral(referral_id, reason="manual")

    assert result.outcome == "error"
    assert "no longer exists in Dynamics 365" in result.problems[0]
    link = await world.links.get_link(referral_id)
    assert link is not None and link.last_result is not None
    assert link.last_result.status == "error" and "no longer exists" in link.last_result.message
    assert [type(step).__name__ for step in again.steps] == []  # said once
    newest = (await world.history.list_entries(referral_id))[0]
    assert newest.outcome == "error" and newest.errors == result.problems
