"""Every decision of a sync, in one pure function: ``plan(snapshot, policy) -> Plan``.

Given what one attempt read (``Snapshot``), the plan says what the sync will do: its outcome,
the field plan of the merge and an ordered list of typed steps (``steps.py``). Nothing here does
I/O or reads settings; ``read.py`` uses the predicates below to read only what the plan can use,
``apply.py`` runs the steps, and ``cosell sync --dry-run`` prints them.

The paths (SPEC 4.4-4.6):
* **linked pair** → ``reconcile``: settle an interrupted sync, merge, validate what would go to
  Partner Center, then: save the in-flight record, patch the referral, write (and close) the
  opportunity, save the link;
* **referral without a link** → link an existing opportunity (named by ``cosell_referralid`` or
  the referral's ``externalReferenceId``) or create one (ids derived from the referral id);
  a marketplace lead becomes a Dataverse lead instead (``SYNC_COSELL_ONLY=false``);
* **link waiting on a lead** → qualified: adopt its opportunity and reconcile (the referral is
  accepted); disqualified: decline the referral;
* **flagged opportunity without a link** → link the referral it names, or validate, record the
  intent, create the referral and link it; a refusal is written once per set of reasons.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from functools import cached_property

from shared.jobs import SyncJob
from shared.partner_center import (
    PatchOperation,
    Referral,
    ReferralStatus,
    ReferralSubstatus,
    ReferralType,
)
from shared.sync import crm_limits, extra_fields
from shared.sync.audit import audit_lines
from shared.sync.crm_writes import (
    adoption_columns,
    creation_steps,
    lead_columns,
    opportunity_write,
)
from shared.sync.deal import Deal
from shared.sync.mapping import Columns, new_referral, record_id, referral_patch, referral_to_deal
from shared.sync.merge import (
    ANY_STAND_IN,
    Change,
    ConflictPolicy,
    FieldPlan,
    Flow,
    SyncBase,
    merge,
    settle_in_flight,
    to_json_value,
)
from shared.sync.snapshot import (
    LEAD_DISQUALIFIED,
    LEAD_QUALIFIED,
    CrmOpportunity,
    LinkState,
    Snapshot,
    opportunity_of,
)
from shared.sync.steps import (
    AdoptOpportunity,
    CreateLead,
    CreateLink,
    CreateReferral,
    LinkNewReferral,
    LinkOpportunity,
    LinkStatus,
    MarkLink,
    Outcome,
    PatchReferral,
    Plan,
    RecordCreateIntent,
    RecordCreation,
    RecordRefusal,
    SaveInFlight,
    SaveLink,
    Step,
    WriteCrmId,
)
from shared.sync.validation import validate_for_partner_center

MAX_PENDING_AUDIT = 20  # audit lines kept in the link until the next opportunity write
# How long a sync's lease on creating a referral lasts: longer than its POST can take, retries
# included (``sides.CREATE_REFERRAL_DEADLINE_S`` bounds it), so a live creator is never taken
# over; a dead one delays the creation by at most this.
CREATE_LEASE = timedelta(minutes=2)
MARKETPLACE_LEAD = "Marketplace lead"
# Fields shown in the plan of a creation (what the new record will carry).
SHOWN_ON_CREATE = ("name", "deal_value", "currency", "close_date", "status", "solutions", "contact")
# Fields that come from a new referral into its opportunity (SPEC 4.1, PC → CRM).
PC_OWNED_ON_CREATE = ("referral_id", "referral_link", "program", "microsoft_crm_id")


@dataclass(frozen=True)
class SyncPolicy:
    """The settings a plan depends on (the engine builds it from ``Settings``)."""

    columns: Columns
    conflict_policy: ConflictPolicy = "newest"
    referral_link_template: str = ""
    cosell_only: bool = True
    show_sync_mark: bool = True

    def pc_deal(self, referral: Referral, related: tuple[Referral, ...] = ()) -> Deal:
        deal = referral_to_deal(
            referral, link_template=self.referral_link_template, related=related
        )
        if not self.columns.mapping.extra:
            return deal
        extra = extra_fields.from_referral(referral.to_wire(), self.columns.mapping)
        return deal.model_copy(update={"extra": extra})

    @cached_property
    def ownership(self) -> dict[str, Flow]:
        """Each Deal field's flow, with the mapping's directions and extra fields (SPEC 13)."""
        return extra_fields.ownership(self.columns.mapping)


def plan(snapshot: Snapshot, policy: SyncPolicy) -> Plan:
    """What this attempt will do, decided from what it read."""
    if snapshot.job.kind == "referral":
        return _for_referral(snapshot, policy)
    return _for_opportunity(snapshot, policy)


# -- what to read (read.py asks these, so it reads only what the plan can use) ----------------


# How far the queue service's clock (a message's insertion time) and ours may disagree. Both
# are NTP-synchronised Azure hosts; the real bound is not documented (UNCERTAIN), so generous.
CLOCK_SKEW = timedelta(seconds=1)


def covered(
    job: SyncJob,
    seen_up_to: datetime | None,
    *,
    enqueued_at: datetime | None = None,
    confirmed: datetime | None = None,
) -> bool:
    """True when the change the job observed is no newer than what the link already holds.

    ``observed_at`` is the changed record's own timestamp (the referral's updatedDateTime for
    webhook and reconcile jobs, the opportunity's modifiedon for poll jobs), so it compares with
    the link's copy of that timestamp; other jobs always run. ``confirmed`` (the link's
    ``opportunity_confirmed_at``) and the message's ``enqueued_at`` settle a poll job stamped
    with the link's own second.
    """
    if seen_up_to is None:
        return False
    source = job.reason.source
    if job.kind == "referral" and source in ("webhook", "reconcile"):
        return job.observed_at <= seen_up_to
    if job.kind == "opportunity" and source == "poll":
        # ``modifiedon`` has whole seconds: the second of our own write may also hold a
        # seller's later edit. The poll already dropped our echoes by ``versionnumber``; a job
        # stamped with that very second is read — unless the link's versions were read after
        # the job was enqueued: then they include whatever the poll saw (a redelivered job).
        if job.observed_at < seen_up_to:
            return True
        return (
            job.observed_at == seen_up_to
            and enqueued_at is not None
            and confirmed is not None
            and enqueued_at + CLOCK_SKEW <= confirmed
        )
    return False


def referral_unchanged(s: Snapshot, link: LinkState, referral: Referral) -> bool:
    """The referral is the version the link synced, and nothing else asks for a look (a
    related referral's change, or an operator's manual sync)."""
    return (
        link.referral_etag == referral.e_tag
        and not s.related
        and s.job.reason != "manual"
        and not link.creating_opportunity  # a creation cut off: finish it
    )


def opportunity_covered(s: Snapshot) -> bool:
    """``covered`` for an opportunity job, against the link's (or index row's) versions."""
    if s.link is not None:
        confirmed = s.link.opportunity_confirmed_at
    else:
        confirmed = s.index.opportunity_confirmed_at if s.index is not None else None
    return covered(s.job, opportunity_seen_up_to(s), enqueued_at=s.enqueued_at, confirmed=confirmed)


def opportunity_seen_up_to(s: Snapshot) -> datetime | None:
    """The opportunity's ``modifiedon`` the state already covers: the link's, or before a
    referral exists, the index row's (our own refusal write)."""
    if s.link is not None:
        return s.link.opportunity_modified_on
    return s.index.opportunity_modified_on if s.index is not None else None


def looks_for_engagement_link(job: SyncJob, referral: Referral) -> bool:
    """An unlinked referral of an engagement may be Microsoft's side of a pair we sync, however
    it arrives (a related-referral event, the reconcile, a backfill, a manual sync): before
    anything is created for it, the engagement's other referrals are checked for a link."""
    return bool(referral.engagement_id)


def looks_for_existing_opportunity(referral: Referral, attempt: int) -> bool:
    """An opportunity made elsewhere for this referral carries its id in externalReferenceId
    (the "CRM ID", SPEC 4.5); one of ours has the derived id, and creating it again collides
    and restarts the sync. So the lookup is needed only then, which keeps a new referral at two
    Dataverse requests (SPEC 11)."""
    return bool(referral.external_reference_id) or attempt > 0


def needs_related(job: SyncJob, referral: Referral) -> bool:
    """Microsoft's referral of the engagement is read when ours lacks Microsoft's CRM id, by
    the periodic and operator paths only: otherwise Microsoft's changes arrive as
    ``related-referral-*`` events, which carry that referral itself."""
    has_id = referral.tracking_info and referral.tracking_info.microsoft_msx_id
    shared = referral.type == ReferralType.SHARED
    return bool(job.reason.sweep and shared and referral.engagement_id and not has_id)


def currency_to_check(s: Snapshot) -> str | None:
    """The referral's currency when it would be written into Dataverse: on a creation, or
    when it differs from the opportunity's."""
    details = s.referral.details if s.referral else None
    code = details.currency.strip().upper() if details and details.currency else None
    if code is None or (s.opportunity is None and s.account is None):
        return None
    if s.opportunity is not None and s.opportunity.deal.currency == code:
        return None
    return code


def is_marketplace_lead(deal: Deal) -> bool:
    return deal.program == MARKETPLACE_LEAD


def adopted(
    opportunity: CrmOpportunity, referral_id: str, link: str | None, columns: Columns
) -> CrmOpportunity:
    """A qualified lead's opportunity as it will be once ``AdoptOpportunity`` has run."""
    row = {**opportunity.row, **adoption_columns(referral_id, link, columns=columns)}
    return opportunity_of(row, columns)


# -- referral jobs ----------------------------------------------------------------------------


def _for_referral(s: Snapshot, policy: SyncPolicy) -> Plan:
    referral_id = str(s.job.id)
    link = s.link
    if link is not None and covered(s.job, link.referral_updated_at):
        return Plan("no_change", referral_id, link.opportunity_id)
    referral = s.referral
    if referral is None:
        return Plan("skipped", referral_id, notes=("referral not found",))
    if link is None:
        return _new_referral(s, referral, policy)
    notes = (_microsoft_decision(s.changed_related),) if s.changed_related else ()
    if link.opportunity_id is None and link.waiting_lead_id is not None:
        return _follow_lead(s, link, referral, policy, notes)
    if referral_unchanged(s, link, referral):
        return Plan("no_change", referral_id, link.opportunity_id)
    if s.opportunity is None:
        if link.creating_opportunity:
            return _create_opportunity(s, referral, policy, retry=True)
        return _gone(
            link,
            referral_id,
            link.opportunity_id,
            (
                f"the linked opportunity {link.opportunity_id} no longer exists in Dynamics 365: "
                "Partner Center changes to this referral are not synced"
            ),
        )
    return reconcile(s, policy, link, referral, s.opportunity, notes=notes)


def _new_referral(s: Snapshot, referral: Referral, policy: SyncPolicy) -> Plan:
    assert referral.id is not None
    deal = policy.pc_deal(referral)
    if is_marketplace_lead(deal):
        if policy.cosell_only:
            return Plan(
                "skipped",
                referral.id,
                notes=("a marketplace lead, not a co-sell opportunity (SYNC_COSELL_ONLY=true)",),
            )
        lead_id = record_id("lead", referral.id)
        return Plan(
            "created",
            referral.id,
            steps=(
                CreateLead(lead_id, lead_columns(deal, columns=policy.columns)),
                CreateLink(referral.id, None, base=deal, waiting_lead_id=lead_id),
            ),
        )
    if s.opportunity is not None:
        existing = s.opportunity
        link = LinkState(referral_id=referral.id, opportunity_id=existing.id)
        return reconcile(
            s, policy, link, referral, existing, first=(CreateLink(referral.id, existing.id),)
        )
    return _create_opportunity(s, referral, policy, retry=False)


def _create_opportunity(
    s: Snapshot, referral: Referral, policy: SyncPolicy, *, retry: bool
) -> Plan:
    """The opportunity for a new referral, behind a write-ahead link (``CreateLink`` with
    ``creating``): a sync cut off after the creation leaves the base it wrote, so the next
    sync merges against it. ``retry``: that link exists, and its opportunity never did."""
    assert referral.id is not None and s.account is not None
    deal = policy.pc_deal(referral)
    assert deal.customer is not None
    refused = _crm_cannot_hold(s, deal, policy)
    problems = tuple(refused.values())
    audit = audit_lines(None, problems=list(problems), now=s.now)
    opportunity_id = record_id("opportunity", referral.id)
    base = deal.model_copy(
        update={"external_reference_id": opportunity_id, "customer": s.account.customer}
    )
    # What Dataverse gave the new record instead (its base currency) is our stand-in.
    sync_base = SyncBase(deal=base, stand_ins=dict.fromkeys(refused, ANY_STAND_IN))
    ahead: Step = (
        RecordCreation(opportunity_id, sync_base)
        if retry
        else CreateLink(
            referral.id,
            opportunity_id,
            base=base,
            stand_ins=sync_base.stand_ins,
            problems=problems,
            creating=True,
        )
    )
    steps: list[Step] = [ahead]
    steps += creation_steps(
        deal,
        referral_id=referral.id,
        account=s.account,
        columns=policy.columns,
        show_mark=policy.show_sync_mark,
        without=tuple(refused),
        audit=audit,
    )
    steps.append(SaveLink(sync_base, "error" if problems else "synced", "; ".join(problems)))
    if referral.external_reference_id != opportunity_id:
        steps.append(
            WriteCrmId(
                opportunity_id, "replace" if referral.external_reference_id is not None else "add"
            )
        )
    fields = FieldPlan(merged=deal, to_crm=_shown(deal), refused_by_crm=problems)
    return Plan("created", referral.id, opportunity_id, fields, tuple(steps), problems=problems)


def _follow_lead(
    s: Snapshot, link: LinkState, referral: Referral, policy: SyncPolicy, notes: tuple[str, ...]
) -> Plan:
    """The link waits on a Dataverse lead: qualified → adopt its opportunity and accept."""
    lead = s.lead
    if lead is None:
        return Plan("skipped", link.referral_id, notes=("the lead was deleted",))
    if lead.statecode == LEAD_DISQUALIFIED:
        if referral.status != ReferralStatus.NEW:
            return Plan("no_change", link.referral_id)
        decline = PatchReferral(
            (
                PatchOperation.replace("/status", ReferralStatus.CLOSED),
                PatchOperation.replace("/substatus", ReferralSubstatus.DECLINED),
                PatchOperation.replace("/statusReason", "Lead disqualified in Dynamics 365"),
            )
        )
        return Plan(
            "synced",
            link.referral_id,
            steps=(decline,),
            notes=("lead disqualified in Dynamics 365: referral declined",),
        )
    if lead.statecode != LEAD_QUALIFIED or not lead.opportunity_id:
        return Plan("no_change", link.referral_id, notes=("the lead is still open",))
    if s.opportunity is None:
        return Plan("skipped", link.referral_id, notes=("the new opportunity vanished",))
    referral_link = policy.pc_deal(referral).referral_link
    columns = adoption_columns(link.referral_id, referral_link, columns=policy.columns)
    opportunity = adopted(s.opportunity, link.referral_id, referral_link, policy.columns)
    # The base says "New" while the qualified opportunity is open: the merge sees that as the
    # seller accepting in CRM and accepts the referral (SPEC 4.5).
    return reconcile(
        s,
        policy,
        replace(link, opportunity_id=opportunity.id, waiting_lead_id=None),
        referral,
        opportunity,
        first=(AdoptOpportunity(opportunity.id, columns), LinkOpportunity(opportunity.id)),
        notes=(*notes, "✔ lead qualified in Dynamics 365: referral accepted"),
    )


# -- opportunity jobs -------------------------------------------------------------------------


def _for_opportunity(s: Snapshot, policy: SyncPolicy) -> Plan:
    opportunity_id = str(s.job.id)
    link = s.link
    if opportunity_covered(s):
        return Plan("no_change", link.referral_id if link else None, opportunity_id)
    opportunity = s.opportunity
    if opportunity is None:
        return Plan("skipped", None, opportunity_id, notes=("opportunity not found",))
    if not opportunity.sync_enabled and link is None:
        return Plan("skipped", None, opportunity_id, notes=("sync flag is off",))
    if link is not None and link.waiting_lead_id is not None and s.referral is not None:
        # A lead's opportunity, flagged before the lead's referral job adopted it: adopting it
        # is that referral's business, never a second, partner-created referral.
        if s.lead is not None and s.lead.opportunity_id == opportunity_id:
            return _follow_lead(s, link, s.referral, policy, ())
        return Plan(
            "skipped",
            link.referral_id,
            opportunity_id,
            notes=(
                f"this opportunity comes from a lead made for referral {link.referral_id}; "
                "it syncs with that referral once the lead is qualified into it",
            ),
        )
    if link is None:
        return _new_opportunity(s, opportunity, policy)
    if s.referral is None:
        return _gone(
            link,
            link.referral_id,
            opportunity_id,
            (
                f"the linked referral {link.referral_id} no longer exists in Partner Center: "
                "changes to this opportunity are not synced"
            ),
        )
    return reconcile(s, policy, link, s.referral, opportunity)


def _new_opportunity(s: Snapshot, opportunity: CrmOpportunity, policy: SyncPolicy) -> Plan:
    deal = opportunity.deal
    if deal.referral_id:
        if s.referral is None:
            return Plan(
                "skipped",
                deal.referral_id,
                opportunity.id,
                notes=("the opportunity names a referral that does not exist",),
            )
        link = LinkState(referral_id=deal.referral_id, opportunity_id=opportunity.id)
        return reconcile(
            s,
            policy,
            link,
            s.referral,
            opportunity,
            first=(CreateLink(deal.referral_id, opportunity.id),),
        )
    problems = validate_for_partner_center(deal)
    if problems:
        return _refuse(s, opportunity, problems, policy)
    steps: list[Step] = []
    # ``referral`` is one an earlier or concurrent run created, if read.py found it.
    if s.referral is None:
        index = s.index
        held_by_other = (
            index is not None and index.creating_referral and (index.intent_owner != s.run_id)
        )
        if held_by_other and index is not None:
            wait = _lease_left(index.intent_since, s.now)
            if wait > 0:
                return Plan(
                    "deferred",
                    None,
                    opportunity.id,
                    retry_after=wait,
                    notes=("another sync is creating the referral for this opportunity",),
                )
        if held_by_other or index is None or not index.creating_referral:
            steps.append(RecordCreateIntent(opportunity.id, s.run_id))
        body = new_referral(deal, opportunity_id=opportunity.id, mapping=policy.columns.mapping)
        steps.append(CreateReferral(body))
    steps.append(LinkNewReferral(deal))
    fields = FieldPlan(merged=deal, to_pc=_shown(deal))
    referral_id = s.referral.id if s.referral else None
    return Plan("created", referral_id, opportunity.id, fields, tuple(steps))


def after_referral_created(
    referral: Referral,
    opportunity: CrmOpportunity,
    deal: Deal,
    policy: SyncPolicy,
    *,
    now: datetime,
) -> list[Step]:
    """``LinkNewReferral`` made concrete once the referral exists: link it first (from here on
    a crash leaves a link, and the next sync writes the referral id into the opportunity as an
    ordinary PC → CRM change), then write Partner Center's fields into the opportunity."""
    assert referral.id is not None
    pc = policy.pc_deal(referral)
    owned = {name: getattr(pc, name) for name in PC_OWNED_ON_CREATE}
    merged = deal.model_copy(update=owned)
    changes = {
        name: Change(name, getattr(deal, name), owned[name])
        for name in PC_OWNED_ON_CREATE
        if owned[name] != getattr(deal, name)
    }
    lines = audit_lines(
        None, notes=[f"✔ created referral {referral.id} in Partner Center"], now=now
    )
    return [
        CreateLink(referral.id, opportunity.id, base=merged),
        *opportunity_write(
            opportunity,
            changes,
            merged,
            columns=policy.columns,
            show_mark=policy.show_sync_mark,
            status="synced",
            audit=lines,
        ),
        SaveLink(SyncBase(deal=merged), "synced"),
    ]


def _refuse(
    s: Snapshot, opportunity: CrmOpportunity, problems: list[str], policy: SyncPolicy
) -> Plan:
    """SPEC 4.6: nothing is sent; reasons in the audit, status Error, ✖ in the name. Written
    once per distinct set of reasons, so our own write does not come back as a new edit."""
    message = "; ".join(problems)
    result = Plan("error", None, opportunity.id, problems=tuple(problems))
    if s.index is not None and s.index.last_message == message:
        return result
    lines = audit_lines(None, problems=problems, now=s.now)
    write = opportunity_write(
        opportunity,
        {},
        opportunity.deal,
        columns=policy.columns,
        show_mark=policy.show_sync_mark,
        status="error",
        audit=lines,
    )
    return replace(result, steps=(*write, RecordRefusal(opportunity.id, message)))


# -- a linked pair ----------------------------------------------------------------------------


def reconcile(
    s: Snapshot,
    policy: SyncPolicy,
    link: LinkState,
    referral: Referral,
    opportunity: CrmOpportunity,
    *,
    first: tuple[Step, ...] = (),
    notes: tuple[str, ...] = (),
) -> Plan:
    """Merge a linked pair and write what differs; ``first`` are steps that link the pair."""
    if not opportunity.sync_enabled:
        # The seller switched "Sync with Partner Center" off: the pair stays linked (switching
        # it on again resumes) but nothing flows either way meanwhile.
        return Plan(
            "skipped",
            link.referral_id,
            link.opportunity_id,
            steps=first,
            notes=("sync with Partner Center is off for this opportunity",),
        )
    pc = policy.pc_deal(referral, s.related)
    base = link.base
    if base is not None:
        base = settle_in_flight(base, pc, opportunity.deal)
    fields = merge(
        base,
        pc,
        opportunity.deal,
        policy=policy.conflict_policy,
        pc_updated_at=referral.updated_date_time,
        crm_modified_on=opportunity.modified_on,
        pc_status=str(referral.status) if referral.status is not None else None,
        crm_cannot_hold=_crm_cannot_hold(s, pc, policy),
        pc_cannot_take=extra_fields.partner_center_refuses(
            policy.columns.mapping, opportunity.deal.extra
        ),
        ownership=policy.ownership,
    )
    problems = validate_for_partner_center(_with_crm_customer(fields.merged, opportunity.deal))
    if fields.to_pc and problems:
        fields = _hold_pc_changes(fields, pc)
    else:
        problems = []
    # Dataverse refuses every edit of a Won/Lost opportunity until it is reopened (reference
    # 8.1), so a closed row that this sync does not reopen is not written at all.
    read_only = _closed(opportunity) and "status" not in fields.to_crm
    if read_only and fields.to_crm:
        fields = _refused_while_closed(fields, opportunity)
    problems += fields.refused_by_crm
    status: LinkStatus = "error" if problems else "synced"
    lines = audit_lines(fields, problems=problems, notes=notes, now=s.now)

    steps = list(first)
    if base is not None and not fields.empty:
        steps.append(SaveInFlight(base.model_copy(update={"in_flight": fields.in_flight()})))
    operations = (
        referral_patch(fields.to_pc, fields.merged, referral, mapping=policy.columns.mapping)
        if fields.to_pc
        else []
    )
    if operations:
        steps.append(PatchReferral(tuple(operations)))
    # A change that only went to Partner Center does not write the opportunity just for its
    # audit line: the line waits in the link and goes with the next opportunity write.
    urgent = bool(fields.to_crm or problems or fields.conflicts or fields.newly_blocked or notes)
    waiting = [*(base.pending_audit if base else ()), *([] if urgent else lines)]
    write = opportunity_write(
        opportunity,
        fields.to_crm,
        fields.merged,
        columns=policy.columns,
        show_mark=policy.show_sync_mark,
        status=status,
        audit=lines if urgent else [],
        audit_if_writing=waiting,
    )
    if read_only:
        write, waiting = [], [*waiting, *(lines if urgent else [])]  # shown once reopened
    steps += write
    pending = () if write else tuple(waiting[-MAX_PENDING_AUDIT:])
    new_base = fields.base(pending_audit=pending)
    unchanged = (
        fields.empty
        and not write
        and link.base == new_base
        and link.referral_etag == referral.e_tag
        and link.opportunity_etag == opportunity.etag
        and link.last_status == status
    )
    if not unchanged:
        steps.append(SaveLink(new_base, status, "; ".join(problems)))
    outcome: Outcome = "error" if problems else ("no_change" if fields.empty else "synced")
    return Plan(
        outcome, link.referral_id, link.opportunity_id, fields, tuple(steps), tuple(problems), notes
    )


def after_refusal(planned: Plan, step: Step, message: str, *, linked: bool) -> Plan:
    """The plan once a service refused ``step`` as invalid: the steps before it stand, the pair
    is in error with the service's reason (on the link, or the opportunity's index row), and
    the next change tries again; the job itself is done, not retried into the poison queue."""
    why = f"not synced: {step.describe()} was refused by {message}"
    record: Step
    if linked:
        record = MarkLink("error", why)
    elif planned.opportunity_id is not None:
        record = RecordRefusal(planned.opportunity_id, why)
    else:
        return replace(planned, outcome="error", steps=(), problems=(*planned.problems, why))
    return replace(planned, outcome="error", steps=(record,), problems=(*planned.problems, why))


def _gone(link: LinkState, referral_id: str, opportunity_id: str | None, why: str) -> Plan:
    """The other side of a linked pair was deleted: an error on the pair, said once."""
    said = link.last_status == "error" and link.last_message == why
    return Plan(
        "error",
        referral_id,
        opportunity_id,
        problems=(why,),
        steps=() if said else (MarkLink("error", why),),
    )


def _lease_left(since: datetime | None, now: datetime) -> float:
    """Seconds until a creation lease taken at ``since`` expires (0: expired, or no time)."""
    if since is None:
        return 0.0
    return max(0.0, (since + CREATE_LEASE - now).total_seconds())


def _crm_cannot_hold(s: Snapshot, pc: Deal, policy: SyncPolicy) -> dict[str, str]:
    """Partner Center values Dataverse cannot take here, with the reason a seller can act on:
    over a column's limit, a currency the organization does not have, a value a mapped
    choice column has no choice for, or what the new account cannot hold (a lookup country
    without a row for the code, ``AccountMatch.refused``)."""
    found = crm_limits.refusals(pc) | extra_fields.cannot_hold(policy.columns.mapping, pc.extra)
    found |= s.account.refused if s.account is not None else {}
    if pc.currency is None or pc.currency not in s.missing_currencies:
        return found
    return found | {
        "currency": (
            f"Partner Center's currency {pc.currency} is not a currency of this Dynamics 365 "
            "organization: add it (Settings → Business Management → Currencies) or change the "
            "referral's currency; until then the currency is not synced either way."
        )
    }


def _closed(opportunity: CrmOpportunity) -> bool:
    return opportunity.row.get("statecode") in (1, 2)  # Won, Lost


def _refused_while_closed(fields: FieldPlan, opportunity: CrmOpportunity) -> FieldPlan:
    """PC → CRM changes a closed opportunity cannot take: CRM's values stay (as our stand-ins,
    never sent back) until the seller reopens it; the pair says why."""
    names = ", ".join(sorted(fields.to_crm))
    reason = (
        f"the opportunity is closed in Dynamics 365 and cannot be edited: reopen it to take "
        f"Partner Center's changes ({names})"
    )
    held = {name: to_json_value(getattr(opportunity.deal, name)) for name in fields.to_crm}
    return replace(
        fields,
        to_crm={},
        stand_ins={**fields.stand_ins, **held},
        refused_by_crm=(*fields.refused_by_crm, reason),
    )


def _shown(deal: Deal) -> dict[str, Change]:
    return {name: Change(name, None, getattr(deal, name)) for name in SHOWN_ON_CREATE}


def _with_crm_customer(deal: Deal, crm: Deal) -> Deal:
    # The account is CRM's after creation: validate the country the seller can fix.
    return deal.model_copy(update={"customer": crm.customer or deal.customer})


def _hold_pc_changes(fields: FieldPlan, pc: Deal) -> FieldPlan:
    """Send nothing to Partner Center: keep PC's values in the base so the change is seen
    again (and validated again) on the next edit, while CRM-bound changes still apply."""
    held = {name: getattr(pc, name) for name in fields.to_pc}
    return replace(fields, merged=fields.merged.model_copy(update=held), to_pc={})


def _microsoft_decision(referral: Referral) -> str:
    return f"Microsoft's referral of this engagement is now {referral.status}/{referral.substatus}"
