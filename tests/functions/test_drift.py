"""What is out of sync (``shared.drift``, issue 18) against both emulators and Azurite: each
kind found from the list queries, a synced pair reported as nothing, and ``/api/health``
degraded by the stored counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

import function_app
from shared import drift
from shared.health import check_health
from shared.jobs import SyncJob
from tests.partner_center.payloads import cosell_deal

from .conftest import EMULATOR, App
from .test_sync_job import message

LATER = timedelta(minutes=10)  # past the grace: what was found is settled, not in flight


async def _find(app: App, *, now: datetime | None = None) -> drift.DriftReport:
    runtime = app.runtime
    return await drift.find_drift(
        pc=runtime.partner_center(),
        dataverse=runtime.dataverse(),
        links=runtime.links(),
        settings=runtime.settings,
        now=now,
    )


async def _microsoft_sends(app: App, name: str) -> str:
    incoming = cosell_deal(name=name)
    del incoming["externalReferenceId"]
    async with app.control() as control:
        answer = await control.post("/_emulator/microsoft/referrals", json=incoming)
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])


async def _sync(kind: str, record_id: str) -> None:
    job = SyncJob.now(kind, record_id, reason="manual")  # type: ignore[arg-type]
    await function_app.sync_job(message(job.to_json()))


async def _flagged_opportunity(app: App, name: str) -> str:
    row: dict[str, Any] = await app.runtime.dataverse().create(
        "opportunities", {"name": name, "cosell_syncwithpartnercenter": True}
    )
    return str(row["opportunityid"])


async def test_referrals_whose_webhooks_were_dropped_are_listed_and_degrade_health(
    app: App,
) -> None:
    # Nothing ran for these: as if their webhooks never arrived (and reconcile had not run).
    missing = {await _microsoft_sends(app, f"Dropped webhook {n}") for n in range(3)}

    report = await _find(app, now=datetime.now(UTC) + LATER)

    listed = {i.referral_id for i in report.items if i.kind == "referral_without_opportunity"}
    assert listed == missing
    assert report.counts()["referral_without_opportunity"] == 3
    await drift.save_summary(app.runtime.cursors(), report.summary(source="test"))
    health = await check_health(app.runtime)
    assert health.status == "degraded"
    assert health.drift is not None
    assert health.drift.counts["referral_without_opportunity"] == 3
    assert "3 referrals without an opportunity: see `cosell drift`" in health.problems


async def test_changes_younger_than_the_grace_are_in_flight_not_a_health_problem(
    app: App,
) -> None:
    await _microsoft_sends(app, "Just arrived")

    summary = (await _find(app)).summary()
    await drift.save_summary(app.runtime.cursors(), summary)

    assert summary.counts["referral_without_opportunity"] == 1
    assert summary.settled["referral_without_opportunity"] == 0
    health = await check_health(app.runtime)
    assert not [p for p in health.problems if "cosell drift" in p]


async def test_a_synced_pair_is_not_drift_until_one_side_changes(app: App) -> None:
    referral_id = await _microsoft_sends(app, "Synced pair")
    await _sync("referral", referral_id)

    assert (await _find(app, now=datetime.now(UTC) + LATER)).items == []

    referral = await app.runtime.partner_center().get_referral(referral_id)
    await app.runtime.partner_center().patch_referral(
        referral_id,
        [{"op": "replace", "path": "/details/dealValue", "value": 4321}],
        etag=referral.e_tag,
    )
    [lagging] = (await _find(app)).items
    assert (lagging.kind, lagging.referral_id) == ("stale", referral_id)
    assert lagging.detail == "Partner Center changed since the last sync"


async def test_a_flagged_opportunity_without_a_referral_is_listed(app: App) -> None:
    opportunity_id = await _flagged_opportunity(app, "Seller's new co-sell deal")

    [item] = (await _find(app)).items

    assert (item.kind, item.opportunity_id) == ("opportunity_without_referral", opportunity_id)
    assert item.name == "Seller's new co-sell deal"
    assert item.detail == "no referral created yet"


async def test_a_refused_opportunity_shows_its_validation_reasons(app: App) -> None:
    opportunity_id = await _flagged_opportunity(app, "No country, no solution")
    await _sync("opportunity", opportunity_id)  # refused: SPEC 4.6

    [item] = (await _find(app)).items

    assert (item.kind, item.opportunity_id, item.referral_id) == (
        "validation_failed",
        opportunity_id,
        None,
    )
    assert "solution" in item.detail.lower()
    assert item.name == "No country, no solution"  # without the ✖ mark
    summary = (await _find(app, now=datetime.now(UTC) + LATER)).summary()
    assert summary.settled["validation_failed"] == 1
    assert summary.problems() == []  # it waits on the seller, not on an operator


async def test_a_pair_whose_last_job_failed_is_listed_with_the_failure(app: App) -> None:
    referral_id = await _microsoft_sends(app, "Failing pair")
    await _sync("referral", referral_id)
    dataverse = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app.dataverse_app), base_url=EMULATOR
    )
    async with dataverse:
        await dataverse.put("/_emulator/faults", json={"error_rate": 1.0, "statuses": [500]})
        try:
            with pytest.raises(Exception, match="500"):
                await _sync("referral", referral_id)  # a referral job that reads the CRM
        finally:
            await dataverse.delete("/_emulator/faults")

    items = [i for i in (await _find(app)).items if i.referral_id == referral_id]

    assert [(i.kind, i.detail) for i in items] == [
        ("job_failed", "Dataverse 500 on GET opportunities(…) (code 0x80040216)")
    ]


async def test_the_timer_scan_stores_the_counts_at_most_every_period(app: App) -> None:
    await _microsoft_sends(app, "Counted by the timer")
    runtime = app.runtime
    scan = {
        "pc": runtime.partner_center(),
        "dataverse": runtime.dataverse(),
        "links": runtime.links(),
        "cursors": runtime.cursors(),
        "settings": runtime.settings,
    }

    first = await drift.refresh(**scan)
    again = await drift.refresh(**scan)

    assert first is not None and first.counts["referral_without_opportunity"] == 1
    assert again is None  # the stored counts are younger than SCAN_EVERY
    stored = await drift.load_summary(runtime.cursors())
    assert stored == first


async def test_a_pair_closed_either_way_is_not_reported_as_lagging(app: App) -> None:
    lost = await _microsoft_sends(app, "Lost in Partner Center")
    won = await _microsoft_sends(app, "Won in the CRM")
    for referral_id in (lost, won):
        await _sync("referral", referral_id)
    pc = app.runtime.partner_center()
    referral = await pc.get_referral(lost)
    await pc.patch_referral(
        lost,
        [
            {"op": "replace", "path": "/status", "value": "Closed"},
            {"op": "replace", "path": "/substatus", "value": "Lost"},
        ],
        etag=referral.e_tag,
    )
    await _sync("referral", lost)  # closes the opportunity with LoseOpportunity
    link = await app.runtime.links().get_link(won)
    assert link is not None and link.opportunity_id is not None
    await app.runtime.dataverse().win_opportunity(link.opportunity_id)
    await _sync("opportunity", link.opportunity_id)  # closes the referral Won

    assert (await _find(app)).items == []


async def _routes(emulator: Any) -> dict[str, int]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=emulator), base_url=EMULATOR
    ) as http:
        routes: dict[str, int] = (await http.get("/_emulator/stats")).json()["requests"]
    return {route: n for route, n in routes.items() if "/_emulator/" not in route}


async def test_drift_reads_with_list_queries_not_a_call_per_record(app: App) -> None:
    for n in range(4):
        await _sync("referral", await _microsoft_sends(app, f"Linked {n}"))
    await _microsoft_sends(app, "Not linked")
    refused = await _flagged_opportunity(app, "Refused")
    await _sync("opportunity", refused)
    await _flagged_opportunity(app, "Waiting")
    before = {
        name: await _routes(e) for name, e in (("pc", app.pc_app), ("crm", app.dataverse_app))
    }

    report = await _find(app)

    after = {name: await _routes(e) for name, e in (("pc", app.pc_app), ("crm", app.dataverse_app))}
    made = {
        (side, route): n - before[side].get(route, 0)
        for side in after
        for route, n in after[side].items()
        if n - before[side].get(route, 0)
    }
    assert report.read == {"referrals": 5, "opportunities": 6, "links": 4}
    assert made == {
        ("pc", "GET /v1.0/engagements/referrals"): 1,  # one page of the list
        ("crm", "GET /api/data/v9.2/opportunities"): 2,  # the flagged rows, the Error audits
    }
