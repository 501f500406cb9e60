"""Payload models: wire names, tolerance for what the service may add or leave blank."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from shared.partner_center import (
    AssistanceRequestCode,
    PatchOperation,
    Referral,
    ReferralStatus,
    WebhookEvent,
    WebhookRegistration,
)

from .payloads import cosell_deal


def test_reference_example_round_trips_unchanged() -> None:
    body = cosell_deal()
    referral = Referral.model_validate(body)
    assert referral.invite_context is not None
    assert referral.invite_context.assistance_request_code is (
        AssistanceRequestCode.CUSTOMER_TECHNICAL_ARCHITECTURE
    )
    assert referral.to_wire() == body


def test_enum_spelling_is_read_case_insensitively_and_written_as_documented() -> None:
    referral = Referral.model_validate({"status": "active", "type": "shared"})
    assert referral.status is ReferralStatus.ACTIVE
    assert referral.to_wire() == {"status": "Active", "type": "Shared"}


def test_blank_and_offset_free_dates_are_tolerated_as_utc() -> None:
    referral = Referral.model_validate(
        {"closedDateTime": "", "createdDateTime": "2025-01-02T03:04:05"}
    )
    assert referral.closed_date_time is None
    assert referral.created_date_time == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_patch_operations_are_only_replace_and_add() -> None:
    assert PatchOperation.replace("/details/notes", None).to_wire() == {
        "op": "replace",
        "path": "/details/notes",
        "value": None,
    }
    with pytest.raises(ValidationError):
        PatchOperation.model_validate({"op": "remove", "path": "/name"})


def test_webhook_payloads_are_read_in_either_key_case() -> None:
    event = WebhookEvent.model_validate(
        {
            "eventName": "referral-updated",
            "resourceUri": "https://api.partnercenter.microsoft.com/engagements/v1/referrals/abc",
            "resourceName": "referral",
            "resourceChangeUtcDate": "2018-02-17T00:05:39.5485487+00:00",
        }
    )
    registration = WebhookRegistration.model_validate(
        {"webhookUrl": "https://x.example.com/hook", "webhookEvents": ["referral-created"]}
    )
    assert event.resource_id == "abc"
    assert registration.webhook_url == "https://x.example.com/hook"
