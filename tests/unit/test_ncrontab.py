"""Six-field NCRONTAB schedules, as the timer trigger reads them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.ncrontab import parse_schedule

T = datetime(2026, 11, 27, 10, 0, 7, 500000, tzinfo=UTC)  # a Friday


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("0 */1 * * * *", datetime(2026, 11, 27, 10, 1, 0, tzinfo=UTC)),
        ("*/5 * * * * *", datetime(2026, 11, 27, 10, 0, 10, tzinfo=UTC)),
        ("0 */15 * * * *", datetime(2026, 11, 27, 10, 15, 0, tzinfo=UTC)),
        ("0 30 9 * * MON-FRI", datetime(2026, 11, 30, 9, 30, 0, tzinfo=UTC)),
        ("0 0 0 1 JAN *", datetime(2027, 1, 1, 0, 0, 0, tzinfo=UTC)),
        ("0 0 12 * * 0", datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)),
    ],
)
def test_next_firing_time(expression: str, expected: datetime) -> None:
    assert parse_schedule(expression).next_after(T) == expected


def test_seconds_come_first_unlike_five_field_cron() -> None:
    schedule = parse_schedule("30 * * * * *")

    assert schedule.next_after(T).second == 30
    assert schedule.next_after(T).minute == 0


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * * *", "expected 6 fields"),
        ("60 * * * * *", "second field: 60 is outside 0-59"),
        ("0 */0 * * * *", "step '0' must be a positive number"),
        ("0 0 5-2 * * *", "range '5-2' runs backwards"),
        ("0 0 0 * FOO *", "month field: 'FOO' is not a number"),
    ],
)
def test_invalid_schedules_say_which_field(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_schedule(expression)


def test_schedule_that_never_fires_is_reported() -> None:
    with pytest.raises(ValueError, match="never fires"):
        parse_schedule("0 0 0 31 FEB *").next_after(T)
