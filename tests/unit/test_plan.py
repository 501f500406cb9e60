"""The sync's decisions as plan tests: a snapshot in, a plan of typed steps out (no I/O).

These are the creation, lead, conflict, refusal and status rules of SPEC 4.3-4.6, each decided
by ``shared.sync.plan`` from records built here the way the two APIs return them (the referral
JSON of the Partner Center Referrals API, the opportunity row of the Dataverse Web API with its
``$expand``s); the integration tests in ``tests/sync`` run the same rules against the emulators.
"""

from __future__ import annotations

import ast
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sandbox.partner_center.samples import cosell_referral_from_microsoft
from shared.jobs import SyncJob
from shared.partner_center import Referral
from shared.sync import SyncBase
from shared.sync.deal import Customer
from shared.sync.mapping import Columns, record_id
from shared.sync.plan import CREATE_LEASE, SyncPolicy, plan
from shared.sync.sides import CREATE_REFERRAL_DEADLINE_S
from shared.sync.snapshot import (
    LEAD_DISQUALIFIED,
    LEAD_QUALIFIED,
    AccountMatch,
    CrmOpportunity,
    IndexState,
    LeadState,
    LinkState,
    Snapshot,
    opportunity_of,
)
from shared.sync.steps import (
    AdoptOpportunity,
    CloseOpportunity,
    CreateLead,
    CreateLink,
    CreateOpportunity,
    CreateReferral,
    LinkNewReferral,
    LinkOpportunity,
    PatchReferral,
    Plan,
    RecordCreateIntent,
    RecordCreation,
    RecordRefusal,
    SaveInFlight,
    SaveLink,
    Step,
    WriteCrmId,
    WriteOpportunity,
)

REFERRAL_ID = "6f1f8a5e-3d4c-4b2a-9e8f-000000000001"
OPPORTUNITY_ID = "6f1f8a5e-3d4c-4b2a-9e8f-0000000000aa"
ENGAGEMENT_ID = "6f1f8a5e-3d4c-4b2a-9e8f-0000000000ee"
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = SyncPolicy(
    columns=Columns(), referral_link_template="https://partner.microsoft.com/referrals/{id}"
)
S = TypeVar("S", bound=Step)
MARKETPLACE_LEAD: dict[str, Any] = {
    "type": "Independent",
    "qualification": "SalesQualified",
    "inviteContext": {"invitedBy": {"organizationId": "msft"}},
}


def referral(*, status: str = "Active", substatus: str = "Accepted", **fields: Any) -> Referral:
    body = cosell_referral_from_microsoft(**fields)
    return Referral.model_validate(
        {
            "id": REFERRAL_ID,
            "engagementId": ENGAGEMENT_ID,
            "status": status,
            "substatus": substatus,
            "direction": "Incoming",
            "eTag": '"pc-1"',
            "updatedDateTime": "2026-12-01T10:00:00Z",
            "externalReferenceId": OPPORTUNITY_ID,
            **body,
        }
    )


def opportunity(*, modified: str = "2026-12-01T09:00:00Z", **columns: Any) -> CrmOpportunity:
    row: dict[str, Any] = {
        "@odata.etag": 'W/"crm-1"',
        "opportunityid": OPPORTUNITY_ID,
        "name": "✔ Contoso - Azure migration",
        "estimatedvalue": 120000,
        "estimatedclosedate": "2027-03-31",
        "description": "Customer wants to move 40 VMs.",
        "statecode": 0,
        "statuscode": 1,
        "modifiedon": modified,
        "_parentcontactid_value": "6f1f8a5e-3d4c-4b2a-9e8f-0000000000cc",
        "cosell_helpneeded": 100000001,
        "cosell_visibletomicrosoft": True,
        "cosell_referralid": REFERRAL_ID,
        "cosell_referrallink": f"https://partner.microsoft.com/referrals/{REFERRAL_ID}",
        "cosell_referralprogram": "Co-sell",
        "cosell_syncwithpartnercenter": True,
        "cosell_syncstatus": 1,
        "parentaccountid": {
            "accountid": "6f1f8a5e-3d4c-4b2a-9e8f-0000000000ac",
            "name": "Contoso Ltd",
            "address1_line1": "1 Example Way",
            "address1_city": "Berlin",
            "address1_postalcode": "10115",
            "address1_country": "DE",
        },
        "parentcontactid": {
            "firstname": "Ana",
            "lastname": "Example",
            "emailaddress1": "ana@example.com",
            "telephone1": "+10000000001",
        },
        "transactioncurrencyid": {"isocurrencycode": "EUR"},
        "cosell_opportunity_cosell_solutions": [{"cosell_solutionidentifier": "SOL-12345-ABC"}],
        **columns,
    }
    return opportunity_of(row, POLICY.columns)


def job(kind: str = "referral", *, reason: str = "manual", at: datetime = NOW) -> SyncJob:
    return SyncJob.model_validate(
        {
            "kind": kind,
            "id": REFERRAL_ID if kind == "referral" else OPPORTUNITY_ID,
            "reason": reason,
            "observed_at": at,
        }
    )


def linked(pc: Referral, crm: CrmOpportunity, **fields: Any) -> LinkState:
    """The link as a clean sync of this pair leaves it: both versions and the merged base."""
    base = POLICY.pc_deal(pc).model_copy(
        update={"customer": crm.deal.customer, "external_reference_id": OPPORTUNITY_ID}
    )
    values: dict[str, Any] = {
        "referral_id": REFERRAL_ID,
        "opportunity_id": OPPORTUNITY_ID,
        "base": SyncBase(deal=base),
        "referral_etag": '"pc-0"',
        "referral_updated_at": datetime(2026, 12, 1, 8, 0, tzinfo=UTC),
        "opportunity_etag": 'W/"crm-0"',
        "opportunity_modified_on": datetime(2026, 12, 1, 8, 0, tzinfo=UTC),
        "last_status": "synced",
        **fields,
    }
    return LinkState(**values)


def kinds(planned: Plan) -> list[type[Step]]:
    return [type(step) for step in planned.steps]


def step_of(planned: Plan, kind: type[S]) -> S:
    [found] = [step for step in planned.steps if isinstance(step, kind)]
    return found


# -- creation ---------------------------------------------------------------------------------


def test_new_referral_links_ahead_creates_the_opportunity_then_tells_partner_center() -> None:
    incoming = referral(status="New", substatus="Received", externalReferenceId=None)
    account = AccountMatch("6f1f8a5e-3d4c-4b2a-9e8f-0000000000ac", _customer())

    planned = plan(Snapshot(job(), now=NOW, referral=incoming, account=account), POLICY)

    assert planned.outcome == "created"
    assert kinds(planned) == [CreateLink, CreateOpportunity, SaveLink, WriteCrmId]
    assert step_of(planned, CreateLink).creating  # the base is stored before the creation
    create = step_of(planned, CreateOpportunity)
    assert create.opportunity_id == record_id("opportunity", REFERRAL_ID) == planned.opportunity_id
    assert create.body["cosell_referralid"] == REFERRAL_ID
    assert create.body["statuscode"] == 2  # New → On Hold (SPEC 4.3)
    assert create.currency == "EUR"
    assert step_of(planned, WriteCrmId).op == "add"
    assert planned.fields is not None and "deal_value" in planned.fields.to_crm


def test_a_write_ahead_link_whose_opportunity_never_came_creates_it_again() -> None:
    incoming = referral(status="New", substatus="Received", externalReferenceId=None)
    account = AccountMatch("6f1f8a5e-3d4c-4b2a-9e8f-0000000000ac", _customer())
    derived = record_id("opportunity", REFERRAL_ID)
    ahead = LinkState(referral_id=REFERRAL_ID, opportunity_id=derived, creating_opportunity=True)

    planned = plan(Snapshot(job(), link=ahead, referral=incoming, account=account), POLICY)

    assert planned.outcome == "created"  # not "the linked opportunity no longer exists"
    assert kinds(planned) == [RecordCreation, CreateOpportunity, SaveLink, WriteCrmId]


def test_a_write_ahead_link_whose_opportunity_exists_merges_against_its_base() -> None:
    pc = referral(status="New", substatus="Received")
    crm = opportunity(description="Kick-off booked", statuscode=2)
    ahead = replace(
        linked(pc, crm), creating_opportunity=True, opportunity_etag=None,
        opportunity_modified_on=None,
    )  # fmt: skip

    planned = plan(Snapshot(job(), link=ahead, referral=pc, opportunity=crm), POLICY)

    assert planned.fields is not None and planned.fields.conflicts == ()
    assert planned.fields.to_pc["notes"].new == "Kick-off booked"
    assert kinds(planned)[-1] is SaveLink  # which ends the creation


def test_a_new_customer_gets_a_new_account_in_the_same_creation() -> None:
    body = {"name": "Contoso Ltd", "address1_postalcode": "10115"}
    account = AccountMatch(record_id("account", "Contoso Ltd|10115"), _customer(), body)

    planned = plan(Snapshot(job(), referral=referral(), account=account), POLICY)

    assert step_of(planned, CreateOpportunity).new_account == body


def test_a_referral_closed_as_won_is_created_and_closed_through_the_action() -> None:
    won = referral(status="Closed", substatus="Won")
    account = AccountMatch("6f1f8a5e-3d4c-4b2a-9e8f-0000000000ac", _customer())

    planned = plan(Snapshot(job(), referral=won, account=account), POLICY)

    assert kinds(planned)[:3] == [CreateLink, CreateOpportunity, CloseOpportunity]
    assert step_of(planned, CloseOpportunity).won is True


def test_a_referral_whose_opportunity_exists_is_linked_to_it_not_created_again() -> None:
    incoming = referral(externalReferenceId=OPPORTUNITY_ID)

    planned = plan(Snapshot(job(), referral=incoming, opportunity=opportunity()), POLICY)

    assert CreateOpportunity not in kinds(planned)
    assert planned.steps[0] == CreateLink(REFERRAL_ID, OPPORTUNITY_ID)
    assert kinds(planned)[-1] is SaveLink


def test_a_flagged_opportunity_records_the_intent_before_posting_the_referral() -> None:
    seller = opportunity(cosell_referralid=None, cosell_referrallink=None)

    planned = plan(Snapshot(job("opportunity", reason="poll"), opportunity=seller), POLICY)

    assert planned.outcome == "created"
    assert kinds(planned) == [RecordCreateIntent, CreateReferral, LinkNewReferral]
    body = step_of(planned, CreateReferral).body
    assert body["externalReferenceId"] == OPPORTUNITY_ID
    assert body["type"] == "Shared"  # help is needed: a co-sell (SPEC 4.5)


def test_a_referral_an_interrupted_run_created_is_linked_instead_of_posted_again() -> None:
    seller = opportunity(cosell_referralid=None, cosell_referrallink=None)
    earlier = referral(externalReferenceId=OPPORTUNITY_ID)

    planned = plan(
        Snapshot(
            job("opportunity", reason="poll"),
            opportunity=seller,
            referral=earlier,
            index=IndexState(creating_referral=True),
        ),
        POLICY,
    )

    assert kinds(planned) == [LinkNewReferral]
    assert planned.referral_id == REFERRAL_ID


def test_a_live_lease_of_another_sync_defers_the_creation_instead_of_posting_again() -> None:
    seller = opportunity(cosell_referralid=None, cosell_referrallink=None)
    held = IndexState(creating_referral=True, intent_owner="other", intent_since=NOW)

    planned = plan(
        Snapshot(
            job("opportunity"),
            now=NOW + timedelta(seconds=30),
            run_id="me",
            opportunity=seller,
            index=held,
        ),
        POLICY,
    )

    assert (planned.outcome, planned.steps) == ("deferred", ())
    assert planned.retry_after == pytest.approx(CREATE_LEASE.total_seconds() - 30)


def test_an_expired_lease_is_taken_over_before_the_post() -> None:
    seller = opportunity(cosell_referralid=None, cosell_referrallink=None)
    stale = IndexState(creating_referral=True, intent_owner="dead", intent_since=NOW)

    planned = plan(
        Snapshot(
            job("opportunity"), now=NOW + CREATE_LEASE, run_id="me", opportunity=seller, index=stale
        ),
        POLICY,
    )

    assert kinds(planned) == [RecordCreateIntent, CreateReferral, LinkNewReferral]
    assert step_of(planned, RecordCreateIntent).owner == "me"


def test_a_sync_restarting_under_its_own_lease_posts_without_taking_it_again() -> None:
    seller = opportunity(cosell_referralid=None, cosell_referrallink=None)
    mine = IndexState(creating_referral=True, intent_owner="me", intent_since=NOW)

    planned = plan(
        Snapshot(job("opportunity"), now=NOW, run_id="me", opportunity=seller, index=mine),
        POLICY,
    )

    assert kinds(planned) == [CreateReferral, LinkNewReferral]


# -- leads ------------------------------------------------------------------------------------


def test_a_marketplace_lead_is_skipped_when_syncing_co_sell_only() -> None:
    planned = plan(Snapshot(job(), referral=referral(**MARKETPLACE_LEAD)), POLICY)

    assert (planned.outcome, planned.steps) == ("skipped", ())


def test_a_marketplace_lead_becomes_a_lead_with_a_waiting_link() -> None:
    policy = SyncPolicy(columns=Columns(), cosell_only=False)

    planned = plan(Snapshot(job(), referral=referral(**MARKETPLACE_LEAD)), policy)

    lead_id = record_id("lead", REFERRAL_ID)
    assert kinds(planned) == [CreateLead, CreateLink]
    assert step_of(planned, CreateLink).waiting_lead_id == lead_id
    assert step_of(planned, CreateLead).columns["cosell_referralid"] == REFERRAL_ID


def test_qualifying_the_lead_adopts_its_opportunity_and_accepts_the_referral() -> None:
    waiting = referral(status="New", substatus="Received")
    link = linked(
        waiting, opportunity(), opportunity_id=None, waiting_lead_id=record_id("lead", REFERRAL_ID)
    )
    qualified = opportunity(cosell_syncwithpartnercenter=None, cosell_referralid=None)

    planned = plan(
        Snapshot(
            job(reason="poll"),
            link=link,
            referral=waiting,
            opportunity=qualified,
            lead=LeadState(LEAD_QUALIFIED, OPPORTUNITY_ID),
        ),
        POLICY,
    )

    assert kinds(planned)[:2] == [AdoptOpportunity, LinkOpportunity]
    assert step_of(planned, AdoptOpportunity).columns["cosell_syncwithpartnercenter"] is True
    patch = step_of(planned, PatchReferral)
    assert {(op.path, op.value) for op in patch.operations} >= {
        ("/status", "Active"),
        ("/substatus", "Accepted"),
    }


def test_disqualifying_the_lead_declines_a_new_referral() -> None:
    waiting = referral(status="New", substatus="Received")
    link = linked(waiting, opportunity(), opportunity_id=None, waiting_lead_id="lead")

    planned = plan(
        Snapshot(job(), link=link, referral=waiting, lead=LeadState(LEAD_DISQUALIFIED)), POLICY
    )

    assert planned.outcome == "synced"
    decline = step_of(planned, PatchReferral)
    assert ("/substatus", "Declined") in {(op.path, op.value) for op in decline.operations}


def test_a_lead_opportunity_flagged_before_qualification_waits_for_its_referral() -> None:
    waiting = referral(status="New", substatus="Received")
    link = linked(waiting, opportunity(), opportunity_id=None, waiting_lead_id="lead")
    flagged = opportunity(cosell_referralid=None, _originatingleadid_value="lead")

    planned = plan(
        Snapshot(
            job("opportunity", reason="poll"),
            link=link,
            referral=waiting,
            opportunity=flagged,
            lead=LeadState(0, None, REFERRAL_ID),
        ),
        POLICY,
    )

    assert (planned.outcome, planned.steps) == ("skipped", ())
    assert CreateReferral not in kinds(planned)


# -- echoes, edits, conflicts -----------------------------------------------------------------


def test_an_event_the_link_already_covers_plans_nothing() -> None:
    pc, crm = referral(), opportunity()
    link = linked(pc, crm, referral_updated_at=NOW)
    echo = job(reason="webhook:referral-updated", at=NOW - timedelta(seconds=1))

    planned = plan(Snapshot(echo, link=link), POLICY)

    assert (planned.outcome, planned.steps) == ("no_change", ())


def test_a_synced_pair_with_a_fresh_version_only_records_the_new_versions() -> None:
    pc, crm = referral(), opportunity()

    planned = plan(Snapshot(job(), link=linked(pc, crm), referral=pc, opportunity=crm), POLICY)

    assert planned.outcome == "no_change"
    assert kinds(planned) == [SaveLink]


def test_a_partner_center_edit_is_written_into_the_opportunity_after_the_in_flight_record() -> None:
    pc, crm = referral(), opportunity()
    link = linked(pc, crm)
    edited = referral(details={**_details(), "dealValue": 250000})

    planned = plan(Snapshot(job(), link=link, referral=edited, opportunity=crm), POLICY)

    assert kinds(planned) == [SaveInFlight, WriteOpportunity, SaveLink]
    write = step_of(planned, WriteOpportunity)
    assert write.columns["estimatedvalue"] == 250000
    assert "deal value 120000.0 → 250000.0" in write.columns["cosell_audit"]


def test_a_crm_only_change_waits_for_its_audit_line_in_the_link() -> None:
    pc, crm = referral(), opportunity()
    link = linked(pc, crm)
    edited = opportunity(description="Kick-off booked")

    planned = plan(
        Snapshot(job("opportunity", reason="poll"), link=link, referral=pc, opportunity=edited),
        POLICY,
    )

    assert kinds(planned) == [SaveInFlight, PatchReferral, SaveLink]  # no opportunity write
    assert any(
        "to Partner Center: notes" in line for line in step_of(planned, SaveLink).base.pending_audit
    )


@pytest.mark.parametrize(
    ("policy", "crm_newer", "winner"),
    [
        ("newest", True, "CRM notes"),
        ("newest", False, "PC notes"),
        ("partner_center", True, "PC notes"),
        ("crm", False, "CRM notes"),
    ],
)
def test_conflicting_edits_follow_the_policy_and_are_reported(
    policy: str, crm_newer: bool, winner: str
) -> None:
    pc, crm = referral(), opportunity()
    link = linked(pc, crm)
    pc_edit = referral(details={**_details(), "notes": "PC notes"})
    modified = "2026-12-01T11:00:00Z" if crm_newer else "2026-12-01T09:30:00Z"
    crm_edit = opportunity(description="CRM notes", modified=modified)

    planned = plan(
        Snapshot(job(), link=link, referral=pc_edit, opportunity=crm_edit),
        SyncPolicy(columns=Columns(), conflict_policy=policy),  # type: ignore[arg-type]
    )

    assert planned.fields is not None and planned.fields.merged.notes == winner
    assert planned.fields.conflicts[0].startswith("notes: changed in both systems")
    # A conflict is always audited, so the opportunity is written even when PC's value won.
    assert "⚠ conflict: notes" in step_of(planned, WriteOpportunity).columns["cosell_audit"]


def test_a_crm_edit_to_a_closed_referral_is_refused_once_and_remembered() -> None:
    closed = referral(status="Closed", substatus="Won")
    crm = opportunity(statecode=1, statuscode=3)
    link = linked(closed, crm)
    edited = opportunity(statecode=1, statuscode=3, description="Post-sale notes")

    planned = plan(Snapshot(job(), link=link, referral=closed, opportunity=edited), POLICY)

    assert PatchReferral not in kinds(planned)
    assert planned.fields is not None and planned.fields.newly_blocked
    saved = step_of(planned, SaveLink).base
    assert saved.blocked["notes"] == "Post-sale notes"
    again = plan(
        Snapshot(job(), link=replace_base(link, saved), referral=closed, opportunity=edited), POLICY
    )
    assert again.fields is not None and again.fields.newly_blocked == ()


def test_closing_as_won_in_crm_wins_the_referral() -> None:
    pc, crm = referral(), opportunity()
    won = opportunity(statecode=1, statuscode=3)

    planned = plan(Snapshot(job(), link=linked(pc, crm), referral=pc, opportunity=won), POLICY)

    operations = {(op.path, op.value) for op in step_of(planned, PatchReferral).operations}
    assert {("/status", "Closed"), ("/substatus", "Won")} <= operations


def test_partner_center_closing_as_lost_closes_the_opportunity_through_the_action() -> None:
    pc, crm = referral(), opportunity()
    lost = referral(status="Closed", substatus="Lost")

    planned = plan(Snapshot(job(), link=linked(pc, crm), referral=lost, opportunity=crm), POLICY)

    close = step_of(planned, CloseOpportunity)
    assert (close.won, close.statuscode) == (False, 5)  # Lost → Out-Sold (SPEC 4.3)
    assert kinds(planned).index(WriteOpportunity) < kinds(planned).index(CloseOpportunity)


# -- refusals ---------------------------------------------------------------------------------


def test_an_opportunity_without_solutions_is_refused_with_the_reason_written_once() -> None:
    seller = opportunity(cosell_referralid=None, cosell_opportunity_cosell_solutions=[])

    planned = plan(Snapshot(job("opportunity", reason="poll"), opportunity=seller), POLICY)

    assert planned.outcome == "error"
    assert planned.problems == (
        "Add at least one solution (a Partner Center solution id such as SOL-…).",
    )
    write = step_of(planned, WriteOpportunity)
    assert write.columns["name"].startswith("✖ ")
    assert write.columns["cosell_syncstatus"] == 2
    assert step_of(planned, RecordRefusal).message == planned.problems[0]
    told = IndexState(last_message=planned.problems[0])
    again = plan(Snapshot(job("opportunity"), opportunity=seller, index=told), POLICY)
    assert (again.outcome, again.steps) == ("error", ())


def test_a_linked_pair_with_an_invalid_crm_change_holds_it_back_and_says_why() -> None:
    pc, crm = referral(), opportunity()
    link = linked(pc, crm)
    # The seller removes the customer contact a co-sell needs (SPEC 4.6).
    edited = opportunity(parentcontactid=None, _parentcontactid_value=None)

    planned = plan(Snapshot(job(), link=link, referral=pc, opportunity=edited), POLICY)

    assert planned.outcome == "error"
    assert PatchReferral not in kinds(planned)
    assert step_of(planned, SaveLink).status == "error"


def test_sync_switched_off_on_a_linked_opportunity_moves_nothing() -> None:
    pc, crm = referral(), opportunity()
    off = opportunity(cosell_syncwithpartnercenter=False, description="private notes")

    planned = plan(Snapshot(job(), link=linked(pc, crm), referral=pc, opportunity=off), POLICY)

    assert (planned.outcome, planned.steps) == ("skipped", ())


def test_the_dry_run_description_of_every_step_is_one_line() -> None:
    pc = referral(status="New", substatus="Received")
    account = AccountMatch("6f1f8a5e-3d4c-4b2a-9e8f-0000000000ac", _customer())

    planned = plan(Snapshot(job(), referral=pc, account=account), POLICY)

    lines = [step.describe() for step in planned.steps]
    assert lines[1].startswith(f"create opportunity {planned.opportunity_id}")
    assert all(line and "\n" not in line for line in lines)


# -- the plan stage stays pure ----------------------------------------------------------------

PLAN_STAGE = (
    "plan",
    "steps",
    "snapshot",
    "merge",
    "crm_writes",
    "mapping",
    "audit",
    "deal",
    "status",
    "validation",
)
IO_MODULES = (
    "httpx",
    "azure",
    "shared.state",
    "shared.settings",
    "shared.storage",
    "shared.runtime",
    "shared.wiring",
    "shared.dataverse",
    "shared.sync.read",
    "shared.sync.apply",
    "shared.sync.sides",
    "shared.sync.engine",
)


@pytest.mark.parametrize("module", PLAN_STAGE)
def test_the_plan_stage_imports_no_io_settings_or_storage(module: str) -> None:
    source = Path(__file__).parents[2] / "shared" / "sync" / f"{module}.py"
    imported: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.append((node.module, [alias.name for alias in node.names]))
        elif isinstance(node, ast.Import):
            imported += [(alias.name, []) for alias in node.names]
    for name, names in imported:
        assert not name.startswith(IO_MODULES), f"{module}.py imports {name}"
        # From the Partner Center package only its payload models, never the client.
        clients = [n for n in names if n.endswith(("Client", "Store", "Side"))]
        assert not clients, f"{module}.py imports {clients} from {name}"


def _details() -> dict[str, Any]:
    details: dict[str, Any] = cosell_referral_from_microsoft()["details"]
    return details


def _customer() -> Customer:
    customer = opportunity().deal.customer
    assert customer is not None
    return customer


def replace_base(link: LinkState, base: SyncBase) -> LinkState:
    return replace(link, base=base)


def test_a_creation_lease_outlasts_the_longest_referral_post() -> None:
    # Else a live creator still retrying its POST could be taken over: two referrals.
    assert CREATE_LEASE.total_seconds() > CREATE_REFERRAL_DEADLINE_S
