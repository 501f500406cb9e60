"""DataverseClient against the emulator, over HTTP (ASGI transport): the issue's acceptance
cases and the rest of the client's surface. Results are checked as rows in the emulator."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import date, datetime

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from sandbox.dataverse import Emulator
from shared.dataverse import (
    AlreadyExists,
    AuthenticationFailed,
    ColumnDefinition,
    DataverseClient,
    Expand,
    Filter,
    InvalidRequest,
    LookupDefinition,
    NotFound,
    OpportunityState,
    OpportunityStatus,
    PreconditionFailed,
    ServiceError,
    TableDefinition,
    contains,
    eq,
    etag_of,
    ge,
    gt,
    lookup,
    startswith,
)
from shared.errors import CosellError

from .conftest import URL

ACCOUNT_ID = uuid.UUID("6f3c1a2b-0000-4000-8000-000000000001")


async def test_create_with_chosen_id_stores_that_row_and_a_repeat_raises_already_exists(
    client: DataverseClient, emulator: Emulator
) -> None:
    row = await client.create("accounts", {"name": "Contoso"}, row_id=ACCOUNT_ID)

    assert row["accountid"] == str(ACCOUNT_ID)
    assert etag_of(row)
    with pytest.raises(AlreadyExists) as raised:
        await client.create("accounts", {"name": "Contoso again"}, row_id=ACCOUNT_ID)
    assert raised.value.code == "0x80040237"
    assert "already exists" in raised.value.message
    assert isinstance(raised.value, CosellError)
    stored = emulator.store.tables["accounts"]
    assert len(stored) == 1
    assert stored[str(ACCOUNT_ID)].values["name"] == "Contoso"


async def test_update_with_stale_etag_raises_precondition_failed_and_changes_nothing(
    client: DataverseClient, emulator: Emulator
) -> None:
    created = await client.create("accounts", {"name": "Contoso"}, row_id=ACCOUNT_ID)
    stale = etag_of(created)
    assert stale is not None
    updated = await client.update("accounts", ACCOUNT_ID, {"name": "Fabrikam"}, etag=stale)
    assert etag_of(updated) != stale

    with pytest.raises(PreconditionFailed) as raised:
        await client.update("accounts", ACCOUNT_ID, {"name": "Northwind"}, etag=stale)

    assert raised.value.status == 412
    assert raised.value.code == "0x80060882"
    assert emulator.store.get("accounts", str(ACCOUNT_ID)).values["name"] == "Fabrikam"


async def test_update_with_star_never_creates_a_missing_row(
    client: DataverseClient, emulator: Emulator
) -> None:
    with pytest.raises(NotFound):
        await client.update("accounts", ACCOUNT_ID, {"name": "Ghost"})
    assert emulator.store.count("accounts") == 0


async def test_upsert_creates_then_updates_the_same_row(
    client: DataverseClient, emulator: Emulator
) -> None:
    _, created = await client.upsert("accounts", ACCOUNT_ID, {"name": "Contoso"})
    row, created_again = await client.upsert("accounts", ACCOUNT_ID, {"name": "Contoso Ltd"})

    assert (created, created_again) == (True, False)
    assert row["accountid"] == str(ACCOUNT_ID)
    assert emulator.store.get("accounts", str(ACCOUNT_ID)).values["name"] == "Contoso Ltd"


@pytest.mark.parametrize(
    "tricky",
    [
        "O'Brien & Sons",
        "Contoso' or name ne 'x",
        "'') or (1 eq 1",
        "A+B #1 ? 100% /path\\",
    ],
)
async def test_filter_on_a_name_with_quotes_returns_exactly_that_row(
    client: DataverseClient, tricky: str
) -> None:
    for name in (tricky, "Contoso", "O", "Brien & Sons", tricky + " Holdings"):
        await client.create("accounts", {"name": name})

    rows = [
        r async for r in client.list_rows("accounts", select=["name"], filter=eq("name", tricky))
    ]

    assert [r["name"] for r in rows] == [tricky]


async def test_five_thousand_rows_page_through_exactly_once(
    client: DataverseClient, emulator: Emulator
) -> None:
    ids = {str(uuid.uuid4()) for _ in range(5_123)}
    for row_id in ids:  # arranged directly in the emulator: the paging is under test
        emulator.store.create("contacts", {"contactid": row_id, "lastname": "Example"})
    before = emulator.stats()["total_requests"]

    seen = [
        r["contactid"]
        async for r in client.list_rows("contacts", select=["lastname"], page_size=1000)
    ]

    assert len(seen) == len(ids)
    assert set(seen) == ids
    assert emulator.stats()["total_requests"] - before == 6  # 5 full pages + 1 partial


async def test_paging_with_an_order_keeps_every_row_once_and_in_order(
    client: DataverseClient, emulator: Emulator
) -> None:
    for n in range(250):
        emulator.store.create("accounts", {"name": f"Contoso {n % 7}", "numberofemployees": n})

    rows = [
        r
        async for r in client.list_rows(
            "accounts", select=["name", "numberofemployees"], orderby=["name desc"], page_size=40
        )
    ]

    assert len({r["accountid"] for r in rows}) == 250
    names = [r["name"] for r in rows]
    assert names == sorted(names, reverse=True)


async def test_lookups_bind_on_create_and_read_back_as_value_and_expansion(
    client: DataverseClient, emulator: Emulator
) -> None:
    await client.create("accounts", {"name": "Contoso"}, row_id=ACCOUNT_ID)
    currency = await client.currency_id("EUR")
    opportunity = await client.create(
        "opportunities",
        {
            "name": "Co-sell: Contoso ERP rollout",
            "estimatedvalue": 125000.0,
            "estimatedclosedate": "2024-09-30",
            **lookup("customerid_account", "accounts", ACCOUNT_ID),
            **lookup("parentaccountid", "accounts", ACCOUNT_ID),
            **lookup("transactioncurrencyid", "transactioncurrencies", currency),
        },
    )

    read = await client.get(
        "opportunities",
        opportunity["opportunityid"],
        select=["name", "_parentaccountid_value", "_transactioncurrencyid_value"],
        expand=[Expand("parentaccountid", select=["name"])],
    )
    assert read["_parentaccountid_value"] == str(ACCOUNT_ID)
    assert read["_transactioncurrencyid_value"] == str(currency)
    assert read["parentaccountid"]["name"] == "Contoso"
    found = await client.first(
        "opportunities", select=["name"], filter=eq("_customerid_value", ACCOUNT_ID)
    )
    assert found is not None and found["name"] == "Co-sell: Contoso ERP rollout"


async def test_bind_to_a_missing_row_is_refused_and_nothing_is_created(
    client: DataverseClient, emulator: Emulator
) -> None:
    with pytest.raises(NotFound) as raised:
        await client.create(
            "opportunities", {"name": "x", **lookup("parentaccountid", "accounts", ACCOUNT_ID)}
        )
    assert raised.value.code == "0x80040217"
    assert emulator.store.count("opportunities") == 0


async def test_unknown_column_raises_invalid_request_with_dataverse_code_and_message(
    client: DataverseClient,
) -> None:
    with pytest.raises(InvalidRequest) as raised:
        await client.create("opportunities", {"name": "x", "new_cosellenabled": True})
    assert raised.value.status == 400
    assert raised.value.code == "0x80048d19"
    assert "new_cosellenabled" in raised.value.message


async def test_filters_on_dates_numbers_booleans_and_text_functions(
    client: DataverseClient,
) -> None:
    for n, (name, close) in enumerate(
        [("Alpha deal", "2024-06-30"), ("Beta deal", "2024-07-15"), ("Gamma", "2024-08-01")]
    ):
        await client.create(
            "opportunities",
            {
                "name": name,
                "estimatedclosedate": close,
                "estimatedvalue": 1000.0 * (n + 1),
                "cosell_syncwithpartnercenter": n != 1,
            },
        )

    async def names(where: Filter) -> list[str]:
        rows = client.list_rows("opportunities", select=["name"], orderby=["name"], filter=where)
        return [r["name"] async for r in rows]

    assert await names(ge("estimatedclosedate", date(2024, 7, 1))) == ["Beta deal", "Gamma"]
    assert await names(contains("name", "DEAL") & ~startswith("name", "beta")) == ["Alpha deal"]
    assert await names(eq("cosell_syncwithpartnercenter", True) & ge("estimatedvalue", 2000)) == [
        "Gamma"
    ]
    assert await names(eq("cosell_helpneeded", None)) == ["Alpha deal", "Beta deal", "Gamma"]


async def test_win_and_lose_opportunity_set_state_and_status(
    client: DataverseClient, emulator: Emulator
) -> None:
    won = await client.create("opportunities", {"name": "Won deal", "estimatedvalue": 500.0})
    lost = await client.create("opportunities", {"name": "Lost deal"})

    await client.win_opportunity(won["opportunityid"], subject="Won via co-sell")
    await client.lose_opportunity(
        lost["opportunityid"], subject="Declined", status=OpportunityStatus.CANCELED
    )

    won_row = emulator.store.get("opportunities", won["opportunityid"]).values
    lost_row = emulator.store.get("opportunities", lost["opportunityid"]).values
    assert (won_row["statecode"], won_row["statuscode"]) == (OpportunityState.WON, 3)
    assert won_row["actualvalue"] == 500.0
    assert (lost_row["statecode"], lost_row["statuscode"]) == (OpportunityState.LOST, 4)


async def test_closing_by_update_is_refused_but_reopening_by_update_works(
    client: DataverseClient, emulator: Emulator
) -> None:
    row = await client.create("opportunities", {"name": "Deal"})
    with pytest.raises(InvalidRequest):
        await client.update(
            "opportunities", row["opportunityid"], {"statecode": 1, "statuscode": 3}
        )
    await client.win_opportunity(row["opportunityid"])

    await client.update("opportunities", row["opportunityid"], {"statecode": 0, "statuscode": 2})

    values = emulator.store.get("opportunities", row["opportunityid"]).values
    assert (values["statecode"], values["statuscode"]) == (0, 2)


async def test_currency_lookup_by_iso_code_is_cached(
    client: DataverseClient, emulator: Emulator
) -> None:
    first = await client.get_currency("eur")
    requests_after_first = emulator.stats()["total_requests"]
    again = await client.currency_id("EUR")

    assert first.iso_code == "EUR" and again == first.id
    assert emulator.stats()["total_requests"] == requests_after_first
    with pytest.raises(NotFound):
        await client.get_currency("XXX")


async def test_concurrent_first_lookups_of_a_currency_make_one_request(
    client: DataverseClient, emulator: Emulator
) -> None:
    before = emulator.stats()["total_requests"]

    ids = await asyncio.gather(*(client.currency_id("EUR") for _ in range(16)))

    assert len(set(ids)) == 1
    assert emulator.stats()["total_requests"] - before == 1


async def test_who_am_i_names_the_application_user(client: DataverseClient) -> None:
    me = await client.who_am_i()
    assert str(me.user_id) == "4a5b6c7d-0000-4000-8000-00000000a001"


async def test_delete_removes_the_row_and_a_second_delete_is_not_found(
    client: DataverseClient, emulator: Emulator
) -> None:
    await client.create("accounts", {"name": "Contoso"}, row_id=ACCOUNT_ID)
    await client.delete("accounts", ACCOUNT_ID)
    assert emulator.store.count("accounts") == 0
    with pytest.raises(NotFound):
        await client.delete("accounts", ACCOUNT_ID)


async def test_a_wrong_token_raises_authentication_failed(app: Starlette) -> None:
    async with DataverseClient(
        URL, token="not-the-token", transport=httpx.ASGITransport(app=app)
    ) as stranger:
        with pytest.raises(AuthenticationFailed) as raised:
            await stranger.who_am_i()
    assert raised.value.status == 401


async def test_schema_calls_create_a_table_columns_and_a_lookup_that_rows_can_use(
    client: DataverseClient, emulator: Emulator
) -> None:
    await client.create_table(
        TableDefinition(
            schema_name="cosell_Note",
            display_name="Co-sell note",
            display_collection_name="Co-sell notes",
            primary_name=ColumnDefinition(
                schema_name="cosell_Name", display_name="Name", kind="string", max_length=200
            ),
        )
    )
    await client.create_column(
        "cosell_note",
        ColumnDefinition(
            schema_name="cosell_Priority",
            display_name="Priority",
            kind="choice",
            options={100000000: "Low", 100000001: "High"},
        ),
    )
    await client.create_lookup(
        LookupDefinition(
            schema_name="cosell_OpportunityId",
            display_name="Opportunity",
            referenced_table="opportunity",
            referenced_key="opportunityid",
            referencing_table="cosell_note",
            relationship_schema_name="cosell_opportunity_cosell_note",
        )
    )
    with pytest.raises(AlreadyExists):
        await client.create_column(
            "cosell_note",
            ColumnDefinition(
                schema_name="cosell_Priority", display_name="Priority", kind="integer"
            ),
        )

    table = await client.get_table("cosell_note")
    opportunity = await client.create("opportunities", {"name": "Deal"})
    note = await client.create(
        "cosell_notes",
        {
            "cosell_name": "First call",
            "cosell_priority": 100000001,
            **lookup("cosell_opportunityid", "opportunities", opportunity["opportunityid"]),
        },
        row_id=uuid.UUID("11111111-0000-4000-8000-000000000001"),
    )

    assert table.entity_set_name == "cosell_notes"
    assert {"cosell_name", "cosell_priority", "cosell_opportunityid"} <= {
        c.logical_name for c in table.columns
    }
    stored = emulator.store.get("cosell_notes", note["cosell_noteid"]).values
    assert stored["_cosell_opportunityid_value"] == opportunity["opportunityid"]
    assert await client.find_table("cosell_missing") is None


async def test_a_next_link_to_another_host_is_not_followed_with_the_token() -> None:
    seen: list[str] = []

    async def foreign_link(request: Request) -> JSONResponse:
        seen.append(str(request.url))
        return JSONResponse(
            {"value": [{"name": "Contoso"}], "@odata.nextLink": "https://elsewhere.example/x"}
        )

    server = Starlette(routes=[Route("/api/data/v9.2/accounts", foreign_link)])
    async with DataverseClient(
        URL, token="sandbox", transport=httpx.ASGITransport(app=server)
    ) as dataverse:
        rows = dataverse.list_rows("accounts")
        assert (await anext(rows))["name"] == "Contoso"
        with pytest.raises(ServiceError, match="outside"):
            await anext(rows)

    assert len(seen) == 1


async def test_a_modifiedon_watermark_finds_exactly_the_rows_changed_after_it(
    client: DataverseClient,
) -> None:
    first = await client.create(
        "opportunities", {"name": "Old", "cosell_syncwithpartnercenter": True}
    )
    watermark = datetime.fromisoformat(first["modifiedon"].replace("Z", "+00:00"))
    await asyncio.sleep(1.01 - time.time() % 1)  # modifiedon has whole seconds: the next one
    await client.create("opportunities", {"name": "New", "cosell_syncwithpartnercenter": True})
    await client.create("opportunities", {"name": "Not synced"})
    await client.update("opportunities", first["opportunityid"], {"description": "edited"})

    changed = [
        r["name"]
        async for r in client.list_rows(
            "opportunities",
            select=["name", "modifiedon"],
            filter=gt("modifiedon", watermark) & eq("cosell_syncwithpartnercenter", True),
            orderby=["modifiedon asc", "opportunityid asc"],
        )
    ]

    assert sorted(changed) == ["New", "Old"]  # one second: ordered by id within it
