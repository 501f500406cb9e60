"""Both mappings in one place: referral ↔ Deal and opportunity (+ account, contact, solutions)
↔ Deal (SPEC 4.1). Column names come from ``shared.crm_schema`` for the configured prefix and
from settings (deal value and country columns); nothing here does I/O.

Reading: ``referral_to_deal`` and ``opportunity_to_deal``.
Writing: ``referral_patch`` (JSON Patch of exactly the changed paths) and ``opportunity_update``
(the changed columns); creation: ``new_referral``, ``new_opportunity``, ``new_account`` and
``contact_columns``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from functools import cached_property
from typing import Any

from shared.crm_mapping import CONNECTOR_PATCH_PATHS, NO_MAPPING, CrmMapping
from shared.crm_schema import (
    DEFAULT_PREFIX,
    HELP_NEEDED_OPTIONS,
    SYNC_STATUS_OPTIONS,
    CrmSchema,
    crm_schema,
)
from shared.partner_center import (
    AssistanceRequestCode,
    PatchOperation,
    Qualification,
    Referral,
    ReferralDirection,
    ReferralStatus,
    ReferralSubstatus,
    ReferralType,
)
from shared.sync import extra_fields
from shared.sync.deal import Contact, Customer, Deal, DealStatus
from shared.sync.merge import Change
from shared.sync.status import from_crm, from_partner_center, to_crm, to_partner_center

SYNCED_MARK = "✔ "
ERROR_MARK = "✖ "
# SPEC 4.2: the help-needed choice's value → Partner Center assistanceRequestCode, and back.
HELP_CODE_BY_CHOICE: dict[int, str] = {o.value: o.label for o in HELP_NEEDED_OPTIONS}
HELP_CHOICE_BY_CODE: dict[str, int] = {o.label: o.value for o in HELP_NEEDED_OPTIONS}
# The sync-status choice's value for each outcome word ("synced", "error", "pending").
SYNC_STATUS_CHOICE: dict[str, int] = {o.label.lower(): o.value for o in SYNC_STATUS_OPTIONS}
MICROSOFT_ORG = "msft"
_QUALIFIED = (Qualification.SALES_QUALIFIED, Qualification.MARKETING_QUALIFIED)
# Deterministic ids (SPEC 4.5): the same referral always yields the same CRM record ids.
_NAMESPACE = uuid.UUID("1b0e5c34-7a59-4d8e-9b0a-6f1c2d3e4f50")


def record_id(kind: str, key: str, *, exact_case: bool = False) -> str:
    """The id of the CRM record of ``kind`` made for ``key`` (a referral id, or a customer).

    Keys are compared without case (GUIDs arrive in either); ``exact_case`` keeps it, for
    keys that differ only by case and must not collide (two solution ids, say).
    """
    text = key.strip() if exact_case else key.strip().lower()
    return str(uuid.uuid5(_NAMESPACE, f"{kind}{'=' if exact_case else ':'}{text}"))


@dataclass(frozen=True)
class Columns:
    """Dataverse column names: the custom ones of ``shared.crm_schema`` for ``prefix``, and the
    deal value and country columns from settings."""

    prefix: str = DEFAULT_PREFIX
    deal_value: str = "estimatedvalue"
    country: str = "address1_country"
    mapping: CrmMapping = NO_MAPPING  # SPEC 13

    @cached_property
    def schema(self) -> CrmSchema:
        return crm_schema(self.prefix)

    # -- opportunity (the same names on lead for referralid and referrallink) ---------------

    @property
    def helpneeded(self) -> str:
        return self.schema.help_needed.logical_name

    @property
    def visibletomicrosoft(self) -> str:
        return self.schema.visible_to_microsoft.logical_name

    @property
    def referralid(self) -> str:
        return self.schema.referral_id.logical_name

    @property
    def referrallink(self) -> str:
        return self.schema.referral_link.logical_name

    @property
    def microsoftcrmid(self) -> str:
        return self.schema.microsoft_crm_id.logical_name

    @property
    def referralprogram(self) -> str:
        return self.schema.referral_program.logical_name

    @property
    def syncwithpartnercenter(self) -> str:
        return self.schema.sync_with_partner_center.logical_name

    @property
    def syncstatus(self) -> str:
        return self.schema.sync_status.logical_name

    @property
    def audit(self) -> str:
        return self.schema.audit.logical_name

    # -- solution rows ---------------------------------------------------------------------

    @property
    def solutions_set(self) -> str:
        return self.schema.solution.entity_set

    @property
    def solutionid(self) -> str:
        return self.schema.solution.primary_key

    @property
    def name(self) -> str:
        """The solution row's primary name column."""
        return self.schema.solution.primary_name.logical_name

    @property
    def solutionidentifier(self) -> str:
        return self.schema.solution_identifier.logical_name

    @property
    def opportunityid(self) -> str:
        """The solution row's lookup to its opportunity."""
        return self.schema.solution_opportunity.logical_name

    @property
    def solutions_relationship(self) -> str:
        """The opportunity's collection of solution rows (created by ``cosell schema apply``)."""
        return self.schema.solution_opportunity.collection

    @property
    def opportunity_select(self) -> list[str]:
        return [
            "opportunityid",
            "name",
            self.deal_value,
            "estimatedclosedate",
            "description",
            "statecode",
            "statuscode",
            "modifiedon",
            "versionnumber",
            "_parentaccountid_value",
            "_parentcontactid_value",
            "_transactioncurrencyid_value",
            "_originatingleadid_value",  # a qualified lead's opportunity: its lead's referral
            *(column.logical_name for column in self.schema.opportunity_columns),
            *(extra.crm for extra in self.mapping.extra),
        ]

    @property
    def account_select(self) -> list[str]:
        """The account columns the sync reads; a lookup country (SPEC 13) is read as its
        ``_<lookup>_value`` GUID, which the read stage turns into the looked-up row's code."""
        lookup = self.mapping.country.lookup if self.mapping.country else None
        return [
            "accountid",
            "name",
            "address1_line1",
            "address1_line2",
            "address1_city",
            "address1_stateorprovince",
            "address1_postalcode",
            f"_{lookup.column}_value" if lookup else self.country,
            "versionnumber",  # the poll tells our own write from a seller's fix by it
        ]


CONTACT_SELECT = [
    "contactid",
    "firstname",
    "lastname",
    "emailaddress1",
    "telephone1",
    "versionnumber",
]


# -- Partner Center → Deal -------------------------------------------------------------------


def referral_to_deal(
    referral: Referral, *, link_template: str, related: Iterable[Referral] = ()
) -> Deal:
    """The deal a referral describes; ``related`` are the other referrals of its engagement."""
    details = referral.details
    profile = referral.customer_profile
    status, reason = from_partner_center(_text(referral.status), _text(referral.substatus))
    requirements = details.requirements if details else None
    team = profile.team if profile and profile.team else []
    address = profile.address if profile else None
    invite = referral.invite_context
    help_code = _text(invite.assistance_request_code) if invite else None
    msx_id = referral.tracking_info.microsoft_msx_id if referral.tracking_info else None
    for other in related:  # Microsoft's side of the engagement carries its CRM id (SPEC 4.1)
        if not msx_id and other.tracking_info and other.tracking_info.microsoft_msx_id:
            msx_id = other.tracking_info.microsoft_msx_id
    closing = details.closing_date_time if details else None
    return Deal(
        name=referral.name,
        deal_value=details.deal_value if details else None,
        currency=details.currency if details else None,
        close_date=closing.astimezone(UTC).date() if closing else None,
        notes=details.notes if details else None,
        status=status,
        close_reason=reason,
        help_needed=help_code if help_code in HELP_CHOICE_BY_CODE else None,
        visible_to_microsoft=(
            referral.consent.consent_to_share_referral_with_microsoft_sellers
            if referral.consent
            else None
        ),
        solutions=tuple(s.id for s in (requirements.solutions or []) if s.id)
        if requirements
        else (),
        contact=_member_contact(team[0]) if team else None,
        customer=Customer(
            name=profile.name if profile else None,
            address_line1=address.address_line1 if address else None,
            address_line2=address.address_line2 if address else None,
            city=address.city if address else None,
            state=address.state if address else None,
            postal_code=address.postal_code if address else None,
            country=address.country if address else None,
        ),
        referral_id=referral.id,
        referral_link=link_template.replace("{id}", referral.id) if referral.id else None,
        microsoft_crm_id=msx_id,
        external_reference_id=referral.external_reference_id,
        program=program_of(referral),
    )


def program_of(referral: Referral) -> str:
    """Co-sell / Partner-led / Private / Marketplace lead (reference §2.4 categories)."""
    invite = referral.invite_context
    help_code = invite.assistance_request_code if invite else None
    if help_code and help_code != AssistanceRequestCode.UNKNOWN:
        return "Co-sell"
    invited_by = invite.invited_by.organization_id if invite and invite.invited_by else None
    qualification = referral.qualification
    is_lead = (
        referral.type == ReferralType.INDEPENDENT
        and referral.direction == ReferralDirection.INCOMING
        and (
            (qualification == Qualification.DIRECT and invited_by in (None, MICROSOFT_ORG))
            or (qualification in _QUALIFIED and invited_by == MICROSOFT_ORG)
        )
    )
    if is_lead:
        return "Marketplace lead"
    if referral.type == ReferralType.SHARED:
        return "Co-sell"
    consent = referral.consent
    if consent and consent.consent_to_share_referral_with_microsoft_sellers:
        return "Partner-led"
    return "Private"


def _member_contact(member: Any) -> Contact:
    return Contact(
        first_name=member.first_name,
        last_name=member.last_name,
        email=member.email,
        phone=member.phone_number,
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


# -- Dataverse → Deal ------------------------------------------------------------------------


def strip_mark(name: str | None) -> str | None:
    """The opportunity name without our ✔/✖ prefix."""
    if name is None:
        return None
    for mark in (SYNCED_MARK, ERROR_MARK):
        if name.startswith(mark):
            return name[len(mark) :]
    return name


def opportunity_to_deal(
    opportunity: Mapping[str, Any],
    *,
    columns: Columns,
    account: Mapping[str, Any] | None,
    contact: Mapping[str, Any] | None,
    currency: str | None,
    solutions: Iterable[Mapping[str, Any]],
) -> Deal:
    """The deal an opportunity (with its account, contact, currency and solutions) describes."""
    status, reason = from_crm(opportunity.get("statecode"), opportunity.get("statuscode"))
    closing = opportunity.get("estimatedclosedate")
    help_value = opportunity.get(columns.helpneeded)
    return Deal(
        name=strip_mark(opportunity.get("name")),
        deal_value=opportunity.get(columns.deal_value),
        currency=currency,
        close_date=date.fromisoformat(closing[:10]) if closing else None,
        notes=opportunity.get("description"),
        status=status,
        close_reason=reason,
        help_needed=HELP_CODE_BY_CHOICE.get(help_value) if isinstance(help_value, int) else None,
        visible_to_microsoft=opportunity.get(columns.visibletomicrosoft),
        solutions=tuple(s.get(columns.solutionidentifier) for s in solutions),
        contact=Contact(
            first_name=contact.get("firstname"),
            last_name=contact.get("lastname"),
            email=contact.get("emailaddress1"),
            phone=contact.get("telephone1"),
        )
        if contact
        else None,
        customer=account_customer(account, columns=columns) if account else None,
        referral_id=opportunity.get(columns.referralid),
        referral_link=opportunity.get(columns.referrallink),
        microsoft_crm_id=opportunity.get(columns.microsoftcrmid),
        external_reference_id=opportunity.get("opportunityid"),
        program=opportunity.get(columns.referralprogram),
        extra=extra_fields.from_opportunity(opportunity, columns.mapping),
    )


# With a lookup country (SPEC 13) the account row holds only the lookup's GUID; the read stage
# (``sides.CrmSide``) puts the looked-up row's code beside it under this key, an instance
# annotation of ours (OData's ``@namespace.term`` form, so it cannot clash with a column).
LOOKUP_COUNTRY_CODE = "@cosell.countrycode"


def account_customer(account: Mapping[str, Any], *, columns: Columns) -> Customer:
    """The customer an account row describes: its country from ``CRM_COUNTRY_FIELD``, or with a
    lookup country the code the read stage found for the lookup (``LOOKUP_COUNTRY_CODE``)."""
    lookup = columns.mapping.country is not None
    return Customer(
        name=account.get("name"),
        address_line1=account.get("address1_line1"),
        address_line2=account.get("address1_line2"),
        city=account.get("address1_city"),
        state=account.get("address1_stateorprovince"),
        postal_code=account.get("address1_postalcode"),
        country=account.get(LOOKUP_COUNTRY_CODE if lookup else columns.country),
    )


# -- Deal → Partner Center -------------------------------------------------------------------

# Deal field → JSON Pointer in the referral (SPEC 4.1). Status is two paths, handled apart.
# Each is a path the connector's contract lists (``LISTED_PATCH_PATHS``) except ``/name`` and
# ``/inviteContext/assistanceRequestCode``: writable per the referral docs but not in the list,
# so whether PATCH takes them is UNCERTAIN. If Partner Center refuses one, the sync drops just
# that operation and says so in the audit (``apply``), it never fails the pair for it.
REFERRAL_PATHS: dict[str, str] = {
    "name": "/name",
    "deal_value": "/details/dealValue",
    "currency": "/details/currency",
    "close_date": "/details/closingDateTime",
    "notes": "/details/notes",
    "help_needed": "/inviteContext/assistanceRequestCode",
    "visible_to_microsoft": "/consent/consentToShareReferralWithMicrosoftSellers",
    "solutions": "/details/requirements/solutions",
    "contact": "/customerProfile/team",
    "external_reference_id": "/externalReferenceId",
}


# The paths a partner may patch, per Microsoft's certified connector (``shared.crm_mapping``,
# which also checks the mapping's extra fields against it).
LISTED_PATCH_PATHS = CONNECTOR_PATCH_PATHS
# The status of a Deal is these paths together; one of them refused refuses them all.
STATUS_PATHS = ("/status", "/substatus", "/statusReason")


def field_of_path(path: str) -> str | None:
    """The Deal field a patch operation writes: its own path, a path below it, or the parent
    object added whole for it (``/details`` for ``/details/notes``)."""
    if path in STATUS_PATHS:
        return "status"
    for field, own in REFERRAL_PATHS.items():
        if path == own or path.startswith(own + "/") or own.startswith(path + "/"):
            return field
    return None


def referral_value(field: str, deal: Deal, referral: Referral) -> Any:
    """The wire value of one Deal field for the referral."""
    if field == "close_date":
        return _closing(deal.close_date)
    if field == "solutions":
        return [{"type": "Name", "id": s} for s in deal.solutions]
    if field == "contact":
        team = referral.customer_profile.team if referral.customer_profile else None
        rest = [m.to_wire() for m in (team or [])[1:]]
        return ([_member(deal.contact)] if deal.contact else []) + rest
    return getattr(deal, field)


def referral_patch(
    changes: Mapping[str, Change],
    deal: Deal,
    referral: Referral,
    *,
    mapping: CrmMapping | None = None,
) -> list[PatchOperation]:
    """JSON Patch of exactly the changed paths, each the field's own leaf path: replaced where
    the referral has the member, added where it lacks it (reference §1.1, Partner Center takes
    only replace/add). ``mapping``'s extra fields go to their own paths (SPEC 13)."""
    document = referral.to_wire()
    operations: list[PatchOperation] = []
    for field in changes:
        if field == "status":
            operations.extend(_status_operations(deal, referral))
            continue
        if field.startswith(extra_fields.PREFIX):
            path = extra_fields.patch_path(mapping or CrmMapping(), field)
            if path is not None:
                value = deal.extra.get(field.removeprefix(extra_fields.PREFIX))
                operations.append(_set(document, path, value))
            continue
        path = REFERRAL_PATHS.get(field)
        if path is not None:
            operations.append(_set(document, path, referral_value(field, deal, referral)))
    return operations


def _status_operations(deal: Deal, referral: Referral) -> list[PatchOperation]:
    assert deal.status is not None
    target = to_partner_center(deal.status, current=_text(referral.status))
    if target is None:
        return []
    operations = [
        PatchOperation.replace("/status", target.status),
        PatchOperation.replace("/substatus", target.substatus),
    ]
    if target.substatus in (ReferralSubstatus.DECLINED, ReferralSubstatus.LOST):
        declined = target.substatus == ReferralSubstatus.DECLINED
        reason = "Declined in Dynamics 365" if declined else "Lost"
        operations.append(PatchOperation.replace("/statusReason", reason))
    return operations


def _set(document: dict[str, Any], path: str, value: Any) -> PatchOperation:
    """``replace`` the leaf if the referral has it, ``add`` it if only the leaf is missing.

    The leaf is the path the connector lists (``LISTED_PATCH_PATHS``), so it is what we send.
    Only where a parent object is missing too (RFC 6902 refuses an ``add`` below a member that
    does not exist) is the nearest missing parent added whole: ``/details/requirements`` on a
    referral without requirements. That path is not listed (UNCERTAIN whether it is taken); a
    refusal drops just this field. The parts the service requires (``details``, ``consent``,
    ``customerProfile``) are always there, so listed leaves are the rule.
    """
    parts = path.strip("/").split("/")
    node: Any = document
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            nested: Any = value
            for inner in reversed(parts[depth + 1 :]):
                nested = {inner: nested}
            return PatchOperation.add("/" + "/".join(parts[: depth + 1]), nested)
        node = child
    if parts[-1] in node:
        return PatchOperation.replace(path, value)  # null counts: the member exists
    return PatchOperation.add(path, value)


def _closing(value: date | None) -> str | None:
    if value is None:
        return None
    return datetime.combine(value, time(0), tzinfo=UTC).isoformat().replace("+00:00", "Z")


def _member(contact: Contact | None) -> dict[str, Any]:
    if contact is None:
        return {}
    member = {
        "firstName": contact.first_name,
        "lastName": contact.last_name,
        "email": contact.email,
        "phoneNumber": contact.phone,
    }
    return {k: v for k, v in member.items() if v is not None}


def new_referral(
    deal: Deal, *, opportunity_id: str, mapping: CrmMapping | None = None
) -> dict[str, Any]:
    """The body of a referral created from an opportunity (SPEC 4.5): Shared with the help code
    when help is needed, Independent otherwise; ``externalReferenceId`` = the opportunity id.
    ``mapping``'s extra fields that flow to Partner Center go along (SPEC 13)."""
    customer = deal.customer or Customer()
    help_needed = bool(deal.help_needed)
    body: dict[str, Any] = {
        "name": deal.name,
        "externalReferenceId": opportunity_id,
        "type": ReferralType.SHARED if help_needed else ReferralType.INDEPENDENT,
        "qualification": Qualification.SALES_QUALIFIED,
        "customerProfile": {
            "name": customer.name,
            "address": {
                k: v
                for k, v in {
                    "addressLine1": customer.address_line1,
                    "addressLine2": customer.address_line2,
                    "city": customer.city,
                    "state": customer.state,
                    "postalCode": customer.postal_code,
                    "country": customer.country,
                }.items()
                if v is not None
            },
            "team": [_member(deal.contact)] if deal.contact else [],
        },
        "consent": {
            "consentToToShareInfoWithOthers": True,
            "consentToContact": True,
            # Asking Microsoft for help makes the referral visible (reference §2.4).
            "consentToShareReferralWithMicrosoftSellers": bool(
                help_needed or deal.visible_to_microsoft
            ),
        },
        "details": {
            "notes": deal.notes,
            "dealValue": deal.deal_value,
            "currency": deal.currency,
            "closingDateTime": _closing(deal.close_date),
            "requirements": {"solutions": [{"type": "Name", "id": s} for s in deal.solutions]},
        },
        "team": [],
        "target": [{"type": "SolutionProfile", "id": s} for s in deal.solutions[:1]],
    }
    if help_needed:
        body["inviteContext"] = {
            "assistanceRequestCode": deal.help_needed,
            "notes": deal.notes,
        }
    if deal.status is DealStatus.WON:
        body["status"], body["substatus"] = ReferralStatus.CLOSED, ReferralSubstatus.WON
    for extra in (mapping or CrmMapping()).extra:
        value = deal.extra.get(extra.crm)
        if extra.to_partner_center and value is not None and not extra_fields.unmapped(value):
            _put(body, extra.referral.split("."), value)
    return body


def _put(document: dict[str, Any], parts: list[str], value: Any) -> None:
    node = document
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


# -- Deal → Dataverse ------------------------------------------------------------------------


def opportunity_update(
    changes: Mapping[str, Change],
    deal: Deal,
    *,
    columns: Columns,
) -> dict[str, Any]:
    """The opportunity columns to PATCH for the changed fields (status, contact and currency
    excluded: they are closing/reopening actions, a contact row, and a bind whose id the apply
    stage looks up)."""
    update: dict[str, Any] = {}
    for field in changes:
        if field == "name":
            update["name"] = deal.name
        elif field == "deal_value":
            update[columns.deal_value] = deal.deal_value
        elif field == "close_date":
            update["estimatedclosedate"] = deal.close_date.isoformat() if deal.close_date else None
        elif field == "notes":
            update["description"] = deal.notes
        elif field == "visible_to_microsoft":
            update[columns.visibletomicrosoft] = bool(deal.visible_to_microsoft)
        elif field == "referral_id":
            update[columns.referralid] = deal.referral_id
        elif field == "referral_link":
            update[columns.referrallink] = deal.referral_link
        elif field == "microsoft_crm_id":
            update[columns.microsoftcrmid] = deal.microsoft_crm_id
        elif field == "program":
            update[columns.referralprogram] = deal.program
    mapped = [name for name in changes if name.startswith(extra_fields.PREFIX)]
    return update | extra_fields.crm_columns(columns.mapping, deal.extra, mapped)


def new_account(customer: Customer, *, columns: Columns) -> dict[str, Any]:
    """A new account's columns: the mapping's ``defaults.account`` (SPEC 13), then the
    customer's (which win where both set a column). A lookup country is not among them: its
    bind needs the id of the country row, which the read stage looks up (``sides.CrmSide``)."""
    country = {} if columns.mapping.country else {columns.country: customer.country}
    return {
        **columns.mapping.defaults.account,
        "name": customer.name,
        "address1_line1": customer.address_line1,
        "address1_line2": customer.address_line2,
        "address1_city": customer.city,
        "address1_stateorprovince": customer.state,
        "address1_postalcode": customer.postal_code,
        **country,
    }


def contact_columns(contact: Contact) -> dict[str, Any]:
    return {
        "firstname": contact.first_name,
        "lastname": contact.last_name or contact.email or "(unknown)",
        "emailaddress1": contact.email,
        "telephone1": contact.phone,
    }


def new_opportunity(
    deal: Deal,
    *,
    columns: Columns,
    account_id: str,
    sync_status: str = "synced",
) -> dict[str, Any]:
    """The opportunity created for an incoming referral (sync flag on, status per SPEC 4.3);
    its contact and currency are added by the caller (a nested row, a looked-up bind)."""
    status = to_crm(deal.status or DealStatus.NEW)
    body: dict[str, Any] = {
        "name": deal.name,
        columns.deal_value: deal.deal_value,
        "estimatedclosedate": deal.close_date.isoformat() if deal.close_date else None,
        "description": deal.notes,
        "customerid_account@odata.bind": f"/accounts({account_id})",
        "parentaccountid@odata.bind": f"/accounts({account_id})",
        columns.visibletomicrosoft: bool(deal.visible_to_microsoft),
        columns.referralid: deal.referral_id,
        columns.referrallink: deal.referral_link,
        columns.microsoftcrmid: deal.microsoft_crm_id,
        columns.referralprogram: deal.program,
        columns.syncwithpartnercenter: True,
        columns.syncstatus: SYNC_STATUS_CHOICE[sync_status],
    }
    if deal.help_needed in HELP_CHOICE_BY_CODE:
        body[columns.helpneeded] = HELP_CHOICE_BY_CODE[deal.help_needed]
    if status.statecode == 0:
        body["statuscode"] = status.statuscode
    return {k: v for k, v in body.items() if v is not None}
