"""``cosell selftest``: offline, ``--live`` against the sandbox emulators on loopback (so no test
ever reaches a Microsoft host), ``--write`` end to end, and the shape report proven against a
deliberately altered emulator. The comparison itself is pure and tested on its own first."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sandbox import partner_center as pc_emulator
from shared.cli.selftest.replay import Exchange, Rewriter, pair_headers, pair_values
from shared.cli.selftest.shapes import (
    PRESENT,
    Shape,
    compare_shapes,
    grouped,
    header_shape,
    property_paths,
    request_label,
)
from shared.cli.selftest.steps import NAME_PREFIX
from shared.settings import get_settings
from tests.cli.conftest import AUTH, Sandbox, ServerThread, incoming_referral

GUID = "6f1f8a5e-3d4c-4b2a-9e8f-000000000001"
OTHER = "0a0a0a0a-1111-4222-8333-444444444444"

# -- the pure parts ------------------------------------------------------------------------------


def test_property_paths_go_two_levels_deep_and_into_value_0_as_into_an_entity() -> None:
    body = {
        "@odata.context": "x",
        "value": [{"id": GUID, "details": {"dealValue": 1, "requirements": {"solutions": []}}}],
    }

    assert property_paths(body) == {
        "@odata.context",
        "value",
        "value[0].id",
        "value[0].details",
        "value[0].details.dealValue",
        "value[0].details.requirements",
    }
    assert property_paths({"team": [{"email": "e"}], "name": None}) == {
        "team",
        "team[0].email",
        "name",
    }
    assert property_paths(None) == frozenset()


def test_header_shape_keeps_protocol_values_and_only_the_presence_of_data() -> None:
    shape = header_shape(
        {
            "ETag": 'W/"123"',
            "OData-Version": "4.0",
            "Content-Type": "application/json; odata.metadata=minimal; charset=utf-8",
            "Preference-Applied": "return=representation, odata.maxpagesize=10",
            "Date": "today",
        }
    )

    assert shape == {
        "etag": PRESENT,
        "odata-version": "4.0",
        "content-type": "application/json",
        "preference-applied": "return=representation,odata.maxpagesize=10",
    }


def test_compare_shapes_names_every_kind_of_difference_in_a_stable_order() -> None:
    real = Shape(200, {"etag": PRESENT, "odata-version": "4.0"}, frozenset({"id", "tags"}))
    emulator = Shape(201, {"etag": PRESENT}, frozenset({"id", "links"}))

    found = compare_shapes("step", "POST /referrals", real, emulator)

    assert [(d.kind, d.item, d.real, d.emulator) for d in found] == [
        ("status", "status", "200", "201"),
        ("header", "odata-version", "4.0", "-"),
        ("unknown to the emulator", "tags", PRESENT, "-"),
        ("missing in the real service", "links", "-", PRESENT),
    ]
    assert compare_shapes("step", "GET x", real, real) == []


def test_request_labels_hold_no_ids_and_no_query_values() -> None:
    label = request_label(
        "GET", f"/api/data/v9.2/opportunities({GUID})", ["$select", "$expand", "$select"]
    )

    assert label == "GET /api/data/v9.2/opportunities({id})?$expand&$select"


def test_repeated_differences_are_reported_once_with_their_steps() -> None:
    shape_a, shape_b = Shape(200, {}, frozenset({"x"})), Shape(200, {}, frozenset())
    found = compare_shapes("one", "GET r", shape_a, shape_b) + compare_shapes(
        "two", "GET r", shape_a, shape_b
    )

    rows = grouped(found)

    assert len(rows) == 1
    assert rows[0]["steps"] == ["one", "two"] and rows[0]["count"] == 2


def test_ids_and_etags_are_paired_by_place_and_rewritten_into_the_next_request() -> None:
    real = {"value": [{"id": GUID, "eTag": '"7"', "name": "Contoso"}]}
    emulator = {"value": [{"id": OTHER, "eTag": '"1"', "name": "Fabrikam"}]}
    rewriter = Rewriter({"https://api.partner.microsoft.com/v1.0/engagements": "http://pc/v1"})
    rewriter.learn(pair_values(real, emulator))
    rewriter.learn(pair_headers({"etag": 'W/"9"'}, {"etag": 'W/"2"'}))
    exchange = Exchange(
        step="s",
        service="partner center",
        method="PATCH",
        url=f"https://api.partner.microsoft.com/v1.0/engagements/referrals/{GUID}",
        request_headers=[("Authorization", "Bearer real-token"), ("If-Match", '"7"')],
        request_body=json.dumps([{"op": "replace", "path": "/x", "value": GUID}]).encode(),
        status=200,
        headers={},
        body=None,
    )

    request = rewriter.request(exchange)

    assert str(request.url) == f"http://pc/v1/referrals/{OTHER}"
    assert request.headers["authorization"] == "Bearer sandbox"  # never the real token
    assert request.headers["if-match"] == '"1"'
    assert OTHER in request.content.decode() and GUID not in request.content.decode()
    assert pair_values({"name": "Contoso"}, {"name": "Fabrikam"}) == {}  # data is not an id


# -- the command -------------------------------------------------------------------------------


def _writes(url: str) -> dict[str, int]:
    stats = httpx.get(f"{url}/_emulator/stats", timeout=10).json()
    return {
        route: count
        for route, count in stats["requests"].items()
        if route.split(" ")[0] in ("POST", "PATCH", "PUT", "DELETE")
    }


def test_offline_selftest_runs_the_checks_against_the_emulators_and_finds_no_difference(
    cli_env: Sandbox, cosell: Any
) -> None:
    ran = cosell("selftest", "--json")

    document = ran.json()
    assert ran.code == 0, ran.err
    assert document["mode"] == "offline"
    assert {s["status"] for s in document["steps"]} == {"pass"}
    assert document["requests"]["replayed"] == document["requests"]["recorded"] > 5
    assert document["differences"] == []
    assert _writes(cli_env.pc_url) == {}  # offline: not even the configured sandbox is asked


def test_live_read_only_checks_the_tenant_and_writes_nothing(cli_env: Sandbox, cosell: Any) -> None:
    incoming_referral(cli_env.pc_url)
    registered = cosell(
        "webhook", "register", "--url", f"{cli_env.receiver_url}/api/webhooks/partner-center"
    )
    assert registered.code == 0, registered.err
    before = (_writes(cli_env.pc_url), _writes(cli_env.dataverse_url))

    ran = cosell("selftest", "--live", "--json")

    document = ran.json()
    assert ran.code == 0, ran.err
    steps = {s["step"]: s["status"] for s in document["steps"]}
    assert steps == {
        "Partner Center tokens": "pass",
        "Dataverse token": "pass",
        "Dataverse WhoAmI": "pass",
        "referrals: one page": "pass",
        "referrals: read one": "pass",
        "webhook registration": "pass",
        "schema check": "pass",
        "mapping check": "pass",
    }
    assert (_writes(cli_env.pc_url), _writes(cli_env.dataverse_url)) == before
    # The same emulator answers both sides: every request replays with the same shape.
    assert document["differences"] == []
    assert document["summary"]["status"] == 0


def test_live_write_creates_syncs_and_closes_both_deals_as_lost(
    cli_env: Sandbox, cosell: Any
) -> None:
    ran = cosell("selftest", "--live", "--write", "--yes", "--json")

    document = ran.json()
    assert ran.code == 0, ran.err
    write_steps = [s for s in document["steps"] if s["step"].startswith("write:")]
    assert len(write_steps) == 9
    assert {s["status"] for s in write_steps} == {"pass"}, write_steps
    referrals = httpx.get(
        f"{cli_env.pc_url}/v1.0/engagements/referrals", headers=AUTH, timeout=10
    ).json()["value"]
    ours = [r for r in referrals if r["name"].startswith(NAME_PREFIX)]
    assert len(ours) == 2  # the private one it created, and the one the sync made
    assert {(r["status"], r["substatus"]) for r in ours} == {("Closed", "Lost")}
    assert {r["type"] for r in ours} == {"Independent"}
    created = document["created"]
    for key in ("opportunity (Dataverse, created)", "opportunity of the referral (by the sync)"):
        row = httpx.get(
            f"{cli_env.dataverse_url}/api/data/v9.2/opportunities({created[key]})"
            "?$select=name,statecode",
            headers=AUTH,
            timeout=10,
        ).json()
        assert row["statecode"] == 2  # Lost
        assert NAME_PREFIX in row["name"]
    # The engine's own requests were replayed too (ids swapped for the emulator's).
    assert document["requests"]["replayed"] > 30
    assert document["differences"] == []


def test_write_asks_first_and_creates_nothing_unconfirmed(cli_env: Sandbox, cosell: Any) -> None:
    ran = cosell("selftest", "--live", "--write")

    assert ran.code == 1
    assert "not confirmed" in ran.err and "Co-sell Sync selftest" in ran.err
    assert _writes(cli_env.pc_url) == {} and _writes(cli_env.dataverse_url) == {}


def test_write_without_live_is_a_usage_error(cli_env: Sandbox, cosell: Any) -> None:
    ran = cosell("selftest", "--write", "--yes")

    assert ran.code == 2
    assert "--write needs --live" in ran.err


# -- a "real" service that answers in another shape ----------------------------------------------


class Altered:
    """ASGI wrapper: the Partner Center emulator, but its referrals carry a property ours never
    return (``unheardOf``), lack one it does return (``details.notes``), the list answers
    203 instead of 200 and every answer says ``OData-Version: 4.0``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith("/_emulator"):
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            body = b"".join(chunks)
            status = start["status"]
            try:
                document = json.loads(body)
            except ValueError:
                document = None
            if isinstance(document, dict):
                for item in [document, *(document.get("value") or [])]:
                    if isinstance(item, dict) and "eTag" in item:
                        item["unheardOf"] = "x"
                        if isinstance(item.get("details"), dict):
                            item["details"].pop("notes", None)
                if scope["method"] == "GET" and scope["path"].endswith("/referrals"):
                    status = 203
                body = json.dumps(document).encode()
            headers = [
                (k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"
            ]
            headers += [(b"content-length", str(len(body)).encode()), (b"odata-version", b"4.0")]
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)


@pytest.fixture
def altered_partner_center(cli_env: Sandbox, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ServerThread(Altered(pc_emulator.create_app(seed=7)))
    url = server.start()
    monkeypatch.setenv("PARTNER_CENTER_API_URL", f"{url}/v1.0/engagements")
    monkeypatch.setenv("PARTNER_CENTER_WEBHOOK_API_URL", f"{url}/webhooks/v1")
    get_settings.cache_clear()
    try:
        yield url
    finally:
        server.stop()


def test_a_service_answering_in_another_shape_is_reported_place_by_place(
    altered_partner_center: str, cosell: Any
) -> None:
    incoming_referral(altered_partner_center)

    ran = cosell("selftest", "--live", "--json")

    document = ran.json()
    assert ran.code == 0, ran.err  # differences are findings, not failures
    found = {
        (d["request"], d["kind"], d["item"], d["real"], d["emulator"])
        for d in document["differences"]
    }
    one = "GET /v1.0/engagements/referrals/{id}"
    page = "GET /v1.0/engagements/referrals?$top"
    assert (one, "unknown to the emulator", "unheardOf", "present", "-") in found
    assert (one, "missing in the real service", "details.notes", "-", "present") in found
    assert (page, "unknown to the emulator", "value[0].unheardOf", "present", "-") in found
    assert (page, "status", "status", "203", "200") in found
    assert (one, "header", "odata-version", "4.0", "-") in found
    # Dataverse was not altered: none of its requests differ.
    assert not any("/api/data/" in d["request"] for d in document["differences"])
    assert document["summary"]["unknown to the emulator"] >= 2


def test_the_table_lists_the_differences_for_a_human(
    altered_partner_center: str, cosell: Any
) -> None:
    incoming_referral(altered_partner_center)

    ran = cosell("selftest", "--live")

    assert ran.code == 0, ran.err
    assert "[PASS] referrals: read one" in ran.out
    assert "unknown to the emulator" in ran.out and "unheardOf" in ran.out
    assert "missing in the real service" in ran.out
