"""Pydantic models of the Referrals API payloads (reference §2) and of the webhook API (§4).

Every model keeps properties it does not know (``extra="allow"``) so a referral read, changed and
written back loses nothing Microsoft adds later. Enumerations are typed as ``Enum | str``: a known
value becomes the enum member, an unknown one stays a plain string instead of failing validation
(§2.3 warns that undocumented substatus values such as ``Engaged`` have been seen).
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    model_validator,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "AdditionalRequirements",
    "Address",
    "AssistanceRequestCode",
    "Attribute",
    "Consent",
    "ContactPreference",
    "CustomerProfile",
    "InviteContext",
    "InvitedBy",
    "Link",
    "Member",
    "PatchOperation",
    "ProfileId",
    "Qualification",
    "Referral",
    "ReferralDetails",
    "ReferralDirection",
    "ReferralLinks",
    "ReferralStatus",
    "ReferralSubstatus",
    "ReferralType",
    "Requirements",
    "SolutionTag",
    "Tag",
    "Target",
    "TestEvent",
    "TestEventDelivery",
    "TestEventResult",
    "TrackingInfo",
    "WebhookEvent",
    "WebhookEventName",
    "WebhookRegistration",
]


class WireEnum(StrEnum):
    """A wire enumeration; lookup ignores case because the service binds case-insensitively
    (§2 — UNCERTAIN, so we accept either and always send the documented spelling)."""

    @classmethod
    def _missing_(cls, value: object) -> WireEnum | None:
        if isinstance(value, str):
            for member in cls:
                if member.value.lower() == value.lower():
                    return member
        return None


class ReferralStatus(WireEnum):
    NONE = "None"
    NEW = "New"
    ACTIVE = "Active"
    CLOSED = "Closed"


class ReferralSubstatus(WireEnum):
    NONE = "None"
    PENDING = "Pending"
    RECEIVED = "Received"
    ACCEPTED = "Accepted"
    WON = "Won"
    LOST = "Lost"
    DECLINED = "Declined"
    EXPIRED = "Expired"


class ReferralType(WireEnum):
    INDEPENDENT = "Independent"
    SHARED = "Shared"


class Qualification(WireEnum):
    NONE = "None"
    DIRECT = "Direct"
    MARKETING_QUALIFIED = "MarketingQualified"
    SALES_QUALIFIED = "SalesQualified"


class ReferralDirection(WireEnum):
    INCOMING = "Incoming"
    OUTGOING = "Outgoing"


class AssistanceRequestCode(WireEnum):
    UNKNOWN = "Unknown"
    GENERAL_OR_OTHER = "GeneralOrOther"
    CUSTOMER_TECHNICAL_ARCHITECTURE = "CustomerTechnicalArchitecture"
    PROOF_OF_CONCEPT_OR_DEMO = "ProofOfConceptOrDemo"
    QUOTES_OR_LICENSING = "QuotesOrLicensing"
    POST_SALES_CUSTOMER_SUCCESS = "PostSalesCustomerSuccess"
    WORKLOAD_SPECIFIC_VALUE_PROPOSITION = "WorkloadSpecificValueProposition"


class WebhookEventName(WireEnum):
    REFERRAL_CREATED = "referral-created"
    REFERRAL_UPDATED = "referral-updated"
    RELATED_REFERRAL_CREATED = "related-referral-created"
    RELATED_REFERRAL_UPDATED = "related-referral-updated"
    TEST_CREATED = "test-created"


E = TypeVar("E", bound=WireEnum)


def _lenient(enum: type[E]) -> BeforeValidator:
    def convert(value: object) -> object:
        if isinstance(value, str) and not isinstance(value, enum):
            try:
                return enum(value)
            except ValueError:
                return value
        return value

    return BeforeValidator(convert)


Status = Annotated[ReferralStatus | str, _lenient(ReferralStatus)]
Substatus = Annotated[ReferralSubstatus | str, _lenient(ReferralSubstatus)]
TypeOfReferral = Annotated[ReferralType | str, _lenient(ReferralType)]
QualificationValue = Annotated[Qualification | str, _lenient(Qualification)]
Direction = Annotated[ReferralDirection | str, _lenient(ReferralDirection)]
HelpCode = Annotated[AssistanceRequestCode | str, _lenient(AssistanceRequestCode)]
EventName = Annotated[WebhookEventName | str, _lenient(WebhookEventName)]


def _blank_to_none(value: object) -> object:
    # Real payloads carry "" where a value is missing (§2.2 shows it for `size`).
    return None if value == "" else value


def _assume_utc(value: datetime | None) -> datetime | None:
    # Every referral date is UTC (§2.1); a value without an offset is read as UTC so that
    # comparisons with aware datetimes (e.g. Dataverse `modifiedon`) work.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


UtcDateTime = Annotated[
    datetime | None, BeforeValidator(_blank_to_none), AfterValidator(_assume_utc)
]


def _iso_text(value: object) -> object:
    # The service sends dates as ISO-8601 strings; pydantic would also read a bare number as
    # Unix time, which no documented payload carries — an untrusted webhook must not (SPEC 8).
    if value is not None and not isinstance(value, str | datetime):
        raise ValueError("expected an ISO-8601 date string")
    return value


StrictUtcDateTime = Annotated[UtcDateTime, BeforeValidator(_iso_text)]


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python, unknown properties kept."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="allow",
        use_enum_values=False,
    )

    def to_wire(self) -> dict[str, Any]:
        """The JSON body: wire names, only the properties that were set (absent stays absent)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class Address(WireModel):
    address_line1: str | None = None
    address_line2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = Field(default=None, description="2-letter ISO 3166 code (§2.2)")
    region: str | None = None


class ContactPreference(WireModel):
    locale: str | None = None
    disable_notifications: bool | None = None


class Member(WireModel):
    first_name: str | None = None
    last_name: str | None = None
    phone_number: str | None = None
    email: str | None = None
    title: str | None = None
    contact_preference: ContactPreference | None = None


class ProfileId(WireModel):
    profile_type: str | None = None
    id: str | None = None


class CustomerProfile(WireModel):
    name: str | None = None
    size: str | None = None  # the size list changed over time and is often "" (§2.2)
    address: Address | None = None
    team: list[Member] | None = None
    ids: list[ProfileId] | None = None


class Consent(WireModel):
    # The doubled "To" is the real wire key (§2.2).
    consent_to_to_share_info_with_others: bool | None = None
    consent_to_contact: bool | None = None
    consent_to_share_referral_with_microsoft_sellers: bool | None = None
    consent_to_microsoft_to_contact_specific_partners: bool | None = None


class Tag(WireModel):
    id: str | None = None


class SolutionTag(WireModel):
    id: str | None = None
    name: str | None = None
    type: str | None = None
    price: int | float | None = None
    quantity: int | None = None
    currency: str | None = None
    publisher_name: str | None = None
    solution_type: str | None = None
    closing_date_time: UtcDateTime = None


class Attribute(WireModel):
    type: str | None = None
    id: str | None = None


class AdditionalRequirements(WireModel):
    iot: dict[str, Any] | None = None
    attributes: list[Attribute] | None = None


class Requirements(WireModel):
    industries: list[Tag] | None = None
    products: list[Tag] | None = None
    services: list[Tag] | None = None
    solutions: list[SolutionTag] | None = None
    offers: list[Any] | None = None
    sales_plays: list[Any] | None = None
    additional_requirements: AdditionalRequirements | None = None


class ReferralDetails(WireModel):
    notes: str | None = None
    deal_value: int | float | None = None  # int stays int so a round trip changes nothing
    currency: str | None = Field(default=None, description="ISO 4217 code")
    closing_date_time: UtcDateTime = None
    customer_requested_contact: bool | None = None
    customer_action: str | None = None
    incentive_level: str | None = None
    requirements: Requirements | None = None


class InvitedBy(WireModel):
    organization_id: str | None = None
    organization_name: str | None = None


class InviteContext(WireModel):
    notes: str | None = None
    assistance_request_code: HelpCode | None = None
    invited_mpn_id: str | None = None
    invited_by: InvitedBy | None = None


class Target(WireModel):
    type: str | None = None
    id: str | None = None


class Link(WireModel):
    uri: str | None = None
    method: str | None = None


class ReferralLinks(WireModel):
    related_referrals: Link | None = None
    self_link: Link | None = Field(default=None, alias="self")


class TrackingInfo(WireModel):
    microsoft_msx_id: str | None = None
    microsoft_us_fed_opportunity_id: str | None = Field(
        default=None, alias="microsoftUSFedOpportunityId"
    )
    microsoft_us_fed_lead_id: str | None = Field(default=None, alias="microsoftUSFedLeadId")
    migrated_psc_deal_id: str | None = Field(default=None, alias="migratedPSCDealId")
    migrated_psc_partner_deal_id: str | None = Field(default=None, alias="migratedPSCPartnerDealId")


class Referral(WireModel):
    """A referral (reference §2.1). Read-only properties are ``None`` on a referral to create."""

    id: str | None = None
    engagement_id: str | None = None
    organization_id: str | None = None
    organization_name: str | None = None
    name: str | None = None
    external_reference_id: str | None = None
    created_date_time: UtcDateTime = None
    updated_date_time: UtcDateTime = None
    expiration_date_time: UtcDateTime = None
    accepted_date_time: UtcDateTime = None
    closed_date_time: UtcDateTime = None
    status: Status | None = None
    substatus: Substatus | None = None
    status_reason: str | None = None
    type: TypeOfReferral | None = None
    qualification: QualificationValue | None = None
    direction: Direction | None = None
    customer_profile: CustomerProfile | None = None
    consent: Consent | None = None
    details: ReferralDetails | None = None
    team: list[Member] | None = None
    invite_context: InviteContext | None = None
    target: list[Target] | None = None
    e_tag: str | None = Field(default=None, description="pass verbatim in If-Match (§2.1)")
    links: ReferralLinks | None = None
    sales_stage: str | None = None  # enum words or percent strings, UNCERTAIN (§2.1)
    campaign_id: str | None = None
    favorite: bool | None = None
    tracking_info: TrackingInfo | None = None
    registrations: list[dict[str, Any]] | None = None  # connector-only shape, UNCERTAIN (§2.5)
    registration_status: str | None = None
    mpn_id: str | None = None


class PatchOperation(WireModel):
    """One JSON Patch operation; Partner Center accepts only ``replace`` and ``add`` (§1.1),
    so clearing a field is a ``replace`` with ``None``."""

    model_config = ConfigDict(extra="forbid")

    op: Literal["replace", "add"]
    path: str
    value: Any = None

    @classmethod
    def replace(cls, path: str, value: Any) -> PatchOperation:
        return cls(op="replace", path=path, value=value)

    @classmethod
    def add(cls, path: str, value: Any) -> PatchOperation:
        return cls(op="add", path=path, value=value)

    def to_wire(self) -> dict[str, Any]:
        # `value` must be sent even when it is null (that is how a field is cleared).
        return self.model_dump(mode="json", by_alias=True)


def _upper_first(data: Any) -> Any:
    # The webhook API documents PascalCase keys but the connectors send camelCase (§4.1), so the
    # webhook models read either (UNCERTAIN which one the service echoes back).
    if isinstance(data, dict):
        return {(k[:1].upper() + k[1:] if isinstance(k, str) else k): v for k, v in data.items()}
    return data


def _lower_first(data: Any) -> Any:
    if isinstance(data, dict):
        return {(k[:1].lower() + k[1:] if isinstance(k, str) else k): v for k, v in data.items()}
    return data


class PascalWireModel(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _any_case(cls, data: Any) -> Any:
        return _upper_first(data)

    def to_wire(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class WebhookEvent(PascalWireModel):
    """The callback body of §4.3. It carries no referral data: always fetch the referral."""

    event_name: EventName = Field(alias="EventName")
    resource_uri: str | None = Field(default=None, alias="ResourceUri")
    resource_name: str | None = Field(default=None, alias="ResourceName")
    audit_uri: str | None = Field(default=None, alias="AuditUri")
    resource_change_utc_date: StrictUtcDateTime = Field(default=None, alias="ResourceChangeUtcDate")

    @property
    def resource_id(self) -> str | None:
        """The last path segment of ``ResourceUri`` (the referral id for referral events).

        The documented ResourceUri host differs from the API host (§4.3), so callers take only
        the id and call the configured API URL with it, never the URI itself (SPEC 8, no SSRF).
        """
        if not self.resource_uri:
            return None
        segment = self.resource_uri.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return segment or None


class WebhookRegistration(PascalWireModel):
    """The tenant's one webhook registration (§4.1)."""

    webhook_url: str | None = Field(default=None, alias="WebhookUrl")
    webhook_events: list[EventName] = Field(default_factory=list, alias="WebhookEvents")
    subscriber_id: str | None = Field(default=None, alias="SubscriberId")
    signature_token_to_ms_signature_header: bool | None = Field(
        default=None, alias="SignatureTokenToMsSignatureHeader"
    )


class CamelAnyCaseModel(WireModel):
    @model_validator(mode="before")
    @classmethod
    def _any_case(cls, data: Any) -> Any:
        return _lower_first(data)


class TestEvent(CamelAnyCaseModel):
    """Answer of ``POST /registration/validationEvents``: poll the result with its id."""

    __test__ = False  # not a pytest test class despite the name

    correlation_id: str


class TestEventDelivery(CamelAnyCaseModel):
    __test__ = False

    response_code: int | None = None
    response_message: str | None = None
    system_error: str | None = None
    date_time_utc: UtcDateTime = None


class TestEventResult(CamelAnyCaseModel):
    """Answer of ``GET /registration/validationEvents/{correlationId}`` (§4.1)."""

    __test__ = False

    correlation_id: str | None = None
    partner_id: str | None = None
    status: str | None = None
    callback_url: str | None = None
    results: list[TestEventDelivery] = Field(default_factory=list)

    @property
    def delivered(self) -> bool:
        """True when one delivery attempt got a 2xx from the receiver."""
        return any(
            r.response_code is not None and 200 <= r.response_code < 300 for r in self.results
        )
