"""Partner Center: the async client, its models, auth and errors, and webhook signature checks.

async with PartnerCenterClient.from_settings(settings) as pc:
    referral = await pc.get_referral(referral_id)
    await pc.patch_referral(referral_id, [PatchOperation.replace("/name", "x")],
                            etag=referral.e_tag)
"""

from ._auth import (
    REFERRALS_RESOURCE,
    WEBHOOKS_RESOURCE,
    RefreshTokenProvider,
    StaticTokenProvider,
    TokenProvider,
)
from ._client import DEFAULT_API_URL, DEFAULT_WEBHOOK_API_URL, PartnerCenterClient
from ._exceptions import (
    NotFound,
    PartnerCenterAuthError,
    PartnerCenterError,
    PreconditionFailed,
    RefreshTokenRejected,
    Throttled,
)
from ._models import (
    Address,
    AssistanceRequestCode,
    Consent,
    CustomerProfile,
    InviteContext,
    Member,
    PatchOperation,
    Qualification,
    Referral,
    ReferralDetails,
    ReferralDirection,
    ReferralStatus,
    ReferralSubstatus,
    ReferralType,
    Requirements,
    SolutionTag,
    Target,
    TestEvent,
    TestEventResult,
    TrackingInfo,
    WebhookEvent,
    WebhookEventName,
    WebhookRegistration,
)

__all__ = [
    "DEFAULT_API_URL",
    "DEFAULT_WEBHOOK_API_URL",
    "REFERRALS_RESOURCE",
    "WEBHOOKS_RESOURCE",
    "Address",
    "AssistanceRequestCode",
    "Consent",
    "CustomerProfile",
    "InviteContext",
    "Member",
    "NotFound",
    "PartnerCenterAuthError",
    "PartnerCenterClient",
    "PartnerCenterError",
    "PatchOperation",
    "PreconditionFailed",
    "Qualification",
    "Referral",
    "ReferralDetails",
    "ReferralDirection",
    "ReferralStatus",
    "ReferralSubstatus",
    "ReferralType",
    "RefreshTokenProvider",
    "RefreshTokenRejected",
    "Requirements",
    "SolutionTag",
    "StaticTokenProvider",
    "Target",
    "TestEvent",
    "TestEventResult",
    "Throttled",
    "TokenProvider",
    "TrackingInfo",
    "WebhookEvent",
    "WebhookEventName",
    "WebhookRegistration",
]
