"""``partner_center_webhook``: SPEC 8's rules, observed as HTTP answers and queue messages."""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import azure.functions as func
import certifi
import httpx
import pytest

import function_app
from sandbox.partner_center import SigningAuthority
from shared.partner_center import AZURE_ROOT_SHA256_BY_NAME, SignatureError, fingerprint
from shared.runtime import certificate_http_client, fetch_certificate
from shared.settings import get_settings
from shared.triggers.webhook import handle_webhook
from tests.partner_center.payloads import private_deal

from .conftest import EMULATOR, App

REFERRAL_ID = "5d3a2b10-7c4e-4f6a-9b8c-0123456789ab"
CHANGED_AT = "2026-11-27T10:00:39.5485487+00:00"
RECEIVER = "https://cosell.example.net/api/webhooks/partner-center"


def event(**fields: Any) -> dict[str, Any]:
    """A callback body as reference §4.3 shows it, with ``fields`` changed."""
    body: dict[str, Any] = {
        "EventName": "referral-updated",
        "ResourceUri": f"https://api.partnercenter.microsoft.com/engagements/v1/referrals/{REFERRAL_ID}",
        "ResourceName": "referral",
        "AuditUri": None,
        "ResourceChangeUtcDate": CHANGED_AT,
    }
    body.update(fields)
    return body


async def deliver(
    body: bytes | dict[str, Any], headers: Mapping[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    request = func.HttpRequest(
        method="POST",
        url="/api/webhooks/partner-center",
        headers=dict(headers or {"Content-Type": "application/json"}),
        body=raw,
    )
    response = await function_app.partner_center_webhook(request)
    assert response.mimetype == "application/json"
    return response.status_code, json.loads(response.get_body())


async def test_valid_event_is_accepted_and_enqueues_one_referral_job(app: App) -> None:
    status, answer = await deliver(event())

    assert status == 202
    assert answer == {"message": "accepted", "enqueued": True}
    [job] = await app.jobs()
    assert job.kind == "referral"
    assert str(job.id) == REFERRAL_ID
    assert job.reason == "webhook:referral-updated"
    assert job.observed_at == datetime(2026, 11, 27, 10, 0, 39, 548548, tzinfo=UTC)


async def test_webhook_never_calls_partner_center_and_answers_in_milliseconds(app: App) -> None:
    await deliver(event())  # the first call of a process creates the storage clients
    timings = []
    for n in range(10):
        started = time.perf_counter()
        status, _ = await deliver(event(ResourceChangeUtcDate=f"2026-11-27T10:00:{n:02d}Z"))
        timings.append(time.perf_counter() - started)
        assert status == 202

    assert statistics.median(timings) < 0.1  # one queue write; Azurite answers in ~ms
    async with app.control() as control:
        stats = (await control.get("/_emulator/stats")).json()
    assert set(stats["requests"]) == {"GET /_emulator/stats"}  # no API call, only ours


async def test_event_without_change_date_is_observed_now(app: App) -> None:
    before = datetime.now(UTC)

    status, _ = await deliver(
        event(ResourceChangeUtcDate=None, EventName="related-referral-created")
    )

    assert status == 202
    [job] = await app.jobs()
    assert job.reason == "webhook:related-referral-created"
    assert before <= job.observed_at <= datetime.now(UTC)


async def test_repeated_delivery_of_one_change_is_enqueued_once(app: App) -> None:
    answers = [await deliver(event()) for _ in range(3)]

    assert [status for status, _ in answers] == [202, 202, 202]
    assert [a["enqueued"] for _, a in answers] == [True, False, False]
    assert len(await app.jobs()) == 1


async def test_test_event_is_acknowledged_without_a_job(app: App) -> None:
    status, answer = await deliver(
        event(
            EventName="test-created",
            ResourceName="test",
            ResourceUri=f"{EMULATOR}/webhooks/v1/registration/validationEvents/{REFERRAL_ID}",
        )
    )

    assert (status, answer["enqueued"]) == (202, False)
    assert await app.jobs() == []


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"{not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (json.dumps(event(ResourceName="invoice")).encode(), "ResourceName must be 'referral'"),
        (
            json.dumps(event(ResourceUri="https://evil.example.net/referrals/42")).encode(),
            "GUID",
        ),
        (
            json.dumps(
                event(ResourceUri=f"https://x.example.net/referrals/{REFERRAL_ID}/x")
            ).encode(),
            "GUID",
        ),
        (json.dumps(event(EventName="referral-deleted")).encode(), "unknown EventName"),
        (json.dumps({k: v for k, v in event().items() if k != "EventName"}).encode(), "EventName"),
        (json.dumps(event(ResourceChangeUtcDate="yesterday")).encode(), "ResourceChangeUtcDate"),
    ],
    ids=[
        "bad-json",
        "array",
        "resource-name",
        "non-guid-id",
        "id-not-last",
        "unknown-event",
        "no-event-name",
        "bad-date",
    ],
)
async def test_bad_event_gets_400_with_the_reason_and_enqueues_nothing(
    app: App, body: bytes, says: str
) -> None:
    status, answer = await deliver(body)

    assert status == 400
    assert says in answer["message"]
    assert answer["enqueued"] is False
    assert await app.jobs() == []


async def test_body_over_64_kb_gets_413(app: App) -> None:
    body = json.dumps(event(AuditUri="x" * 65536)).encode()

    status, answer = await deliver(body)

    assert status == 413
    assert "65536 bytes" in answer["message"]
    assert await app.jobs() == []


async def test_body_of_exactly_64_kb_is_read(app: App) -> None:
    body = json.dumps(event(AuditUri="")).encode()
    body = json.dumps(event(AuditUri="x" * (65536 - len(body)))).encode()
    assert len(body) == 65536

    status, _ = await deliver(body)

    assert status == 202


# --- signature verification (WEBHOOK_SIGNATURE_MODE=verify) ---------------------------------


@pytest.fixture
def verify_mode(
    app_settings: None, monkeypatch: pytest.MonkeyPatch, signing: SigningAuthority
) -> None:
    monkeypatch.setenv("WEBHOOK_SIGNATURE_MODE", "verify")
    monkeypatch.setenv("WEBHOOK_CERT_HOST_ALLOWLIST", "127.0.0.1")
    # Only here, in the sandbox's settings, is the emulator's test CA trusted.
    monkeypatch.setenv("WEBHOOK_TRUSTED_ROOTS", signing.root_pem.decode())
    get_settings.cache_clear()


async def signed_delivery(app: App, deliveries: list[httpx.Request]) -> httpx.Request:
    """Register the webhook in the emulator, create a referral, return the signed callback."""
    pc = app.runtime.partner_center()
    await pc.register_webhook(RECEIVER)
    await pc.create_referral(private_deal())
    async with app.control() as control:
        await control.post("/_emulator/webhooks/idle")
    [delivery] = deliveries
    return delivery


async def test_verify_mode_accepts_an_emulator_signed_delivery(
    verify_mode: None, app: App, deliveries: list[httpx.Request]
) -> None:
    """Partner Center's webhook docs: only the leaf is linked; like Microsoft's sample verifier
    the app fetches its intermediate from the leaf's AIA caIssuers URL (reference §2), here the
    emulator's, allow-listed because the settings are the sandbox's."""
    delivery = await signed_delivery(app, deliveries)
    assert delivery.headers["x-ms-certificate-url"].startswith(f"{EMULATOR}/_emulator/")

    status, answer = await deliver(delivery.content, delivery.headers)

    assert (status, answer["enqueued"]) == (202, True)
    [job] = await app.jobs()
    assert job.reason == "webhook:referral-created"
    assert str(job.id) == json.loads(delivery.content)["ResourceUri"].rsplit("/", 1)[-1]


async def test_verify_mode_refuses_a_tampered_body_with_401(
    verify_mode: None, app: App, deliveries: list[httpx.Request]
) -> None:
    delivery = await signed_delivery(app, deliveries)
    tampered = delivery.content.replace(b"referral-created", b"referral-updated")

    status, answer = await deliver(tampered, delivery.headers)

    assert status == 401
    assert "signature" in answer["message"]
    assert await app.jobs() == []


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"x-ms-signature": None}, "signature header is missing"),
        ({"x-ms-certificate-url": "https://evil.example.net/cert.cer"}, "not on the allow-list"),
        ({"x-ms-certificate-url": "http://169.254.169.254/cert.cer"}, "must use https"),
        ({"x-ms-certificate-url": f"{EMULATOR}/_emulator/certificates/root.pem"}, "signature"),
        ({"x-ms-signature-algorithm": "rsa-sha1"}, "unsupported signature algorithm"),
    ],
    ids=["no-signature", "host-not-allowed", "metadata-url", "other-certificate", "algorithm"],
)
async def test_verify_mode_refuses_wrong_headers_with_401(
    verify_mode: None,
    app: App,
    deliveries: list[httpx.Request],
    change: dict[str, str | None],
    says: str,
) -> None:
    """Microsoft's sample verifier: a missing signature is a 401, as is a certificate that is
    not the signer's (reference §2); SPEC 8 adds the certificate host allow-list."""
    delivery = await signed_delivery(app, deliveries)
    headers = dict(delivery.headers)
    for name, value in change.items():
        headers.pop(name, None)
        if value is not None:
            headers[name] = value

    status, answer = await deliver(delivery.content, headers)

    assert status == 401
    assert says in answer["message"]
    assert await app.jobs() == []


@pytest.mark.parametrize("missing", ["x-ms-certificate-url", "x-ms-signature-algorithm"])
async def test_verify_mode_answers_400_without_certificate_url_or_algorithm(
    verify_mode: None, app: App, deliveries: list[httpx.Request], missing: str
) -> None:
    """Microsoft's sample verifier answers 400 when the certificate-URL or the algorithm header
    is missing (reference §2)."""
    delivery = await signed_delivery(app, deliveries)
    headers = {k: v for k, v in delivery.headers.items() if k.lower() != missing}

    status, answer = await deliver(delivery.content, headers)

    assert status == 400
    assert f"{missing} header is missing" in answer["message"]
    assert await app.jobs() == []


@pytest.fixture
def verify_with_other_root(app_settings: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SIGNATURE_MODE", "verify")
    monkeypatch.setenv("WEBHOOK_CERT_HOST_ALLOWLIST", "127.0.0.1")
    other_root = SigningAuthority.generate().root_pem.decode()
    monkeypatch.setenv("WEBHOOK_TRUSTED_ROOTS", other_root)
    get_settings.cache_clear()


@pytest.fixture
def verify_without_roots(app_settings: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_SIGNATURE_MODE", "verify")
    monkeypatch.setenv("WEBHOOK_CERT_HOST_ALLOWLIST", "127.0.0.1")
    get_settings.cache_clear()


async def test_verify_mode_refuses_a_certificate_from_an_untrusted_root(
    verify_with_other_root: None, app: App, deliveries: list[httpx.Request]
) -> None:
    delivery = await signed_delivery(app, deliveries)

    status, answer = await deliver(delivery.content, delivery.headers)

    assert status == 401
    assert "the signing certificate is not trusted" in answer["message"]
    assert await app.jobs() == []


async def test_verify_mode_without_trusted_roots_refuses_a_chain_to_another_root(
    verify_without_roots: None, app: App, deliveries: list[httpx.Request]
) -> None:
    """Without WEBHOOK_TRUSTED_ROOTS the default roots are Microsoft's and DigiCert's (the Azure
    CA details page, reference §2), so the emulator's test CA is refused with 401."""
    delivery = await signed_delivery(app, deliveries)

    status, answer = await deliver(delivery.content, delivery.headers)

    assert status == 401
    assert "the signing certificate is not trusted" in answer["message"]
    assert await app.jobs() == []
    assert {fingerprint(r) for r in app.runtime.webhook_verifier().trusted_roots} == set(
        AZURE_ROOT_SHA256_BY_NAME.values()
    )


@pytest.fixture
def certifi_with_test_root(
    signing: SigningAuthority, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """certifi's bundle and the fingerprint table, each with the emulator's test root added."""
    bundle = tmp_path / "cacert.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes() + signing.root_pem)
    monkeypatch.setattr(certifi, "where", lambda: str(bundle))
    monkeypatch.setitem(
        AZURE_ROOT_SHA256_BY_NAME, "emulator test root", fingerprint(signing.root_certificate)
    )


async def test_verify_mode_without_trusted_roots_verifies_against_roots_picked_from_certifi(
    verify_without_roots: None,
    certifi_with_test_root: None,
    app: App,
    deliveries: list[httpx.Request],
) -> None:
    """Partner Center's webhook docs: the leaf "chains to the Microsoft Root"; with no
    WEBHOOK_TRUSTED_ROOTS the app takes its roots from the Mozilla bundle by SHA-256 fingerprint
    (reference §2). No Microsoft-signed leaf exists in a test, so the bundle and the fingerprint
    table gain the emulator's test root, and the default path is what verifies the delivery
    (leaf → intermediate fetched from its AIA URL → root)."""
    delivery = await signed_delivery(app, deliveries)

    status, answer = await deliver(delivery.content, delivery.headers)

    assert (status, answer["enqueued"]) == (202, True)
    assert len(app.runtime.webhook_verifier().trusted_roots) == len(AZURE_ROOT_SHA256_BY_NAME)


async def test_certificate_download_larger_than_the_cap_is_refused() -> None:
    """Microsoft's sample verifier leaves the AIA download to the platform; ours caps what it
    reads (reference §2: a size cap), whatever the server claims."""
    endless = httpx.MockTransport(lambda request: httpx.Response(200, content=b"0" * 70_000))

    async with certificate_http_client(endless) as http:
        with pytest.raises(SignatureError, match="too large") as refused:
            await fetch_certificate(http, "http://caissuers.microsoft.com/pki/x.crt")
    assert refused.value.status == 401


async def test_a_change_date_that_is_a_number_is_refused(app: App) -> None:
    body = {
        "EventName": "referral-updated",
        "ResourceName": "referral",
        "ResourceUri": f"https://api.partnercenter.microsoft.com/v1/referrals/{uuid.uuid4()}",
        "ResourceChangeUtcDate": 5,
    }

    answer = await handle_webhook(json.dumps(body).encode(), {})

    assert answer.status == 400
    assert await app.jobs() == []


async def test_a_small_body_nested_thousands_deep_gets_400_not_500(app: App) -> None:
    """Issue 13, class 9: a 10 KB body nested 5,000 deep made the JSON parser's RecursionError
    escape as a 500; any untrusted body must get a 2xx or 4xx answer."""
    deep = b"[" * 5000 + b"]" * 5000

    status, answer = await deliver(deep)

    assert status == 400
    assert "nested too deeply" in answer["message"]
