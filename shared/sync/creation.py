"""Creation, with no duplicates ever (SPEC 4.5).

Referral without a link: find the opportunity by ``cosell_referralid`` or the referral's
``externalReferenceId`` and link it; otherwise match or create the account, create contact,
opportunity and solution rows with ids derived from the referral id (a retried or concurrent
creation collides with the first instead of making a second), link, and write
``externalReferenceId`` back to the referral.

Opportunity with the sync flag and no link: link to its ``cosell_referralid`` if set; otherwise
validate (SPEC 4.6), record the intent in the link store, create the referral, link it and write
the referral id back. A crash between the POST and the link leaves the intent behind: the retry
looks the referral up by ``externalReferenceId`` instead of posting a second one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from shared.dataverse import AlreadyExists
from shared.errors import AlreadyExistsError, ConcurrencyError
from shared.partner_center import NotFound, PatchOperation, Referral
from shared.partner_center import PreconditionFailed as PcPreconditionFailed
from shared.state import LinkResult, OpportunityIndex, PendingCreate, SyncLink
from shared.sync import leads
from shared.sync.audit import audit_lines
from shared.sync.crm import CrmOpportunity
from shared.sync.deal import Deal
from shared.sync.mapping import new_referral
from shared.sync.merge import Change, Plan, SyncBase
from shared.sync.run import Restart, Run, SyncResult
from shared.sync.validation import validate_for_partner_center

if TYPE_CHECKING:
    from shared.sync.engine import SyncEngine


async def from_referral(engine: SyncEngine, run: Run, referral: Referral) -> SyncResult:
    assert referral.id is not None
    deal = engine.pc_deal(referral)
    if deal.program == "Marketplace lead":
        if engine.settings.sync_cosell_only:
            return SyncResult("skipped", referral.id, notes=[
                "a marketplace lead, not a co-sell opportunity (SYNC_COSELL_ONLY=true)"
            ])  # fmt: skip
        return await leads.create_lead(engine, run, referral, deal)
    # An opportunity made elsewhere for this referral carries its id in externalReferenceId
    # (the "CRM ID", SPEC 4.5); one of ours has the derived id, and creating it again fails
    # with AlreadyExists, which restarts this sync. So the lookup is needed only then — which
    # keeps a new referral at two Dataverse requests (SPEC 11).
    existing = None
    if referral.external_reference_id or run.attempt > 0:
        existing = await engine.crm.find_for_referral(
            run, referral.id, referral.external_reference_id
        )
    if existing is not None:
        link = await _create_link(
            engine, SyncLink(referral_id=referral.id, opportunity_id=existing.id), run
        )
        return await engine.reconcile(run, link, referral, existing)
    plan = Plan(merged=deal, to_crm={f: Change(f, None, getattr(deal, f)) for f in _SHOWN})
    if run.dry_run:
        return SyncResult("created", referral.id, plan=plan, notes=["would create an opportunity"])

    assert deal.customer is not None
    account_id, customer, new_account = await engine.crm.find_account(run, deal.customer)
    try:
        opportunity = await engine.crm.create_opportunity(
            run, deal, referral_id=referral.id, account_id=account_id, new_account_body=new_account
        )
    except AlreadyExists:
        raise Restart("the opportunity or account is being created by another run") from None
    base_deal = deal.model_copy(
        update={"external_reference_id": opportunity.id, "customer": customer}
    )
    link = await _create_link(engine, _new_link(referral, opportunity, base_deal))
    if referral.external_reference_id != opportunity.id:
        await _write_crm_id(engine, run, link, referral, opportunity.id)
    return SyncResult("created", referral.id, opportunity.id, plan)


async def _write_crm_id(
    engine: SyncEngine, run: Run, link: SyncLink, referral: Referral, opportunity_id: str
) -> None:
    """Tell Partner Center the opportunity id (its "CRM ID", SPEC 4.5)."""
    run.count()
    op = "replace" if referral.external_reference_id is not None else "add"
    try:
        updated = await engine.pc.patch_referral(
            link.referral_id,
            [PatchOperation(op=op, path="/externalReferenceId", value=opportunity_id)],
            etag=referral.e_tag,
        )
    except PcPreconditionFailed:
        return  # the referral changed meanwhile; the next sync writes the id (CRM → PC field)
    if updated is not None:
        base = SyncBase.model_validate(link.base) if link.base else None
        await engine.links.update_link(
            link.model_copy(
                update={
                    "referral_etag": updated.e_tag,
                    "referral_updated_at": updated.updated_date_time,
                    "base": base.model_dump(mode="json") if base else None,
                }
            )
        )


async def from_opportunity(
    engine: SyncEngine, run: Run, opportunity: CrmOpportunity, index: OpportunityIndex | None
) -> SyncResult:
    """``index`` is the opportunity's index row as the engine just read it (or None)."""
    deal = opportunity.deal
    if deal.referral_id:
        referral = await _get(engine, run, deal.referral_id)
        if referral is None:
            return SyncResult("skipped", deal.referral_id, opportunity.id, notes=[
                "the opportunity names a referral that does not exist"
            ])  # fmt: skip
        link = await _create_link(
            engine, SyncLink(referral_id=deal.referral_id, opportunity_id=opportunity.id), run
        )
        return await engine.reconcile(run, link, referral, opportunity)

    problems = validate_for_partner_center(deal)
    if problems:
        return await _refuse(engine, run, opportunity, index, problems)
    plan = Plan(merged=deal, to_pc={f: Change(f, None, getattr(deal, f)) for f in _SHOWN})
    if run.dry_run:
        return SyncResult("created", None, opportunity.id, plan, notes=["would create a referral"])

    referral = await _earlier_referral(engine, run, opportunity.id, index)
    if referral is None:
        if index is None or index.pending_create is None:
            intent = PendingCreate(side="partner_center", started_at=datetime.now(UTC))
            try:
                await engine.links.save_opportunity_index(
                    (index or OpportunityIndex(opportunity_id=opportunity.id)).model_copy(
                        update={"pending_create": intent}
                    )
                )
            except (AlreadyExistsError, ConcurrencyError):
                raise Restart("another run is creating this referral") from None
        run.count()
        body = new_referral(deal, opportunity_id=opportunity.id)
        referral = await engine.pc.create_referral(body)
    assert referral.id is not None
    pc_deal = engine.pc_deal(referral)
    owned = {name: getattr(pc_deal, name) for name in _PC_OWNED}
    merged = deal.model_copy(update=owned)
    changes = {name: Change(name, getattr(deal, name), owned[name]) for name in _PC_OWNED
               if owned[name] != getattr(deal, name)}  # fmt: skip
    # Link first: from here on a crash leaves a link, and the next sync writes the referral id
    # into the opportunity as an ordinary PC → CRM change.
    link = await _create_link(engine, _new_link(referral, opportunity, merged))
    lines = audit_lines(None, notes=[f"✔ created referral {referral.id} in Partner Center"])
    written = await engine.crm.write(
        run, opportunity, changes, merged, status="synced", audit=lines
    )
    await engine.links.update_link(
        link.model_copy(
            update={
                "opportunity_etag": written.etag,
                "opportunity_modified_on": written.modified_on,
            }
        )
    )
    return SyncResult("created", referral.id, opportunity.id, plan)


async def _refuse(
    engine: SyncEngine,
    run: Run,
    opportunity: CrmOpportunity,
    index: OpportunityIndex | None,
    problems: list[str],
) -> SyncResult:
    """SPEC 4.6: nothing is sent; reasons in the audit, status Error, ✖ in the name. Written
    once per distinct set of reasons, so our own write does not come back as a new edit."""
    message = "; ".join(problems)
    already = index is not None and index.last_result is not None and (
        index.last_result.message == message
    )  # fmt: skip
    if run.dry_run or already:
        return SyncResult("error", None, opportunity.id, problems=problems)
    lines = audit_lines(None, problems=problems)
    written = await engine.crm.write(
        run, opportunity, {}, opportunity.deal, status="error", audit=lines
    )
    await engine.links.save_opportunity_index(
        (index or OpportunityIndex(opportunity_id=opportunity.id)).model_copy(
            update={
                "opportunity_modified_on": written.modified_on,
                "last_result": LinkResult(status="error", message=message, at=datetime.now(UTC)),
            }
        )
    )
    return SyncResult("error", None, opportunity.id, problems=problems)


async def _earlier_referral(
    engine: SyncEngine, run: Run, opportunity_id: str, index: OpportunityIndex | None
) -> Referral | None:
    """The referral an interrupted earlier run created for this opportunity, if any: named by
    the index row, or (when only the intent was recorded) found by ``externalReferenceId``."""
    if index is None:
        return None
    if index.referral_id:
        found = await _get(engine, run, index.referral_id)
        if found is not None:
            return found
    if index.pending_create is not None:
        return await _find_by_external_id(engine, run, opportunity_id)
    return None


async def _find_by_external_id(
    engine: SyncEngine, run: Run, opportunity_id: str
) -> Referral | None:
    run.count()
    async for referral in engine.pc.list_referrals(
        filter=f"externalReferenceId eq '{opportunity_id}'", top=1
    ):
        return referral
    return None


async def _get(engine: SyncEngine, run: Run, referral_id: str) -> Referral | None:
    run.count()
    try:
        return await engine.pc.get_referral(referral_id)
    except NotFound:
        return None


def _new_link(referral: Referral, opportunity: CrmOpportunity, base: Deal) -> SyncLink:
    """The link of a pair just created: both versions as written, ``base`` as the merge base."""
    assert referral.id is not None
    return SyncLink(
        referral_id=referral.id,
        opportunity_id=opportunity.id,
        base=SyncBase(deal=base).model_dump(mode="json"),
        referral_etag=referral.e_tag,
        referral_updated_at=referral.updated_date_time,
        opportunity_etag=opportunity.etag,
        opportunity_modified_on=opportunity.modified_on,
        last_result=LinkResult(status="synced", at=datetime.now(UTC)),
    )


async def _create_link(engine: SyncEngine, link: SyncLink, run: Run | None = None) -> SyncLink:
    if run is not None and run.dry_run:
        return link  # a dry run shows the plan of the first sync; it saves nothing
    try:
        return await engine.links.create_link(link)
    except AlreadyExistsError:
        raise Restart("the pair was linked by another run") from None


# Fields shown in the plan of a creation (what the new record will carry).
_SHOWN = ("name", "deal_value", "currency", "close_date", "status", "solutions", "contact")
# Fields that come from the new referral into the opportunity (SPEC 4.1, PC → CRM).
_PC_OWNED = ("referral_id", "referral_link", "program", "microsoft_crm_id")
