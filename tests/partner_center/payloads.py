"""Referral bodies built from the reference's examples (§7), with fictitious names and
example.com addresses only."""

from __future__ import annotations

import copy
from typing import Any

# Reference §7.1, "Create a private deal".
PRIVATE_DEAL: dict[str, Any] = {
    "name": "Fabrikam - data platform modernization",
    "externalReferenceId": "6b0f2c3e-0000-4000-8000-000000000001",
    "type": "Independent",
    "qualification": "SalesQualified",
    "customerProfile": {
        "name": "Fabrikam Ltd",
        "address": {
            "addressLine1": "1 Main St",
            "city": "Berlin",
            "postalCode": "10115",
            "country": "DE",
        },
        "size": "51to250employees",
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
        "consentToShareReferralWithMicrosoftSellers": False,
    },
    "details": {
        "notes": "Migrating on-prem SQL to Azure.",
        "dealValue": 120000,
        "currency": "EUR",
        "closingDateTime": "2025-12-31T00:00:00Z",
        "requirements": {
            "solutions": [{"type": "Name", "id": "SOL-12345-ABC"}],
            "additionalRequirements": {
                "attributes": [{"type": "CustomerMarketplaceIntent", "id": "HaveNotDecided"}]
            },
        },
    },
    "team": [
        {
            "firstName": "Jo",
            "lastName": "Seller",
            "email": "jo@example.com",
            "phoneNumber": "+10000000002",
        }
    ],
    "target": [],
}


def private_deal(**changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(PRIVATE_DEAL)
    body.update(changes)
    return body


def cosell_deal(**changes: Any) -> dict[str, Any]:
    """Reference §7.2 in one call: shared, visible, Microsoft asked for help."""
    body = private_deal(type="Shared", **changes)
    body["consent"]["consentToShareReferralWithMicrosoftSellers"] = True
    body["target"] = [{"type": "SolutionProfile", "id": "SOL-12345-ABC"}]
    body["inviteContext"] = {
        "notes": "Need an Azure architect for a PoC.",
        "assistanceRequestCode": "CustomerTechnicalArchitecture",
    }
    return body


def incoming_referral(**changes: Any) -> dict[str, Any]:
    """A lead Microsoft sends the partner (through the emulator's control API)."""
    body = private_deal(name="Contoso - incoming lead", **changes)
    body.pop("externalReferenceId")
    body["team"] = []
    return body
