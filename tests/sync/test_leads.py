"""SYNC_COSELL_ONLY: marketplace leads are skipped, or become Dataverse leads (SPEC 4.5)."""

from __future__ import annotations

import uuid
from typing import Any

from tests.sync.conftest import World, open_world

LEAD: dict[str, Any] = {
    "type": "Independent",
    "qualification": "SalesQualified",
    "inviteContext": {"invitedBy": {"organizationId": "msft"}},
}


async def test_leads_are_skipped_when_syncing_co_sell_only(world: World) -> None:
    referral_id = await world.incoming(**LEAD)

    result = await world.sync_referral(referral_id)

    assert result.outcome == "skipped"
    assert await world.count("leads") == 0
    assert await world.count("opportunities") == 0


async def test_lead_is_created_and_qualifying_it_accepts_the_referral(
    storage_connection_string: str,
) -> None:
    prefix = "lead" + uuid.uuid4().hex[:12]
    async with open_world(storage_connection_string, prefix, SYNC_COSELL_ONLY="false") as world:
        referral_id = await world.incoming(**LEAD)
        created = await world.sync_referral(referral_id)
        again = await world.sync_referral(referral_id)
        assert created.outcome == "created"
        assert again.outcome == "no_change"
        assert await world.count("leads", cosell_referralid=referral_id) == 1

        # The seller qualifies the lead, which makes an opportunity (as QualifyLead does).
        [lead] = [r async for r in world.dataverse.list_rows("leads")]
        opportunity_id = str(uuid.uuid4())
        await world.dataverse.create(
            "opportunities",
            {
                "name": "Qualified deal",
                "estimatedvalue": 5000,
                "originatingleadid@odata.bind": f"/leads({lead['leadid']})",
            },
            row_id=opportunity_id,
        )
        await world.dataverse.update(
            "leads",
            lead["leadid"],
            {
                "statecode": 1,
                "statuscode": 3,
                "qualifyingopportunityid@odata.bind": f"/opportunities({opportunity_id})",
            },
        )

        result = await world.sync_referral(referral_id, reason="poll")

        assert result.outcome == "synced"
        referral = await world.referral(referral_id)
        assert (str(referral.status), str(referral.substatus)) == ("Active", "Accepted")
        opportunity = await world.opportunity(opportunity_id)
        assert opportunity["cosell_referralid"] == referral_id
        assert opportunity["cosell_syncwithpartnercenter"] is True
        link = await world.links.get_link(referral_id)
        assert link is not None and link.opportunity_id == opportunity_id


async def test_a_qualified_lead_flagged_before_its_referral_job_runs_gets_no_second_referral(
    storage_connection_string: str,
) -> None:
    """Issue 13, class 3: the seller qualifies the lead and flags the new opportunity for sync
    within one poll interval; the poll saw a flagged opportunity without a link and created a
    partner referral beside Microsoft's. The opportunity belongs to the lead's referral."""
    prefix = "lead" + uuid.uuid4().hex[:12]
    async with open_world(storage_connection_string, prefix, SYNC_COSELL_ONLY="false") as world:
        referral_id = await world.incoming(**LEAD)
        await world.sync_referral(referral_id)
        [lead] = [r async for r in world.dataverse.list_rows("leads")]
        account_id, opportunity_id = str(uuid.uuid4()), str(uuid.uuid4())
        await world.dataverse.create(
            "accounts", {"name": "Contoso Ltd", "address1_country": "DE"}, row_id=account_id
        )
        await world.dataverse.create(
            "opportunities",
            {
                "name": "Qualified deal",
                "estimatedvalue": 5000,
                "cosell_syncwithpartnercenter": True,  # the seller flags it at once
                "parentaccountid@odata.bind": f"/accounts({account_id})",
                "originatingleadid@odata.bind": f"/leads({lead['leadid']})",
            },
            row_id=opportunity_id,
        )
        await world.dataverse.create(
            "cosell_solutions",
            {
                "cosell_name": "SOL-1",
                "cosell_solutionidentifier": "SOL-1",
                "cosell_opportunityid@odata.bind": f"/opportunities({opportunity_id})",
            },
        )
        await world.dataverse.update(
            "leads",
            lead["leadid"],
            {
                "statecode": 1,
                "statuscode": 3,
                "qualifyingopportunityid@odata.bind": f"/opportunities({opportunity_id})",
            },
        )

        result = await world.sync_opportunity(opportunity_id, reason="poll")  # the poll first
        later = await world.sync_referral(referral_id, reason="poll")

        partner_made = [
            r
            async for r in world.pc.list_referrals(
                filter=f"externalReferenceId eq '{opportunity_id}'"
            )
            if r.id != referral_id
        ]
        assert partner_made == []
        assert result.referral_id == referral_id
        assert later.outcome in ("synced", "no_change")
        link = await world.links.get_link(referral_id)
        assert link is not None and link.opportunity_id == opportunity_id
        referral = await world.referral(referral_id)
        assert (str(referral.status), str(referral.substatus)) == ("Active", "Accepted")


async def test_a_lead_dataverse_refuses_ends_the_job_with_the_reason_not_in_poison(
    storage_connection_string: str,
) -> None:
    """Any write a service refuses as invalid (400) that the plan did not foresee (here a lead's
    amount beyond Dataverse money) is recorded with the service's reason; raising it made the
    host retry the job into the poison queue (issue 13, class 6)."""
    prefix = "lead" + uuid.uuid4().hex[:12]
    async with open_world(storage_connection_string, prefix, SYNC_COSELL_ONLY="false") as world:
        details = {"dealValue": 5e12, "currency": "EUR", "closingDateTime": "2027-03-31T00:00:00Z"}
        referral_id = await world.incoming(**LEAD, details=details)

        result = await world.sync_referral(referral_id)

        assert result.outcome == "error"
        assert "refused by Dynamics 365" in result.problems[-1]
        assert await world.count("leads") == 0
