"""What Dataverse's standard columns can hold, checked before anything is written (pure).

A value over a column's limit makes Dataverse refuse the whole write (400), so one long name
would block every other field of the pair and, retried, end in the poison queue. The plan
checks the Partner Center values against this table instead: a value that does not fit is not
written (on creation it is cut to fit), the pair is marked Error with the reason, and every
other field still syncs (issue 13, class 6).

Limits are those of the standard columns in a new organization (Dataverse table/column
reference: opportunity ``name`` 300, ``description`` 2,000; account ``name`` 160; lead
``companyname`` 100; money columns ±1,000,000,000,000 at the default precision). UNCERTAIN: an
admin may have changed a column's maximum length; the table is the out-of-the-box one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.sync.deal import Deal
from shared.sync.mapping import ERROR_MARK

MAX_MONEY = 1_000_000_000_000.0


@dataclass(frozen=True)
class TextLimit:
    column: str  # the Dataverse column, for the message
    max_length: int


# Deal field → the opportunity column it is written to, and that column's length.
OPPORTUNITY_TEXT = {
    "name": TextLimit("opportunity name", 300 - len(ERROR_MARK)),  # room for the ✔/✖ mark
    "notes": TextLimit("opportunity description", 2_000),
}
ACCOUNT_NAME = TextLimit("account name", 160)
LEAD_COMPANY_NAME = TextLimit("lead company name", 100)
# A contact's columns (firstname, lastname, telephone1 50; emailaddress1 100). A name or phone
# too long is cut; an e-mail address cut would be another address, so it is left out.
CONTACT_TEXT = {
    "firstname": TextLimit("contact first name", 50),
    "lastname": TextLimit("contact last name", 50),
    "telephone1": TextLimit("contact phone", 50),
}
CONTACT_EMAIL = TextLimit("contact e-mail", 100)


def refusals(deal: Deal) -> dict[str, str]:
    """Deal fields whose value the opportunity cannot hold, with the reason in plain words."""
    found: dict[str, str] = {}
    for name, limit in OPPORTUNITY_TEXT.items():
        value = getattr(deal, name)
        if isinstance(value, str) and len(value) > limit.max_length:
            found[name] = (
                f"Partner Center's {name.replace('_', ' ')} has {len(value)} characters; the "
                f"{limit.column} holds {limit.max_length}: shorten it in Partner Center"
            )
    if deal.deal_value is not None and abs(deal.deal_value) > MAX_MONEY:
        found["deal_value"] = (
            f"Partner Center's deal value {deal.deal_value:,.2f} is beyond what Dynamics 365 "
            f"money columns hold (±{MAX_MONEY:,.0f})"
        )
    return found


def contact_row(columns: dict[str, Any]) -> dict[str, Any]:
    """A contact's columns made to fit (None values left out)."""
    row = {k: v for k, v in columns.items() if v is not None}
    for name, limit in CONTACT_TEXT.items():
        if isinstance(row.get(name), str):
            row[name] = fit(row[name], limit)
    email = row.get("emailaddress1")
    if isinstance(email, str) and len(email) > CONTACT_EMAIL.max_length:
        del row["emailaddress1"]
    return row


def fit(value: str | None, limit: TextLimit) -> str | None:
    """``value`` cut to the column's length (for a new record, which must be created)."""
    if value is None or len(value) <= limit.max_length:
        return value
    return value[: limit.max_length - 1] + "…"
