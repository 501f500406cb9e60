"""Non-co-sell leads (SPEC 4.5, ``SYNC_COSELL_ONLY=false``).

Microsoft's marketplace and qualified leads become Dataverse leads (id derived from the referral
id, so never twice). The link then waits on the lead: qualifying it in Dataverse, which makes an
opportunity, accepts the referral and links that opportunity; disqualifying it declines the
referral. From then on the pair syncs like any other.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shared.dataverse import NotFound
from shared.errors import AlreadyExistsError
from shared.partner_center import PatchOperation, Referral
from shared.state import LinkResult, PendingCreate, SyncLink
from shared.sync.deal import Deal
from shared.sync.mapping import record_id
from shared.sync.merge import SyncBase
from shared.sync.run import Restart, Run, SyncResult

if TYPE_CHECKING:
    from shared.sync.engine import SyncEngine

QUALIFIED = 1
DISQUALIFIED = 2


def lead_columns(deal: Deal, engine: SyncEngine) -> dict[str, Any]:
    contact = deal.contact
    customer = deal.customer
    columns = engine.columns
    body: dict[str, Any] = {
        "subject": deal.name,
        "companyname": customer.name if customer else None,
        "firstname": contact.first_name if contact else None,
        "lastname": (contact.last_name if contact else None) or "(unknown)",
        "emailaddress1": contact.email if contact else None,
        "telephone1": contact.phone if contact else None,
        "description": deal.notes,
        "estimatedamount": deal.deal_value,
        "estimatedclosedate": deal.close_date.isoformat() if deal.close_date else None,
        "address1_city": customer.city if customer else None,
        "address1_postalcode": customer.postal_code if customer else None,
        "address1_country": customer.country if customer else None,
        columns.referralid: deal.referral_id,
        columns.referrallink: deal.referral_link,
    }
    return {k: v for k, v in body.items() if v is not None}


async def create_lead(engine: SyncEngine, run: Run, referral: Referral, deal: Deal) -> SyncResult:
    assert referral.id is not None
    lead_id = record_id("lead", referral.id)
    if run.dry_run:
        return SyncResult("created", referral.id, notes=["would create a Dataverse lead"])
    run.count()
    await engine.crm.create_once("leads", lead_columns(deal, engine), lead_id)
    link = SyncLink(
        referral_id=referral.id,
        base=SyncBase(deal=deal).model_dump(mode="json"),
        referral_etag=referral.e_tag,
        referral_updated_at=referral.updated_date_time,
        pending_create=PendingCreate(side="crm", target_id=lead_id, started_at=datetime.now(UTC)),
        last_result=LinkResult(
            status="pending", message="waiting for the lead", at=datetime.now(UTC)
        ),
    )

    try:
        await engine.links.create_link(link)
    except AlreadyExistsError:
        raise Restart("the lead's link was saved by another run") from None
    return SyncResult("created", referral.id, notes=[f"created Dataverse lead {lead_id}"])


async def follow_lead(
    engine: SyncEngine, run: Run, link: SyncLink, referral: Referral
) -> SyncResult:
    """Check the lead of a waiting link: qualified → adopt its opportunity and accept."""
    assert link.pending_create is not None and link.pending_create.target_id is not None
    run.count()
    try:
        lead = await engine.crm.dataverse.get(
            "leads",
            link.pending_create.target_id,
            select=["statecode", "_qualifyingopportunityid_value"],
        )
    except NotFound:
        return SyncResult("skipped", link.referral_id, notes=["the lead was deleted"])
    state = lead.get("statecode")
    opportunity_id = lead.get("_qualifyingopportunityid_value")
    if state == DISQUALIFIED:
        return await _decline(engine, run, link, referral)
    if state != QUALIFIED or not opportunity_id:
        return SyncResult("no_change", link.referral_id, notes=["the lead is still open"])
    if run.dry_run:
        return SyncResult("synced", link.referral_id, str(opportunity_id), notes=[
            "would link the qualified lead's opportunity and accept the referral"
        ])  # fmt: skip
    columns = engine.columns
    run.count()
    await engine.crm.dataverse.update(
        "opportunities",
        str(opportunity_id),
        {
            columns.syncwithpartnercenter: True,
            columns.referralid: link.referral_id,
            columns.referrallink: engine.pc_deal(referral).referral_link,
        },
    )
    adopted = link.model_copy(update={"opportunity_id": str(uuid.UUID(str(opportunity_id))),
                                      "pending_create": None})  # fmt: skip
    saved = await engine.links.update_link(adopted)
    opportunity = await engine.crm.read(run, str(opportunity_id))
    if opportunity is None:
        return SyncResult("skipped", link.referral_id, notes=["the new opportunity vanished"])
    # The base says "New" while the qualified opportunity is open: the merge sees that as the
    # seller accepting in CRM and accepts the referral (SPEC 4.5).
    run.notes.append("✔ lead qualified in Dynamics 365: referral accepted")
    return await engine.reconcile(run, saved, referral, opportunity)


async def _decline(engine: SyncEngine, run: Run, link: SyncLink, referral: Referral) -> SyncResult:
    if str(referral.status) != "New" or run.dry_run:
        return SyncResult("no_change", link.referral_id)
    run.count()
    await engine.pc.patch_referral(
        link.referral_id,
        [
            PatchOperation.replace("/status", "Closed"),
            PatchOperation.replace("/substatus", "Declined"),
            PatchOperation.replace("/statusReason", "Lead disqualified in Dynamics 365"),
        ],
        etag=referral.e_tag,
    )
    return SyncResult(
        "synced", link.referral_id, notes=["lead disqualified in Dynamics 365: referral declined"]
    )
