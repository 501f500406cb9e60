"""The emulator against the reference's examples (§1.1, §1.2, §2.3, §5, §7), over raw HTTP."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .payloads import cosell_deal, incoming_referral, private_deal

REFERRALS = "/v1.0/engagements/referrals"


async def _create(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await http.post(REFERRALS, json=body)
    assert response.status_code == 200, response.text
    created: dict[str, Any] = response.json()
    return created


async def _incoming(http: httpx.AsyncClient, **changes: Any) -> dict[str, Any]:
    response = await http.post("/_emulator/microsoft/referrals", json=incoming_referral(**changes))
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def _patch(
    http: httpx.AsyncClient, referral: dict[str, Any], operations: list[dict[str, Any]]
) -> httpx.Response:
    return await http.patch(
        f"{REFERRALS}/{referral['id']}",
        json=operations,
        headers={"If-Match": referral["eTag"], "Prefer": "return=representation"},
    )


def _close_as_won() -> list[dict[str, Any]]:
    return [
        {"op": "replace", "path": "/status", "value": "Closed"},
        {"op": "replace", "path": "/substatus", "value": "Won"},
    ]


async def test_private_deal_example_is_accepted(http: httpx.AsyncClient) -> None:
    created = await _create(http, private_deal())

    assert created["status"] == "Active"
    assert created["substatus"] == "Accepted"
    assert created["direction"] == "Outgoing"
    assert created["consent"]["consentToShareReferralWithMicrosoftSellers"] is False
    assert created["eTag"].startswith('"') and created["eTag"].endswith('"')
    assert created["engagementId"] and created["createdDateTime"] == created["updatedDateTime"]
    assert created["links"]["self"]["uri"].endswith(f"{REFERRALS}/{created['id']}")
    fetched = await http.get(f"{REFERRALS}/{created['id']}")
    assert fetched.status_code == 200
    assert fetched.headers["ETag"] == created["eTag"]
    assert fetched.json()["details"]["requirements"]["solutions"] == [
        {"type": "Name", "id": "SOL-12345-ABC"}
    ]


async def test_missing_customer_profile_is_rejected_with_documented_error_shape(
    http: httpx.AsyncClient,
) -> None:
    body = private_deal()
    del body["customerProfile"]

    response = await http.post(REFERRALS, json=body)

    assert response.status_code == 400
    assert response.json() == {
        "error": {
            "code": "invalidRequest",
            "message": "The CustomerProfile field is required.",
            "target": "customerProfile",
        }
    }
    assert response.headers["request-id"]


@pytest.mark.parametrize(
    ("change", "target"),
    [
        ({"type": "Exclusive"}, "type"),
        ({"qualification": "Hot"}, "qualification"),
        ({"consent": None}, "consent"),
    ],
)
async def test_invalid_referral_parts_are_rejected(
    http: httpx.AsyncClient, change: dict[str, Any], target: str
) -> None:
    response = await http.post(REFERRALS, json=private_deal(**change))
    assert response.status_code == 400
    assert response.json()["error"]["target"] == target


async def test_three_letter_country_is_rejected(http: httpx.AsyncClient) -> None:
    body = private_deal()
    body["customerProfile"]["address"]["country"] = "DEU"
    response = await http.post(REFERRALS, json=body)
    assert response.status_code == 400
    assert response.json()["error"]["target"] == "customerProfile.address.country"


async def test_new_referral_can_close_as_won(http: httpx.AsyncClient) -> None:
    incoming = await _incoming(http)
    assert (incoming["status"], incoming["substatus"]) == ("New", "Pending")
    assert incoming["inviteContext"]["invitedBy"]["organizationId"] == "msft"

    response = await _patch(http, incoming, _close_as_won())

    assert response.status_code == 200
    closed = response.json()
    assert (closed["status"], closed["substatus"]) == ("Closed", "Won")
    assert closed["closedDateTime"]


async def test_closed_referral_refuses_to_become_active(http: httpx.AsyncClient) -> None:
    closed = (await _patch(http, await _incoming(http), _close_as_won())).json()

    response = await _patch(
        http,
        closed,
        [
            {"op": "replace", "path": "/status", "value": "Active"},
            {"op": "replace", "path": "/substatus", "value": "Accepted"},
        ],
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalidRequest"
    current = (await http.get(f"{REFERRALS}/{closed['id']}")).json()
    assert (current["status"], current["eTag"]) == ("Closed", closed["eTag"])


async def test_closed_referral_refuses_any_edit(http: httpx.AsyncClient) -> None:
    closed = (await _patch(http, await _incoming(http), _close_as_won())).json()
    response = await _patch(http, closed, [{"op": "replace", "path": "/name", "value": "x"}])
    assert response.status_code == 400


async def test_active_referral_cannot_go_back_to_new(http: httpx.AsyncClient) -> None:
    created = await _create(http, private_deal())
    response = await _patch(
        http,
        created,
        [
            {"op": "replace", "path": "/status", "value": "New"},
            {"op": "replace", "path": "/substatus", "value": "Pending"},
        ],
    )
    assert response.status_code == 400
    assert response.json()["error"]["target"] == "status"


async def test_substatus_must_belong_to_status(http: httpx.AsyncClient) -> None:
    created = await _create(http, private_deal())
    response = await _patch(
        http, created, [{"op": "replace", "path": "/substatus", "value": "Won"}]
    )
    assert response.status_code == 400
    assert response.json()["error"]["target"] == "substatus"


@pytest.mark.parametrize("op", ["remove", "move", "copy", "test"])
async def test_patch_operations_other_than_replace_and_add_are_rejected(
    http: httpx.AsyncClient, op: str
) -> None:
    created = await _create(http, private_deal())
    response = await _patch(http, created, [{"op": op, "path": "/name", "from": "/name"}])
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalidRequest"


async def test_patch_without_prefer_answers_204_and_changes_etag(http: httpx.AsyncClient) -> None:
    created = await _create(http, private_deal())
    response = await http.patch(
        f"{REFERRALS}/{created['id']}",
        json=[{"op": "replace", "path": "/details/notes", "value": None}],
    )
    assert response.status_code == 204
    current = (await http.get(f"{REFERRALS}/{created['id']}")).json()
    assert current["details"]["notes"] is None
    assert current["eTag"] == response.headers["ETag"] != created["eTag"]
    assert current["updatedDateTime"] > created["updatedDateTime"]


async def test_stale_if_match_gets_412_with_error_body(http: httpx.AsyncClient) -> None:
    created = await _create(http, private_deal())
    assert (
        await _patch(http, created, [{"op": "replace", "path": "/name", "value": "a"}])
    ).is_success

    response = await _patch(http, created, [{"op": "replace", "path": "/name", "value": "b"}])

    assert response.status_code == 412
    assert response.json()["error"]["code"] == "preconditionFailed"


async def test_read_only_properties_cannot_be_patched(http: httpx.AsyncClient) -> None:
    created = await _create(http, private_deal())
    response = await _patch(
        http, created, [{"op": "replace", "path": "/trackingInfo/microsoftMsxId", "value": "x"}]
    )
    assert response.status_code == 400


async def test_visibility_to_microsoft_cannot_be_reverted(http: httpx.AsyncClient) -> None:
    created = await _create(http, cosell_deal())
    response = await _patch(
        http,
        created,
        [
            {
                "op": "replace",
                "path": "/consent/consentToShareReferralWithMicrosoftSellers",
                "value": False,
            }
        ],
    )
    assert response.status_code == 400


async def test_put_requires_if_match_and_keeps_server_fields(http: httpx.AsyncClient) -> None:
    created = await _create(http, private_deal())
    body = {k: v for k, v in created.items() if k != "links"}
    body["name"] = "Replaced"
    body["createdDateTime"] = "2000-01-01T00:00:00Z"

    without = await http.put(f"{REFERRALS}/{created['id']}", json=body)
    replaced = await http.put(
        f"{REFERRALS}/{created['id']}", json=body, headers={"If-Match": created["eTag"]}
    )

    assert without.status_code == 400
    assert replaced.status_code == 200
    assert replaced.json()["name"] == "Replaced"
    assert replaced.json()["createdDateTime"] == created["createdDateTime"]
    assert replaced.json()["eTag"] != created["eTag"]


async def test_reference_filter_examples(http: httpx.AsyncClient) -> None:
    shared = await _create(http, private_deal(type="Shared"))
    await _create(http, private_deal())
    incoming = await _incoming(http, type="Shared")

    async def ids(query: str) -> set[str]:
        response = await http.get(REFERRALS, params={"$filter": query})
        assert response.status_code == 200, response.text
        return {r["id"] for r in response.json()["value"]}

    assert await ids("(type eq 'Shared' and direction eq 'Incoming')") == {incoming["id"]}
    assert await ids(
        "status eq 'Active' and direction eq 'Outgoing' and type eq 'Shared' "
        "and team/any(t:t/email eq 'jo@example.com')"
    ) == {shared["id"]}
    assert await ids(f"engagementId eq {shared['engagementId']}") == {shared["id"]}
    assert await ids(f"engagementId eq '{shared['engagementId']}'") == {shared["id"]}
    assert len(await ids(f"updatedDateTime ge {shared['createdDateTime']}")) == 3
    assert await ids("updatedDateTime lt 2020-01-01T00:00:00Z") == set()
    assert await ids("not (direction eq 'Outgoing') or substatus eq 'Pending'") == {incoming["id"]}
    assert len(await ids("customerProfile/address/country eq 'DE'")) == 3


async def test_unreadable_filter_is_a_400(http: httpx.AsyncClient) -> None:
    response = await http.get(REFERRALS, params={"$filter": "status eq"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalidRequest"


async def test_orderby_top_select_and_next_link(http: httpx.AsyncClient) -> None:
    names = [f"Deal {n}" for n in range(5)]
    for name in names:
        await _create(http, private_deal(name=name))

    first = (
        await http.get(
            REFERRALS,
            params={"$orderby": "createdDateTime desc", "$top": "4", "$select": "id,name"},
        )
    ).json()

    assert [r["name"] for r in first["value"]] == ["Deal 4", "Deal 3", "Deal 2", "Deal 1"]
    assert set(first["value"][0]) == {"id", "name"}
    assert "@odata.nextLink" not in first


async def test_paging_does_not_repeat_or_skip_when_referrals_are_added(
    http: httpx.AsyncClient, app: Any
) -> None:
    app.state.emulator.page_size = 2
    for n in range(5):
        await _create(http, private_deal(name=f"Deal {n}"))
    seen: list[str] = []
    page = (await http.get(REFERRALS)).json()
    seen += [r["name"] for r in page["value"]]
    await _create(http, private_deal(name="Late deal"))
    while "@odata.nextLink" in page:
        page = (await http.get(page["@odata.nextLink"])).json()
        seen += [r["name"] for r in page["value"]]
    assert seen == [*(f"Deal {n}" for n in range(5)), "Late deal"]


async def test_requests_without_bearer_token_get_401(http: httpx.AsyncClient) -> None:
    response = await http.get(REFERRALS, headers={"Authorization": ""})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert (await http.get("/_emulator/health", headers={"Authorization": ""})).status_code == 200


async def test_faults_inject_errors_until_cleared(http: httpx.AsyncClient) -> None:
    faults = {"error_rate": 1.0, "statuses": [503], "retry_after_s": 3, "latency_ms": 1}
    assert (await http.put("/_emulator/faults", json=faults)).status_code == 200

    failed = await http.get(REFERRALS)
    assert (await http.delete("/_emulator/faults")).status_code == 204
    recovered = await http.get(REFERRALS)

    assert failed.status_code == 503
    assert failed.headers["Retry-After"] == "3"
    assert recovered.status_code == 200


async def test_unknown_fault_setting_is_rejected(http: httpx.AsyncClient) -> None:
    response = await http.put("/_emulator/faults", json={"chaos_monkey": True})
    assert response.status_code == 400


async def test_reset_empties_the_emulator(http: httpx.AsyncClient) -> None:
    await _create(http, private_deal())
    assert (await http.post("/_emulator/reset")).status_code == 204
    assert (await http.get(REFERRALS)).json()["value"] == []


async def test_stats_count_requests_by_route_template(http: httpx.AsyncClient) -> None:
    created = await _create(http, private_deal())
    await http.get(f"{REFERRALS}/{created['id']}")
    await http.get(f"{REFERRALS}/{created['id']}")

    stats = (await http.get("/_emulator/stats")).json()

    assert stats["requests"]["POST /v1.0/engagements/referrals"] == 1
    assert stats["requests"]["GET /v1.0/engagements/referrals/{referral_id}"] == 2
    assert stats["referrals"] == 1


async def test_cosell_gets_a_microsoft_side_referral_that_microsoft_can_accept(
    http: httpx.AsyncClient,
) -> None:
    partner = await _create(http, cosell_deal())
    related = (
        await http.get(REFERRALS, params={"$filter": f"engagementId eq {partner['engagementId']}"})
    ).json()["value"]
    microsoft = next(r for r in related if r["id"] != partner["id"])
    assert microsoft["target"] == [{"type": "BusinessProfileLocation", "id": "msft"}]
    assert (microsoft["status"], microsoft["substatus"]) == ("New", "Pending")

    accepted = await http.post(
        f"/_emulator/microsoft/referrals/{microsoft['id']}/patch",
        json=[
            {"op": "replace", "path": "/status", "value": "Active"},
            {"op": "replace", "path": "/substatus", "value": "Accepted"},
            {"op": "add", "path": "/trackingInfo", "value": {"microsoftMsxId": "7-ABCDEFGHI"}},
        ],
    )

    assert accepted.status_code == 200
    assert accepted.json()["trackingInfo"]["microsoftMsxId"] == "7-ABCDEFGHI"
