"""**Shared contacts** (class 5): groups of the seller's opportunities share one contact record;
Partner Center edits change the contact (``/customerProfile/team``) of some referrals of each
group. Check: the shared record's name and e-mail never change; each opportunity's contact is
its referral's.
"""

from __future__ import annotations

import uuid
from typing import Any

from bench.families.model import CONTACT_GROUP, Families, FamilyProblems, Observed, SharedContact
from shared.dataverse import DataverseClient
from shared.errors import CosellError

CONTACT_EDITS_PER_GROUP = 2  # of each group, this many get a new contact from Partner Center


async def seed_shared_contacts(crm: DataverseClient, families: Families) -> None:
    """The seller's shared contacts, one for each group of ``CONTACT_GROUP`` of its
    opportunities (made before them, ``races.seed_seller_opportunities``)."""
    for group in range(families.sizes.shared_contact_groups):
        contact = SharedContact(
            str(uuid.uuid4()), "Sam", f"Seller{group}", f"seller{group}@partner.example.com"
        )
        await crm.create(
            "contacts",
            {"firstname": contact.firstname, "lastname": contact.lastname,
             "emailaddress1": contact.email},
            row_id=contact.contact_id,
        )  # fmt: skip
        families.shared_contacts.append(contact)


def shared_contact_of(families: Families, index: int, number: int) -> tuple[str, str, bool] | None:
    """The shared contact of the seller's ``index``-th opportunity, pair ``number`` (which
    joins the contact's pairs): its id, its e-mail and whether Partner Center gives the
    referral a new contact; None for an opportunity with a contact of its own."""
    if index >= families.sizes.shared_contact_groups * CONTACT_GROUP:
        return None
    contact = families.shared_contacts[index // CONTACT_GROUP]
    contact.numbers.append(number)
    return contact.contact_id, contact.email, index % CONTACT_GROUP < CONTACT_EDITS_PER_GROUP


def new_contact(number: int) -> list[dict[str, Any]]:
    """The team a Partner Center edit gives a seller referral (a person of its own)."""
    return [{"firstName": "Pat", "lastName": f"Buyer{number}",
             "email": f"pc-contact{number}@example.com"}]  # fmt: skip


async def check_contacts(found: FamilyProblems, families: Families, seen: Observed) -> None:
    """Class 5: the seller's shared contacts are never rewritten."""
    for contact in families.shared_contacts:
        try:
            row = await seen.crm.get(
                "contacts", contact.contact_id,
                select=["firstname", "lastname", "emailaddress1"],
            )  # fmt: skip
        except CosellError as exc:
            found.lost.append(f"shared contact {contact.contact_id}: unreadable ({exc})")
            continue
        now = (row.get("firstname"), row.get("lastname"), row.get("emailaddress1"))
        before = (contact.firstname, contact.lastname, contact.email)
        if now != before:
            found.lost.append(
                f"shared contact {contact.contact_id} of pairs {contact.numbers} rewritten: "
                f"{before} → {now}"
            )
