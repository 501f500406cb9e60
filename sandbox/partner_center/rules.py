"""What the emulator accepts in a referral: required parts, enumerations and the status
transition table of reference §2.3."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from .errors import ApiError, invalid

STATUSES = ("None", "New", "Active", "Closed")
SUBSTATUSES_BY_STATUS: dict[str, tuple[str, ...]] = {
    "New": ("Pending", "Received"),
    "Active": ("Accepted",),
    "Closed": ("Won", "Lost", "Declined", "Expired"),
}
ALL_SUBSTATUSES = ("None", *(s for subs in SUBSTATUSES_BY_STATUS.values() for s in subs))
TRANSITIONS: dict[str, tuple[str, ...]] = {
    "New": ("New", "Active", "Closed"),
    "Active": ("Active", "Closed"),
    "Closed": ("Closed",),
}
TYPES = ("Independent", "Shared")
QUALIFICATIONS = ("None", "Direct", "MarketingQualified", "SalesQualified")
SIZES = (
    "1to50employees",
    "51to500employees",
    "Morethan500employees",
    "1to9employees",
    "10to50employees",
    "51to250employees",
    "251to1000employees",
    "1001to5000employees",
    "5001to10000employees",
    "10001to20000employees",
    "Morethan20000employees",
)
ASSISTANCE_CODES = (
    "Unknown",
    "GeneralOrOther",
    "CustomerTechnicalArchitecture",
    "ProofOfConceptOrDemo",
    "QuotesOrLicensing",
    "PostSalesCustomerSuccess",
    "WorkloadSpecificValueProposition",
)
TARGET_TYPES = ("None", "BusinessProfileLocation", "SolutionProfile")
REQUIRED_PARTS = (
    ("type", "Type"),
    ("customerProfile", "CustomerProfile"),
    ("consent", "Consent"),
    ("details", "Details"),
)

# Properties the partner cannot write (§2.1 "Writable? no"); Microsoft-side changes made through
# the control API may set them (e.g. trackingInfo.microsoftMsxId when Microsoft accepts).
READ_ONLY = frozenset(
    {
        "id",
        "engagementId",
        "organizationId",
        "organizationName",
        "createdDateTime",
        "updatedDateTime",
        "expirationDateTime",
        "acceptedDateTime",
        "closedDateTime",
        "direction",
        "eTag",
        "links",
        "trackingInfo",
        "registrationStatus",
        "mpnId",
        # `readOnly` in the connector's Referral contract (apiDefinition.swagger.json).
        "quality",
        "isSpam",
        "tags",
    }
)
# What Microsoft may set on a referral it sends the partner (control API), though the partner
# cannot: its own CRM id, its grading of the lead and the state of a deal registration.
SET_BY_MICROSOFT = frozenset({"trackingInfo", "quality", "isSpam", "tags", "registrationStatus"})

# The properties the connector's Referral contract adds to the reference's doc tables
# (microsoft/PowerPlatformConnectors, certified-connectors/PartnerCenterReferrals/
# apiDefinition.swagger.json, definition Microsoft.Partner.Service.PartnerReferrals.Contracts.
# V3.Referral; reference dataverse-push-and-webhook-trust.md §3), with the value a new referral
# shows when its body does not set one. `quality`, `tags` and `registrationStatus` are the values
# seen in real payloads (reference §2.1 [REAL]); the rest are plausible, UNCERTAIN: the service's
# values are undocumented (`referralSource`/`callToAction` are for marketplace leads, §2.1).
# `mpnId` and `lastModifiedVia` are filled by the store; `closedDateTime` when the referral closes;
# `registrations` stays null until a deal registration adds the first one (§2.5).
CONTRACT_DEFAULTS: dict[str, Any] = {
    "referralProgram": None,
    "registrationStatus": "None",
    "quality": "Unknown",
    "isSpam": False,
    "tags": [],
    "mpnId": None,
    "salesStage": None,
    "callToAction": None,
    "referralSource": None,
    "lastModifiedVia": None,
    "lastRunId": None,
    "favorite": False,
    "campaignId": None,
    "trackingInfo": {"microsoftMsxId": None},
    "closedDateTime": None,
    "registrations": None,
}

# The JSON Patch paths a partner may patch, as the certified "Partner Center Referrals"
# connector lists them (microsoft/PowerPlatformConnectors, certified-connectors/
# PartnerCenterReferrals/apiDefinition.swagger.json: the `path` enum of
# `UpdateReferralDetails`, and `/registrations/-` of `DealRegistration`; reference
# dataverse-push-and-webhook-trust.md §3). Whether the real service refuses other paths is
# UNCERTAIN: the emulator refuses them only in its strict mode (``create_app(strict_patch_paths=
# True)`` or ``PUT /_emulator/patch-paths``).
PARTNER_PATCH_PATHS: tuple[str, ...] = (
    "/campaignId",
    "/consent/consentToShareReferralWithMicrosoftSellers",
    "/customerProfile/team",
    "/customerProfile/team/-",
    "/details/closingDateTime",
    "/details/currency",
    "/details/dealValue",
    "/details/notes",
    "/details/requirements/solutions",
    "/details/requirements/solutions/-",
    "/externalReferenceId",
    "/referralProgram",
    "/salesStage",
    "/status",
    "/substatus",
    "/statusReason",
    "/team",
    "/team/-",
    "/registrations/-",
    "/registrations/0/contract/startDateTime",
    "/registrations/0/contract/endDateTime",
    "/registrations/0/contract/signDateTime",
    "/registrations/0/contract/term",
    "/registrations/0/contract/value",
    "/registrations/0/solutionDetails/0/value",
    "/registrations/0/solutionDetails/0/currency",
    "/registrations/0/solutionDetails/0/isDeployedOnAzure",
    "/registrations/0/solutionDetails/0/primaryDeploymentOn",
    "/registrations/0/solutionDetails/0/pricingModel",
    "/registrations/0/solutionDetails/0/marketplaceTransactionDetails/isMarketplaceTransacted",
    "/registrations/0/solutionDetails/0/marketplaceTransactionDetails/"
    "marketplaceTransactionDateTime",
)

_GUID = re.compile(r"^[0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def is_guid(value: object) -> bool:
    return isinstance(value, str) and bool(_GUID.match(value))


def _enum(value: Any, allowed: tuple[str, ...], target: str, *, optional: bool = True) -> None:
    if value is None and optional:
        return
    # The service binds enums case-insensitively (§2, UNCERTAIN); the emulator does the same.
    if not isinstance(value, str) or value.lower() not in {a.lower() for a in allowed}:
        raise invalid(
            f"The value '{value}' is not valid for {target}; expected one of {', '.join(allowed)}.",
            target,
        )


def _object(value: Any, target: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise invalid(f"{target} must be an object.", target)
    return value


def _datetime(value: Any, target: str) -> None:
    if value is None:
        return
    try:
        datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise invalid(
            f"The value '{value}' is not a valid date/time for {target}.", target
        ) from None


def canonical(value: str, allowed: tuple[str, ...]) -> str:
    return next((a for a in allowed if a.lower() == value.lower()), value)


def validate_referral(referral: dict[str, Any]) -> None:
    """Raise ``ApiError`` 400 for a referral the service would refuse."""
    for key, label in REQUIRED_PARTS:
        if referral.get(key) in (None, ""):
            raise invalid(f"The {label} field is required.", key)
    _enum(referral.get("type"), TYPES, "type", optional=False)
    _enum(referral.get("qualification"), QUALIFICATIONS, "qualification")
    _enum(referral.get("status"), STATUSES, "status")
    _enum(referral.get("substatus"), ALL_SUBSTATUSES, "substatus")
    if referral.get("name") is not None and not isinstance(referral["name"], str):
        raise invalid("name must be a string.", "name")
    profile = _object(referral.get("customerProfile"), "customerProfile") or {}
    if not profile.get("name"):
        raise invalid("The CustomerProfile.Name field is required.", "customerProfile.name")
    if profile.get("size") not in (None, ""):  # real payloads carry "" (§2.2)
        _enum(profile.get("size"), SIZES, "customerProfile.size")
    address = _object(profile.get("address"), "customerProfile.address") or {}
    country = address.get("country")
    if country is not None and not (isinstance(country, str) and _COUNTRY.match(country)):
        raise invalid(
            f"The value '{country}' is not a 2-letter ISO 3166 country code.",
            "customerProfile.address.country",
        )
    _object(referral.get("consent"), "consent")
    details = _object(referral.get("details"), "details") or {}
    value = details.get("dealValue")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise invalid("dealValue must be a number.", "details.dealValue")
    if isinstance(value, int | float) and value < 0:
        raise invalid("dealValue must not be negative.", "details.dealValue")
    currency = details.get("currency")
    if currency is not None and not (isinstance(currency, str) and _CURRENCY.match(currency)):
        raise invalid(f"The value '{currency}' is not an ISO 4217 code.", "details.currency")
    _datetime(details.get("closingDateTime"), "details.closingDateTime")
    invite = _object(referral.get("inviteContext"), "inviteContext") or {}
    _enum(invite.get("assistanceRequestCode"), ASSISTANCE_CODES, "assistanceRequestCode")
    targets = referral.get("target")
    if targets is not None:
        if not isinstance(targets, list):
            raise invalid("target must be an array.", "target")
        for item in targets:
            _enum((item or {}).get("type"), TARGET_TYPES, "target.type")
    for key in ("team",):
        if referral.get(key) is not None and not isinstance(referral[key], list):
            raise invalid(f"{key} must be an array.", key)


def check_patch_paths(operations: Any) -> None:
    """Strict mode: refuse the first operation whose path is not one the connector lists, with a
    400 that names the path in ``target`` and in the message (the error shape of reference §5;
    the real service's wording is UNCERTAIN)."""
    if not isinstance(operations, list):
        return  # apply_patch says what is wrong with the body
    for operation in operations:
        path = operation.get("path") if isinstance(operation, dict) else None
        if isinstance(path, str) and path not in PARTNER_PATCH_PATHS:
            raise invalid(
                f"The path '{path}' cannot be updated: it is not a path a partner may patch.",
                path,
            )


def check_transition(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Enforce §2.3: closed referrals are terminal, moves follow the table, and the substatus
    belongs to the status."""
    old = str(before.get("status") or "None")
    if old == "Closed":
        raise invalid(
            f"The referral is closed ({before.get('substatus')}) and can no longer be updated.",
            "status",
        )
    new = str(after.get("status") or "None")
    if new != old and new not in TRANSITIONS.get(old, (new,)):
        raise invalid(f"The referral status cannot change from {old} to {new}.", "status")
    substatus = after.get("substatus")
    allowed = SUBSTATUSES_BY_STATUS.get(new)
    # A missing/"None" substatus is tolerated (the table is silent about it — UNCERTAIN).
    if allowed and substatus not in (None, "None") and substatus not in allowed:
        raise invalid(
            f"The substatus {substatus} is not valid with status {new}; expected one of "
            f"{', '.join(allowed)}.",
            "substatus",
        )
    was_visible = (before.get("consent") or {}).get("consentToShareReferralWithMicrosoftSellers")
    now_visible = (after.get("consent") or {}).get("consentToShareReferralWithMicrosoftSellers")
    if was_visible is True and now_visible is not True:
        # Once visible to Microsoft a referral cannot be made private again (§2.4).
        raise invalid(
            "consentToShareReferralWithMicrosoftSellers cannot be reverted to false.",
            "consent.consentToShareReferralWithMicrosoftSellers",
        )


def normalise_enums(referral: dict[str, Any]) -> None:
    """Store enum values in their documented spelling whatever case the caller sent."""
    for key, allowed in (
        ("type", TYPES),
        ("qualification", QUALIFICATIONS),
        ("status", STATUSES),
        ("substatus", ALL_SUBSTATUSES),
    ):
        if isinstance(referral.get(key), str):
            referral[key] = canonical(referral[key], allowed)


__all__ = [
    "CONTRACT_DEFAULTS",
    "PARTNER_PATCH_PATHS",
    "SET_BY_MICROSOFT",
    "ApiError",
    "check_patch_paths",
    "check_transition",
    "is_guid",
    "normalise_enums",
    "validate_referral",
]
