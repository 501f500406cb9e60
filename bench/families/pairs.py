"""Which of Microsoft's pairs each family gets (none in two), spread over the run."""

from __future__ import annotations

from collections.abc import Callable

from bench.families.model import OVERSIZE_KINDS, Families, Oversize, Reopened
from bench.families.oversize import long_value
from shared.sync.crm_limits import OPPORTUNITY_TEXT, fit


def pick_microsoft_pairs(
    families: Families, referrals: int, original: Callable[[int, str], str]
) -> None:
    """Which of Microsoft's pairs (numbers 0 … referrals-1) each family gets, none in two
    (the reopened deals come later, ``pick_reopened``). ``original``: the value a pair's field
    has before any edit."""
    every = families.sizes.unknown_currency_every
    families.unknown_currency = {n for n in range(referrals) if n % every == every // 2}
    taken = set(families.unknown_currency)
    for index, number in enumerate(_spread(referrals, families.sizes.oversize, 2, taken)):
        name, on_create = OVERSIZE_KINDS[index % len(OVERSIZE_KINDS)]
        value = long_value(number, name)
        cut = fit(value, OPPORTUNITY_TEXT[name]) or ""
        families.oversize[number] = Oversize(
            number, name, value, on_create, cut if on_create else original(number, name)
        )
    families.case_twins = set(_spread(referrals, families.sizes.case_twins, 4, taken))


def pick_reopened(families: Families, referrals: int, linked: set[int]) -> None:
    """The reopened deals, among Microsoft's pairs linked by now (only a linked opportunity
    can be won) and in no other family."""
    taken = {n for n in range(referrals) if n not in linked}
    taken |= families.unknown_currency | set(families.oversize) | families.case_twins
    count = min(families.sizes.reopened, referrals - len(taken))
    for number in _spread(referrals, count, 6, taken):
        families.reopened[number] = Reopened(number)


def _spread(referrals: int, count: int, offset: int, taken: set[int]) -> list[int]:
    """``count`` pair numbers spread over the run, none in ``taken`` (which they join)."""
    chosen: list[int] = []
    for index in range(count):
        number = (index * referrals // max(count, 1) + offset) % referrals
        while number in taken:
            number = (number + 1) % referrals
        taken.add(number)
        chosen.append(number)
    return chosen
