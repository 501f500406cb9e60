"""``poll_dataverse``: changed, flagged opportunities (and solution rows) become jobs once; echoes
of the engine's own writes do not; the cursor moves (SPEC 3, 5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from azure.functions.timer import TimerRequest

import function_app
from shared.dataverse import bind
from shared.state import Cursor, OpportunityIndex, SyncLink
from shared.triggers import cursor_run
from shared.triggers.poll import CURSOR, OVERLAP

from .conftest import App

REFERRAL_ID = "0b6c3f1e-9d2a-4c5b-8e7f-1a2b3c4d5e6f"


async def create_opportunity(app: App, name: str, *, flagged: bool = True) -> dict[str, Any]:
    return await app.runtime.dataverse().create(
        "opportunities", {"name": name, "cosell_syncwithpartnercenter": flagged}
    )


def modified_on(row: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(row["modifiedon"])


async def run_poll() -> None:
    await function_app.poll_dataverse(TimerRequest(past_due=False))


async def cursor(app: App) -> Cursor:
    found = await app.runtime.cursors().get_cursor(CURSOR)
    assert found is not None
    return found


async def test_changed_flagged_opportunity_is_enqueued_once(app: App) -> None:
    flagged = await create_opportunity(app, "Flagged deal")
    await create_opportunity(app, "Not for co-sell", flagged=False)

    await run_poll()
    await run_poll()  # the second run re-reads the overlap window, and enqueues nothing again

    [job] = await app.jobs()
    assert job.kind == "opportunity"
    assert str(job.id) == flagged["opportunityid"]
    assert job.reason == "poll"
    assert job.observed_at == modified_on(flagged)


async def test_cursor_moves_to_the_newest_change_and_the_next_run_reads_from_there(
    app: App,
) -> None:
    first = await create_opportunity(app, "First")
    await run_poll()
    assert (await cursor(app)).watermark == modified_on(first)

    second = await create_opportunity(app, "Second")
    await app.jobs_queue.clear_messages()
    await run_poll()

    assert [str(j.id) for j in await app.jobs()] == [second["opportunityid"]]
    assert (await cursor(app)).watermark == modified_on(second)


async def test_first_run_without_a_cursor_reads_recent_changes_and_saves_one(app: App) -> None:
    await create_opportunity(app, "Recent")

    await run_poll()

    assert len(await app.jobs()) == 1
    saved = await cursor(app)
    assert saved.watermark > datetime.now(UTC) - timedelta(minutes=1)


async def test_echo_of_our_own_write_is_not_enqueued(app: App) -> None:
    linked = await create_opportunity(app, "Linked, written by the engine")
    pending = await create_opportunity(app, "Referral being created by the engine")
    edited = await create_opportunity(app, "Linked, then edited by a seller")
    links = app.runtime.links()
    await links.create_link(
        SyncLink(
            referral_id=REFERRAL_ID,
            opportunity_id=linked["opportunityid"],
            opportunity_modified_on=modified_on(linked),
            row_versions={"opportunity": linked["versionnumber"]},
        )
    )
    await links.save_opportunity_index(
        OpportunityIndex(
            opportunity_id=pending["opportunityid"],
            opportunity_modified_on=modified_on(pending),
            row_versions={"opportunity": pending["versionnumber"]},
        )
    )
    await links.create_link(
        SyncLink(
            referral_id="1b6c3f1e-9d2a-4c5b-8e7f-1a2b3c4d5e6f",
            opportunity_id=edited["opportunityid"],
            opportunity_modified_on=modified_on(edited) - timedelta(seconds=1),
            row_versions={"opportunity": edited["versionnumber"] - 1},
        )
    )

    await run_poll()

    assert [str(j.id) for j in await app.jobs()] == [edited["opportunityid"]]


async def test_a_seller_edit_in_the_second_of_our_write_is_enqueued(app: App) -> None:
    """Issue 13, class 12: ``modifiedon`` has whole seconds (reference dataverse-web-api §3.4,
    §3.7), so an edit right after our write may carry the ``modifiedon`` the link recorded;
    its ``versionnumber`` is newer, and that is what the echo check compares."""
    ours = await create_opportunity(app, "Written by the engine")
    links = app.runtime.links()
    await links.create_link(
        SyncLink(
            referral_id=REFERRAL_ID,
            opportunity_id=ours["opportunityid"],
            opportunity_modified_on=modified_on(ours),
            row_versions={"opportunity": ours["versionnumber"]},
        )
    )
    dataverse = app.runtime.dataverse()
    await dataverse.update("opportunities", ours["opportunityid"], {"description": "Seller"})

    await run_poll()

    assert [str(j.id) for j in await app.jobs()] == [ours["opportunityid"]]


async def test_a_link_without_versions_covers_only_older_seconds(app: App) -> None:
    """Links saved before versions were kept: the same second may hide a seller's edit, so it
    is enqueued (the worker reads it); an older second is still an echo."""
    same, older = await create_opportunity(app, "Same second"), await create_opportunity(app, "Old")
    links = app.runtime.links()
    for referral_id, row, shift in (
        (REFERRAL_ID, same, timedelta(0)),
        ("1b6c3f1e-9d2a-4c5b-8e7f-1a2b3c4d5e6f", older, timedelta(seconds=1)),
    ):
        await links.create_link(
            SyncLink(
                referral_id=referral_id,
                opportunity_id=row["opportunityid"],
                opportunity_modified_on=modified_on(row) + shift,
            )
        )

    await run_poll()

    assert [str(j.id) for j in await app.jobs()] == [same["opportunityid"]]


async def add_solution(app: App, opportunity: dict[str, Any]) -> dict[str, Any]:
    return await app.runtime.dataverse().create(
        "cosell_solutions",
        {
            "cosell_name": "Data platform",
            "cosell_solutionidentifier": "SOL-12345-ABC",
            "cosell_opportunityid@odata.bind": bind("opportunities", opportunity["opportunityid"]),
        },
    )


async def test_solution_row_change_enqueues_its_opportunity(app: App) -> None:
    opportunity = await create_opportunity(app, "Deal with a solution")
    unflagged = await create_opportunity(app, "Not for co-sell", flagged=False)
    await run_poll()
    await app.jobs_queue.clear_messages()

    solution = await add_solution(app, opportunity)
    await add_solution(app, unflagged)
    await run_poll()

    [job] = await app.jobs()
    assert str(job.id) == opportunity["opportunityid"]
    assert job.observed_at == modified_on(solution)


async def test_changes_older_than_the_overlap_window_are_not_read_again(app: App) -> None:
    old = await create_opportunity(app, "Old change")
    store = app.runtime.cursors()
    await store.save_cursor(
        Cursor(name=CURSOR, watermark=modified_on(old) + OVERLAP + timedelta(seconds=1))
    )

    await run_poll()

    assert await app.jobs() == []


async def test_a_run_that_lost_the_race_for_the_cursor_leaves_it(app: App) -> None:
    store = app.runtime.cursors()
    read = await store.save_cursor(Cursor(name=CURSOR, watermark=datetime.now(UTC)))
    moved = await store.save_cursor(read)  # another run saved after this one read

    saved = await cursor_run.save(
        store, CURSOR, read, watermark=datetime.now(UTC) + timedelta(hours=1), seen={}
    )

    assert saved is None
    assert (await cursor(app)).etag == moved.etag


async def test_a_qualified_lead_from_a_referral_enqueues_its_referral(app: App) -> None:
    from shared.runtime import Runtime, Transports
    from shared.triggers.poll import poll_dataverse

    leads_on = app.runtime.settings.model_copy(update={"sync_cosell_only": False})
    runtime = Runtime.from_settings(
        leads_on,
        transports=Transports(dataverse=httpx.ASGITransport(app=app.dataverse_app)),
    )
    dataverse = runtime.dataverse()
    await dataverse.create("leads", {"lastname": "Open", "cosell_referralid": REFERRAL_ID})
    qualified_referral = REFERRAL_ID.replace("0b", "1b", 1)
    await dataverse.create(
        "leads",
        {"lastname": "Qualified", "cosell_referralid": qualified_referral,
         "statecode": 1, "statuscode": 3},
    )  # fmt: skip
    await dataverse.create("leads", {"lastname": "Not ours", "statecode": 1, "statuscode": 3})
    try:
        report = await poll_dataverse(runtime)
    finally:
        await runtime.close()

    assert report.enqueued == 1
    [job] = await app.jobs()
    assert (job.kind, str(job.id), job.reason) == (
        "referral",
        qualified_referral,
        "poll",
    )


@pytest.mark.parametrize("lookup", ["parentaccountid", "parentcontactid"])
async def test_an_account_or_contact_fixed_alone_enqueues_its_flagged_opportunity(
    app: App, lookup: str
) -> None:
    """Issue 13, class 8: a country fixed on the account (what validation asked for) or a new
    phone on the contact used to wait for the opportunity's next edit. The poll reads flagged
    opportunities through the lookup (reference dataverse-web-api §2.2) and compares the
    related row's ``versionnumber`` with the one the link recorded."""
    dataverse = app.runtime.dataverse()
    entity_set, body = (
        ("accounts", {"name": "Fabrikam"})
        if lookup == "parentaccountid"
        else ("contacts", {"lastname": "Buyer"})
    )
    related = await dataverse.create(entity_set, body)
    related_id = related["accountid" if lookup == "parentaccountid" else "contactid"]
    opportunity = await dataverse.create(
        "opportunities",
        {"name": "Flagged", "cosell_syncwithpartnercenter": True,
         f"{lookup}@odata.bind": f"/{entity_set}({related_id})"},
    )  # fmt: skip
    kind = "account" if lookup == "parentaccountid" else "contact"
    await app.runtime.links().create_link(
        SyncLink(
            referral_id=REFERRAL_ID,
            opportunity_id=opportunity["opportunityid"],
            opportunity_modified_on=modified_on(opportunity),
            row_versions={
                "opportunity": opportunity["versionnumber"],
                kind: related["versionnumber"],
            },
        )
    )
    await run_poll()
    assert await app.jobs() == []  # what the link already holds is no change

    fix = {"address1_country": "DE"} if kind == "account" else {"telephone1": "+49 30 1234"}
    await dataverse.update(entity_set, related_id, fix)
    await run_poll()

    assert [str(j.id) for j in await app.jobs()] == [opportunity["opportunityid"]]
