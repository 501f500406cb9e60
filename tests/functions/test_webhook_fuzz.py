"""Generated bodies and headers thrown at ``partner_center_webhook`` (SPEC 11's fuzz target):
every answer is 2xx or 4xx, and a queue message appears exactly when a valid event was accepted.

Bodies come in three families so that the expected answer is known by construction: valid
events (varied ids, events, key case, dates, extra fields), valid events with one thing broken,
and arbitrary bytes or JSON.
"""

from __future__ import annotations

import json
import os
import string
import uuid
from datetime import UTC
from typing import Any

import azure.functions as func
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import function_app
from shared.settings import get_settings

from .conftest import App

KNOWN_EVENTS = (
    "referral-created",
    "referral-updated",
    "related-referral-created",
    "related-referral-updated",
)
# `make test` throws 1,000 bodies (about 20 s); `make fuzz` the 10,000 of SPEC 11.
EXAMPLES = int(os.environ.get("COSELL_FUZZ_EXAMPLES", "1000"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    # The app fixture (runtime, emptied queues) is shared by the examples on purpose.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_texts = st.text(string.printable, max_size=40)


@st.composite
def valid_events(draw: st.DrawFn) -> dict[str, Any]:
    referral_id = draw(st.uuids())
    shown_id = str(referral_id).upper() if draw(st.booleans()) else str(referral_id)
    host = draw(st.sampled_from(["api.partnercenter.microsoft.com", "127.0.0.1:1", "x.test"]))
    body: dict[str, Any] = {
        "EventName": draw(st.sampled_from(KNOWN_EVENTS)),
        "ResourceUri": f"https://{host}/engagements/v1/referrals/{shown_id}",
        "ResourceName": draw(st.sampled_from(["referral", "Referral", "REFERRAL"])),
    }
    if draw(st.booleans()):
        body["AuditUri"] = draw(st.none() | _texts)
    if draw(st.booleans()):
        moment = draw(st.datetimes(timezones=st.just(UTC)))
        body["ResourceChangeUtcDate"] = moment.isoformat()
    if draw(st.booleans()):  # the connectors' camelCase is read too (reference §4.1)
        body = {k[:1].lower() + k[1:]: v for k, v in body.items()}
    return body


def _not_guid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return True
    return False


@st.composite
def broken_events(draw: st.DrawFn) -> dict[str, Any]:
    body = draw(valid_events())
    key = {k.lower(): k for k in body}
    flaw = draw(st.sampled_from(["name", "event", "id", "missing-event", "types"]))
    if flaw == "name":
        body[key["resourcename"]] = draw(_texts.filter(lambda t: t.lower() != "referral"))
    elif flaw == "event":
        known = {*KNOWN_EVENTS, "test-created"}
        body[key["eventname"]] = draw(_texts.filter(lambda t: t.lower() not in known))
    elif flaw == "id":
        last = draw(
            st.text(string.ascii_letters + string.digits + "-", max_size=40).filter(_not_guid)
        )
        body[key["resourceuri"]] = f"https://x.test/referrals/{last}"
    elif flaw == "missing-event":
        del body[key["eventname"]]
    else:
        body[key["resourceuri"]] = draw(st.integers() | st.lists(st.integers(), max_size=2))
    return body


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_texts, inner, max_size=4),
    max_leaves=12,
)

bodies = st.one_of(
    valid_events().map(lambda b: ("valid", json.dumps(b).encode())),
    broken_events().map(lambda b: ("broken", json.dumps(b).encode())),
    _json.map(lambda v: ("any", json.dumps(v).encode())),
    st.binary(max_size=300).map(lambda b: ("any", b)),
    st.just(("any", b"{" * 70_000)),
    # Nested deeper than a JSON parser recurses, in a body far below the size cap.
    st.integers(1_000, 6_000).map(lambda depth: ("any", b"[" * depth + b"]" * depth)),
    st.integers(1_000, 6_000).map(
        lambda depth: ("any", b'{"EventName": ' + b'{"a": ' * depth + b"1" + b"}" * depth + b"}")
    ),
)
headers = st.dictionaries(
    st.sampled_from(
        [
            "Content-Type",
            "x-ms-signature",
            "x-ms-certificate-url",
            "x-ms-signature-algorithm",
            "Authorization",
            "X-Other",
        ]
    ),
    _texts,
    max_size=5,
)


async def _call(body: bytes, sent_headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    request = func.HttpRequest(
        method="POST", url="/api/webhooks/partner-center", headers=sent_headers, body=body
    )
    response = await function_app.partner_center_webhook(request)
    return response.status_code, json.loads(response.get_body())


@pytest.fixture
def queued() -> list[int]:
    """Messages the answers so far said they enqueued (the examples share one queue)."""
    return [0]


@FUZZ
@given(case=bodies, sent_headers=headers)
async def test_every_body_gets_2xx_or_4xx_and_only_valid_events_enqueue(
    app: App, queued: list[int], case: tuple[str, bytes], sent_headers: dict[str, str]
) -> None:
    family, body = case

    status, answer = await _call(body, sent_headers)

    assert 200 <= status < 300 or 400 <= status < 500, (status, answer)
    assert answer["enqueued"] is (status == 202 and answer["message"] == "accepted")
    queued[0] += answer["enqueued"]
    assert await app.runtime.jobs.get_depth() == queued[0]
    if family == "valid":
        assert status == 202
        assert answer["enqueued"] or answer["message"].startswith("duplicate")
    elif family == "broken":
        assert status == 400


@pytest.fixture
def verify_mode(app_settings: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SIGNATURE_MODE", "verify")
    monkeypatch.setenv("WEBHOOK_CERT_HOST_ALLOWLIST", "127.0.0.1")
    monkeypatch.setenv("WEBHOOK_TRUSTED_ROOTS", _a_root())
    get_settings.cache_clear()


def _a_root() -> str:
    from sandbox.partner_center import SigningAuthority

    return SigningAuthority.generate(key_size=1024).root_pem.decode()  # never chains: fast


@settings(FUZZ, max_examples=100)
@given(case=bodies, sent_headers=headers)
async def test_in_verify_mode_unsigned_bodies_are_refused_and_enqueue_nothing(
    verify_mode: None, app: App, case: tuple[str, bytes], sent_headers: dict[str, str]
) -> None:
    _, body = case

    status, answer = await _call(body, sent_headers)

    # 400: a signature without the certificate-URL or algorithm header (Microsoft's sample
    # verifier answers so, reference dataverse-push-and-webhook-trust §2); 401 for the rest.
    assert status in (400, 401, 413), answer
    if status == 400:
        assert "header is missing" in answer["message"], answer
    assert await app.runtime.jobs.get_depth() == 0
