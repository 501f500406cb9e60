"""A failed attempt of a sync job explains itself (issue 18): the engine records a history row
per failed attempt (type, HTTP status, the service's code, the call with ids elided) and, for
a linked pair, the link's last result — with no personal data from the records."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

import function_app
from shared.dataverse import ServiceError
from shared.failures import last_failure, path_template
from shared.jobs import SyncJob
from tests.partner_center.payloads import cosell_deal

from .conftest import EMULATOR, App
from .test_sync_job import message

CUSTOMER = "Fabrikam Operability GmbH"


async def _linked_pair(app: App) -> tuple[str, str]:
    incoming = cosell_deal(name=f"{CUSTOMER} - migration")
    del incoming["externalReferenceId"]
    async with app.control() as control:
        answer = await control.post("/_emulator/microsoft/referrals", json=incoming)
        assert answer.status_code == 201, answer.text
        referral_id = str(answer.json()["id"])
    await function_app.sync_job(
        message(SyncJob.now("referral", referral_id, reason="manual").to_json())
    )
    link = await app.runtime.links().get_link(referral_id)
    assert link is not None and link.opportunity_id is not None
    return referral_id, link.opportunity_id


def _dataverse_control(app: App) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app.dataverse_app), base_url=EMULATOR
    )


async def test_a_dataverse_500_is_recorded_in_the_history_and_on_the_link(app: App) -> None:
    referral_id, opportunity_id = await _linked_pair(app)
    async with _dataverse_control(app) as control:
        faults = {"error_rate": 1.0, "statuses": [500]}
        assert (await control.put("/_emulator/faults", json=faults)).status_code == 200
        job = SyncJob.now("opportunity", opportunity_id, reason="webhook:dataverse-update")
        try:
            with pytest.raises(ServiceError):
                await function_app.sync_job(message(job.to_json(), dequeue_count=3))
        finally:
            await control.delete("/_emulator/faults")

    [failed, *_] = await app.runtime.history().list_entries(referral_id)
    assert failed.outcome == "error"
    assert failed.failure is not None
    assert failed.failure.summary == ("Dataverse 500 on GET opportunities(…) (code 0x80040216)")
    assert (failed.failure.error, failed.failure.attempt) == ("ServiceError", 3)
    assert failed.errors == [failed.failure.summary]
    link = await app.runtime.links().get_link(referral_id)
    assert link is not None and link.last_result is not None
    assert (link.last_result.status, link.last_result.message) == (
        "failed",
        failed.failure.summary,
    )
    found = await last_failure(app.runtime.links(), app.runtime.history(), job)
    assert found is not None and found.failure == failed.failure
    recorded = json.dumps(failed.model_dump(mode="json"))
    assert CUSTOMER not in recorded and "migration" not in recorded


async def test_a_partner_center_failure_names_the_call_without_the_referral_id(app: App) -> None:
    referral_id = str(uuid.uuid4())
    async with app.control() as control:
        faults = {"error_rate": 1.0, "statuses": [502]}
        assert (await control.put("/_emulator/faults", json=faults)).status_code == 200
        job = SyncJob.now("referral", referral_id, reason="webhook:referral-updated")
        try:
            with pytest.raises(Exception, match="502"):
                await function_app.sync_job(message(job.to_json(), dequeue_count=1))
        finally:
            await control.delete("/_emulator/faults")

    [failed] = await app.runtime.history().list_entries(referral_id)
    assert failed.failure is not None
    assert failed.failure.summary.startswith("Partner Center 502 on GET referrals/(…)")
    assert referral_id not in failed.failure.summary


def test_paths_lose_their_ids_and_queries() -> None:
    guid = "6f1f8a5e-3d4c-4b2a-9e8f-000000000001"
    assert path_template(f"/api/data/v9.2/opportunities({guid})") == "opportunities(…)"
    assert path_template("/api/data/v9.2/accounts(name='Contoso')?$select=x") == "accounts(…)"
    assert path_template(f"/v1.0/engagements/referrals/{guid}") == "referrals/(…)"
    assert path_template("/api/data/v9.2/$batch") == "$batch"
