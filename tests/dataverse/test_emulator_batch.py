"""``POST $batch`` against the emulator (reference 5), with multipart bodies written by hand as a
client sends them, and the answers read back with the standard library's MIME parser."""

from __future__ import annotations

import asyncio
import email
import email.message
import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from sandbox.dataverse import Emulator, Limits, create_app

from .conftest import API, TOKEN, VirtualTime

ACCOUNT = "6f3c1a2b-0000-4000-8000-0000000000b1"
OTHER_ACCOUNT = "6f3c1a2b-0000-4000-8000-0000000000b2"
CONTACT = "8a1d2c3e-0000-4000-8000-0000000000b3"
OPPORTUNITY = "1d2e3f40-0000-4000-8000-0000000000b4"
MISSING = "00000000-0000-4000-8000-0000000000ff"


@dataclass
class Inner:
    status: int
    headers: dict[str, str]
    body: str
    content_id: str | None

    def json(self) -> Any:
        return json.loads(self.body)


def answers(response: httpx.Response) -> list[Inner | list[Inner]]:
    """The parts of a ``$batch`` answer; a change set's answers as a nested list."""
    content_type = response.headers["content-type"]
    assert content_type.startswith("multipart/mixed; boundary=batchresponse_")
    message = email.message_from_bytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + response.content
    )
    assert message.is_multipart() and not message.defects
    out: list[Inner | list[Inner]] = []
    for part in message.get_payload():
        assert isinstance(part, email.message.Message)
        if part.is_multipart():
            assert part.get_boundary().startswith("changesetresponse_")
            out.append([_inner(p) for p in part.get_payload()])
        else:
            out.append(_inner(part))
    return out


def _inner(part: email.message.Message) -> Inner:
    assert part.get_content_type() == "application/http"
    assert part["Content-Transfer-Encoding"] == "binary"
    text = part.get_payload()
    assert isinstance(text, str)
    head, _, body = text.replace("\r\n", "\n").partition("\n\n")
    status_line, *lines = head.split("\n")
    version, status, _ = status_line.split(" ", 2)
    assert version == "HTTP/1.1"
    headers = {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return Inner(int(status), headers, body.strip(), part["Content-ID"])


def flat(parts: list[Inner | list[Inner]]) -> list[Inner]:
    return [p for item in parts for p in (item if isinstance(item, list) else [item])]


def request(
    method: str,
    url: str,
    body: dict[str, Any] | str | None = None,
    *,
    content_id: int | None = None,
    headers: tuple[str, ...] = (),
) -> list[str]:
    """The lines of one ``application/http`` part."""
    lines = ["Content-Type: application/http", "Content-Transfer-Encoding: binary"]
    if content_id is not None:
        lines.append(f"Content-ID: {content_id}")
    lines += ["", f"{method} {url} HTTP/1.1", *headers]
    if body is None:
        return [*lines, ""]
    text = body if isinstance(body, str) else json.dumps(body)
    return [*lines, "Content-Type: application/json; type=entry", "", text]


def change_set(name: str, *parts: list[str]) -> list[str]:
    lines = [f"Content-Type: multipart/mixed; boundary={name}", ""]
    for part in parts:
        lines += [f"--{name}", *part]
    return [*lines, f"--{name}--", ""]


def batch(*parts: list[str], name: str = "batch_1", eol: str = "\r\n") -> str:
    lines: list[str] = []
    for part in parts:
        lines += [f"--{name}", *part]
    return eol.join([*lines, f"--{name}--", ""])


async def post_batch(
    http: httpx.AsyncClient, body: str, *, boundary: str = "batch_1", prefer: str | None = None
) -> httpx.Response:
    headers = {"Content-Type": f"multipart/mixed; boundary={boundary}"}
    if prefer:
        headers["Prefer"] = prefer
    return await http.post("$batch", content=body.encode(), headers=headers)


async def test_a_change_set_creates_an_account_and_an_opportunity_bound_to_it_by_content_id(
    http: httpx.AsyncClient,
) -> None:
    # Written as reference 5 shows it: quoted boundaries, CRLF, an absolute URL, then a relative
    # one with a query; part 2 binds both lookups to part 1 and deep-inserts its contact.
    body = (
        "--batch_7f1c\r\n"
        'Content-Type: multipart/mixed; boundary="changeset_a1"\r\n'
        "\r\n"
        "--changeset_a1\r\n"
        "Content-Type: application/http\r\n"
        "Content-Transfer-Encoding: binary\r\n"
        "Content-ID: 1\r\n"
        "\r\n"
        "POST https://contoso.crm.dynamics.com/api/data/v9.2/accounts HTTP/1.1\r\n"
        "Content-Type: application/json; type=entry\r\n"
        "\r\n"
        f'{{"accountid": "{ACCOUNT}", "name": "Contoso"}}\r\n'
        "--changeset_a1\r\n"
        "Content-Type: application/http\r\n"
        "Content-Transfer-Encoding: binary\r\n"
        "Content-ID: 2\r\n"
        "\r\n"
        "POST opportunities?$select=modifiedon&$expand=parentcontactid($select=fullname)"
        " HTTP/1.1\r\n"
        "Content-Type: application/json; type=entry\r\n"
        "Prefer: return=representation\r\n"
        "\r\n"
        "{\r\n"
        f'  "opportunityid": "{OPPORTUNITY}",\r\n'
        '  "name": "Co-sell: Contoso ERP",\r\n'
        '  "customerid_account@odata.bind": "$1",\r\n'
        '  "parentaccountid@odata.bind": "$1",\r\n'
        f'  "parentcontactid": {{"contactid": "{CONTACT}", "firstname": "Ada",'
        ' "lastname": "Example"}\r\n'
        "}\r\n"
        "--changeset_a1--\r\n"
        "\r\n"
        "--batch_7f1c--\r\n"
    )

    response = await http.post(
        "$batch",
        content=body.encode(),
        headers={"Content-Type": 'multipart/mixed; boundary="batch_7f1c"'},
    )

    assert response.status_code == 200, response.text
    assert response.headers["odata-version"] == "4.0"
    [parts] = answers(response)
    assert isinstance(parts, list)
    account, opportunity = parts
    assert (account.status, account.content_id, account.body) == (204, "1", "")
    assert account.headers["OData-EntityId"] == f"{API}accounts({ACCOUNT})"
    assert account.headers["Location"] == f"{API}accounts({ACCOUNT})"
    assert (opportunity.status, opportunity.content_id) == (201, "2")
    assert opportunity.headers["Content-Type"] == "application/json; odata.metadata=minimal"
    assert opportunity.headers["Location"] == f"{API}opportunities({OPPORTUNITY})"
    created = opportunity.json()
    assert created["opportunityid"] == OPPORTUNITY and created["modifiedon"]
    assert "name" not in created  # $select applied as in a normal request
    assert created["parentcontactid"]["fullname"] == "Ada Example"
    assert opportunity.headers["ETag"] == created["@odata.etag"]

    row = (await http.get(f"opportunities({OPPORTUNITY})")).json()
    assert row["_customerid_value"] == ACCOUNT
    assert row["_parentaccountid_value"] == ACCOUNT
    assert row["_parentcontactid_value"] == CONTACT


async def test_a_content_id_also_addresses_the_row_in_a_later_url(
    http: httpx.AsyncClient,
) -> None:
    body = batch(
        change_set(
            "changeset_x",
            request("POST", "/api/data/v9.2/accounts", {"name": "Contoso"}, content_id=1),
            request("PATCH", "$1", {"telephone1": "555-0100"}, content_id=2),
        )
    )

    response = await post_batch(http, body)

    assert response.status_code == 200, response.text
    created, updated = flat(answers(response))
    assert updated.status == 204
    assert updated.headers["OData-EntityId"] == created.headers["OData-EntityId"]
    row = (await http.get(created.headers["OData-EntityId"])).json()
    assert row["telephone1"] == "555-0100" and row["name"] == "Contoso"


async def test_a_failing_part_rolls_back_the_whole_change_set(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    await http.post("accounts", json={"accountid": OTHER_ACCOUNT, "name": "Old name"})
    await http.post("contacts", json={"contactid": CONTACT, "lastname": "Kept"})
    before = (await http.get(f"accounts({OTHER_ACCOUNT})")).json()
    # LF line ends this time; the last part names a column that does not exist.
    body = batch(
        change_set(
            "changeset_2",
            request("POST", "accounts", {"accountid": ACCOUNT, "name": "New"}, content_id=1),
            request("PATCH", f"accounts({OTHER_ACCOUNT})", {"name": "New name"}, content_id=2),
            request("PATCH", "$2", {"telephone1": "555-0199"}, content_id=3),
            request("DELETE", f"contacts({CONTACT})", content_id=4),
            request("POST", "opportunities", {"name": "Deal", "nosuchcolumn": 1}, content_id=5),
        ),
        eol="\n",
    )

    response = await post_batch(http, body)

    # UNCERTAIN per reference 5: the outer status copies the failed part's; one part answers.
    assert response.status_code == 400
    [failed] = answers(response)
    assert isinstance(failed, Inner)
    assert failed.status == 400 and failed.content_id == "5"
    assert failed.json()["error"]["code"] == "0x80048d19"
    assert "nosuchcolumn" in failed.json()["error"]["message"]
    assert (await http.get(f"accounts({ACCOUNT})")).status_code == 404
    after = (await http.get(f"accounts({OTHER_ACCOUNT})")).json()
    assert after == before  # name, telephone, modifiedon and @odata.etag as they were
    assert (await http.get(f"contacts({CONTACT})")).status_code == 200
    assert emulator.store.count("opportunities") == 0
    # The rolled-back row version works as an If-Match again.
    again = await http.patch(
        f"accounts({OTHER_ACCOUNT})",
        json={"name": "Newer"},
        headers={"If-Match": before["@odata.etag"]},
    )
    assert again.status_code == 204


@pytest.mark.parametrize(
    ("first", "second"),
    [
        # binds to a part declared after it
        (
            request("POST", "accounts", {"primarycontactid@odata.bind": "$2"}, content_id=1),
            request("POST", "contacts", {"lastname": "Late"}, content_id=2),
        ),
        # a URL reference to an id no part declares
        (
            request("POST", "accounts", {"name": "A"}, content_id=1),
            request("PATCH", "$7", {"name": "B"}, content_id=2),
        ),
    ],
)
async def test_reference_to_an_undeclared_content_id_is_refused(
    http: httpx.AsyncClient, emulator: Emulator, first: list[str], second: list[str]
) -> None:
    response = await post_batch(http, batch(change_set("changeset_r", first, second)))

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "0x80060888"
    assert "Content-ID Reference" in error["message"]
    assert emulator.store.count("accounts") == 0 and emulator.store.count("contacts") == 0


async def test_a_content_id_is_not_visible_outside_its_change_set(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    body = batch(
        change_set("changeset_a", request("POST", "accounts", {"name": "A"}, content_id=1)),
        request("PATCH", "$1", {"name": "B"}),
    )

    response = await post_batch(http, body)

    assert response.status_code == 400
    assert "'$1' does not exist" in response.json()["error"]["message"]
    assert emulator.store.count("accounts") == 0  # refused before anything ran


async def test_get_inside_a_change_set_is_refused(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    body = batch(
        change_set(
            "changeset_g",
            request("POST", "accounts", {"name": "A"}, content_id=1),
            request("GET", "accounts?$select=name", content_id=2),
        )
    )

    response = await post_batch(http, body)

    assert response.status_code == 400
    assert "GET is not allowed in a change set" in response.json()["error"]["message"]
    assert emulator.store.count("accounts") == 0


def _mixed_batch() -> str:
    return batch(
        request("POST", "accounts", {"accountid": ACCOUNT, "name": "A"}),
        request("GET", f"accounts({MISSING})"),
        change_set(
            "changeset_c",
            request("PATCH", f"accounts({ACCOUNT})", {"name": "B"}, content_id=1),
            request(
                "PATCH",
                f"accounts({ACCOUNT})",
                {"name": "C"},
                content_id=2,
                headers=('If-Match: W/"1"',),
            ),
        ),
        request("GET", f"accounts({ACCOUNT})?$select=name"),
    )


async def test_continue_on_error_returns_each_parts_status(http: httpx.AsyncClient) -> None:
    response = await post_batch(http, _mixed_batch(), prefer="odata.continue-on-error")

    assert response.status_code == 200
    created, missing, change_set_failure, read = answers(response)
    assert isinstance(created, Inner) and created.status == 204
    assert isinstance(missing, Inner) and missing.status == 404
    assert missing.json()["error"]["code"] == "0x80040217"
    # A failed change set is answered by its failing part alone.
    assert isinstance(change_set_failure, Inner)
    assert (change_set_failure.status, change_set_failure.content_id) == (412, "2")
    assert isinstance(read, Inner) and read.status == 200
    assert read.json()["name"] == "A"  # part 1 of the failed change set was undone


async def test_without_continue_on_error_the_batch_stops_at_the_first_failure(
    http: httpx.AsyncClient,
) -> None:
    response = await post_batch(http, _mixed_batch())

    assert response.status_code == 404
    assert [p.status for p in flat(answers(response))] == [204, 404]
    # Parts before the failure are kept; those after it never ran.
    assert (await http.get(f"accounts({ACCOUNT})")).json()["name"] == "A"


_GOOD_PART = "\r\n".join(request("POST", "accounts", {"name": "A"}))


@pytest.mark.parametrize(
    ("content_type", "body", "complaint"),
    [
        ("multipart/mixed", batch(request("POST", "accounts", {})), "boundary="),
        ("application/json", '{"requests": []}', "multipart/mixed"),
        (
            "multipart/mixed; boundary=batch_1",
            batch(["Content-Type: application/http", "", "POST accounts", "", "{}"]),
            "'<METHOD> <URL> HTTP/1.1'",
        ),
        (
            "multipart/mixed; boundary=batch_1",
            batch(request("POST", "accounts", '{"name": "A",')),
            "body of request 1 (POST accounts) is not valid JSON",
        ),
        ("multipart/mixed; boundary=batch_1", f"--batch_1\r\n{_GOOD_PART}\r\n", "--batch_1--"),
        ("multipart/mixed; boundary=batch_1", "no parts at all", "no line '--batch_1'"),
        (
            "multipart/mixed; boundary=batch_1",
            batch(change_set("cs_1", change_set("cs_2", request("POST", "accounts", {})))),
            "change sets cannot be nested",
        ),
        (
            "multipart/mixed; boundary=batch_1",
            batch(["Content-Type: text/plain", "", "hello"]),
            "application/http",
        ),
        (
            "multipart/mixed; boundary=batch_1",
            batch(request("POST", "$batch", {})),
            "batches cannot be nested",
        ),
        (
            "multipart/mixed; boundary=batch_1",
            batch(request("POST", "/api/data/v9.0/accounts", {})),
            "is not under /api/data/v9.2/",
        ),
        (
            "multipart/mixed; boundary=batch_1",
            batch(*[request("DELETE", f"accounts({MISSING})")] * 1001),
            "at most 1000 requests",
        ),
    ],
)
async def test_malformed_batch_bodies_get_400_not_500(
    http: httpx.AsyncClient, emulator: Emulator, content_type: str, body: str, complaint: str
) -> None:
    response = await http.post(
        "$batch", content=body.encode(), headers={"Content-Type": content_type}
    )

    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "0x80060888"
    assert complaint in error["message"]
    assert emulator.store.count("accounts") == 0


async def test_a_thousand_requests_are_allowed(http: httpx.AsyncClient) -> None:
    body = batch(*[request("GET", "WhoAmI")] * 1000)

    response = await post_batch(http, body)

    assert response.status_code == 200
    assert len(answers(response)) == 1000


async def test_inner_operations_count_toward_service_protection() -> None:
    time = VirtualTime()
    app = create_app(token=TOKEN, limits=Limits(requests=4, window_s=300), clock=time.clock)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=API,
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as http:
        response = await post_batch(http, batch(*[request("GET", "WhoAmI")] * 4))
        assert response.status_code == 200
        assert [p.status for p in flat(answers(response))] == [200] * 4

        # One HTTP request, but four operations: the window of four is used up.
        refused = await http.get("WhoAmI")
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "0x80072322"
        assert int(refused.headers["Retry-After"]) >= 1

        time.now += 301
        assert (await http.get("WhoAmI")).status_code == 200


async def test_a_batch_is_one_request_in_the_stats(
    http: httpx.AsyncClient, control: httpx.AsyncClient
) -> None:
    body = batch(
        change_set(
            "changeset_s",
            request("POST", "accounts", {"accountid": ACCOUNT, "name": "A"}, content_id=1),
            request("PATCH", "$1", {"name": "B"}, content_id=2),
        ),
        request("GET", f"accounts({ACCOUNT})"),
    )

    assert (await post_batch(http, body)).status_code == 200

    stats = (await control.get("stats")).json()
    assert stats["requests"] == {"POST /api/data/v9.2/$batch": 1}
    assert stats["total_requests"] == 1
    assert stats["statuses"] == {"200": 1}
    assert stats["batched_operations"] == {
        "GET /api/data/v9.2/accounts({id})": 1,
        "PATCH /api/data/v9.2/accounts({id})": 1,
        "POST /api/data/v9.2/accounts": 1,
    }


async def test_concurrent_requests_never_see_a_change_set_half_applied(
    http: httpx.AsyncClient, emulator: Emulator
) -> None:
    emulator.faults.latency_ms = 1  # every request yields once, so they really interleave
    body = batch(
        change_set(
            "changeset_big",
            *[request("POST", "accounts", {"name": f"A{n}"}, content_id=n) for n in range(200)],
        )
    )

    async def count() -> int:
        return len((await http.get("accounts?$select=name")).json()["value"])

    results = await asyncio.gather(
        *[count() for _ in range(20)], post_batch(http, body), *[count() for _ in range(20)]
    )

    batch_response = results[20]
    assert isinstance(batch_response, httpx.Response) and batch_response.status_code == 200
    assert {n for n in results if isinstance(n, int)} <= {0, 200}
    assert emulator.store.count("accounts") == 200
