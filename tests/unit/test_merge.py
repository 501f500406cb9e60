"""The pure three-way merge (SPEC 4.1, 4.3): one rule per test."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.sync.deal import Deal, DealStatus
from shared.sync.merge import Change, FieldPlan, InFlight, SyncBase, merge, settle_in_flight

BASE = Deal(
    name="Deal",
    notes="base",
    deal_value=100.0,
    visible_to_microsoft=False,
    status=DealStatus.ACTIVE,
    microsoft_crm_id="7-OLD",
)
EARLY = datetime(2026, 11, 27, 10, 0, tzinfo=UTC)
LATE = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)


def run(pc: Deal, crm: Deal, **kw: object) -> object:
    options: dict[str, object] = {"policy": "newest", "pc_status": "Active", **kw}
    return merge(SyncBase(deal=BASE), pc, crm, **options)  # type: ignore[arg-type]


def test_nothing_changed_plans_nothing() -> None:
    plan = merge(SyncBase(deal=BASE), BASE, BASE, policy="newest", pc_status="Active")

    assert plan.empty
    assert plan.merged == BASE


def test_one_sided_changes_are_copied_to_the_other_side() -> None:
    plan = merge(
        SyncBase(deal=BASE),
        BASE.model_copy(update={"notes": "from PC"}),
        BASE.model_copy(update={"deal_value": 250.0}),
        policy="partner_center",
        pc_status="Active",
    )

    assert {f: c.new for f, c in plan.to_crm.items()} == {"notes": "from PC"}
    assert {f: c.new for f, c in plan.to_pc.items()} == {"deal_value": 250.0}
    assert plan.conflicts == ()


def test_newest_record_wins_a_conflict_and_it_is_reported() -> None:
    pc, crm = (BASE.model_copy(update={"notes": n}) for n in ("pc", "crm"))

    newer_crm = merge(
        SyncBase(deal=BASE),
        pc,
        crm,
        policy="newest",
        pc_updated_at=EARLY,
        crm_modified_on=LATE,
        pc_status="Active",
    )
    newer_pc = merge(
        SyncBase(deal=BASE),
        pc,
        crm,
        policy="newest",
        pc_updated_at=LATE,
        crm_modified_on=EARLY,
        pc_status="Active",
    )

    assert newer_crm.merged.notes == "crm"
    assert newer_pc.merged.notes == "pc"
    assert newer_crm.conflicts == ("notes: changed in both systems; kept the Dynamics 365 value",)


def test_newest_reads_a_dataverse_second_as_its_middle() -> None:
    """``modifiedon`` has whole seconds: a CRM edit stamped 10:00:42 may have come 0.7 s after
    a Partner Center edit at 10:00:42.171 (the chaos run lost such an edit when the stamp was
    read as the start of its second). The middle is right whenever the edits are more than
    half a second apart."""
    pc, crm = (BASE.model_copy(update={"notes": n}) for n in ("pc", "crm"))
    stamp = datetime(2026, 11, 27, 10, 0, 42, tzinfo=UTC)

    def winner(pc_at: datetime) -> str | None:
        plan = merge(SyncBase(deal=BASE), pc, crm, policy="newest", pc_updated_at=pc_at,
                     crm_modified_on=stamp, pc_status="Active")  # fmt: skip
        return plan.merged.notes

    assert winner(stamp.replace(microsecond=171000)) == "crm"
    assert winner(stamp.replace(microsecond=800000)) == "pc"
    assert winner(stamp.replace(second=41, microsecond=999000)) == "crm"


def test_visibility_never_goes_back_to_false() -> None:
    base = SyncBase(deal=BASE.model_copy(update={"visible_to_microsoft": True}))
    pc = BASE.model_copy(update={"visible_to_microsoft": True})
    crm = BASE.model_copy(update={"visible_to_microsoft": False})  # a seller unticks it

    plan = merge(base, pc, crm, policy="crm", pc_status="Active")

    assert plan.merged.visible_to_microsoft is True
    assert "visible_to_microsoft" not in plan.to_pc
    assert plan.to_crm["visible_to_microsoft"].new is True


def test_an_empty_partner_center_value_never_clears_a_pc_owned_crm_field() -> None:
    plan = merge(
        SyncBase(deal=BASE),
        BASE.model_copy(update={"microsoft_crm_id": None}),
        BASE,
        policy="partner_center",
        pc_status="Active",
    )

    assert "microsoft_crm_id" not in plan.to_crm
    assert plan.merged.microsoft_crm_id == "7-OLD"


def test_crm_only_fields_never_flow_to_crm() -> None:
    plan = merge(
        SyncBase(deal=BASE),
        BASE.model_copy(update={"solutions": ("SOL-PC",)}),
        BASE.model_copy(update={"solutions": ("SOL-CRM",)}),
        policy="partner_center",
        pc_status="Active",
    )

    assert plan.to_pc["solutions"].new == ("SOL-CRM",)
    assert "solutions" not in plan.to_crm


def test_a_change_a_closed_referral_cannot_take_is_reported_once() -> None:
    closed = BASE.model_copy(update={"status": DealStatus.WON})
    crm = closed.model_copy(update={"notes": "edited after closing"})

    first = merge(SyncBase(deal=closed), closed, crm, policy="newest", pc_status="Closed")
    again = merge(first.base(), closed, crm, policy="newest", pc_status="Closed")

    assert first.to_pc == {} and first.to_crm == {}
    assert len(first.newly_blocked) == 1
    assert "the referral is Closed" in first.newly_blocked[0]
    assert again.newly_blocked == ()
    assert again.empty


def stopped_sync(**fields: object) -> SyncBase:
    """The base left by a sync that stopped after (maybe) writing ``fields`` from PC to CRM."""
    written = InFlight(deal=BASE.model_copy(update=fields), to_crm=tuple(fields))
    return SyncBase(deal=BASE, in_flight=written)


def test_a_write_of_a_sync_that_stopped_early_is_not_a_conflict_with_a_later_edit() -> None:
    # The stopped sync wrote deal_value 100 → 200 into CRM; PC has since been edited to 300.
    # Against the old base both sides changed.
    pc = BASE.model_copy(update={"deal_value": 300.0})
    crm = BASE.model_copy(update={"deal_value": 200.0})

    settled = settle_in_flight(stopped_sync(deal_value=200.0), pc, crm)
    plan = merge(settled, pc, crm, policy="crm", pc_status="Active")

    assert plan.conflicts == ()
    assert plan.to_crm["deal_value"].new == 300.0


def test_a_write_that_never_landed_keeps_the_old_base() -> None:
    pc = BASE.model_copy(update={"deal_value": 200.0})  # the sending side still holds it

    settled = settle_in_flight(stopped_sync(deal_value=200.0), pc, BASE)  # CRM never written
    plan = merge(settled, pc, BASE, policy="crm", pc_status="Active")

    assert settled.deal.deal_value == 100.0 and settled.in_flight is None
    assert plan.to_crm["deal_value"].new == 200.0


def test_the_sending_side_holding_the_value_is_no_evidence_the_write_landed() -> None:
    # The stopped sync settled a conflict for CRM's notes and was to send them to PC; the PC
    # write never landed. PC's older edit must not now win as if it were the newer one.
    flight = InFlight(deal=BASE.model_copy(update={"notes": "crm"}), to_pc=("notes",))
    pc, crm = (BASE.model_copy(update={"notes": n}) for n in ("pc", "crm"))

    settled = settle_in_flight(SyncBase(deal=BASE, in_flight=flight), pc, crm)
    plan = merge(settled, pc, crm, policy="crm", pc_status="Active")

    assert plan.merged.notes == "crm"
    assert plan.conflicts == ("notes: changed in both systems; kept the Dynamics 365 value",)


def test_an_edit_on_the_receiving_side_after_the_read_wins_over_the_value_being_sent() -> None:
    # A sync read deal_value 200 in PC and 100 in CRM and set out to send 200 to CRM; before
    # that write (or right after it) a seller typed 300 into CRM. PC's record then looks newer
    # (our own write of another field bumped it), so as a conflict 'newest' would keep 200.
    sending = FieldPlan(
        merged=BASE.model_copy(update={"deal_value": 200.0}),
        to_crm={"deal_value": Change("deal_value", 100.0, 200.0)},
    )
    stopped = SyncBase(deal=BASE, in_flight=sending.in_flight())
    pc = BASE.model_copy(update={"deal_value": 200.0})
    crm = BASE.model_copy(update={"deal_value": 300.0})

    settled = settle_in_flight(stopped, pc, crm)
    plan = merge(
        settled,
        pc,
        crm,
        policy="newest",
        pc_updated_at=LATE,
        crm_modified_on=EARLY,
        pc_status="Active",
    )

    assert plan.conflicts == ()
    assert plan.to_pc["deal_value"].new == 300.0


def test_an_in_flight_record_without_the_values_read_keeps_the_landed_only_rule() -> None:
    # Links written before the read values were kept: a third value is still a conflict.
    pc = BASE.model_copy(update={"deal_value": 200.0})
    crm = BASE.model_copy(update={"deal_value": 300.0})

    settled = settle_in_flight(stopped_sync(deal_value=200.0), pc, crm)

    assert settled.deal.deal_value == 100.0


def test_a_value_dataverse_cannot_hold_is_not_written_and_its_stand_in_not_sent_back() -> None:
    base = SyncBase(deal=BASE.model_copy(update={"currency": "EUR"}))
    pc = base.deal.model_copy(update={"currency": "ZWG"})
    crm = base.deal.model_copy(update={"notes": "crm"})  # still EUR: the stand-in from now on
    cannot = {"currency": "ZWG is not a currency of this organization"}

    first = merge(base, pc, crm, policy="newest", pc_status="Active", crm_cannot_hold=cannot)
    again = merge(
        first.base(), pc, crm, policy="newest", pc_status="Active", crm_cannot_hold=cannot
    )
    added = merge(first.base(), pc, crm, policy="newest", pc_status="Active")  # admin adds it

    assert "currency" not in first.to_crm and "currency" not in first.to_pc
    assert first.refused_by_crm == (cannot["currency"],)
    assert first.to_pc["notes"].new == "crm"  # the rest still syncs
    assert first.stand_ins == {"currency": "EUR"}
    assert "currency" not in again.to_pc and again.refused_by_crm
    assert added.to_crm["currency"].new == "ZWG" and added.stand_ins == {}


def test_a_seller_changing_a_stand_in_is_an_ordinary_crm_change() -> None:
    base = SyncBase(deal=BASE.model_copy(update={"currency": "ZWG"}), stand_ins={"currency": "EUR"})
    pc = base.deal
    crm = base.deal.model_copy(update={"currency": "GBP"})

    plan = merge(
        base,
        pc,
        crm,
        policy="newest",
        pc_status="Active",
        crm_cannot_hold={"currency": "ZWG unknown"},
    )

    assert plan.to_pc["currency"].new == "GBP" and plan.refused_by_crm == ()


def test_without_a_base_the_crm_value_in_place_of_one_it_cannot_hold_is_a_stand_in() -> None:
    # A creation killed between the insert and the link: the next sync links with no base.
    pc = BASE.model_copy(update={"currency": "ZWG"})
    crm = BASE.model_copy(update={"currency": "USD"})

    plan = merge(
        None, pc, crm, policy="crm", pc_status="Active", crm_cannot_hold={"currency": "ZWG unknown"}
    )

    assert "currency" not in plan.to_pc and "currency" not in plan.to_crm
    assert plan.stand_ins == {"currency": "USD"} and plan.refused_by_crm == ("ZWG unknown",)
