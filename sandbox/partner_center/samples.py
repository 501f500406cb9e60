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
