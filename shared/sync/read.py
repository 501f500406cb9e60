"""Read stage: one ``Snapshot`` per attempt, with only the reads the plan can use.

Order matters for cost (SPEC 11): the link first (Table Storage, no remote call), so an echo or
a duplicate event stops there; then the changed record; then, depending on what those say
(the predicates of ``plan.py``), the other side, the engagement's other referrals, the account
a new opportunity would get, or the lead a link waits on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.jobs import SyncJob
from shared.partner_center import Referral
from shared.state import LinkStore, OpportunityIndex, SyncLink
from shared.sync.merge import SyncBase
from shared.sync.plan import (
    SyncPolicy,
    covered,
    currency_to_check,
    is_marketplace_lead,
    looks_for_engagement_link,
    looks_for_existing_opportunity,
    needs_related,
    opportunity_covered,
    referral_unchanged,
)
from shared.sync.sides import CrmSide, PartnerCenterSide
from shared.sync.snapshot import LEAD_QUALIFIED, IndexState, LinkState, Snapshot
from shared.sync.validation import validate_for_partner_center


@dataclass(frozen=True)
class Stored:
    """The state rows as read, with their ETags: apply writes them back conditionally."""

    link: SyncLink | None = None
    index: OpportunityIndex | None = None


@dataclass(frozen=True)
class Reader:
    """Reads one job's snapshot from both systems and the link store."""

    pc: PartnerCenterSide
    crm: CrmSide
    links: LinkStore
    policy: SyncPolicy

    async def read(
        self,
        job: SyncJob,
        *,
        attempt: int = 0,
        run_id: str = "",
        enqueued_at: datetime | None = None,
    ) -> tuple[Snapshot, Stored]:
        start = Snapshot(job, attempt, run_id, enqueued_at=enqueued_at)
        if job.kind == "referral":
            snapshot, stored = await self._for_referral(start)
        else:
            snapshot, stored = await self._for_opportunity(start)
        return await self._currencies(snapshot), stored

    async def _currencies(self, s: Snapshot) -> Snapshot:
        """Whether Dataverse has the currency Partner Center would write (cached per worker,
        so this is a request only the first time a code is seen)."""
        code = currency_to_check(s)
        if code is None or await self.crm.has_currency(code):
            return s
        return s.but(missing_currencies=frozenset({code}))

    async def _for_referral(self, s: Snapshot) -> tuple[Snapshot, Stored]:
        link = await self.links.get_link(str(s.job.id))
        stored = Stored(link=link)
        s = s.but(link=link_state(link))
        if s.link is not None and covered(s.job, s.link.referral_updated_at):
            return s, stored
        referral = await self.pc.get_referral(str(s.job.id))
        s = s.but(referral=referral)
        if referral is None:
            return s, stored
        if s.link is None and looks_for_engagement_link(s.job, referral):
            found = await self._link_of_related(referral)
            if found is not None:
                ours, link = found
                stored = Stored(link=link)
                s = s.but(
                    link=link_state(link),
                    referral=ours,
                    related=(referral,),
                    changed_related=referral,
                )
        if s.link is None:
            return await self._for_new_referral(s), stored
        assert s.referral is not None
        if s.link.opportunity_id is None and s.link.waiting_lead_id is not None:
            return await self._for_lead(s, s.link.waiting_lead_id), stored
        if referral_unchanged(s, s.link, s.referral) or not s.link.opportunity_id:
            return s, stored
        opportunity = await self.crm.get_opportunity(s.link.opportunity_id)
        if opportunity is None and s.link.creating_opportunity:
            # A creation that never landed: the plan creates it again, for an account.
            customer = self.policy.pc_deal(s.referral).customer
            assert customer is not None
            return s.but(account=await self.crm.find_account(customer)), stored
        return await self._related(s.but(opportunity=opportunity)), stored

    async def _for_new_referral(self, s: Snapshot) -> Snapshot:
        referral = s.referral
        assert referral is not None and referral.id is not None
        deal = self.policy.pc_deal(referral)
        if is_marketplace_lead(deal):
            return s
        if looks_for_existing_opportunity(referral, s.attempt):
            existing = await self.crm.find_for_referral(referral.id, referral.external_reference_id)
            if existing is not None:
                return await self._related(s.but(opportunity=existing))
        assert deal.customer is not None
        return s.but(account=await self.crm.find_account(deal.customer))

    async def _for_lead(self, s: Snapshot, lead_id: str) -> Snapshot:
        lead = await self.crm.get_lead(lead_id)
        s = s.but(lead=lead)
        if lead is None or lead.statecode != LEAD_QUALIFIED or lead.opportunity_id is None:
            return s
        opportunity = await self.crm.get_opportunity(lead.opportunity_id)
        return await self._related(s.but(opportunity=opportunity))

    async def _for_opportunity(self, s: Snapshot) -> tuple[Snapshot, Stored]:
        index = await self.links.get_opportunity_index(str(s.job.id))
        link = await self.links.get_link_of(index)
        stored = Stored(link=link, index=index)
        s = s.but(link=link_state(link), index=index_state(index))
        if opportunity_covered(s):
            return s, stored
        opportunity = await self.crm.get_opportunity(str(s.job.id))
        s = s.but(opportunity=opportunity)
        if opportunity is None or (not opportunity.sync_enabled and s.link is None):
            return s, stored
        if s.link is not None:
            referral = await self.pc.get_referral(s.link.referral_id)
            return await self._related(s.but(referral=referral)), stored
        named = opportunity.deal.referral_id
        if named:
            referral = await self.pc.get_referral(named)
            return await self._related(s.but(referral=referral)), stored
        if opportunity.originating_lead_id:
            found = await self._waiting_on_lead(s, opportunity.originating_lead_id)
            if found is not None:
                return found
        if validate_for_partner_center(opportunity.deal):
            return s, stored  # refused: nothing more to read
        return s.but(referral=await self._earlier_referral(str(s.job.id), s.index)), stored

    async def _waiting_on_lead(self, s: Snapshot, lead_id: str) -> tuple[Snapshot, Stored] | None:
        """A qualified lead's opportunity the seller flagged before the lead's referral job ran:
        the referral's link waits on that lead, and adopting the opportunity is its job."""
        lead = await self.crm.get_lead(lead_id)
        if lead is None or lead.referral_id is None:
            return None
        link = await self.links.get_link(lead.referral_id)
        waiting = link_state(link)
        if waiting is None or waiting.waiting_lead_id != lead_id.lower():
            return None
        referral = await self.pc.get_referral(lead.referral_id)
        s = s.but(link=waiting, lead=lead, referral=referral)
        return await self._related(s), Stored(link=link)

    async def _earlier_referral(
        self, opportunity_id: str, index: IndexState | None
    ) -> Referral | None:
        """The referral an earlier or concurrent run created for this opportunity, if any:
        named by the index row, or found by its ``externalReferenceId``."""
        if index is not None and index.referral_id:
            found = await self.pc.get_referral(index.referral_id)
            if found is not None:
                return found
        # Whatever the index says, look before any POST: a referral made for this opportunity
        # carries its id in externalReferenceId (an intent lost, or another run's POST landed).
        return await self.pc.find_by_external_id(opportunity_id)

    async def _link_of_related(self, referral: Referral) -> tuple[Referral, SyncLink] | None:
        """(our referral, its link) when ``referral`` is the other side of a pair we sync."""
        for other in await self.pc.list_related(referral):
            assert other.id is not None
            link = await self.links.get_link(other.id)
            if link is not None:
                return other, link
        return None

    async def _related(self, s: Snapshot) -> Snapshot:
        """Microsoft's referral of the engagement, when the plan will merge and needs it."""
        if s.related or s.referral is None or s.opportunity is None:
            return s
        if not s.opportunity.sync_enabled and s.lead is None:
            return s
        if not needs_related(s.job, s.referral):
            return s
        return s.but(related=tuple(await self.pc.list_related(s.referral)))


def link_state(link: SyncLink | None) -> LinkState | None:
    """The stored link, typed for the plan; its base is validated here, once."""
    if link is None:
        return None
    pending = link.pending_create
    crm_target = pending.target_id if pending is not None and pending.side == "crm" else None
    return LinkState(
        referral_id=link.referral_id,
        opportunity_id=link.opportunity_id,
        base=SyncBase.model_validate(link.base) if link.base else None,
        referral_etag=link.referral_etag,
        # A creation cut off (e.g. lost the race for its account) covers no version: finish it.
        referral_updated_at=None
        if crm_target and link.opportunity_id
        else link.referral_updated_at,
        opportunity_etag=link.opportunity_etag,
        opportunity_modified_on=link.opportunity_modified_on,
        opportunity_confirmed_at=link.opportunity_confirmed_at,
        # A pending CRM record is the lead the link waits on, or the link's own opportunity.
        waiting_lead_id=None if link.opportunity_id else crm_target,
        creating_opportunity=crm_target is not None and link.opportunity_id is not None,
        last_status=link.last_result.status if link.last_result else None,
        last_message=link.last_result.message if link.last_result else "",
    )


def index_state(index: OpportunityIndex | None) -> IndexState | None:
    if index is None:
        return None
    intent = index.pending_create
    return IndexState(
        referral_id=index.referral_id,
        creating_referral=intent is not None,
        intent_owner=intent.owner if intent else None,
        intent_since=intent.started_at if intent else None,
        opportunity_modified_on=index.opportunity_modified_on,
        opportunity_confirmed_at=index.opportunity_confirmed_at,
        last_message=index.last_result.message if index.last_result else None,
    )
