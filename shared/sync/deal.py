"""The canonical deal: what both sides are mapped to and compared as (SPEC 4.1).

The engine never compares raw payloads. A referral and an opportunity (with its account,
contact and solutions) each become a ``Deal``; the last synced ``Deal`` is the merge base.
Values are normalised here (trimmed text, sorted solutions, upper-case codes) so that two sides
saying the same thing compare equal.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class DealStatus(StrEnum):
    """Where a deal stands, in words both systems map to (SPEC 4.3)."""

    NEW = "new"  # Partner Center New/Pending|Received  ↔  Open / On Hold
    ACTIVE = "active"  # Active/Accepted  ↔  Open / In Progress
    WON = "won"  # Closed/Won  ↔  Won
    LOST = "lost"  # Closed/Lost|Declined|Expired  ↔  Lost (Out-Sold or Canceled)

    @property
    def closed(self) -> bool:
        return self in (DealStatus.WON, DealStatus.LOST)


class _Value(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _blank_is_none(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip()
            return value or None
        return value


class Contact(_Value):
    """The customer's contact person."""

    first_name: str | None = None
    last_name: str | None = None
    email: str | None = None
    phone: str | None = None

    @field_validator("email")
    @classmethod
    def _email_case(cls, value: str | None) -> str | None:
        return value.lower() if value else value

    @property
    def empty(self) -> bool:
        return not (self.first_name or self.last_name or self.email or self.phone)


class Customer(_Value):
    """The customer organisation (account)."""

    name: str | None = None
    address_line1: str | None = None
    address_line2: str | None = None
    city: str | None = None
    state: str | None = None
    postal_code: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2

    @field_validator("country")
    @classmethod
    def _country_case(cls, value: str | None) -> str | None:
        return value.upper() if value else value


class Deal(_Value):
    """One co-sell deal as both systems should see it."""

    name: str | None = None
    deal_value: float | None = None
    currency: str | None = None  # ISO 4217
    close_date: date | None = None
    notes: str | None = None
    status: DealStatus | None = None
    # Why a deal was lost ("lost", "declined", "expired"): detail, not compared or synced.
    close_reason: str | None = None
    help_needed: str | None = None  # an assistanceRequestCode; None = no help requested
    visible_to_microsoft: bool | None = None
    solutions: tuple[str, ...] = ()
    contact: Contact | None = None
    customer: Customer | None = None
    referral_id: str | None = None
    referral_link: str | None = None
    microsoft_crm_id: str | None = None
    external_reference_id: str | None = None
    program: str | None = None
    # The mapping's extra fields (SPEC 13), by Dataverse column: the referral's value (JSON).
    extra: dict[str, Any] = Field(default_factory=dict)

    @field_validator("currency")
    @classmethod
    def _currency_case(cls, value: str | None) -> str | None:
        return value.upper() if value else value

    @field_validator("deal_value", mode="after")
    @classmethod
    def _money(cls, value: float | None) -> float | None:
        # Both APIs carry money as decimals; two decimals are enough and stop float noise.
        return None if value is None else round(float(value), 2)

    @field_validator("solutions", mode="before")
    @classmethod
    def _sorted(cls, value: Any) -> Any:
        if isinstance(value, list | tuple | set | frozenset):
            return tuple(sorted({str(v).strip() for v in value if v and str(v).strip()}))
        return value

    @field_validator("referral_id", "external_reference_id", mode="after")
    @classmethod
    def _guid_case(cls, value: str | None) -> str | None:
        return value.strip("{}").lower() if value else value

    @field_validator("contact", mode="after")
    @classmethod
    def _no_empty_contact(cls, value: Contact | None) -> Contact | None:
        return None if value is None or value.empty else value
