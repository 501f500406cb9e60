"""The connector's contract properties through a full sync (SPEC 4.1: "Unknown referral
properties must round-trip untouched").

The artefact: microsoft/PowerPlatformConnectors, certified-connectors/PartnerCenterReferrals/
apiDefinition.swagger.json, definition ``Microsoft.Partner.Service.PartnerReferrals.Contracts.V3.
Referral`` (reference dataverse-push-and-webhook-trust.md §3): ``referralProgram``,
``registrationStatus``, ``quality``, ``isSpam``, ``tags``, ``mpnId``, ``salesStage``,
``callToAction``, ``referralSource``, ``lastModifiedVia``, ``lastRunId``, ``favorite``,
``campaignId``, ``trackingInfo``, ``closedDateTime``, ``registrations``. A real referral carries
them; the engine must neither trip over them nor write them back changed.
"""

from __future__ import annotations

from typing import Any

from sandbox.partner_center import DEFAULT_TOKEN
from sandbox.partner_center.samples import contract_properties
from tests.sync.conftest import World

CONTRACT_PROPERTIES = tuple(contract_properties())
# Partner Center's own stamp of who wrote last: the sync's PATCHes change it, as they would on
# the real service ("Referral Last Modified By" in the swagger).
STAMPED_BY_THE_SERVICE = frozenset({"lastModifiedVia"})


async def _raw_referral(world: World, referral_id: str) -> dict[str, Any]:
    response = await world.pc_http.get(
        f"/v1.0/engagements/referrals/{referral_id}",
        headers={"Authorization": f"Bearer {DEFAULT_TOKEN}"},
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def replace(path: str, value: object) -> dict[str, object]:
    return {"op": "replace", "path": path, "value": value}


async def test_contract_properties_survive_a_full_sync_both_ways_untouched(world: World) -> None:
    """A Microsoft co-sell referral with every contract property set is created in CRM,
    accepted there, edited on both sides, and synced again: each property Partner Center
    returned before the sync is returned unchanged after it, and the second pass writes
    nothing (the properties never look like a change)."""
    referral_id = await world.incoming(**contract_properties())
    before = await _raw_referral(world, referral_id)
    assert before["registrationStatus"] == "ReviewPending"  # Microsoft's values, not defaults
    assert before["tags"] == [{"tag": "AzureMigration"}, {"tag": "FY27"}]

    created = await world.sync_referral(referral_id, reason="webhook:referral-created")
    assert created.outcome == "created" and created.opportunity_id is not None
    opportunity_id = created.opportunity_id
    await world.edit_opportunity(opportunity_id, statuscode=1)  # the seller accepts (§6.3)
    assert (await world.sync_opportunity(opportunity_id)).outcome == "synced"
    await world.edit_opportunity(opportunity_id, description="Kick-off booked")
    assert (await world.sync_opportunity(opportunity_id, reason="poll")).outcome == "synced"
    await world.edit_referral(referral_id, replace("/details/dealValue", 250000))
    synced = await world.sync_referral(referral_id, reason="webhook:referral-updated")
    assert synced.outcome == "synced"

    after = await _raw_referral(world, referral_id)
    for name in CONTRACT_PROPERTIES:
        if name not in STAMPED_BY_THE_SERVICE:
            assert after[name] == before[name], name
    # The sync's own changes did arrive, next to the untouched properties.
    assert (after["status"], after["substatus"]) == ("Active", "Accepted")
    assert after["details"]["notes"] == "Kick-off booked"
    assert after["externalReferenceId"] == opportunity_id
    opportunity = await world.opportunity(opportunity_id)
    assert opportunity["estimatedvalue"] == 250000
    # What the engine maps is read from them; the rest is left alone: `trackingInfo` gives the
    # Microsoft CRM id, while `referralProgram` does not replace the derived program (SPEC 4.1).
    assert opportunity["cosell_microsoftcrmid"] == "7-ABCDEFGH1"
    assert opportunity["cosell_referralprogram"] == "Co-sell"

    writes = await world.writes()
    again = await world.sync_referral(referral_id)
    assert again.outcome == "no_change"
    assert await world.writes() == writes
