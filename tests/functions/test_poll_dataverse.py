"""``poll_dataverse``: changed, flagged opportunities (and solution rows) become jobs once; echoes
of the engine's own writes do not; the cursor moves (SPEC 3, 5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
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
        )
    )
    await links.save_opportunity_index(
        OpportunityIndex(
            opportunity_id=pending["opportunityid"], opportunity_modified_on=modified_on(pending)
        )
    )
    await links.create_link(
        SyncLink(
            referral_id="1b6c3f1e-9d2a-4c5b-8e7f-1a2b3c4d5e6f",
            opportunity_id=edited["opportunityid"],
            opportunity_modified_on=modified_on(edited) - timedelta(seconds=1),
        )
    )

    await run_poll()

    assert [str(j.id) for j in await app.jobs()] == [edited["opportunityid"]]


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

    assert saved is False
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
