"""``reconcile_partner_center``: referrals updated since the cursor whose eTag the link does not
hold become jobs; those the link holds do not; the cursor moves (SPEC 3, 5)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from azure.functions.timer import TimerRequest

import function_app
from shared.partner_center import Referral
from shared.state import Cursor, SyncLink
from shared.triggers.reconcile import CURSOR, OVERLAP
from tests.partner_center.payloads import private_deal

from .conftest import App


async def create_referral(app: App, name: str) -> Referral:
    return await app.runtime.partner_center().create_referral({**private_deal(), "name": name})


async def run_reconcile() -> None:
    await function_app.reconcile_partner_center(TimerRequest(past_due=False))


async def test_referral_whose_etag_differs_from_the_link_is_enqueued(app: App) -> None:
    synced = await create_referral(app, "Synced, link holds its eTag")
    changed = await create_referral(app, "Changed since the last sync")
    unlinked = await create_referral(app, "Never synced")
    links = app.runtime.links()
    for referral, etag in ((synced, synced.e_tag), (changed, '"an older etag"')):
        assert referral.id is not None
        await links.create_link(SyncLink(referral_id=referral.id, referral_etag=etag))

    await run_reconcile()

    jobs = await app.jobs()
    assert {str(j.id) for j in jobs} == {changed.id, unlinked.id}
    assert {(j.kind, j.reason) for j in jobs} == {("referral", "reconcile")}
    by_id = {str(j.id): j for j in jobs}
    assert by_id[str(changed.id)].observed_at == changed.updated_date_time


async def test_second_run_does_not_enqueue_the_same_referral_again(app: App) -> None:
    await create_referral(app, "Never synced")

    await run_reconcile()
    await run_reconcile()

    assert len(await app.jobs()) == 1


async def test_cursor_moves_to_the_newest_update(app: App) -> None:
    await create_referral(app, "First")
    newest = await create_referral(app, "Second")

    await run_reconcile()

    saved = await app.runtime.cursors().get_cursor(CURSOR)
    assert saved is not None
    assert saved.watermark == newest.updated_date_time


async def test_referrals_updated_before_the_overlap_window_are_not_listed(app: App) -> None:
    old = await create_referral(app, "Updated long ago")
    assert old.updated_date_time is not None
    after = old.updated_date_time + OVERLAP + timedelta(seconds=1)
    await app.runtime.cursors().save_cursor(Cursor(name=CURSOR, watermark=after))

    await run_reconcile()

    assert await app.jobs() == []


async def test_first_run_without_a_cursor_lists_recent_referrals_and_saves_one(app: App) -> None:
    await create_referral(app, "Recent")

    await run_reconcile()

    assert len(await app.jobs()) == 1
    saved = await app.runtime.cursors().get_cursor(CURSOR)
    assert saved is not None
    assert saved.watermark > datetime.now(UTC) - timedelta(minutes=1)
