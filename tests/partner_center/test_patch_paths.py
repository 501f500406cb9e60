"""The JSON Patch paths of the connector's contract, in the emulator (issue 15, item 2).

Microsoft's certified "Partner Center Referrals" connector is the only machine-readable contract
Microsoft publishes (microsoft/PowerPlatformConnectors,
certified-connectors/PartnerCenterReferrals/apiDefinition.swagger.json): its
``UpdateReferralDetails`` definition lists the paths a partner may patch, and its
``DealRegistration`` definition adds ``/registrations/-`` to a referral. Whether the real service
refuses other paths is UNCERTAIN, so the emulator refuses them only in strict mode, which tests
switch on through ``create_app`` or the control API.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from sandbox.partner_center import SigningAuthority, create_app
from sandbox.partner_center.errors import ApiError
from sandbox.partner_center.jsonpatch import apply_patch
from sandbox.partner_center.rules import PARTNER_PATCH_PATHS

from .conftest import AUTH, BASE
from .payloads import private_deal

REFERRALS = "/v1.0/engagements/referrals"


async def _create(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.post(REFERRALS, json=private_deal())
    assert response.status_code in (200, 201), response.text
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


async def _strict(http: httpx.AsyncClient, strict: bool = True) -> dict[str, Any]:
    response = await http.put("/_emulator/patch-paths", json={"strict": strict})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


@pytest.mark.parametrize(
    "path", ["/name", "/inviteContext/assistanceRequestCode", "/details", "/consent"]
)
async def test_strict_mode_refuses_an_unlisted_path_with_a_400_naming_it(
    http: httpx.AsyncClient, path: str
) -> None:
    created = await _create(http)
    await _strict(http)

    response = await _patch(http, created, [{"op": "add", "path": path, "value": "x"}])

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalidRequest"  # the documented error shape (reference §5)
    assert error["target"] == path
    assert f"'{path}'" in error["message"]
    unchanged = (await http.get(f"{REFERRALS}/{created['id']}")).json()
    assert unchanged["eTag"] == created["eTag"]


async def test_one_unlisted_path_refuses_the_whole_patch(http: httpx.AsyncClient) -> None:
    created = await _create(http)
    await _strict(http)

    response = await _patch(
        http,
        created,
        [
            {"op": "replace", "path": "/details/dealValue", "value": 5},
            {"op": "replace", "path": "/name", "value": "renamed"},
        ],
    )

    assert response.status_code == 400
    assert response.json()["error"]["target"] == "/name"
    current = (await http.get(f"{REFERRALS}/{created['id']}")).json()
    assert current["details"]["dealValue"] == created["details"]["dealValue"]


async def test_strict_mode_takes_the_listed_leaf_paths(http: httpx.AsyncClient) -> None:
    created = await _create(http)
    await _strict(http)

    response = await _patch(
        http,
        created,
        [
            {"op": "replace", "path": "/details/dealValue", "value": 250000},
            {"op": "replace", "path": "/details/notes", "value": "Kick-off"},
            {"op": "replace", "path": "/details/currency", "value": "USD"},
            {"op": "replace", "path": "/details/closingDateTime", "value": "2027-01-31T00:00:00Z"},
            {"op": "add", "path": "/details/requirements/solutions/-", "value": {"id": "SOL-2"}},
            {"op": "replace", "path": "/consent/consentToShareReferralWithMicrosoftSellers",
             "value": True},
            {"op": "add", "path": "/customerProfile/team/-", "value": {"firstName": "Bo"}},
            {"op": "replace", "path": "/externalReferenceId", "value": "crm-1"},
            {"op": "replace", "path": "/salesStage", "value": "Develop"},
        ],
    )  # fmt: skip

    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["details"]["dealValue"] == 250000
    assert patched["details"]["requirements"]["solutions"][-1] == {"id": "SOL-2"}
    assert patched["customerProfile"]["team"][-1] == {"firstName": "Bo"}
    assert patched["consent"]["consentToShareReferralWithMicrosoftSellers"] is True


async def test_the_control_api_reports_and_switches_the_mode(http: httpx.AsyncClient) -> None:
    shown = (await http.get("/_emulator/patch-paths")).json()
    assert shown == {"strict": False, "paths": list(PARTNER_PATCH_PATHS)}
    assert (await _strict(http))["strict"] is True
    assert (await _strict(http, False))["strict"] is False
    bad = await http.put("/_emulator/patch-paths", json={"strict": "yes"})
    assert bad.status_code == 400

    created = await _create(http)  # lenient again: any path, as by default
    response = await _patch(http, created, [{"op": "replace", "path": "/name", "value": "x"}])
    assert response.status_code == 200


async def test_create_app_can_start_in_strict_mode(signing: SigningAuthority) -> None:
    app = create_app(signing=signing, seed=3, strict_patch_paths=True)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=BASE, headers=AUTH
    ) as http:
        assert (await http.get("/_emulator/patch-paths")).json()["strict"] is True
        created = await _create(http)
        response = await _patch(http, created, [{"op": "replace", "path": "/name", "value": "x"}])
    assert response.status_code == 400


@pytest.mark.parametrize("strict", [False, True])
async def test_a_deal_registration_adds_the_first_registration(
    http: httpx.AsyncClient, strict: bool
) -> None:
    """The connector's ``DealRegistration`` (apiDefinition.swagger.json,
    ``CreateDealRegistrationByReferralId``; reference dataverse-push-and-webhook-trust.md §3):
    ``add`` to ``/registrations/-`` on a referral that has none yet, in both modes. RFC 6902
    would refuse it (the array does not exist); the contract makes it the way to register, so
    the emulator takes an absent (null) array as empty (UNCERTAIN)."""
    created = await _create(http)
    assert created["registrations"] is None  # the contract property, not yet an array
    await _strict(http, strict)
    registration = {"type": "AzureIPCoSell", "solutionDetails": [{"id": "SOL-1", "value": 10}]}

    register = [{"op": "add", "path": "/registrations/-", "value": registration}]
    first = await _patch(http, created, register)

    assert first.status_code == 200, first.text
    assert first.json()["registrations"] == [registration]
    again = await _patch(
        http,
        first.json(),
        [{"op": "replace", "path": "/registrations/0/contract/term", "value": "P1Y"}],
    )
    # `contract` is absent: a leaf under a missing object is still refused, as RFC 6902 says.
    assert again.status_code == 400


@pytest.mark.parametrize("document", [{}, {"registrations": None}])
def test_a_deal_registration_creates_the_absent_array(document: dict[str, Any]) -> None:
    """``CreateDealRegistrationByReferralId`` of the connector's swagger (reference
    dataverse-push-and-webhook-trust.md §3) on a referral whose ``registrations`` is missing
    or null: the first ``add`` to ``/registrations/-`` creates the array; one to another
    absent array's parent path is still refused, as RFC 6902 says."""
    apply_patch(document, [{"op": "add", "path": "/registrations/-", "value": {"id": "r1"}}])

    assert document["registrations"] == [{"id": "r1"}]
    with pytest.raises(ApiError):
        apply_patch(document, [{"op": "add", "path": "/tags/0/tag", "value": "x"}])
