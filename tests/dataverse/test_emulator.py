"""The emulator, spoken to in raw HTTP as the reference's examples write it (reference sections
2, 4, 6, 7, 8.2) and through its control API (SPEC 9).

The reference's create example uses placeholder custom columns (``new_cosellenabled``,
``new_cosellstatus``); here they are SPEC 4.1's ``cosell_syncwithpartnercenter`` and
``cosell_helpneeded``. Everything else is sent as written.
"""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

from sandbox.dataverse import Emulator, create_app
from sandbox.dataverse.store import CURRENCIES

from .conftest import API, TOKEN

ACCOUNT = "6f3c1a2b-0000-0000-0000-000000000001"
CONTACT = "8a1d2c3e-0000-0000-0000-000000000002"
CURRENCY = "3b7e9f10-0000-0000-0000-000000000003"
OPPORTUNITY = "1d2e3f40-0000-0000-0000-000000000010"

CREATE_EXAMPLE = {  # reference 4.1
    "name": "Co-sell: Contoso ERP rollout",
    "description": "Referred by partner X",
    "estimatedvalue": 125000.00,
    "estimatedclosedate": "2024-09-30",
    "closeprobability": 40,
    "isrevenuesystemcalculated": False,
    "customerid_account@odata.bind": f"/accounts({ACCOUNT})",
    "parentcontactid@odata.bind": f"/contacts({CONTACT})",
    "transactioncurrencyid@odata.bind": f"/transactioncurrencies({CURRENCY})",
    "cosell_syncwithpartnercenter": True,
    "cosell_helpneeded": 100000001,
}
WIN_EXAMPLE = {  # reference 8.2
    "Status": 3,
    "OpportunityClose": {
        "subject": "Won via co-sell",
        "actualrevenue": 125000.00,
        "actualend": "2024-09-28",
        "opportunityid@odata.bind": f"/opportunities({OPPORTUNITY})",
    },
}
LOSE_EXAMPLE = {
    "Status": 5,
    "OpportunityClose": {
        "subject": "Lost to competitor",
        "opportunityid@odata.bind": f"/opportunities({OPPORTUNITY})",
    },
}


@pytest.fixture
async def related(http: httpx.AsyncClient) -> None:
    """The account, contact and currency the reference's examples bind to."""
    for entity_set, body in (
        ("accounts", {"accountid": ACCOUNT, "name": "Contoso", "address1_postalcode": "98052"}),
        ("contacts", {"contactid": CONTACT, "firstname": "Ada", "lastname": "Example"}),
        (
            "transactioncurrencies",
            {"transactioncurrencyid": CURRENCY, "isocurrencycode": "XTS", "currencyname": "Test"},
        ),
    ):
        assert (await http.post(entity_set, json=body)).status_code == 204


async def _opportunity(http: httpx.AsyncClient) -> dict[str, object]:
    response = await http.post(
        "opportunities",
        json={**CREATE_EXAMPLE, "opportunityid": OPPORTUNITY},
        headers={"Prefer": "return=representation"},
    )
    assert response.status_code == 201
    body: dict[str, object] = response.json()
    return body


async def test_create_example_answers_204_with_the_entity_id_and_stores_the_lookups(
    http: httpx.AsyncClient, emulator: Emulator, related: None
) -> None:
    response = await http.post("opportunities", json=CREATE_EXAMPLE)

    assert response.status_code == 204
    match = re.fullmatch(rf"{re.escape(API)}opportunities\((?P<id>[0-9a-f-]{{36}})\)",
                         response.headers["OData-EntityId"])  # fmt: skip
    assert match is not None
    row = emulator.store.get("opportunities", match.group("id")).values
    assert row["_customerid_value"] == ACCOUNT
    assert row["_parentcontactid_value"] == CONTACT
    assert row["_transactioncurrencyid_value"] == CURRENCY
    assert (row["cosell_syncwithpartnercenter"], row["cosell_helpneeded"]) == (True, 100000001)
    assert (row["statecode"], row["statuscode"]) == (0, 1)


async def test_create_with_representation_returns_201_with_the_row_and_its_etag(
    http: httpx.AsyncClient, related: None
) -> None:
    response = await http.post(
        "opportunities?$select=name,estimatedvalue",
        json=CREATE_EXAMPLE,
        headers={"Prefer": "return=representation"},
    )

    assert response.status_code == 201
    body = response.json()
    assert re.fullmatch(r'W/"\d+"', body["@odata.etag"])
    assert body["name"] == "Co-sell: Contoso ERP rollout"
    assert body["_transactioncurrencyid_value"] == CURRENCY  # money columns bring their currency
    assert "description" not in body


async def test_update_example_with_the_current_etag_works_and_a_stale_one_gets_412(
    http: httpx.AsyncClient, emulator: Emulator, related: None
) -> None:
    etag = str((await _opportunity(http))["@odata.etag"])
    update = {"estimatedvalue": 150000.00, "closeprobability": 60}  # reference 4.3

    ok = await http.patch(f"opportunities({OPPORTUNITY})", json=update, headers={"If-Match": etag})
    stale = await http.patch(
        f"opportunities({OPPORTUNITY})", json={"closeprobability": 10}, headers={"If-Match": etag}
    )

    assert ok.status_code == 204
    assert stale.status_code == 412
    assert stale.json() == {
        "error": {
            "code": "0x80060882",
            "message": "The version of the existing record doesn't match the RowVersion "
            "property provided.",
        }
    }
    row = emulator.store.get("opportunities", OPPORTUNITY).values
    assert (row["estimatedvalue"], row["closeprobability"]) == (150000.00, 60)


async def test_patch_is_an_upsert_unless_if_match_and_if_none_match_guards_creation(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    url = f"accounts({ACCOUNT})"
    missing = await http.patch(url, json={"name": "Contoso"}, headers={"If-Match": "*"})
    created = await http.patch(
        url, json={"name": "Contoso"}, headers={"Prefer": "return=representation"}
    )
    updated = await http.patch(
        url, json={"name": "Contoso Ltd"}, headers={"Prefer": "return=representation"}
    )
    create_only = await http.patch(url, json={"name": "X"}, headers={"If-None-Match": "*"})

    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "0x80040217")
    assert (created.status_code, updated.status_code) == (201, 200)
    assert (create_only.status_code, create_only.json()["error"]["code"]) == (412, "0x80040237")
    assert emulator.store.get("accounts", ACCOUNT).values["name"] == "Contoso Ltd"


async def test_post_with_an_existing_primary_key_is_refused_as_a_duplicate(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    first = await http.post("accounts", json={"accountid": ACCOUNT, "name": "Contoso"})
    second = await http.post("accounts", json={"accountid": ACCOUNT, "name": "Fabrikam"})

    assert first.status_code == 204
    assert second.status_code == 412
    assert second.json()["error"]["code"] == "0x80040237"
    assert emulator.store.get("accounts", ACCOUNT).values["name"] == "Contoso"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"name": "x", "new_cosellenabled": True}, "0x80048d19"),  # undeclared column
        ({"name": "x", "estimatedvalue": "lots"}, "0x80048d19"),  # wrong type
        ({"name": "x", "cosell_syncwithpartnercenter": "yes"}, "0x80048d19"),
        ({"name": "x", "estimatedclosedate": "30/09/2024"}, "0x80048d19"),
        ({"name": "x" * 301}, "0x80044331"),  # longer than String(300)
        ({"name": "x", "cosell_helpneeded": 5}, "0x8004431A"),  # not an option of SPEC 4.2
        ({"name": "x", "parentaccountid": ACCOUNT}, "0x80048d19"),  # lookups need @odata.bind
        ({"name": "x", "parentaccountid@odata.bind": f"/contacts({CONTACT})"}, "0x80048d19"),
        ({"name": "x", "_parentaccountid_value": ACCOUNT}, "0x80048d19"),
    ],
)
async def test_invalid_payloads_get_400_with_dataverse_error_body_and_write_nothing(
    http: httpx.AsyncClient, emulator: Emulator, body: dict[str, object], code: str
) -> None:
    response = await http.post("opportunities", json=body)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert emulator.store.count("opportunities") == 0


async def test_bind_to_a_row_that_does_not_exist_is_404(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    response = await http.post(
        "opportunities", json={"name": "x", "parentaccountid@odata.bind": f"/accounts({ACCOUNT})"}
    )
    assert response.status_code == 404
    assert response.json()["error"]["message"] == f"account With Id = {ACCOUNT} Does Not Exist"
    assert emulator.store.count("opportunities") == 0


async def test_won_by_patch_is_refused_and_win_opportunity_closes_it(
    http: httpx.AsyncClient, emulator: Emulator, related: None
) -> None:
    await _opportunity(http)
    refused = await http.patch(
        f"opportunities({OPPORTUNITY})", json={"statecode": 1, "statuscode": 3}
    )
    status_only = await http.patch(f"opportunities({OPPORTUNITY})", json={"statuscode": 5})
    assert (refused.status_code, status_only.status_code) == (400, 400)
    assert "WinOpportunityRequest" in refused.json()["error"]["message"]
    assert emulator.store.get("opportunities", OPPORTUNITY).values["statecode"] == 0

    won = await http.post("WinOpportunity", json=WIN_EXAMPLE)

    assert won.status_code == 204
    row = emulator.store.get("opportunities", OPPORTUNITY).values
    assert (row["statecode"], row["statuscode"]) == (1, 3)
    assert (row["actualvalue"], row["actualclosedate"]) == (125000.00, "2024-09-28")


async def test_a_won_opportunity_is_read_only_until_reopened_then_it_can_be_lost(
    http: httpx.AsyncClient, emulator: Emulator, related: None
) -> None:
    await _opportunity(http)
    await http.post("WinOpportunity", json=WIN_EXAMPLE)
    url = f"opportunities({OPPORTUNITY})"

    edit = await http.patch(url, json={"description": "late edit"})
    lose_while_won = await http.post("LoseOpportunity", json=LOSE_EXAMPLE)
    reopen = await http.patch(url, json={"statecode": 0, "statuscode": 1})  # reference 8.2
    lose = await http.post("LoseOpportunity", json=LOSE_EXAMPLE)

    assert (edit.status_code, lose_while_won.status_code) == (400, 400)
    assert (reopen.status_code, lose.status_code) == (204, 204)
    row = emulator.store.get("opportunities", OPPORTUNITY).values
    assert (row["statecode"], row["statuscode"]) == (2, 5)
    assert row["description"] == "Referred by partner X"


@pytest.mark.parametrize(
    ("query", "expected"),
    [  # the filter examples of reference 2.2, plus text functions and a doubled quote
        ("modifiedon gt 2024-01-01T00:00:00Z", 2),
        ("statecode eq 0", 2),
        ("cosell_syncwithpartnercenter eq true", 1),
        ("cosell_helpneeded eq 100000001", 1),
        (f"_parentaccountid_value eq {ACCOUNT}", 1),
        ("estimatedclosedate ge 2024-07-01", 1),
        ("name eq 'O''Bryan deal'", 1),
        ("contains(name,'bryan') and not startswith(name,'co-sell')", 1),
        ("cosell_helpneeded eq null or estimatedvalue lt 1000", 1),
        ("(estimatedvalue gt 100 and estimatedvalue le 125000) or name ne 'x'", 2),
        ("parentaccountid/name eq 'Contoso'", 1),
    ],
)
async def test_filter_examples_select_the_expected_rows(
    http: httpx.AsyncClient, related: None, query: str, expected: int
) -> None:
    await http.post(
        "opportunities",
        json={**CREATE_EXAMPLE, "parentaccountid@odata.bind": f"/accounts({ACCOUNT})"},
    )
    await http.post("opportunities", json={"name": "O'Bryan deal", "estimatedvalue": 500})

    response = await http.get("opportunities", params={"$select": "name", "$filter": query})

    assert response.status_code == 200, response.text
    assert len(response.json()["value"]) == expected


@pytest.mark.parametrize(
    "query",
    [
        "nosuchcolumn eq 1",
        f"_parentaccountid_value eq '{ACCOUNT}'",  # a GUID is not a string
        "name eq 5",
        "name eq 'unterminated",
        "Microsoft.Dynamics.CRM.In(PropertyName='statuscode',PropertyValues=['1','2'])",
    ],
)
async def test_bad_filters_get_400(http: httpx.AsyncClient, query: str) -> None:
    response = await http.get("opportunities", params={"$filter": query})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "0x80060888"


async def test_select_expand_and_order_example_of_the_reference(
    http: httpx.AsyncClient, related: None
) -> None:
    await http.post(
        "opportunities",
        json={**CREATE_EXAMPLE, "parentaccountid@odata.bind": f"/accounts({ACCOUNT})"},
    )

    response = await http.get(  # reference 2.4 and 2.3
        "opportunities?$select=name&$expand=parentaccountid($select=name,websiteurl),"
        "parentcontactid($select=fullname,emailaddress1)&$orderby=modifiedon asc,opportunityid asc",
        headers={
            "Prefer": 'odata.maxpagesize=500,odata.include-annotations="OData.Community.Display.V1'
            '.FormattedValue,Microsoft.Dynamics.CRM.lookuplogicalname"'
        },
    )

    assert response.status_code == 200
    [row] = response.json()["value"]
    assert row["parentaccountid"]["name"] == "Contoso"
    assert row["parentcontactid"]["fullname"] == "Ada Example"
    assert set(row) == {
        "@odata.etag",
        "opportunityid",
        "name",
        "parentaccountid",
        "parentcontactid",
    }


async def test_pages_follow_next_link_unchanged_and_top_limits_without_a_link(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    for n in range(25):
        emulator.store.create("leads", {"subject": f"Lead {n:02d}"})
    prefer = {"Prefer": "odata.maxpagesize=10"}

    seen: list[str] = []
    url: str | None = "leads?$select=subject&$orderby=subject desc"
    pages = 0
    while url:
        body = (await http.get(url, headers=prefer)).json()
        seen += [r["subject"] for r in body["value"]]
        url = body.get("@odata.nextLink")
        pages += 1
    top = (await http.get("leads?$top=3&$orderby=subject", headers=prefer)).json()

    assert pages == 3
    assert seen == [f"Lead {n:02d}" for n in reversed(range(25))]
    assert [r["subject"] for r in top["value"]] == ["Lead 00", "Lead 01", "Lead 02"]
    assert "@odata.nextLink" not in top


async def test_modifiedon_has_whole_seconds_and_versionnumber_orders_writes_within_one() -> None:
    """Dataverse stamps ``modifiedon`` to the second ("2021-06-22T17:56:21Z"; the change
    tracking token carries ``MM/dd/yyyy HH:mm:ss``, reference dataverse-web-api §3.4) and
    ``versionnumber`` is the row version that tells writes apart (§3.7: "dedupe by @odata.etag
    or versionnumber"). Twenty writes in one frozen second share one ``modifiedon``."""
    app = create_app(token=TOKEN, wall_clock=lambda: 1_717_243_200.4)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=API,
        headers={"Authorization": f"Bearer {TOKEN}", "Prefer": "return=representation"},
    ) as http:
        await http.post("accounts", json={"accountid": ACCOUNT, "name": "Contoso"})
        written = [
            (await http.patch(f"accounts({ACCOUNT})", json={"name": f"Contoso {n}"})).json()
            for n in range(20)
        ]

    assert {row["modifiedon"] for row in written} == {"2024-06-01T12:00:00Z"}
    versions = [row["versionnumber"] for row in written]
    assert versions == sorted(set(versions))
    assert [row["@odata.etag"] for row in written] == [f'W/"{v}"' for v in versions]


async def test_delete_removes_the_row_and_a_stale_etag_is_refused(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    await http.post("accounts", json={"accountid": ACCOUNT, "name": "Contoso"})
    etag = emulator.store.get("accounts", ACCOUNT).etag
    await http.patch(f"accounts({ACCOUNT})", json={"name": "Contoso Ltd"})

    stale = await http.delete(f"accounts({ACCOUNT})", headers={"If-Match": etag})
    deleted = await http.delete(f"accounts({ACCOUNT})")
    again = await http.get(f"accounts({ACCOUNT})")

    assert (stale.status_code, deleted.status_code, again.status_code) == (412, 204, 404)
    assert emulator.store.count("accounts") == 0


async def test_who_am_i_and_a_bearer_token_is_required(app: object) -> None:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url=API) as anonymous:
        none = await anonymous.get("WhoAmI")
        wrong = await anonymous.get("WhoAmI", headers={"Authorization": "Bearer nope"})
        ok = await anonymous.get("WhoAmI", headers={"Authorization": f"Bearer {TOKEN}"})

    assert (none.status_code, wrong.status_code, ok.status_code) == (401, 401, 200)
    assert set(ok.json()) >= {"UserId", "BusinessUnitId", "OrganizationId"}


async def test_over_the_request_limit_answers_429_with_retry_after_and_the_documented_code(
    http: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    limits = await control.put("limits", json={"requests": 3, "window_s": 300, "concurrent": 52})
    answers = [await http.get("WhoAmI") for _ in range(4)]

    assert limits.json() == {"requests": 3, "window_s": 300.0, "concurrent": 52}
    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[3].json()["error"] == {
        "code": "0x80072322",
        "message": "Number of requests exceeded the limit of 3 over time window of 300 seconds.",
    }
    assert 1 <= int(answers[3].headers["Retry-After"]) <= 300


async def test_over_the_concurrency_limit_answers_429_with_its_own_code(
    http: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await control.put("limits", json={"concurrent": 2})
    await control.put("faults", json={"latency_ms": 20})

    answers = await asyncio.gather(*(http.get("WhoAmI") for _ in range(5)))

    refused = [a for a in answers if a.status_code == 429]
    assert len(refused) == 3
    assert {a.json()["error"]["code"] for a in refused} == {"0x80072326"}
    assert (await control.get("stats")).json()["peak_concurrent"] == 2


async def test_control_reset_empties_data_but_keeps_currencies(
    http: httpx.AsyncClient, control: httpx.AsyncClient, emulator: Emulator, related: None
) -> None:
    currencies_before = set(emulator.store.tables["transactioncurrencies"]) - {CURRENCY}
    assert (await control.get("health")).status_code == 200

    assert (await control.post("reset")).status_code == 204

    stats = (await control.get("stats")).json()
    assert stats["rows"]["accounts"] == 0 and stats["rows"]["contacts"] == 0
    assert set(emulator.store.tables["transactioncurrencies"]) == currencies_before
    assert len(currencies_before) == len(CURRENCIES)
    eur = await http.get("transactioncurrencies?$filter=isocurrencycode eq 'EUR'")
    assert len(eur.json()["value"]) == 1


async def test_control_stats_count_requests_by_method_and_route_template(
    http: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    await http.post("accounts", json={"accountid": ACCOUNT, "name": "Contoso"})
    await http.get(f"accounts({ACCOUNT})")
    await http.get(f"accounts({ACCOUNT})")

    requests = (await control.get("stats")).json()["requests"]

    assert requests["POST /api/data/v9.2/accounts"] == 1
    assert requests["GET /api/data/v9.2/accounts({id})"] == 2


async def test_control_faults_inject_errors_and_delete_clears_them(
    http: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    put = await control.put(
        "faults", json={"error_rate": 1.0, "statuses": [503], "retry_after_s": 1}
    )
    failing = await http.get("WhoAmI")
    cleared = await control.delete("faults")
    healthy = await http.get("WhoAmI")
    bad = await control.put("faults", json={"error_rate": 2})

    assert put.status_code == 200
    assert (failing.status_code, failing.headers["Retry-After"]) == (503, "1")
    assert (cleared.status_code, healthy.status_code, bad.status_code) == (204, 200, 400)


async def test_metadata_lists_the_spec_custom_columns_with_their_types(
    http: httpx.AsyncClient,
) -> None:
    response = await http.get(
        "EntityDefinitions",
        params={"$filter": "LogicalName eq 'opportunity'", "$expand": "Attributes"},
    )

    [table] = response.json()["value"]
    types = {a["LogicalName"]: a["AttributeType"] for a in table["Attributes"]}
    assert table["EntitySetName"] == "opportunities"
    assert {
        "cosell_helpneeded": "Picklist",
        "cosell_visibletomicrosoft": "Boolean",
        "cosell_referralid": "String",
        "cosell_referrallink": "String",
        "cosell_microsoftcrmid": "String",
        "cosell_referralprogram": "String",
        "cosell_syncwithpartnercenter": "Boolean",
        "cosell_syncstatus": "Picklist",
        "cosell_audit": "Memo",
    }.items() <= types.items()
    solutions = (
        await http.get("EntityDefinitions(LogicalName='cosell_solution')/Attributes")
    ).json()
    names = {a["LogicalName"] for a in solutions["value"]}
    assert {"cosell_solutionid", "cosell_name", "cosell_solutionidentifier"} <= names
    assert "cosell_opportunityid" in names


async def test_deep_insert_creates_the_related_rows_in_the_same_request(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    response = await http.post(
        "opportunities",
        json={
            "name": "Co-sell: Contoso ERP rollout",
            "parentaccountid": {"accountid": ACCOUNT, "name": "Contoso"},
            "parentcontactid": {
                "contactid": CONTACT,
                "lastname": "Example",
                "parentcustomerid_account@odata.bind": f"/accounts({ACCOUNT})",
            },
        },
    )

    assert response.status_code == 204
    [opportunity] = emulator.store.tables["opportunities"].values()
    assert opportunity.values["_parentaccountid_value"] == ACCOUNT
    assert opportunity.values["_parentcontactid_value"] == CONTACT
    contact = emulator.store.get("contacts", CONTACT).values
    assert contact["_parentcustomerid_value"] == ACCOUNT


async def test_a_failing_deep_insert_leaves_no_row_behind(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    response = await http.post(
        "opportunities",
        json={
            "name": "Deal",
            "parentaccountid": {"accountid": ACCOUNT, "name": "Contoso"},
            "parentcontactid": {"lastname": "Example", "nosuchcolumn": 1},
        },
    )

    assert response.status_code == 400
    assert emulator.store.count("accounts") == 0
    assert emulator.store.count("contacts") == 0
    assert emulator.store.count("opportunities") == 0
