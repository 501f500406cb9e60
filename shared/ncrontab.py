"""Six-field NCRONTAB schedules, as the Functions timer trigger reads them.

Fields: ``{second} {minute} {hour} {day} {month} {day-of-week}``, each ``*``, a number, a name
(months and weekdays), a range ``a-b``, a step ``*/n`` or ``a-b/n``, or a comma list of those.
Times are UTC (the Flex Consumption plan has no time-zone setting). ``croniter`` is not used on
purpose: it reads a sixth field as seconds, the opposite of NCRONTAB.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_FIELDS: tuple[tuple[str, int, int], ...] = (
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 6),
)
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


@dataclass(frozen=True)
class Schedule:
    """A parsed NCRONTAB expression: the allowed values of each field."""

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    def matches(self, moment: datetime) -> bool:
        """Whether the schedule fires at this (whole-second, UTC) moment."""
        return (
            self._day_matches(moment)
            and moment.second in self.seconds
            and moment.minute in self.minutes
            and moment.hour in self.hours
            and moment.month in self.months
        )

    def next_after(self, moment: datetime) -> datetime:
        """The first firing time strictly after ``moment``."""
        candidate = moment.replace(microsecond=0) + timedelta(seconds=1)
        limit = candidate + timedelta(days=366 * 5)
        while candidate < limit:
            if candidate.month not in self.months:
                candidate = _first_of_next_month(candidate)
            elif not self._day_matches(candidate):
                candidate = (candidate + timedelta(days=1)).replace(hour=0, minute=0, second=0)
            elif candidate.hour not in self.hours:
                candidate = (candidate + timedelta(hours=1)).replace(minute=0, second=0)
            elif candidate.minute not in self.minutes:
                candidate = (candidate + timedelta(minutes=1)).replace(second=0)
            elif candidate.second not in self.seconds:
                candidate += timedelta(seconds=1)
            else:
                return candidate
        raise ValueError(f"schedule {self.expression!r} never fires")

    def _day_matches(self, moment: datetime) -> bool:
        weekday = (moment.weekday() + 1) % 7  # Python: Monday=0; NCRONTAB: Sunday=0
        if self.any_day or self.any_weekday:
            return moment.day in self.days and weekday in self.weekdays
        # cron rule: when both day fields are restricted, either one matching is enough
        return moment.day in self.days or weekday in self.weekdays


def _first_of_next_month(moment: datetime) -> datetime:
    year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year, moment.month + 1)
    return moment.replace(year=year, month=month, day=1, hour=0, minute=0, second=0)


def parse_schedule(expression: str) -> Schedule:
    """Parse a 6-field NCRONTAB expression; ``ValueError`` says which field is wrong."""
    parts = expression.split()
    if len(parts) != 6:
        raise ValueError(
            f"expected 6 fields '{{second}} {{minute}} {{hour}} {{day}} {{month}} {{day-of-week}}'"
            f", got {len(parts)} in {expression!r} (e.g. '0 */5 * * * *' is every 5 minutes)"
        )
    values = [
        _parse_field(part, name, low, high)
        for part, (name, low, high) in zip(parts, _FIELDS, strict=True)
    ]
    return Schedule(
        expression=expression,
        seconds=values[0],
        minutes=values[1],
        hours=values[2],
        days=values[3],
        months=values[4],
        weekdays=values[5],
        any_day=parts[3] in ("*", "?"),
        any_weekday=parts[5] in ("*", "?"),
    )


def _parse_field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    allowed: set[int] = set()
    for item in text.split(","):
        allowed.update(_parse_item(item, name, low, high))
    return frozenset(allowed)


def _parse_item(item: str, name: str, low: int, high: int) -> range:
    body, _, step_text = item.partition("/")
    step = 1
    if step_text:
        if not step_text.isdigit() or int(step_text) == 0:
            raise ValueError(f"{name} field: step {step_text!r} must be a positive number")
        step = int(step_text)
    if body in ("*", "?"):
        start, end = low, high
    elif "-" in body:
        first, _, last = body.partition("-")
        start, end = _value(first, name, low, high), _value(last, name, low, high)
        if start > end:
            raise ValueError(f"{name} field: range {body!r} runs backwards")
    else:
        start = _value(body, name, low, high)
        end = high if step_text else start
    return range(start, end + 1, step)


def _value(text: str, name: str, low: int, high: int) -> int:
    upper = text.upper()
    if name == "month" and upper in _MONTHS:
        return _MONTHS.index(upper) + 1
    if name == "day-of-week" and upper in _WEEKDAYS:
        return _WEEKDAYS.index(upper)
    if not text.isdigit():
        raise ValueError(f"{name} field: {text!r} is not a number")
    number = int(text)
    if name == "day-of-week" and number == 7:  # 7 is Sunday too in cron dialects
        return 0
    if not low <= number <= high:
        raise ValueError(f"{name} field: {number} is outside {low}-{high}")
    return number
