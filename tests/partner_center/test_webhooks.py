"""Webhook registration, signed delivery with retries, and signature verification (§4)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from sandbox.partner_center import DEFAULT_TOKEN, SigningAuthority, create_app
from shared.partner_center import (
    ISSUER_LOCATIONS,
    PartnerCenterClient,
    PartnerCenterError,
    SignatureError,
    StaticTokenProvider,
    Throttled,
    WebhookEventError,
    WebhookEventName,
    WebhookSignatureVerifier,
    parse_webhook_event,
)
from shared.retry import RetryPolicy

from .conftest import API_URL, AUTH, BASE, WEBHOOK_API_URL, RecordedSleeps
from .payloads import cosell_deal, private_deal

RECEIVER_URL = "https://receiver.test/api/webhooks/partner-center"


@dataclass
class Receiver:
    """A stand-in for the app's webhook function: records what arrives, answers ``status``."""

    status: int = 200
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def app(self) -> Starlette:
        async def receive(request: Request) -> Response:
            self.calls.append((dict(request.headers), await request.body()))
            return Response(status_code=self.status)

        return Starlette(routes=[Route("/{path:path}", receive, methods=["POST"])])

    def events(self) -> list[dict[str, object]]:
        return [json.loads(body) for _, body in self.calls]


@dataclass
class Hooked:
    app: Starlette
    receiver: Receiver
    client: PartnerCenterClient
    http: httpx.AsyncClient
    delivery_sleeps: RecordedSleeps

    async def idle(self) -> dict[str, int]:
        stats: dict[str, int] = (await self.http.post("/_emulator/webhooks/idle")).json()
        return stats


@pytest.fixture
async def hooked(signing: SigningAuthority, sleeps: RecordedSleeps) -> AsyncIterator[Hooked]:
    async with _hooked_with(signing, sleeps) as hooked:
        yield hooked


@asynccontextmanager
async def _hooked_with(signing: SigningAuthority, sleeps: RecordedSleeps) -> AsyncIterator[Hooked]:
    receiver = Receiver()
    delivery_sleeps = RecordedSleeps()
    app = create_app(
        signing=signing,
        webhook_transport=httpx.ASGITransport(app=receiver.app()),
        webhook_sleep=delivery_sleeps,
    )
    transport = httpx.ASGITransport(app=app)
    async with (
        PartnerCenterClient(
            token_provider=StaticTokenProvider(DEFAULT_TOKEN),
            api_url=API_URL,
            webhook_api_url=WEBHOOK_API_URL,
            transport=transport,
            retry_policy=RetryPolicy(sleep=sleeps),
        ) as client,
        httpx.AsyncClient(transport=transport, base_url=BASE, headers=AUTH) as http,
    ):
        yield Hooked(app, receiver, client, http, delivery_sleeps)


EMULATOR_PKI = "pc.test/_emulator/pki/"


def _verifier(
    hooked: Hooked,
    signing: SigningAuthority,
    *,
    fetched: list[str] | None = None,
    **options: object,
) -> WebhookSignatureVerifier:
    async def fetch(url: str) -> bytes:
        if fetched is not None:
            fetched.append(url)
        response = await hooked.http.get(url)
        response.raise_for_status()
        return response.content

    # The emulator's test root stands where the default Microsoft roots stand in Azure: it is
    # injected exactly as WEBHOOK_TRUSTED_ROOTS is.
    settings: dict[str, object] = {
        "trusted_roots": [signing.root_pem],
        "allowed_hosts": ["pc.test"],
        "fetch_certificate": fetch,
        "issuer_locations": [EMULATOR_PKI],
    }
    settings.update(options)
    return WebhookSignatureVerifier(**settings)  # type: ignore[arg-type]


async def _one_delivery(hooked: Hooked, **registration: bool) -> tuple[dict[str, str], bytes]:
    await hooked.client.register_webhook(RECEIVER_URL, **registration)
    await hooked.client.create_referral(private_deal())
    await hooked.idle()
    [(headers, body)] = hooked.receiver.calls
    return headers, body


async def test_event_delivered_to_receiver_verifies_through_the_fetched_intermediate(
    hooked: Hooked, signing: SigningAuthority
) -> None:
    """Partner Center's webhook docs: the event is signed with a certificate that chains to the
    Microsoft Root and only that leaf is linked (``x-ms-certificate-url``); Microsoft's sample
    verifier builds the chain through the leaf's AIA caIssuers URL (reference §2)."""
    await hooked.client.register_webhook(RECEIVER_URL)
    created = await hooked.client.create_referral(private_deal())

    stats = await hooked.idle()

    assert stats["delivered"] == 1
    [(headers, body)] = hooked.receiver.calls
    event = parse_webhook_event(body)
    assert event.event_name is WebhookEventName.REFERRAL_CREATED
    assert event.resource_id == created.id
    assert headers["x-ms-signature"].startswith("Signature ")
    assert headers["x-ms-signature-algorithm"] == "rsa-sha256"
    assert headers["x-ms-certificate-url"].startswith("https://pc.test/")
    fetched: list[str] = []
    chain = await _verifier(hooked, signing, fetched=fetched).verify(body, headers)

    assert fetched == [headers["x-ms-certificate-url"], f"https://{EMULATOR_PKI}intermediate.cer"]
    assert [c.subject for c in chain] == [
        chain[0].subject,
        signing.intermediate_certificate.subject,
        signing.root_certificate.subject,
    ]


async def test_certificates_are_cached_between_deliveries(
    hooked: Hooked, signing: SigningAuthority
) -> None:
    """Microsoft's sample verifier downloads the certificate for each callback; we cache the
    leaf and its intermediate per URL (reference §2: "cached") and re-validate every time."""
    headers, body = await _one_delivery(hooked)
    fetched: list[str] = []
    verifier = _verifier(hooked, signing, fetched=fetched)

    await verifier.verify(body, headers)
    await verifier.verify(body, headers)

    assert len(fetched) == 2  # leaf and intermediate, once each


async def test_event_with_one_changed_byte_fails_verification(
    hooked: Hooked, signing: SigningAuthority
) -> None:
    """Microsoft's sample verifier RSA-verifies the body; Power Automate's co-sell flow skips
    that check, ours must not (reference §2)."""
    headers, body = await _one_delivery(hooked)
    tampered = bytearray(body)
    tampered[body.index(b"referral-created")] ^= 0x01

    with pytest.raises(SignatureError, match="does not match") as refused:
        await _verifier(hooked, signing).verify(bytes(tampered), headers)
    assert refused.value.status == 401


async def test_signature_goes_to_authorization_unless_header_requested(
    hooked: Hooked, signing: SigningAuthority
) -> None:
    """Partner Center's webhook docs: SignatureTokenToMsSignatureHeader moves the signature from
    Authorization to x-ms-signature (§4.3)."""
    headers, body = await _one_delivery(hooked, signature_in_header=False)

    assert "x-ms-signature" not in headers
    assert headers["authorization"].startswith("Signature ")
    await _verifier(hooked, signing).verify(body, headers)


async def test_certificate_from_unlisted_host_or_untrusted_root_is_refused(
    hooked: Hooked, signing: SigningAuthority
) -> None:
    """Microsoft's sample verifier refuses a certificate that does not chain to a trusted root
    (reference §2); we also refuse certificate hosts off the allow-list (SPEC 8)."""
    headers, body = await _one_delivery(hooked)
    stranger = SigningAuthority.generate(key_size=1024)  # only its root is used

    with pytest.raises(SignatureError, match="allow-list"):
        await _verifier(hooked, signing, allowed_hosts=["microsoft.com"]).verify(body, headers)
    with pytest.raises(SignatureError, match="not trusted"):
        await _verifier(hooked, signing, trusted_roots=[stranger.root_pem]).verify(body, headers)


async def test_issuer_other_than_microsoft_corporation_is_refused(
    signing: SigningAuthority, sleeps: RecordedSleeps
) -> None:
    """Microsoft's sample verifier checks that the leaf's issuer contains
    O=Microsoft Corporation (reference §2)."""
    impostor = SigningAuthority.generate(issuer_organization="Contoso Ltd")
    async with _hooked_with(impostor, sleeps) as hooked:
        headers, body = await _one_delivery(hooked)

        with pytest.raises(SignatureError, match="O=Microsoft Corporation") as refused:
            await _verifier(hooked, impostor).verify(body, headers)
    assert refused.value.status == 401


async def test_expired_signing_certificate_is_refused(sleeps: RecordedSleeps) -> None:
    """Microsoft's sample verifier lets the platform's chain build judge validity dates
    (reference §2): an expired leaf does not verify, even with a good signature."""
    expired = SigningAuthority.generate(leaf_validity=(timedelta(days=-2), timedelta(days=-1)))
    async with _hooked_with(expired, sleeps) as hooked:
        headers, body = await _one_delivery(hooked)

        with pytest.raises(SignatureError, match="not valid at validation time"):
            await _verifier(hooked, expired).verify(body, headers)


async def test_intermediate_from_a_host_off_the_pki_allow_list_is_refused(
    hooked: Hooked, signing: SigningAuthority
) -> None:
    """Intermediates come from the leaf's AIA caIssuers URL as in Microsoft's sample verifier,
    but only from Microsoft's and DigiCert's PKI locations (reference §2); the emulator's own
    location is allow-listed only where a test or the sandbox adds it."""
    headers, body = await _one_delivery(hooked)
    fetched: list[str] = []

    with pytest.raises(SignatureError, match="not allow-listed") as refused:
        await _verifier(hooked, signing, fetched=fetched, issuer_locations=ISSUER_LOCATIONS).verify(
            body, headers
        )
    assert refused.value.status == 401
    assert fetched == [headers["x-ms-certificate-url"]]  # the intermediate was never fetched


async def test_oversize_or_slow_intermediate_download_is_refused(
    hooked: Hooked, signing: SigningAuthority
) -> None:
    """The AIA fetch Microsoft's sample verifier leaves to the platform is bounded here: a size
    cap and a timeout (reference §2)."""
    headers, body = await _one_delivery(hooked)
    leaf_url = headers["x-ms-certificate-url"]

    async def huge(url: str) -> bytes:
        return (await hooked.http.get(url)).content if url == leaf_url else b"\0" * 70_000

    async def stalled(url: str) -> bytes:
        if url != leaf_url:
            await asyncio.sleep(10)
        return (await hooked.http.get(url)).content

    with pytest.raises(SignatureError, match="too large"):
        await _verifier(hooked, signing, fetch_certificate=huge).verify(body, headers)
    with pytest.raises(SignatureError, match="did not arrive"):
        await _verifier(hooked, signing, fetch_certificate=stalled, fetch_timeout_s=0.05).verify(
            body, headers
        )


async def test_leaf_signed_by_another_issuer_does_not_chain(
    signing: SigningAuthority, sleeps: RecordedSleeps
) -> None:
    """A leaf whose fetched issuer did not sign it must not verify: the platform chain build of
    Microsoft's sample verifier checks each signature up the chain (reference §2)."""
    stranger = SigningAuthority.generate()
    async with _hooked_with(stranger, sleeps) as hooked:
        headers, body = await _one_delivery(hooked)

        with pytest.raises(SignatureError, match="not trusted"):
            await _verifier(hooked, signing).verify(body, headers)


@pytest.mark.parametrize(
    ("missing", "status"),
    [("x-ms-certificate-url", 400), ("x-ms-signature-algorithm", 400), ("x-ms-signature", 401)],
)
async def test_missing_headers_are_refused_as_microsofts_sample_does(
    hooked: Hooked, signing: SigningAuthority, missing: str, status: int
) -> None:
    """Microsoft's sample verifier: missing signature → 401; missing certificate URL or
    algorithm header → 400 (reference §2)."""
    headers, body = await _one_delivery(hooked)
    del headers[missing]

    with pytest.raises(SignatureError, match="missing") as refused:
        await _verifier(hooked, signing).verify(body, headers)
    assert refused.value.status == status


async def test_failing_receiver_gets_ten_attempts_with_backoff(hooked: Hooked) -> None:
    hooked.receiver.status = 500
    await hooked.client.register_webhook(RECEIVER_URL)
    await hooked.client.create_referral(private_deal())

    stats = await hooked.idle()

    assert len(hooked.receiver.calls) == 10
    assert (stats["attempts"], stats["delivered"], stats["failed"]) == (10, 0, 1)
    assert len(hooked.delivery_sleeps.delays) == 9
    assert hooked.delivery_sleeps.delays[-1] > hooked.delivery_sleeps.delays[0]


async def test_drop_rate_one_drops_every_event(hooked: Hooked) -> None:
    await hooked.client.register_webhook(RECEIVER_URL)
    await hooked.http.put("/_emulator/faults", json={"drop_webhook_rate": 1.0})
    await hooked.client.create_referral(private_deal())

    stats = await hooked.idle()

    assert hooked.receiver.calls == []
    assert (stats["events"], stats["dropped"]) == (1, 1)


async def test_only_registered_events_are_delivered(hooked: Hooked) -> None:
    await hooked.client.register_webhook(RECEIVER_URL, events=["referral-updated"])
    created = await hooked.client.create_referral(private_deal())
    assert created.id
    await hooked.client.patch_referral(
        created.id, [{"op": "replace", "path": "/name", "value": "Renamed"}], etag=created.e_tag
    )
    await hooked.idle()
    assert [e["EventName"] for e in hooked.receiver.events()] == ["referral-updated"]


async def test_an_events_change_time_is_the_change_it_reports(hooked: Hooked) -> None:
    """``ResourceChangeUtcDate`` is "the date and time, in UTC format, when the resource change
    occurred" (Partner Center webhooks docs), i.e. the referral's new ``updatedDateTime``, not
    the delivery time: so the event for our own write matches what the link recorded and
    costs no remote call (issue 13, class 12)."""
    await hooked.client.register_webhook(RECEIVER_URL, events=["referral-updated"])
    created = await hooked.client.create_referral(private_deal())
    assert created.id
    await hooked.client.patch_referral(
        created.id, [{"op": "replace", "path": "/name", "value": "Renamed"}], etag=created.e_tag
    )
    updated = await hooked.client.get_referral(created.id)
    await hooked.idle()

    [event] = hooked.receiver.events()
    changed_at = datetime.fromisoformat(str(event["ResourceChangeUtcDate"]).replace("Z", "+00:00"))
    assert changed_at == updated.updated_date_time


async def test_microsoft_accepting_cosell_fires_related_referral_events(hooked: Hooked) -> None:
    await hooked.client.register_webhook(RECEIVER_URL)
    partner = await hooked.client.create_referral(cosell_deal())
    assert partner.engagement_id
    related = [r async for r in hooked.client.list_related_referrals(partner.engagement_id)]
    microsoft = next(r for r in related if r.id != partner.id)

    response = await hooked.http.post(
        f"/_emulator/microsoft/referrals/{microsoft.id}/patch",
        json=[
            {"op": "replace", "path": "/status", "value": "Active"},
            {"op": "replace", "path": "/substatus", "value": "Accepted"},
            {"op": "add", "path": "/trackingInfo", "value": {"microsoftMsxId": "7-ABCDEFGHI"}},
        ],
    )
    await hooked.idle()

    assert response.status_code == 200
    assert [
        (e["EventName"], str(e["ResourceUri"]).rsplit("/", 1)[-1]) for e in hooked.receiver.events()
    ] == [
        ("referral-created", partner.id),
        ("related-referral-created", microsoft.id),
        ("related-referral-updated", microsoft.id),
    ]


async def test_incoming_referral_from_microsoft_fires_referral_created(hooked: Hooked) -> None:
    await hooked.client.register_webhook(RECEIVER_URL)
    response = await hooked.http.post("/_emulator/microsoft/referrals", json=private_deal())
    await hooked.idle()
    assert [e["EventName"] for e in hooked.receiver.events()] == ["referral-created"]
    fetched = await hooked.client.get_referral(response.json()["id"])
    assert fetched.direction == "Incoming"


async def test_registration_lifecycle(hooked: Hooked) -> None:
    client = hooked.client
    assert await client.get_webhook_registration() is None
    assert "referral-updated" in await client.list_webhook_events()

    registered = await client.register_webhook(RECEIVER_URL)
    with pytest.raises(PartnerCenterError) as second:
        await client.register_webhook("https://other.test/hook")
    updated = await client.update_webhook("https://other.test/hook", events=["referral-created"])
    shown = await client.get_webhook_registration()

    assert registered.subscriber_id and registered.subscriber_id == updated.subscriber_id
    assert second.value.status == 409
    assert shown is not None and shown.webhook_url == "https://other.test/hook"
    assert shown.webhook_events == [WebhookEventName.REFERRAL_CREATED]


async def test_test_event_is_delivered_and_limited_to_two_per_minute(hooked: Hooked) -> None:
    await hooked.client.register_webhook(RECEIVER_URL)

    sent = await hooked.client.send_test_event()
    await hooked.idle()
    result = await hooked.client.get_test_event_result(sent.correlation_id)
    await hooked.client.send_test_event()
    with pytest.raises(Throttled):
        await hooked.client.send_test_event()

    assert result.delivered and result.status == "Succeeded"
    assert hooked.receiver.events()[0]["EventName"] == "test-created"


async def test_delivery_over_a_real_socket(signing: SigningAuthority) -> None:
    receiver = Receiver()
    server = uvicorn.Server(
        uvicorn.Config(
            receiver.app(), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
        )
    )
    serving = asyncio.create_task(server.serve())
    try:
        while not server.started:  # noqa: ASYNC110 - uvicorn offers only this flag
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        app = create_app(signing=signing)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=BASE, headers=AUTH
        ) as http:
            body = {
                "WebhookUrl": f"http://127.0.0.1:{port}/hook",
                "WebhookEvents": ["referral-created"],
            }
            assert (await http.post("/webhooks/v1/registration", json=body)).status_code == 200
            assert (await http.post("/v1.0/engagements/referrals", json=private_deal())).is_success
            stats = (await http.post("/_emulator/webhooks/idle")).json()
    finally:
        server.should_exit = True
        await serving
    assert stats["delivered"] == 1
    assert len(receiver.calls) == 1


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"[]", 400, "object"),
        (b"{", 400, "JSON"),
        (
            b'{"EventName":"referral-deleted","ResourceName":"referral",'
            b'"ResourceUri":"https://x.test/referrals/6b0f2c3e-0000-4000-8000-000000000001"}',
            400,
            "EventName",
        ),
        (
            b'{"EventName":"referral-updated","ResourceName":"customer",'
            b'"ResourceUri":"https://x.test/referrals/6b0f2c3e-0000-4000-8000-000000000001"}',
            400,
            "ResourceName",
        ),
        (
            b'{"EventName":"referral-updated","ResourceName":"referral",'
            b'"ResourceUri":"https://x.test/referrals/..%2Fsecrets"}',
            400,
            "GUID",
        ),
        (b'{"EventName":"referral-updated","pad":"' + b"x" * 70_000 + b'"}', 413, "larger"),
    ],
)
def test_bad_event_bodies_are_refused(body: bytes, status: int, message: str) -> None:
    with pytest.raises(WebhookEventError, match=message) as refused:
        parse_webhook_event(body)
    assert refused.value.status == status
