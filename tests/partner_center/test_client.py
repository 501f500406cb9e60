"""The client against the emulator, over HTTP (ASGITransport)."""

from __future__ import annotations

import httpx
import pytest
from starlette.applications import Starlette

from shared import wiring
from shared.partner_center import (
    NotFound,
    PartnerCenterAuthError,
    PartnerCenterClient,
    PartnerCenterError,
    PatchOperation,
    PreconditionFailed,
    Referral,
    ReferralStatus,
    ReferralSubstatus,
    StaticTokenProvider,
    Throttled,
)
from shared.retry import RetryPolicy
from shared.settings import load_settings

from .conftest import API_URL, WEBHOOK_API_URL, RecordedSleeps
from .payloads import private_deal


async def test_create_get_patch_with_etag(client: PartnerCenterClient) -> None:
    created = await client.create_referral(Referral.model_validate(private_deal()))
    assert created.id and created.e_tag
    assert created.status is ReferralStatus.ACTIVE  # outgoing deals start accepted (§2.3)

    fetched = await client.get_referral(created.id)
    assert fetched.e_tag == created.e_tag
    assert fetched.customer_profile and fetched.customer_profile.name == "Fabrikam Ltd"

    patched = await client.patch_referral(
        created.id,
        [
            PatchOperation.replace("/details/dealValue", 150000),
            PatchOperation.add("/team/-", {"firstName": "Kim", "email": "kim@example.com"}),
        ],
        etag=fetched.e_tag,
    )
    assert patched is not None
    assert patched.details and patched.details.deal_value == 150000
    assert patched.team and [m.first_name for m in patched.team] == ["Jo", "Kim"]
    assert patched.e_tag != fetched.e_tag
    assert (await client.get_referral(created.id)).e_tag == patched.e_tag


async def test_stale_etag_patch_is_refused(client: PartnerCenterClient) -> None:
    created = await client.create_referral(private_deal())
    assert created.id
    await client.patch_referral(
        created.id, [PatchOperation.replace("/name", "Renamed")], etag=created.e_tag
    )

    with pytest.raises(PreconditionFailed) as refused:
        await client.patch_referral(
            created.id, [PatchOperation.replace("/name", "Lost update")], etag=created.e_tag
        )

    assert refused.value.status == 412
    assert refused.value.code == "preconditionFailed"
    assert refused.value.request_id
    assert (await client.get_referral(created.id)).name == "Renamed"


async def test_listing_1000_referrals_yields_each_exactly_once(
    client: PartnerCenterClient, app: Starlette, http: httpx.AsyncClient
) -> None:
    store = app.state.emulator.store
    seeded = {store.seed(private_deal(name=f"Deal {n}"))["id"] for n in range(1000)}

    listed = [r.id async for r in client.list_referrals(orderby="createdDateTime asc")]

    assert len(listed) == 1000
    assert set(listed) == seeded
    stats = (await http.get("/_emulator/stats")).json()
    assert stats["requests"]["GET /v1.0/engagements/referrals"] == 10  # pages of 100


async def test_list_applies_filter_orderby_top_and_select(
    client: PartnerCenterClient, app: Starlette
) -> None:
    store = app.state.emulator.store
    for n in range(5):
        store.seed(private_deal(name=f"Deal {n}"))
    store.seed(private_deal(name="Shared deal", type="Shared"))

    newest = [
        r
        async for r in client.list_referrals(
            filter="type eq 'Independent' and direction eq 'Outgoing'",
            orderby="createdDateTime desc",
            top=3,
            select=["id", "name"],
        )
    ]

    assert [r.name for r in newest] == ["Deal 4", "Deal 3", "Deal 2"]
    assert newest[0].customer_profile is None  # not selected


async def test_throttled_request_waits_retry_after_then_succeeds(
    client: PartnerCenterClient, http: httpx.AsyncClient, sleeps: RecordedSleeps
) -> None:
    created = await client.create_referral(private_deal())
    assert created.id
    faults = {"fail_next": 1, "statuses": [429], "retry_after_s": 7}
    assert (await http.put("/_emulator/faults", json=faults)).status_code == 200

    fetched = await client.get_referral(created.id)

    assert fetched.id == created.id
    assert sleeps.delays == [7.0]
    stats = (await http.get("/_emulator/stats")).json()
    assert stats["requests"]["GET /v1.0/engagements/referrals/{referral_id}"] == 2


async def test_persistent_throttling_raises_throttled(
    app: Starlette, http: httpx.AsyncClient, sleeps: RecordedSleeps
) -> None:
    await http.put(
        "/_emulator/faults", json={"error_rate": 1, "statuses": [429], "retry_after_s": 2}
    )
    async with PartnerCenterClient(
        token_provider=StaticTokenProvider("sandbox"),
        api_url=API_URL,
        transport=httpx.ASGITransport(app=app),
        retry_policy=RetryPolicy(attempts=3, sleep=sleeps),
    ) as client:
        with pytest.raises(Throttled) as throttled:
            await client.get_referral("6b0f2c3e-0000-4000-8000-00000000000f")

    assert throttled.value.retry_after == 2
    assert sleeps.delays == [2.0, 2.0]


async def test_bad_request_is_not_retried_and_surfaces_code_and_message(
    client: PartnerCenterClient, http: httpx.AsyncClient, sleeps: RecordedSleeps
) -> None:
    body = private_deal()
    del body["customerProfile"]

    with pytest.raises(PartnerCenterError) as refused:
        await client.create_referral(body)

    assert refused.value.status == 400
    assert refused.value.code == "invalidRequest"
    assert refused.value.message == "The CustomerProfile field is required."
    assert refused.value.target == "customerProfile"
    assert sleeps.delays == []
    stats = (await http.get("/_emulator/stats")).json()
    assert stats["requests"]["POST /v1.0/engagements/referrals"] == 1


async def test_server_errors_are_retried_with_backoff(
    client: PartnerCenterClient, http: httpx.AsyncClient, sleeps: RecordedSleeps
) -> None:
    created = await client.create_referral(private_deal())
    assert created.id
    await http.put("/_emulator/faults", json={"fail_next": 2, "statuses": [500, 503]})

    assert (await client.get_referral(created.id)).id == created.id
    # 500 → backoff 0.5 s (no jitter in the test policy); 503 with Retry-After 1 → 1 s.
    assert sleeps.delays == [0.5, 1.0]


async def test_missing_referral_raises_not_found(client: PartnerCenterClient) -> None:
    with pytest.raises(NotFound) as missing:
        await client.get_referral("6b0f2c3e-0000-4000-8000-0000000000aa")
    assert missing.value.code == "itemNotFound"


async def test_wrong_token_raises_auth_error(app: Starlette) -> None:
    async with PartnerCenterClient(
        token_provider=StaticTokenProvider("not-the-token"),
        api_url=API_URL,
        transport=httpx.ASGITransport(app=app),
    ) as client:
        with pytest.raises(PartnerCenterAuthError) as refused:
            await client.get_referral("6b0f2c3e-0000-4000-8000-0000000000aa")
    assert refused.value.status == 401


async def test_non_guid_referral_id_is_refused_before_any_call(
    client: PartnerCenterClient, http: httpx.AsyncClient
) -> None:
    with pytest.raises(ValueError, match="GUID"):
        await client.get_referral("../webhooks/v1/registration")
    assert (await http.get("/_emulator/stats")).json()["requests_total"] == 1  # this call


async def test_unknown_properties_and_enum_values_round_trip(
    client: PartnerCenterClient, app: Starlette, http: httpx.AsyncClient
) -> None:
    created = await client.create_referral(private_deal(futureProperty={"nested": [1, 2]}))
    assert created.id
    # Microsoft-side change to a substatus value no document lists (§2.3 warns of these).
    app.state.emulator.store.get(created.id)["substatus"] = "Engaged"

    fetched = await client.get_referral(created.id)

    assert fetched.substatus == "Engaged"
    assert not isinstance(fetched.substatus, ReferralSubstatus)
    wire = fetched.to_wire()
    assert wire["futureProperty"] == {"nested": [1, 2]}
    assert wire["substatus"] == "Engaged"
    assert wire["details"]["dealValue"] == 120000
    assert wire["consent"]["consentToToShareInfoWithOthers"] is True


async def test_wiring_uses_the_static_token_against_the_emulator(app: Starlette) -> None:
    settings = load_settings(
        {
            "AzureWebJobsStorage": "UseDevelopmentStorage=true",
            "DATAVERSE_URL": "http://127.0.0.1:7102",
            "PARTNER_CENTER_API_URL": "http://127.0.0.1:7101/v1.0/engagements",
            "PARTNER_CENTER_WEBHOOK_API_URL": "http://127.0.0.1:7101/webhooks/v1",
        }
    )
    async with wiring.partner_center_client(
        settings, transport=httpx.ASGITransport(app=app)
    ) as client:
        created = await client.create_referral(private_deal())
    assert created.status is ReferralStatus.ACTIVE


async def test_next_link_to_another_host_is_not_followed(sleeps: RecordedSleeps) -> None:
    async def foreign_next_link(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, json={"value": [], "@odata.nextLink": "https://elsewhere.test/steal"}
        )

    async with PartnerCenterClient(
        token_provider=StaticTokenProvider("sandbox"),
        api_url=API_URL,
        webhook_api_url=WEBHOOK_API_URL,
        transport=httpx.MockTransport(foreign_next_link),
    ) as client:
        with pytest.raises(PartnerCenterError, match="another host"):
            _ = [r async for r in client.list_referrals()]
