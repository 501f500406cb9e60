"""``reconcile_partner_center`` makes progress a page at a time (SPEC 3 auto-heal, SPEC 12).

A run that is cut short — a host recycled, Partner Center failing on a later page, the per-run
cap — keeps the jobs of the pages it read, and the next run carries on from where it stopped
rather than from the overlap window. Before, a run enqueued nothing until it had read the whole
window: under `make chaos`'s host kills (every 2-6 s) it rarely finished, and webhooks dropped in
the run waited for the final backfill (issue 13: "created 205" in that backfill).
"""

from __future__ import annotations

from datetime import timedelta

import httpx
import pytest
from starlette.applications import Starlette

from sandbox.partner_center import SigningAuthority
from sandbox.partner_center import create_app as create_partner_center
from shared.partner_center import PartnerCenterError, Referral
from shared.runtime import Runtime, Transports
from shared.settings import get_settings
from shared.state import Cursor
from shared.triggers.cursor_run import iso
from shared.triggers.reconcile import CURSOR, RESUME, reconcile_partner_center
from tests.partner_center.payloads import private_deal

from .conftest import App

PAGE = 2  # referrals per list page here, so a handful of referrals spans several pages


@pytest.fixture
def pc_app(signing: SigningAuthority, deliveries: list[httpx.Request]) -> Starlette:
    async def receive(request: httpx.Request) -> httpx.Response:
        deliveries.append(request)
        return httpx.Response(200)

    return create_partner_center(
        signing=signing, seed=5, page_size=PAGE, webhook_transport=httpx.MockTransport(receive)
    )


class FirstPageOnly(httpx.AsyncBaseTransport):
    """Partner Center answering the first list page, then no more (the network gone)."""

    def __init__(self, app: Starlette) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self.pages = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/referrals") and request.method == "GET":
            self.pages += 1
            if self.pages > 1:
                raise httpx.ConnectError("Partner Center unreachable", request=request)
        return await self._inner.handle_async_request(request)


async def create_referrals(app: App, count: int) -> list[Referral]:
    pc = app.runtime.partner_center()
    return [await pc.create_referral({**private_deal(), "name": f"Deal {n}"}) for n in range(count)]


async def test_run_cut_short_keeps_its_jobs_and_the_next_run_carries_on(app: App) -> None:
    referrals = await create_referrals(app, 5)
    broken = FirstPageOnly(app.pc_app)
    cut_short = Runtime.from_settings(
        get_settings(),
        transports=Transports(
            partner_center=broken, dataverse=httpx.ASGITransport(app=app.dataverse_app)
        ),
    )
    try:
        with pytest.raises(PartnerCenterError, match="ConnectError"):
            await reconcile_partner_center(cut_short, chunk=PAGE)
    finally:
        await cut_short.close()

    first = await app.jobs()
    assert {str(j.id) for j in first} == {r.id for r in referrals[:PAGE]}
    cursor = await app.runtime.cursors().get_cursor(CURSOR)
    assert cursor is not None and cursor.state[RESUME] == iso(referrals[PAGE - 1].updated_date_time)

    report = await reconcile_partner_center(app.runtime, chunk=PAGE)

    jobs = await app.jobs()
    assert sorted(str(j.id) for j in jobs) == sorted(str(r.id) for r in referrals)  # each once
    assert report.finished and report.already_queued == PAGE
    done = await app.runtime.cursors().get_cursor(CURSOR)
    assert done is not None and RESUME not in done.state
    assert done.watermark == referrals[-1].updated_date_time


async def test_unfinished_pass_resumes_where_it_stopped_not_from_the_overlap(app: App) -> None:
    (handled,) = await create_referrals(app, 1)
    assert handled.updated_date_time is not None
    # The last run stopped after this referral (its resume point is past it): the overlap
    # (five minutes before the watermark) would list it again, the resume point does not.
    stopped = handled.updated_date_time + timedelta(seconds=2)
    await app.runtime.cursors().save_cursor(
        Cursor(name=CURSOR, watermark=stopped, state={RESUME: iso(stopped)})
    )

    report = await reconcile_partner_center(app.runtime)

    assert report.referrals == 0 and await app.jobs() == []
    assert report.finished


async def test_run_stopped_by_its_cap_leaves_the_rest_to_the_next_run(app: App) -> None:
    referrals = await create_referrals(app, 3)

    capped = await reconcile_partner_center(app.runtime, max_referrals=2, chunk=PAGE)
    assert (capped.enqueued, capped.finished) == (2, False)
    rest = await reconcile_partner_center(app.runtime, max_referrals=2, chunk=PAGE)

    assert rest.finished and rest.enqueued == 1
    assert sorted(str(j.id) for j in await app.jobs()) == sorted(str(r.id) for r in referrals)
