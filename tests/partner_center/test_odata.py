"""The emulator's OData reader: whatever text arrives, it answers a predicate or a 400."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.partner_center.odata import ODataError, parse_filter

REFERRAL = {
    "status": "Active",
    "name": "O'Brien & Co",
    "team": [{"email": "Jo@Example.com"}],
    "details": {"dealValue": 10},
}


def test_quotes_are_escaped_by_doubling() -> None:
    assert parse_filter("name eq 'O''Brien & Co'")(REFERRAL)


def test_string_comparison_ignores_case_and_numbers_compare_as_numbers() -> None:
    assert parse_filter("team/any(t: t/email eq 'jo@example.com')")(REFERRAL)
    assert parse_filter("details/dealValue gt 9 and details/dealValue le 10")(REFERRAL)
    assert not parse_filter("details/dealValue lt 10")(REFERRAL)


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("()'/: abcdeqnotrl0123456789-TZ.,")) | st.characters(),
        max_size=60,
    )
)
def test_any_filter_text_is_either_a_predicate_or_an_odata_error(text: str) -> None:
    try:
        predicate = parse_filter(text)
    except ODataError:
        return
    assert predicate(REFERRAL) in (True, False)


def test_deeply_nested_filter_is_an_odata_error_not_a_crash() -> None:
    text = "(" * 2000 + "status eq 'Active'" + ")" * 2000
    with pytest.raises(ODataError, match="nested"):
        parse_filter(text)
