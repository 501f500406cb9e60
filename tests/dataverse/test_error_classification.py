"""Error answers as Microsoft documents them, classified by the client: by ``code`` first, then
by the message when the code is empty (issue 15, item 3).

The Web API reference says the error ``code`` was "frequently empty" and older examples carry
``"code": ""`` (learn.microsoft.com/power-apps/developer/data-platform/webapi/
compose-http-requests-handle-errors); Microsoft's troubleshooting page shows ``"code": "0x0"``
(learn.microsoft.com/troubleshoot/power-platform/power-apps/dataverse/web-api-client-errors) and
names the texts of a duplicate key ("Cannot insert duplicate key", error -2147220937) and of a
missing row ("Contact With Ids = <guid> Do Not Exist", -2147220969)
(learn.microsoft.com/troubleshoot/power-platform/dataverse/user-permissions/client-errors). The
answers are served by a stand-in transport: the emulator always fills the code.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from shared.dataverse import (
    AlreadyExists,
    DataverseClient,
    DataverseError,
    InvalidRequest,
    NotFound,
    PreconditionFailed,
)
from shared.errors import AlreadyExistsError, PreconditionFailedError
from shared.retry import RetryPolicy

from .conftest import URL, no_wait

ROW = "6f3c1a2b-0000-4000-8000-000000000001"


def answering(status: int, code: Any, message: str) -> httpx.MockTransport:
    """Every request gets this one error answer."""
    body = {"error": {"code": code, "message": message}}
    return httpx.MockTransport(lambda request: httpx.Response(status, json=body))


async def refusal(status: int, code: Any, message: str) -> DataverseError:
    """What ``create`` raises when Dataverse answers so."""
    async with DataverseClient(
        URL,
        token="sandbox",
        transport=answering(status, code, message),
        retry_policy=RetryPolicy(sleep=no_wait),
    ) as client:
        with pytest.raises(DataverseError) as raised:
            await client.create("accounts", {"name": "Contoso"})
    return raised.value


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("", "A record with matching key values already exists."),
        ("", "Cannot insert duplicate key."),
        ("0x0", "Cannot insert duplicate key"),
        (None, "A record with matching key values already exists."),
        ("-2147220937", "The record could not be created."),  # the SDK's decimal DuplicateRecord
    ],
)
async def test_a_duplicate_key_with_an_empty_code_is_already_exists_not_a_stale_etag(
    code: Any, message: str
) -> None:
    """A 412 with no code used to be taken for an etag mismatch: ``create_once`` then raised
    instead of finding the row an earlier run made, and the job restarted until poisoned."""
    error = await refusal(412, code, message)

    assert isinstance(error, AlreadyExists)
    assert isinstance(error, AlreadyExistsError)
    assert not isinstance(error, PreconditionFailedError)
    assert error.message == message


async def test_a_missing_row_with_an_empty_code_is_not_found_whatever_the_status() -> None:
    error = await refusal(400, "", f"account With Id = {ROW} Does Not Exist")

    assert isinstance(error, NotFound)
    assert ROW in error.message


async def test_a_version_mismatch_with_an_empty_code_is_a_precondition_failure() -> None:
    """The conditional-operations page's sample text for a stale If-Match (412)."""
    error = await refusal(
        412,
        "",
        "The version of the existing record doesn't match the RowVersion property provided.",
    )

    assert type(error) is PreconditionFailed


@pytest.mark.parametrize(("status", "expected"), [(412, PreconditionFailed), (400, InvalidRequest)])
async def test_an_empty_code_with_an_unknown_message_keeps_the_class_of_its_status(
    status: int, expected: type[Exception]
) -> None:
    assert type(await refusal(status, "", "Something else went wrong.")) is expected


async def test_a_filled_code_decides_even_when_the_message_reads_like_another_error() -> None:
    """Classify by code first: a payload error (0x80048d19) whose text says "does not exist"
    is an invalid request, not a missing row."""
    error = await refusal(
        400,
        "0x80048d19",
        "Error identified in Payload provided by the user for Entity :'accounts', ----> "
        f"The property 'x' With Id = {ROW} does not exist on type 'account'.",
    )

    assert type(error) is InvalidRequest
