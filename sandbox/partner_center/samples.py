"""Sample referral bodies for the demo, tests and benchmarks (fictitious names, example.com)."""

from __future__ import annotations

from typing import Any


def cosell_referral_from_microsoft(**fields: Any) -> dict[str, Any]:
    """A co-sell referral Microsoft sends the partner (shared, help asked, with a customer
    contact and a solution), for ``POST /_emulator/microsoft/referrals``; ``fields`` override
    top-level properties."""
    body: dict[str, Any] = {
        "name": "Contoso - Azure migration",
        "type": "Shared",
        "qualification": "SalesQualified",
        "customerProfile": {
            "name": "Contoso Ltd",
            "address": {
                "addressLine1": "1 Example Way",
                "city": "Berlin",
                "postalCode": "10115",
                "country": "DE",
            },
            "team": [
                {
                    "firstName": "Ana",
                    "lastName": "Example",
                    "email": "ana@example.com",
                    "phoneNumber": "+10000000001",
                }
            ],
        },
        "consent": {
            "consentToToShareInfoWithOthers": True,
            "consentToContact": True,
            "consentToShareReferralWithMicrosoftSellers": True,
        },
        "details": {
            "notes": "Customer wants to move 40 VMs.",
            "dealValue": 120000,
            "currency": "EUR",
            "closingDateTime": "2027-03-31T00:00:00Z",
            "requirements": {"solutions": [{"type": "Name", "id": "SOL-12345-ABC"}]},
        },
        "inviteContext": {"assistanceRequestCode": "CustomerTechnicalArchitecture"},
    }
    body.update(fields)
    return body


def contract_properties(**fields: Any) -> dict[str, Any]:
    """Every property the connector's Referral contract adds to the reference's doc tables, with
    a non-empty value of the contract's type (microsoft/PowerPlatformConnectors,
    certified-connectors/PartnerCenterReferrals/apiDefinition.swagger.json; reference
    dataverse-push-and-webhook-trust.md §3), for a referral Microsoft sends. The values are
    plausible, not documented (UNCERTAIN); ``registrations`` follows the contract's
    Registration shape (reference §2.5). ``fields`` override them."""
    body: dict[str, Any] = {
        "referralProgram": "MicrosoftCoSell",
        "registrationStatus": "ReviewPending",
        "quality": "High",
        "isSpam": False,
        # The contract's `tags` items are typed string yet declare a `tag` property: the
        # object form is the stricter test of a client's tolerance.
        "tags": [{"tag": "AzureMigration"}, {"tag": "FY27"}],
        "mpnId": "6100001",
        "salesStage": "Develop",
        "callToAction": "ContactMe",
        "referralSource": "MicrosoftSeller",
        "lastModifiedVia": "Microsoft",
        "lastRunId": "0f4c3a52-0000-4000-8000-00000000a11d",
        "favorite": True,
        "campaignId": "CAMPAIGN-2027-01",
        "trackingInfo": {"microsoftMsxId": "7-ABCDEFGH1"},
        "closedDateTime": None,
        "registrations": [
            {
                "id": "0f4c3a52-0000-4000-8000-00000000b0b0",
                "type": "AzureIPCoSell",
                "registrationDateTime": "2027-01-15T10:00:00Z",
                "status": "ReviewPending",
                "statusReason": None,
                "contract": {
                    "value": 120000.0,
                    "currency": "EUR",
                    "startDateTime": "2027-02-01T00:00:00Z",
                    "endDateTime": "2028-01-31T00:00:00Z",
                    "signDateTime": "2027-01-20T00:00:00Z",
                    "term": "Finite",
                },
                "solutionDetails": [
                    {
                        "id": "SOL-12345-ABC",
                        "name": "Contoso Migration Factory",
                        "value": 120000.0,
                        "isDeployedOnAzure": True,
                        "primaryDeploymentOn": "Customer",
                        "pricingModel": "PayAsYouGo",
                        "marketplaceTransactionDetails": {
                            "isMarketplaceTransacted": False,
                            "marketplaceTransactionDateTime": None,
                        },
                    }
                ],
                "statusHistory": {"reviewPendingDateTime": "2027-01-15T10:00:00Z"},
            }
        ],
    }
    body.update(fields)
    return body
