"""The emulator and the client against the connector's machine-readable contract (issue 15,
"Emulator gaps real clients hit", Partner Center).

The artefact: Microsoft's certified "Partner Center Referrals" connector,
microsoft/PowerPlatformConnectors, certified-connectors/PartnerCenterReferrals/
apiDefinition.swagger.json (last changed 2023-10-23), summarised in reference
dataverse-push-and-webhook-trust.md §3. Its ``CreateReferral`` answers 200 with the referral; its
Referral definition (``Microsoft.Partner.Service.PartnerReferrals.Contracts.V3.Referral``)
carries the properties listed in ``CONTRACT_PROPERTIES`` below besides those of the docs' tables.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from sandbox.partner_center import DEFAULT_TOKEN, SigningAuthority, create_app
from sandbox.partner_center.samples import contract_properties
from shared.partner_center import PartnerCenterClient, Referral, StaticTokenProvider

from .conftest import API_URL
from .payloads import cosell_deal, incoming_referral, private_deal

REFERRALS = "/v1.0/engagements/referrals"

# Name → JSON type of each property, read off the swagger's Referral definition (``readOnly``
# ones marked). Written out here, not imported from the emulator, so the test checks the
# emulator against the artefact rather than against itself.
CONTRACT_PROPERTIES: dict[str, tuple[type, ...]] = {
    "referralProgram": (str,),
    "registrationStatus": (str,),  # readOnly
    "quality": (str,),  # readOnly
    "isSpam": (bool,),  # readOnly
    "tags": (list,),  # readOnly
    "mpnId": (str,),
    "salesStage": (str,),  # enum Qualify, Develop, Propose, Close
    "callToAction": (str,),
    "referralSource": (str,),
    "lastModifiedVia": (str,),
    "lastRunId": (str,),
    "favorite": (bool,),
    "campaignId": (str,),
    "trackingInfo": (dict,),
    "closedDateTime": (str,),  # readOnly
    "registrations": (list,),  # readOnly (written only by the deal-registration PATCH)
}


class RecordingTransport(httpx.AsyncBaseTransport):
    """The emulator's transport, remembering the status of each answer."""

    def __init__(self, app: Starlette) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self.statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        self.statuses.append(response.status_code)
        return response


def _assert_contract_shape(referral: dict[str, Any]) -> None:
    missing = sorted(set(CONTRACT_PROPERTIES) - set(referral))
    assert not missing, f"contract properties not returned: {missing}"
    for name, types in CONTRACT_PROPERTIES.items():
        value = referral[name]
        assert value is None or isinstance(value, types), (name, value)


async def test_create_answers_200_as_the_connectors_contract_says(
    http: httpx.AsyncClient,
) -> None:
    """``CreateReferral`` in apiDefinition.swagger.json documents 200 (and no 201) with the
    created Referral. The docs' create-a-referral page names no code; only the generic
    learn.microsoft.com/partner-center/developer/referrals-api-response-codes page lists
    "201: Resource created" (reference §1.1: UNCERTAIN), so the emulator follows the swagger."""
    response = await http.post(REFERRALS, json=private_deal())

    assert response.status_code == 200, response.text
    assert response.json()["id"]
    assert response.headers["ETag"] == response.json()["eTag"]


@pytest.mark.parametrize("status", [200, 201])
async def test_the_client_takes_a_created_referral_with_200_or_201(
    signing: SigningAuthority, status: int
) -> None:
    """200 per the connector's swagger (``CreateReferral``), 201 per
    learn.microsoft.com/partner-center/developer/referrals-api-response-codes: the client reads
    the created referral from either (reference §1.1)."""
    app = create_app(signing=signing, seed=5, create_status=status)
    transport = RecordingTransport(app)
    async with PartnerCenterClient(
        API_URL, token_provider=StaticTokenProvider(DEFAULT_TOKEN), transport=transport
    ) as client:
        created = await client.create_referral(private_deal())
        fetched = await client.get_referral(str(created.id))

    assert transport.statuses == [status, 200]
    assert created.id and created.e_tag == fetched.e_tag
    assert created.name == "Fabrikam - data platform modernization"


async def test_every_referral_carries_the_contracts_properties(http: httpx.AsyncClient) -> None:
    """Each property of the swagger's Referral definition that the docs' tables leave out comes
    back on create, get and list, with the contract's JSON type or null (reference
    dataverse-push-and-webhook-trust.md §3). The values a new referral shows for ``quality``,
    ``tags`` and ``registrationStatus`` are those of real payloads (reference §2.1 [REAL])."""
    created = (await http.post(REFERRALS, json=private_deal())).json()
    incoming = (await http.post("/_emulator/microsoft/referrals", json=incoming_referral())).json()
    fetched = (await http.get(f"{REFERRALS}/{created['id']}")).json()
    listed = (await http.get(REFERRALS)).json()["value"]

    for referral in (created, incoming, fetched, *listed):
        _assert_contract_shape(referral)
    assert created["quality"] == "Unknown" and created["tags"] == []
    assert created["registrationStatus"] == "None" and created["isSpam"] is False
    assert created["registrations"] is None and created["closedDateTime"] is None
    assert created["mpnId"] and created["mpnId"] == incoming["mpnId"]  # the partner's MPN id
    assert created["lastModifiedVia"] != incoming["lastModifiedVia"]  # partner API vs Microsoft


async def test_closing_a_referral_stamps_closed_date_time(http: httpx.AsyncClient) -> None:
    """``closedDateTime`` (readOnly in the swagger's Referral) is null while open and set by the
    service when the referral closes (reference §2.1)."""
    created = (await http.post(REFERRALS, json=private_deal())).json()

    closed = await http.patch(
        f"{REFERRALS}/{created['id']}",
        json=[
            {"op": "replace", "path": "/status", "value": "Closed"},
            {"op": "replace", "path": "/substatus", "value": "Won"},
        ],
        headers={"If-Match": created["eTag"], "Prefer": "return=representation"},
    )

    assert closed.status_code == 200, closed.text
    assert closed.json()["closedDateTime"] == closed.json()["updatedDateTime"]


async def test_read_only_contract_properties_are_the_services_not_the_partners(
    http: httpx.AsyncClient,
) -> None:
    """``quality``, ``isSpam`` and ``tags`` are ``readOnly`` in the swagger's Referral: a
    partner's create does not set them and a partner's patch of them is refused (400); the
    writable ones (``referralProgram``, ``campaignId``, ``favorite``, ``salesStage``) are kept."""
    body = private_deal(
        quality="High", isSpam=True, tags=["mine"], referralProgram="P", campaignId="C-1",
        favorite=True, salesStage="Qualify",
    )  # fmt: skip
    created = (await http.post(REFERRALS, json=body)).json()

    assert (created["quality"], created["isSpam"], created["tags"]) == ("Unknown", False, [])
    assert (created["referralProgram"], created["campaignId"]) == ("P", "C-1")
    assert (created["favorite"], created["salesStage"]) == (True, "Qualify")
    refused = await http.patch(
        f"{REFERRALS}/{created['id']}", json=[{"op": "replace", "path": "/tags", "value": []}]
    )
    assert refused.status_code == 400
    assert refused.json()["error"]["target"] == "tags"


@pytest.mark.parametrize("tags", [[{"tag": "AzureMigration"}], ["AzureMigration"]])
def test_the_model_round_trips_every_contract_property_untouched(tags: list[Any]) -> None:
    """SPEC 4.1: unknown referral properties round-trip untouched. The swagger's ``tags`` items
    say ``type: string`` yet declare a ``tag`` property, so both shapes must survive."""
    body = cosell_deal(**contract_properties(tags=tags, closedDateTime=None, acceptedDateTime=None))

    referral = Referral.model_validate(body)

    assert referral.to_wire() == body
    assert referral.sales_stage == "Develop" and referral.favorite is True
    assert referral.tracking_info is not None
    assert referral.tracking_info.microsoft_msx_id == "7-ABCDEFGH1"
    assert referral.registrations is not None
    assert referral.registrations[0]["contract"]["term"] == "Finite"


async def test_the_client_reads_a_microsoft_referral_full_of_contract_values_untouched(
    client: PartnerCenterClient, http: httpx.AsyncClient
) -> None:
    """A referral Microsoft sends with every contract property set (values of the swagger's
    types) reads through the client and writes back to the same JSON (SPEC 4.1)."""
    sent = await http.post(
        "/_emulator/microsoft/referrals", json=incoming_referral(**contract_properties())
    )
    assert sent.status_code == 201, sent.text
    raw = (await http.get(f"{REFERRALS}/{sent.json()['id']}")).json()
    raw.pop("@odata.context")

    referral = await client.get_referral(raw["id"])

    wire = referral.to_wire()
    for name in CONTRACT_PROPERTIES:
        assert wire[name] == raw[name], name
    assert raw["registrationStatus"] == "ReviewPending"  # Microsoft's value, kept
    assert raw["tags"] == [{"tag": "AzureMigration"}, {"tag": "FY27"}]
