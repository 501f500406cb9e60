"""What must hold before anything is sent to Partner Center (SPEC 4.6), in plain words.

Every referral needs a solution and a valid two-letter country on the account. A co-sell
(help requested from Microsoft) also needs a customer contact, a deal value above zero and a
close date. A failure sends nothing; the engine writes every reason to the audit.
"""

from __future__ import annotations

from shared.sync.deal import Deal

# ISO 3166-1 alpha-2 codes (officially assigned).
_ISO_3166 = """
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM
DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS
GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN
KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ
MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM
PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV
SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI
VN VU WF WS YE YT ZA ZM ZW
"""
ISO_COUNTRIES = frozenset(_ISO_3166.split())


def validate_for_partner_center(deal: Deal) -> list[str]:
    """Every rule the deal breaks, as sentences a seller can act on; empty when it may be sent."""
    problems: list[str] = []
    country = deal.customer.country if deal.customer else None
    if not deal.solutions:
        problems.append("Add at least one solution (a Partner Center solution id such as SOL-…).")
    if not country:
        problems.append("Set the account's country as a two-letter ISO code (for example DE).")
    elif country not in ISO_COUNTRIES:
        problems.append(
            f"The account's country {country!r} is not a two-letter ISO 3166 code "
            "(for example DE or US)."
        )
    if deal.help_needed:
        if deal.contact is None or not (deal.contact.email or deal.contact.phone):
            problems.append(
                "Co-sell needs a customer contact with an e-mail or phone number on the "
                "opportunity."
            )
        if not deal.deal_value or deal.deal_value <= 0:
            problems.append("Co-sell needs a deal value above zero.")
        if deal.close_date is None:
            problems.append("Co-sell needs an estimated close date.")
    return problems
