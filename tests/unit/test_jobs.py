"""The sync-jobs message model and its decoder."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from shared.errors import JobDecodeError
from shared.jobs import SyncJob, decode_job

GUID = "6f1f8a5e-3d4c-4b2a-9e8f-0a1b2c3d4e5f"


def test_job_round_trips_through_its_wire_form() -> None:
    job = SyncJob.now("referral", GUID, reason="webhook:referral-updated")

    assert decode_job(job.to_json()) == job
    assert decode_job(job.to_json().encode()) == job


def test_wire_form_is_the_spec_shape() -> None:
    job = SyncJob(
        kind="opportunity",
        id=uuid.UUID(GUID),
        reason="poll",
        observed_at=datetime(2026, 11, 27, 10, 0, tzinfo=UTC),
    )

    assert json.loads(job.to_json()) == {
        "kind": "opportunity",
        "id": GUID,
        "reason": "poll",
        "observed_at": "2026-11-27T10:00:00Z",
    }


def test_guid_in_braces_and_upper_case_is_accepted() -> None:
    body = json.dumps(
        {
            "kind": "referral",
            "id": "{" + GUID.upper() + "}",
            "reason": "manual",
            "observed_at": "2026-11-27T10:00:00+01:00",
        }
    )

    job = decode_job(body)

    assert str(job.id) == GUID
    assert job.observed_at == datetime(2026, 11, 27, 9, 0, tzinfo=UTC)
    assert job.observed_at.utcoffset() == timedelta(0)


def body(**changes: object) -> str:
    message: dict[str, object] = {
        "kind": "referral",
        "id": GUID,
        "reason": "poll",
        "observed_at": "2026-11-27T10:00:00Z",
    }
    message.update(changes)
    return json.dumps({k: v for k, v in message.items() if v is not None})


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "not UTF-8"),
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON list, expected an object"),
        (body(kind="lead"), "kind: Input should be 'referral' or 'opportunity'"),
        (body(id="../../etc"), "id:"),
        (body(reason="because"), "reason: expected poll, reconcile"),
        (body(observed_at="2026-11-27T10:00:00"), "observed_at: must carry a time zone"),
        (body(observed_at=None), "observed_at: Field required"),
        (body(extra=1), "extra: Extra inputs are not permitted"),
        ("x" * 60_000, "more than"),
    ],
)
def test_malformed_message_gives_typed_error_with_reason(body: str | bytes, reason: str) -> None:
    with pytest.raises(JobDecodeError) as caught:
        decode_job(body)

    assert reason in caught.value.reason
    assert str(caught.value).startswith("malformed sync job: ")


def test_naive_observed_at_is_refused_when_building_a_job() -> None:
    with pytest.raises(ValueError, match="time zone"):
        SyncJob(
            kind="referral", id=uuid.UUID(GUID), reason="poll", observed_at=datetime(2026, 1, 1)
        )


def test_non_utc_offset_is_normalised_to_utc() -> None:
    job = SyncJob(
        kind="referral",
        id=uuid.UUID(GUID),
        reason="reconcile",
        observed_at=datetime(2026, 1, 1, 12, tzinfo=timezone(timedelta(hours=-5))),
    )

    assert job.to_json().endswith('"observed_at":"2026-01-01T17:00:00Z"}')


def test_a_reason_is_its_source_and_event_not_a_prefix_to_parse() -> None:
    job = SyncJob.now("referral", GUID, reason="webhook:related-referral-updated")

    assert (job.reason.source, job.reason.event) == ("webhook", "related-referral-updated")
    assert job.reason.related_event and not job.reason.sweep
    assert json.loads(job.to_json())["reason"] == "webhook:related-referral-updated"
    assert SyncJob.now("referral", GUID, reason="backfill").reason.sweep


@pytest.mark.parametrize("reason", ["webhook", "poll:referral-updated", "webhook:Referral", ""])
def test_a_reason_needs_an_event_exactly_for_webhooks(reason: str) -> None:
    with pytest.raises(JobDecodeError, match="reason: expected poll, reconcile"):
        decode_job(
            json.dumps(
                {
                    "kind": "referral",
                    "id": GUID,
                    "reason": reason,
                    "observed_at": "2026-11-27T10:00:00Z",
                }
            )
        )
