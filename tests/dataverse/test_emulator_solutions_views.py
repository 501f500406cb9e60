"""System views and FetchXML over the emulator's Web API (issue 17): ``savedqueries``,
``GET <set>?savedQuery=<id>`` and ``GET <set>?fetchXml=<FetchXML>``, each test naming the
learn.microsoft.com page it follows."""

from __future__ import annotations

import httpx

from sandbox.dataverse import Emulator
from tests.dataverse.test_emulator_solutions import partner_table


async def _opportunities(http: httpx.AsyncClient) -> dict[str, str]:
    rows = {
        "Contoso migration": {"estimatedvalue": 5000, "isrevenuesystemcalculated": True},
        "Fabrikam renewal": {"estimatedvalue": 12000, "description": "big"},
        "Contoso expansion": {"estimatedvalue": 800},
        "Northwind pilot": {"estimatedvalue": 100, "isrevenuesystemcalculated": True},
    }
    ids = {}
    for name, values in rows.items():
        response = await http.post("opportunities", json={"name": name, **values})
        assert response.status_code == 204, response.text
        ids[name] = response.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    return ids


async def test_fetchxml_returns_the_matching_rows_without_null_columns(
    http: httpx.AsyncClient,
) -> None:
    """webapi/use-fetchxml-web-api: ``GET opportunities?fetchXml=<url-encoded>``; unlike OData
    queries, FetchXML results leave out properties whose value is null; fetchxml/reference/
    condition and operators: like with %, in with <value> elements, nested filters, 1/0 for
    two-option columns; order descending."""
    await _opportunities(http)
    fetch = """<fetch>
      <entity name="opportunity">
        <attribute name="name" />
        <attribute name="estimatedvalue" />
        <attribute name="description" />
        <order attribute="estimatedvalue" descending="true" />
        <filter type="or">
          <condition attribute="name" operator="like" value="Contoso%" />
          <filter type="and">
            <condition attribute="isrevenuesystemcalculated" operator="eq" value="1" />
            <condition attribute="estimatedvalue" operator="lt" value="1000" />
          </filter>
        </filter>
      </entity>
    </fetch>"""
    response = await http.get("opportunities", params={"fetchXml": fetch})
    assert response.status_code == 200, response.text
    rows = response.json()["value"]
    assert [r["name"] for r in rows] == [
        "Contoso migration",
        "Contoso expansion",
        "Northwind pilot",
    ]
    assert all("description" not in r for r in rows)  # null: left out
    assert set(rows[0]) == {"@odata.etag", "opportunityid", "name", "estimatedvalue"}
    chosen = """<fetch><entity name="opportunity"><attribute name="name" />
      <filter><condition attribute="name" operator="in"><value>Fabrikam renewal</value>
      <value>Northwind pilot</value></condition>
      <condition attribute="description" operator="not-null" /></filter></entity></fetch>"""
    found = await http.get("opportunities", params={"fetchXml": chosen})
    assert [r["name"] for r in found.json()["value"]] == ["Fabrikam renewal"]


async def test_fetchxml_count_and_page_page_the_result(http: httpx.AsyncClient) -> None:
    """webapi/use-fetchxml-web-api ("Paging with FetchXml"): ``count`` rows a page, ``page``
    chooses the page, ``@Microsoft.Dynamics.CRM.morerecords`` says whether more follow."""
    await _opportunities(http)
    pages = []
    for page in (1, 2):
        fetch = (
            f'<fetch count="3" page="{page}"><entity name="opportunity"><attribute name="name" />'
            '<order attribute="name" /></entity></fetch>'
        )
        body = (await http.get("opportunities", params={"fetchXml": fetch})).json()
        pages.append(
            ([r["name"] for r in body["value"]], body["@Microsoft.Dynamics.CRM.morerecords"])
        )
    assert pages == [
        (["Contoso expansion", "Contoso migration", "Fabrikam renewal"], True),
        (["Northwind pilot"], False),
    ]


async def test_fetchxml_the_emulator_cannot_evaluate_is_a_400(http: httpx.AsyncClient) -> None:
    """fetchxml/overview: the emulator evaluates a subset; a query using more (link-entity,
    aggregates, other operators) or naming a column the table lacks is refused, never answered
    with rows that ignore part of it."""
    for fetch, words in (
        ('<fetch><entity name="opportunity"><link-entity name="account" from="accountid" '
         'to="parentaccountid" /></entity></fetch>', "link-entity"),
        ('<fetch aggregate="true"><entity name="opportunity" /></fetch>', "aggregate"),
        ('<fetch><entity name="opportunity"><filter><condition attribute="name" '
         'operator="last-x-days" value="3" /></filter></entity></fetch>', "last-x-days"),
        ('<fetch><entity name="opportunity"><attribute name="nosuch" /></entity></fetch>',
         "nosuch"),
        ('<fetch><entity name="account" /></fetch>', "account"),
        ("<fetch><entity", "not well-formed"),
    ):  # fmt: skip
        response = await http.get("opportunities", params={"fetchXml": fetch})
        assert response.status_code == 400, fetch
        assert words in response.json()["error"]["message"], response.text


async def test_a_saved_query_runs_its_view(http: httpx.AsyncClient, emulator: Emulator) -> None:
    """webapi/retrieve-and-execute-predefined-queries: find the view's savedqueryid, then
    ``GET opportunities?savedQuery=<id>`` returns the rows of its FetchXML; "My Open
    Opportunities" are the caller's open ones (eq-userid)."""
    ids = await _opportunities(http)
    views = await http.get(
        "savedqueries",
        params={
            "$filter": "returnedtypecode eq 'opportunity' and querytype eq 0",
            "$select": "name,savedqueryid,isdefault",
        },
    )
    by_name = {v["name"]: v for v in views.json()["value"]}
    assert {"Open Opportunities", "My Open Opportunities"} <= set(by_name)
    await http.post(
        "LoseOpportunity",
        json={
            "Status": 4,
            "OpportunityClose": {
                "subject": "lost",
                "opportunityid@odata.bind": f"/opportunities({ids['Northwind pilot']})",
            },
        },
    )
    view_id = by_name["My Open Opportunities"]["savedqueryid"]
    response = await http.get("opportunities", params={"savedQuery": view_id})
    assert response.status_code == 200, response.text
    names = sorted(r["name"] for r in response.json()["value"])
    assert names == ["Contoso expansion", "Contoso migration", "Fabrikam renewal"]
    owner = response.json()["value"][0]["_ownerid_value"]
    assert owner == emulator.store.caller.user_id
    wrong_table = await http.get("accounts", params={"savedQuery": view_id})
    assert wrong_table.status_code == 400
    unknown = await http.get(
        "opportunities", params={"savedQuery": "00000000-0000-4000-8000-000000000009"}
    )
    assert unknown.status_code == 404


async def test_a_new_table_gets_its_default_public_view(http: httpx.AsyncClient) -> None:
    """maker/model-driven-apps/create-edit-views: a new table has the public view
    "Active <plural name>", its default view, listing its active rows."""
    created = await partner_table(http)
    assert created.status_code == 204, created.text
    views = await http.get(
        "savedqueries", params={"$filter": "returnedtypecode eq 'cosell_partner'"}
    )
    [view] = views.json()["value"]
    assert (view["name"], view["isdefault"], view["querytype"]) == ("Active Partners", True, 0)
    await http.post("cosell_partners", json={"cosell_name": "Adatum"})
    rows = await http.get("cosell_partners", params={"savedQuery": view["savedqueryid"]})
    assert [r["cosell_name"] for r in rows.json()["value"]] == ["Adatum"]


async def test_a_view_is_created_with_valid_fetchxml_into_the_solution(
    http: httpx.AsyncClient,
) -> None:
    """reference/entities/savedquery and webapi/compose-http-requests-handle-errors: a view is a
    row of savedqueries (returnedtypecode, fetchxml, layoutxml, querytype 0); made with the
    solution header it joins the solution (componenttype 26)."""
    publisher = await http.get("publishers", params={"$filter": "customizationprefix eq 'new'"})
    publisher_id = publisher.json()["value"][0]["publisherid"]
    await http.post(
        "solutions",
        json={
            "uniquename": "views",
            "version": "1.0",
            "publisherid@odata.bind": f"/publishers({publisher_id})",
        },
    )
    body = {
        "name": "Co-sell opportunities",
        "returnedtypecode": "opportunity",
        "querytype": 0,
        "fetchxml": '<fetch><entity name="opportunity"><attribute name="name" /></entity></fetch>',
        "layoutxml": '<grid name="resultset" object="3" jump="name" select="1" icon="1" '
        'preview="1"><row name="result" id="opportunityid"><cell name="name" width="300" />'
        "</row></grid>",
    }
    bad = await http.post(
        "savedqueries", json={**body, "fetchxml": "<fetch><entity name='account'/></fetch>"}
    )
    assert bad.status_code == 400
    created = await http.post(
        "savedqueries", json=body, headers={"MSCRM.SolutionUniqueName": "views"}
    )
    assert created.status_code == 204, created.text
    view_id = created.headers["OData-EntityId"].rsplit("(", 1)[1].rstrip(")")
    rows = await http.get("solutioncomponents", params={"$filter": f"objectid eq {view_id}"})
    assert [r["componenttype"] for r in rows.json()["value"]] == [26]
