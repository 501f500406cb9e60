"""One error vocabulary: each service's errors are also the shared error of their idea.

The engine restarts an attempt on ``(PreconditionFailedError, AlreadyExistsError)`` whichever
service said so, so these tests build real error answers and check what each service makes of
them.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from shared import dataverse, partner_center
from shared.dataverse._exceptions import error_from_response as dataverse_error
from shared.errors import (
    AlreadyExistsError,
    AuthenticationFailedError,
    ConcurrencyError,
    ConnectionFailedError,
    CosellError,
    NotFoundError,
    PreconditionFailedError,
    RowExistsError,
    StateError,
    ThrottledError,
)
from shared.partner_center._exceptions import error_from_response as partner_center_error

PC_URL = "https://api.partner.microsoft.com/v1.0/engagements/referrals/x"
DV_URL = "https://contoso.crm.dynamics.com/api/data/v9.2/opportunities(x)"


def _answer(method: str, url: str, status: int, body: Any, **headers: str) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers, request=httpx.Request(method, url))


def _pc(status: int, code: str = "error", **headers: str) -> CosellError:
    body = {"error": {"code": code, "message": "refused"}}
    return partner_center_error(_answer("PATCH", PC_URL, status, body, **headers))


def _dv(status: int, code: str = "0x0", **headers: str) -> CosellError:
    body = {"error": {"code": code, "message": "refused"}}
    return dataverse_error(_answer("PATCH", DV_URL, status, body, **headers))


@pytest.mark.parametrize(
    ("error", "service_class", "shared_class"),
    [
        (_pc(404), partner_center.NotFound, NotFoundError),
        (_pc(412), partner_center.PreconditionFailed, PreconditionFailedError),
        (_pc(429), partner_center.Throttled, ThrottledError),
        (_pc(401), partner_center.PartnerCenterAuthError, AuthenticationFailedError),
        (_dv(404), dataverse.NotFound, NotFoundError),
        (_dv(412), dataverse.PreconditionFailed, PreconditionFailedError),
        (_dv(412, "0x80040237"), dataverse.AlreadyExists, AlreadyExistsError),
        (_dv(429), dataverse.Throttled, ThrottledError),
        (_dv(401), dataverse.AuthenticationFailed, AuthenticationFailedError),
    ],
    ids=lambda value: getattr(value, "__name__", None) or type(value).__name__,
)
def test_a_service_error_is_also_the_shared_error_of_its_idea(
    error: CosellError, service_class: type[CosellError], shared_class: type[CosellError]
) -> None:
    assert type(error) is service_class
    assert isinstance(error, shared_class)


def test_a_pc_resource_modified_code_is_a_precondition_failure_whatever_the_status() -> None:
    assert isinstance(_pc(409, "resourceModified"), PreconditionFailedError)


def test_throttled_errors_of_both_services_keep_the_retry_after_hint() -> None:
    for error in (_pc(429, **{"Retry-After": "7"}), _dv(429, **{"Retry-After": "7"})):
        assert isinstance(error, ThrottledError)
        assert error.retry_after == 7.0


@pytest.mark.parametrize(
    "error", [_pc(400), _pc(500), _dv(400), _dv(403), _dv(500)], ids=lambda e: type(e).__name__
)
def test_other_answers_are_none_of_the_restart_or_shared_ideas(error: CosellError) -> None:
    shared = (
        NotFoundError,
        AlreadyExistsError,
        PreconditionFailedError,
        ThrottledError,
        AuthenticationFailedError,
        ConnectionFailedError,
    )
    assert not isinstance(error, shared)


def test_the_engine_restart_set_is_exactly_the_five_lost_races() -> None:
    restart = (PreconditionFailedError, AlreadyExistsError)
    lost_races: list[CosellError] = [
        RowExistsError("the link exists already"),  # state: a row that was to be created
        ConcurrencyError("the link was changed by someone else"),  # state: etag mismatch
        _pc(412, "preconditionFailed"),
        _dv(412),
        _dv(412, "0x80040237"),  # DuplicateRecord
    ]
    assert all(isinstance(e, restart) for e in lost_races)
    # A state row that exists already is still a lost race for callers catching only state's.
    assert isinstance(RowExistsError("x"), ConcurrencyError | StateError)
    others = [_pc(404), _pc(429), _dv(404), _dv(429), _dv(400), _pc(401)]
    assert not any(isinstance(e, restart) for e in others)
