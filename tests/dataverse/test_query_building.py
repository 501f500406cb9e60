"""Query building: literals are escaped so that no value can change a filter's structure.

The property test feeds arbitrary text through the client's ``eq`` and parses the result with
the emulator's OData parser: the filter must always be one comparison whose literal is exactly
the original text.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.dataverse.odata import parse_expression
from sandbox.odata import Compare, Literal, Prop
from shared.dataverse import (
    Expand,
    OpportunityStatus,
    all_of,
    any_of,
    bind,
    contains,
    eq,
    ge,
    literal,
    lookup,
    ne,
)
from shared.dataverse._odata import query_params


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_stays_one_literal_of_one_comparison(text: str) -> None:
    parsed = parse_expression(eq("name", text).text)

    assert parsed == Compare("eq", Prop("name"), Literal(text, "Edm.String"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("O'Brien", "'O''Brien'"),
        ("''", "''''''"),
        (None, "null"),
        (True, "true"),
        (False, "false"),
        (42, "42"),
        (1.5, "1.5"),
        (Decimal("125000.00"), "125000.00"),
        (OpportunityStatus.WON, "3"),
        (uuid.UUID("6f3c1a2b-0000-0000-0000-000000000001"), "6f3c1a2b-0000-0000-0000-000000000001"),
        (date(2024, 7, 1), "2024-07-01"),
        (datetime(2024, 1, 1, tzinfo=UTC), "2024-01-01T00:00:00.000Z"),
        (
            datetime(2024, 1, 1, 1, 30, tzinfo=timezone(timedelta(hours=1, minutes=30))),
            "2024-01-01T00:00:00.000Z",
        ),
    ],
)
def test_literals_follow_odata_conventions(value: object, expected: str) -> None:
    assert literal(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [datetime(2024, 1, 1), float("nan"), float("inf"), object()],
)
def test_values_without_a_safe_literal_are_refused(bad: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        literal(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", ["name eq 'x' or 1", "name)", "", "na me", "a/b/c", "_x_value;"])
def test_column_names_cannot_carry_query_text(name: str) -> None:
    with pytest.raises(ValueError, match="property name"):
        eq(name, "x")


def test_filters_combine_with_parentheses_so_precedence_is_kept() -> None:
    combined = any_of(eq("statecode", 0), all_of(ne("name", "a"), ~contains("name", "b")))

    assert combined.text == "(statecode eq 0) or ((name ne 'a') and (not (contains(name,'b'))))"


def test_query_params_name_every_option_and_validate_them() -> None:
    params = query_params(
        select=["name", "_parentaccountid_value"],
        filter=ge("modifiedon", datetime(2024, 6, 1, tzinfo=UTC)),
        orderby=["modifiedon asc", "opportunityid"],
        expand=[Expand("parentaccountid", select=["name", "websiteurl"]), "parentcontactid"],
        top=5,
    )

    assert params == {
        "$select": "name,_parentaccountid_value",
        "$filter": "modifiedon ge 2024-06-01T00:00:00.000Z",
        "$orderby": "modifiedon asc,opportunityid",
        "$expand": "parentaccountid($select=name,websiteurl),parentcontactid",
        "$top": "5",
    }
    with pytest.raises(ValueError, match="orderby"):
        query_params(orderby=["name; drop"])
    with pytest.raises(TypeError):
        query_params(filter="name eq 'x'")  # type: ignore[arg-type]


def test_bind_and_lookup_build_odata_bind_values() -> None:
    account = uuid.UUID("6f3c1a2b-0000-0000-0000-000000000001")

    assert bind("accounts", account) == f"/accounts({account})"
    assert lookup("parentaccountid", "accounts", str(account)) == {
        "parentaccountid@odata.bind": f"/accounts({account})"
    }
    assert lookup("parentaccountid", "accounts", None) == {"parentaccountid@odata.bind": None}
    with pytest.raises(ValueError, match="badly formed"):
        bind("accounts", "6f3c1a2b) or (x")
