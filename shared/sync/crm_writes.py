"""What to write into Dataverse for a deal, as steps (pure): the opportunity write of a sync,
the rows of a new opportunity, a lead's columns, a qualified lead's adoption.

One opportunity write is one PATCH carrying the changed columns, the audit, the sync status and
the ✔/✖ mark together; a contact is its own row; closing goes through WinOpportunity /
LoseOpportunity, which Dataverse requires (SPEC 4.3). Nothing is written when nothing differs
from what the row holds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from shared.sync import extra_fields
from shared.sync.audit import append_audit
from shared.sync.crm_limits import LEAD_COMPANY_NAME, OPPORTUNITY_TEXT, contact_row, fit
from shared.sync.deal import Deal
from shared.sync.mapping import (
    ERROR_MARK,
    SYNC_STATUS_CHOICE,
    SYNCED_MARK,
    Columns,
    contact_columns,
    new_opportunity,
    opportunity_update,
    record_id,
)
from shared.sync.merge import Change
from shared.sync.snapshot import AccountMatch, CrmOpportunity
from shared.sync.status import IN_PROGRESS, WON, CrmStatus, to_crm
from shared.sync.steps import (
    CloseOpportunity,
    CreateOpportunity,
    LinkStatus,
    Step,
    WriteContact,
    WriteOpportunity,
)


def marked_name(name: str | None, status: LinkStatus, *, show_mark: bool) -> str | None:
    """The opportunity name with the ✔/✖ prefix of the last result (SPEC 4.4 step 7)."""
    if name is None or not show_mark:
        return name
    return (ERROR_MARK if status == "error" else SYNCED_MARK) + name


# Optional fields a new opportunity leaves out when the mapping switches them off.
OFF_ON_CREATION = ("notes", "deal_value", "close_date", "help_needed", "visible_to_microsoft")


def opportunity_write(
    opportunity: CrmOpportunity,
    changes: Mapping[str, Change],
    merged: Deal,
    *,
    columns: Columns,
    show_mark: bool,
    status: LinkStatus,
    audit: Sequence[str],
    audit_if_writing: Sequence[str] = (),
) -> list[Step]:
    """The steps that bring the opportunity to ``merged`` for the CRM-bound ``changes``, plus
    audit, status and mark. ``audit_if_writing`` lines go along only when something else is
    written anyway (empty list: the row already says all of it)."""
    row = opportunity.row
    steps: list[Step] = []
    update = opportunity_update(changes, merged, columns=columns)
    currency = merged.currency if "currency" in changes and merged.currency else None
    # The mark goes on the name the row will have: the merged one only if it is written. A
    # name Dataverse cannot hold stays the row's (our stand-in); rewriting the merged one
    # would make Dataverse refuse the whole PATCH, every field and the status with it.
    kept = merged.name if "name" in changes else opportunity.deal.name
    name = marked_name(kept, status, show_mark=show_mark)
    if name is not None and row.get("name") != name:
        update["name"] = name
    if row.get(columns.syncstatus) != SYNC_STATUS_CHOICE[status]:
        update[columns.syncstatus] = SYNC_STATUS_CHOICE[status]
    if "contact" in changes and merged.contact is not None:
        contact = contact_row(contact_columns(merged.contact))
        # Only a contact this product made is rewritten in place. The seller's own contact
        # may sit on other opportunities too: the new contact gets a row of its own.
        ours = {record_id("contact", opportunity.id)}
        if merged.referral_id:
            ours.add(record_id("contact", merged.referral_id))  # made with the opportunity
        if opportunity.contact_id and opportunity.contact_id.lower() in ours:
            steps.append(WriteContact(opportunity.contact_id, contact, create=False))
        else:
            contact_id = record_id("contact", opportunity.id)
            made = {**columns.mapping.defaults.contact, **contact}
            steps.append(WriteContact(contact_id, made, create=True))
            update["parentcontactid@odata.bind"] = f"/contacts({contact_id})"

    close = None
    if "status" in changes and merged.status is not None:
        target = to_crm(merged.status, close_reason=merged.close_reason)
        current = CrmStatus(int(row.get("statecode") or 0), int(row.get("statuscode") or 0))
        if not target.closed:
            # Reopening, or moving between open reasons, is a plain PATCH (reference 8.2).
            update["statecode"], update["statuscode"] = 0, target.statuscode
        else:
            if current.closed:
                # Won ↔ Lost: reopen in this PATCH, then close again through the action.
                update["statecode"], update["statuscode"] = 0, IN_PROGRESS
            close = close_step(opportunity.id, target)
    # Waiting audit lines ride along only when the opportunity is written anyway.
    lines = [*audit_if_writing, *audit] if (update or currency or audit) else []
    if lines:
        update[columns.audit] = append_audit(row.get(columns.audit), lines)
    if update or currency:
        steps.append(WriteOpportunity(opportunity.id, update, currency=currency))
    if close is not None:
        steps.append(close)
    return steps


def close_step(opportunity_id: str, target: CrmStatus) -> CloseOpportunity:
    return CloseOpportunity(
        opportunity_id, won=target.statecode == WON, statuscode=target.statuscode
    )


def creation_steps(
    deal: Deal,
    *,
    referral_id: str,
    account: AccountMatch,
    columns: Columns,
    show_mark: bool,
    without: tuple[str, ...] = (),
    audit: Sequence[str] = (),
) -> list[Step]:
    """The opportunity for a new referral with its contact, solution rows and (if new) its
    account, all ids derived from the referral id; a closed referral is closed after it.
    ``without``: fields Dataverse cannot hold (the new row is then in error, ``audit`` says
    why)."""
    opportunity_id = record_id("opportunity", referral_id)
    status: LinkStatus = "error" if without else "synced"
    # A new opportunity must be created: what does not fit is cut to fit (text) or left out.
    name = fit(deal.name, OPPORTUNITY_TEXT["name"]) if "name" in without else deal.name
    shown: dict[str, Any] = {
        "name": marked_name(name, status, show_mark=show_mark),
        "notes": fit(deal.notes, OPPORTUNITY_TEXT["notes"]) if "notes" in without else deal.notes,
        "deal_value": None if "deal_value" in without else deal.deal_value,
    }
    # A field the mapping switched ``off`` is not written, not even on creation (SPEC 13).
    shown |= {f: None for f in OFF_ON_CREATION if columns.mapping.direction_of(f) == "off"}
    body = new_opportunity(
        deal.model_copy(update=shown),
        columns=columns,
        account_id=account.account_id,
        sync_status=status,
    )
    mapping = columns.mapping
    # The mapping's defaults fill what the product does not set (SPEC 13): required fields.
    body = {**mapping.defaults.opportunity, **body}
    body |= extra_fields.creation_columns(mapping, deal.extra, without=without)
    if audit:
        body[columns.audit] = append_audit(None, list(audit))
    if deal.contact is not None and mapping.direction_of("contact") != "off":
        contact = {**mapping.defaults.contact, **contact_row(contact_columns(deal.contact))}
        body["parentcontactid"] = {**contact, "contactid": record_id("contact", referral_id)}
    body[columns.solutions_relationship] = [
        {
            columns.name: identifier,
            columns.solutionidentifier: identifier,
            columns.solutionid: solution_row_id(referral_id, identifier, deal.solutions),
        }
        for identifier in deal.solutions
    ]
    steps: list[Step] = [
        CreateOpportunity(
            opportunity_id,
            body,
            currency=None if "currency" in without else deal.currency,
            account_id=account.account_id,
            new_account=account.new_account,
        )
    ]
    if deal.status is not None and deal.status.closed:
        steps.append(
            close_step(opportunity_id, to_crm(deal.status, close_reason=deal.close_reason))
        )
    return steps


def solution_row_id(referral_id: str, identifier: str, all_of_them: Sequence[str]) -> str:
    """The derived id of one solution row. Ids that differ only by case (``SOL-A``, ``sol-a``)
    each get their own (case-kept) id, or the deep insert would collide with itself and restart
    forever; all others keep the case-free id earlier versions derived."""
    twins = sum(1 for other in all_of_them if other.lower() == identifier.lower())
    key = f"{referral_id.lower()}|{identifier}"
    return record_id("solution", key, exact_case=twins > 1)


def lead_columns(deal: Deal, *, columns: Columns) -> dict[str, Any]:
    """A Dataverse lead for a marketplace lead (SPEC 4.5, ``SYNC_COSELL_ONLY=false``)."""
    contact = deal.contact
    customer = deal.customer
    body: dict[str, Any] = {
        "subject": deal.name,
        "companyname": fit(customer.name, LEAD_COMPANY_NAME) if customer else None,
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
    # The lead's person columns have a contact's limits; the mapping's defaults fill the rest.
    return {**columns.mapping.defaults.lead, **contact_row(body)}


def adoption_columns(
    referral_id: str, referral_link: str | None, *, columns: Columns
) -> dict[str, Any]:
    """What a qualified lead's opportunity gets to sync with the lead's referral."""
    return {
        columns.syncwithpartnercenter: True,
        columns.referralid: referral_id,
        columns.referrallink: referral_link,
    }
