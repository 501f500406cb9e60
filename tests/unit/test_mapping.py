"""Every row of the mapping and status tables of SPEC 4.1-4.3, both directions."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest

from shared.partner_center import Referral
from shared.sync.deal import Contact, Customer, DealStatus
from shared.sync.mapping import (
    HELP_CODE_BY_CHOICE,
    Columns,
    opportunity_to_deal,
    referral_patch,
    referral_to_deal,
)
from shared.sync.merge import Change
from shared.sync.status import from_crm, from_partner_center, to_crm, to_partner_center

TEMPLATE = "https://partner.microsoft.com/referrals/v2/inbox?id={id}"
RID = "6f1f8a5e-3d4c-4b2a-9e8f-0a1b2c3d4e5f"
OID = "1d2e3f40-0000-4000-8000-000000000010"

REFERRAL: dict[str, Any] = {
    "id": RID,
    "name": "Contoso - migration",
    "externalReferenceId": OID,
    "status": "Active",
    "substatus": "Accepted",
    "type": "Shared",
    "customerProfile": {
        "name": "Contoso Ltd",
        "address": {
            "addressLine1": "1 Example Way",
            "addressLine2": "Floor 2",
            "city": "Berlin",
            "state": "BE",
            "postalCode": "10115",
            "country": "de",
        },
        "team": [{"firstName": "Ana", "lastName": "Example", "email": "Ana@Example.com",
                  "phoneNumber": "+10000000001"}],
    },
    "consent": {"consentToShareReferralWithMicrosoftSellers": True},
    "details": {
        "dealValue": 120000,
        "currency": "eur",
        "closingDateTime": "2027-03-31T23:30:00-02:00",
        "notes": "Notes",
        "requirements": {"solutions": [{"id": "SOL-2"}, {"id": "SOL-1"}]},
    },
    "inviteContext": {"assistanceRequestCode": "ProofOfConceptOrDemo"},
    "trackingInfo": {"microsoftMsxId": "7-ABC"},
}  # fmt: skip

OPPORTUNITY: dict[str, Any] = {
    "opportunityid": OID,
    "name": "✔ Contoso - migration",
    "estimatedvalue": 120000.0,
    "estimatedclosedate": "2027-04-01",
    "description": "Notes",
    "statecode": 0,
    "statuscode": 1,
    "cosell_helpneeded": 100000002,
    "cosell_visibletomicrosoft": True,
    "cosell_referralid": RID,
    "cosell_referrallink": TEMPLATE.replace("{id}", RID),
    "cosell_microsoftcrmid": "7-ABC",
    "cosell_referralprogram": "Co-sell",
}
ACCOUNT = {
    "name": "Contoso Ltd",
    "address1_line1": "1 Example Way",
    "address1_line2": "Floor 2",
    "address1_city": "Berlin",
    "address1_stateorprovince": "BE",
    "address1_postalcode": "10115",
    "address1_country": "DE",
}
CONTACT = {"firstname": "Ana", "lastname": "Example", "emailaddress1": "ana@example.com",
           "telephone1": "+10000000001"}  # fmt: skip

pc = referral_to_deal(Referral.model_validate(REFERRAL), link_template=TEMPLATE)
crm = opportunity_to_deal(
    OPPORTUNITY,
    columns=Columns(),
    account=ACCOUNT,
    contact=CONTACT,
    currency="EUR",
    solutions=[{"cosell_solutionidentifier": "SOL-1"}, {"cosell_solutionidentifier": "SOL-2"}],
)


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("name", "Contoso - migration"),
        ("deal_value", 120000.0),
        ("currency", "EUR"),
        ("close_date", date(2027, 4, 1)),  # the date part in UTC
        ("notes", "Notes"),
        ("status", DealStatus.ACTIVE),
        ("help_needed", "ProofOfConceptOrDemo"),
        ("visible_to_microsoft", True),
        ("solutions", ("SOL-1", "SOL-2")),
        (
            "contact",
            Contact(
                first_name="Ana", last_name="Example", email="ana@example.com", phone="+10000000001"
            ),
        ),
        (
            "customer",
            Customer(
                name="Contoso Ltd",
                address_line1="1 Example Way",
                address_line2="Floor 2",
                city="Berlin",
                state="BE",
                postal_code="10115",
                country="DE",
            ),
        ),
        ("referral_id", RID),
        ("referral_link", TEMPLATE.replace("{id}", RID)),
        ("microsoft_crm_id", "7-ABC"),
        ("external_reference_id", OID),
        ("program", "Co-sell"),
    ],
)
def test_each_field_maps_the_same_from_both_systems(field: str, expected: Any) -> None:
    assert getattr(pc, field) == expected
    assert getattr(crm, field) == expected


def test_the_sync_mark_is_not_part_of_the_name() -> None:
    assert crm.name == "Contoso - migration"


@pytest.mark.parametrize(
    ("status", "substatus", "deal", "reason"),
    [
        ("New", "Pending", DealStatus.NEW, None),
        ("New", "Received", DealStatus.NEW, None),
        ("Active", "Accepted", DealStatus.ACTIVE, None),
        ("Closed", "Won", DealStatus.WON, None),
        ("Closed", "Lost", DealStatus.LOST, "lost"),
        ("Closed", "Declined", DealStatus.LOST, "declined"),
        ("Closed", "Expired", DealStatus.LOST, "expired"),
    ],
)
def test_partner_center_status_table(
    status: str, substatus: str, deal: DealStatus, reason: str | None
) -> None:
    assert from_partner_center(status, substatus) == (deal, reason)


@pytest.mark.parametrize(
    ("deal", "reason", "state", "status"),
    [
        (DealStatus.NEW, None, 0, 2),  # Open / On Hold
        (DealStatus.ACTIVE, None, 0, 1),  # Open / In Progress
        (DealStatus.WON, None, 1, 3),  # Won / Won
        (DealStatus.LOST, "lost", 2, 5),  # Lost / Out-Sold
        (DealStatus.LOST, "declined", 2, 4),  # Lost / Canceled
        (DealStatus.LOST, "expired", 2, 4),  # Lost / Canceled
    ],
)
def test_dataverse_status_table(
    deal: DealStatus, reason: str | None, state: int, status: int
) -> None:
    target = to_crm(deal, close_reason=reason)
    assert (target.statecode, target.statuscode) == (state, status)
    assert from_crm(state, status)[0] is deal


@pytest.mark.parametrize(
    ("target", "current", "expected"),
    [
        (DealStatus.ACTIVE, "New", ("Active", "Accepted")),  # accepting
        (DealStatus.LOST, "New", ("Closed", "Declined")),  # lost while New declines
        (DealStatus.LOST, "Active", ("Closed", "Lost")),
        (DealStatus.WON, "Active", ("Closed", "Won")),
        (DealStatus.WON, "New", ("Closed", "Won")),
        (DealStatus.NEW, "Active", None),  # Active → New is not allowed
        (DealStatus.ACTIVE, "Closed", None),  # Closed is terminal
        (DealStatus.WON, "Closed", None),
    ],
)
def test_partner_center_transition_rules(
    target: DealStatus, current: str, expected: tuple[str, str] | None
) -> None:
    found = to_partner_center(target, current=current)
    assert (None if found is None else (found.status, found.substatus)) == expected


@pytest.mark.parametrize(("value", "code"), sorted(HELP_CODE_BY_CHOICE.items()))
def test_help_needed_choice_values(value: int, code: str) -> None:
    deal = opportunity_to_deal(
        {**OPPORTUNITY, "cosell_helpneeded": value},
        columns=Columns(),
        account=None,
        contact=None,
        currency=None,
        solutions=[],
    )
    assert deal.help_needed == code


def test_custom_prefix_and_field_settings_drive_the_column_names() -> None:
    columns = Columns(prefix="contoso_", deal_value="budgetamount", country="address1_county")
    row = {"opportunityid": OID, "budgetamount": 5.0, "contoso_referralid": RID,
           "contoso_helpneeded": 100000005}  # fmt: skip

    deal = opportunity_to_deal(
        row, columns=columns, account={"address1_county": "fr"}, contact=None,
        currency=None, solutions=[{"contoso_solutionidentifier": "SOL-9"}],
    )  # fmt: skip

    assert (deal.deal_value, deal.referral_id, deal.help_needed) == (5.0, RID, "GeneralOrOther")
    assert deal.customer is not None and deal.customer.country == "FR"
    assert deal.solutions == ("SOL-9",)


def test_patch_replaces_exactly_the_changed_paths() -> None:
    referral = Referral.model_validate(REFERRAL)
    merged = pc.model_copy(update={"deal_value": 99.0, "notes": "New"})

    operations = referral_patch(
        {"deal_value": Change("deal_value", 120000.0, 99.0), "notes": Change("notes", "N", "New")},
        merged,
        referral,
    )

    assert [o.to_wire() for o in operations] == [
        {"op": "replace", "path": "/details/dealValue", "value": 99.0},
        {"op": "replace", "path": "/details/notes", "value": "New"},
    ]


def test_patch_adds_a_missing_parent_object_whole() -> None:
    referral = Referral.model_validate({**REFERRAL, "details": None, "inviteContext": None})
    merged = pc.model_copy(update={"notes": "First note", "help_needed": "QuotesOrLicensing"})

    operations = referral_patch(
        {"notes": Change("notes", None, "First note"),
         "help_needed": Change("help_needed", None, "QuotesOrLicensing")},
        merged,
        referral,
    )  # fmt: skip

    assert [o.to_wire() for o in operations] == [
        {"op": "add", "path": "/details", "value": {"notes": "First note"}},
        {"op": "add", "path": "/inviteContext",
         "value": {"assistanceRequestCode": "QuotesOrLicensing"}},
    ]  # fmt: skip


def test_status_change_to_partner_center_is_two_replaces() -> None:
    referral = Referral.model_validate({**REFERRAL, "status": "New", "substatus": "Pending"})
    merged = pc.model_copy(update={"status": DealStatus.ACTIVE})

    operations = referral_patch({"status": Change("status", "new", "active")}, merged, referral)

    assert [o.to_wire() for o in operations] == [
        {"op": "replace", "path": "/status", "value": "Active"},
        {"op": "replace", "path": "/substatus", "value": "Accepted"},
    ]


@pytest.mark.parametrize(
    ("changes", "program"),
    [
        ({}, "Co-sell"),
        ({"inviteContext": None, "type": "Independent"}, "Partner-led"),
        ({"inviteContext": None, "type": "Independent",
          "consent": {"consentToShareReferralWithMicrosoftSellers": False}}, "Private"),
        ({"inviteContext": {"invitedBy": {"organizationId": "msft"}}, "type": "Independent",
          "direction": "Incoming", "qualification": "SalesQualified"}, "Marketplace lead"),
        ({"inviteContext": None, "type": "Independent", "direction": "Incoming",
          "qualification": "Direct"}, "Marketplace lead"),
    ],
)  # fmt: skip
def test_program_is_derived_from_type_help_and_invitation(
    changes: dict[str, Any], program: str
) -> None:
    referral = Referral.model_validate({**REFERRAL, **changes})
    assert referral_to_deal(referral, link_template=TEMPLATE).program == program
