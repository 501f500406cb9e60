"""The declarative mapping (SPEC 13): ``CRM_MAPPING`` (JSON text) or ``CRM_MAPPING_FILE``.

What an admin of Microsoft's connector changes by editing its "[Customize] Create or get details
from Dynamics 365" flow — required fields on create, how an existing account is found, a
lookup-based country — and what peers offer beyond it (per-field direction, more fields, value
maps) is data here: typed models the plan stage reads. No branch per customer.

``load_mapping`` validates the JSON once, at start-up; every problem is reported with its JSON
path (``$.extra[0].direction``) and what is expected, all of them at once, like the settings'
errors. What only the live Dataverse can tell (columns exist, types and choice values match) is
``cosell mapping check``'s job.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.errors import SettingsError

Direction = Literal["both", "pc_to_crm", "crm_to_pc", "on_create", "off"]
DIRECTIONS: tuple[Direction, ...] = ("both", "pc_to_crm", "crm_to_pc", "on_create", "off")
Table = Literal["opportunity", "lead", "account", "contact"]
# Fields SPEC 4.1 syncs only CRM → Partner Center.
ONE_WAY_FIELDS = ("help_needed", "solutions")

# The JSON Patch paths a partner may patch, per Microsoft's certified "Partner Center Referrals"
# connector (microsoft/PowerPlatformConnectors, certified-connectors/PartnerCenterReferrals/
# apiDefinition.swagger.json, ``UpdateReferralDetails``; reference dataverse-push-and-webhook-
# trust.md §3). ``/registrations/...`` is left out: the sync does not register deals.
CONNECTOR_PATCH_PATHS: frozenset[str] = frozenset(
    {
        "/campaignId",
        "/consent/consentToShareReferralWithMicrosoftSellers",
        "/customerProfile/team",
        "/customerProfile/team/-",
        "/details/closingDateTime",
        "/details/currency",
        "/details/dealValue",
        "/details/notes",
        "/details/requirements/solutions",
        "/details/requirements/solutions/-",
        "/externalReferenceId",
        "/referralProgram",
        "/salesStage",
        "/status",
        "/substatus",
        "/statusReason",
        "/team",
        "/team/-",
    }
)
# Those an extra field may write: one value each, not the lists (teams, solutions).
_LISTS = ("/customerProfile/team", "/details/requirements/solutions", "/team")
PATCHABLE_PATHS = frozenset(path for path in CONNECTOR_PATCH_PATHS if not path.startswith(_LISTS))
DEFAULT_ACCOUNT_MATCH = ("name", "address1_postalcode")

_LOGICAL_NAME = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
_ENTITY_SET = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_REFERRAL_PATH = re.compile(r"^[A-Za-z][A-Za-z0-9]*(\.[A-Za-z][A-Za-z0-9]*)*$")
_BIND = re.compile(r"^/[a-z][a-z0-9_]*\([0-9a-fA-F]{8}(-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\)$")
_LOGICAL_HINT = "a Dataverse logical name (lower-case letters, digits, '_', e.g. cr1a2_region)"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _logical_name(value: str) -> str:
    if not _LOGICAL_NAME.match(value):
        raise ValueError(f"expected {_LOGICAL_HINT}")
    return value


class FieldRule(_Strict):
    """How one built-in Deal field syncs."""

    direction: Direction = "both"


class OneWayFieldRule(_Strict):
    """A field that only flows CRM → Partner Center (SPEC 4.1): it may be narrowed, not
    turned around."""

    direction: Literal["crm_to_pc", "on_create", "off"] = "crm_to_pc"


class FieldRules(_Strict):
    """The built-in Deal fields that sync after creation (SPEC 4.1), each optional."""

    name: FieldRule | None = None
    deal_value: FieldRule | None = None
    currency: FieldRule | None = None
    close_date: FieldRule | None = None
    notes: FieldRule | None = None
    status: FieldRule | None = None
    visible_to_microsoft: FieldRule | None = None
    contact: FieldRule | None = None
    help_needed: OneWayFieldRule | None = None
    solutions: OneWayFieldRule | None = None


class ExtraField(_Strict):
    """One more referral JSON path ↔ Dataverse opportunity column, merged like built-in fields.

    ``values`` maps referral values to the column's choice values (and back): one to one.
    """

    referral: str = Field(description="a dotted referral JSON path, e.g. customerProfile.size")
    crm: str = Field(description=_LOGICAL_HINT)
    direction: Direction = "both"
    values: dict[str, int | str | bool] | None = None

    @field_validator("referral")
    @classmethod
    def _path(cls, value: str) -> str:
        if not _REFERRAL_PATH.match(value):
            raise ValueError("expected a dotted referral JSON path such as customerProfile.size")
        return value

    @field_validator("crm")
    @classmethod
    def _column(cls, value: str) -> str:
        return _logical_name(value)

    @field_validator("values")
    @classmethod
    def _one_to_one(
        cls, values: dict[str, int | str | bool] | None
    ) -> dict[str, int | str | bool] | None:
        if values is None:
            return None
        if not values:
            raise ValueError("expected at least one referral value → choice value pair")
        seen: dict[object, str] = {}
        for key, choice in values.items():
            if choice in seen:
                raise ValueError(
                    f"not one to one: {seen[choice]!r} and {key!r} both map to {choice!r}; "
                    "each choice value may stand for one referral value only"
                )
            seen[choice] = key
        return values

    @property
    def patch_path(self) -> str:
        """The JSON Patch path of ``referral`` (``details.notes`` → ``/details/notes``)."""
        return "/" + self.referral.replace(".", "/")

    @property
    def to_partner_center(self) -> bool:
        return self.direction in ("both", "crm_to_pc")

    @property
    def to_crm(self) -> bool:
        return self.direction in ("both", "pc_to_crm", "on_create")

    @model_validator(mode="after")
    def _patchable(self) -> ExtraField:
        if self.to_partner_center and self.patch_path not in PATCHABLE_PATHS:
            raise ValueError(
                f"direction {self.direction!r} writes {self.referral!r} to Partner Center, "
                f"which does not let a partner patch {self.patch_path}; use 'pc_to_crm', "
                f"'on_create' or 'off', or one of: {', '.join(sorted(PATCHABLE_PATHS))}"
            )
        return self


DefaultValue = str | int | float | bool | None


class Defaults(_Strict):
    """Column values set when the product creates that row, never on update."""

    opportunity: dict[str, DefaultValue] = Field(default_factory=dict)
    lead: dict[str, DefaultValue] = Field(default_factory=dict)
    account: dict[str, DefaultValue] = Field(default_factory=dict)
    contact: dict[str, DefaultValue] = Field(default_factory=dict)

    @field_validator("opportunity", "lead", "account", "contact")
    @classmethod
    def _columns(cls, values: dict[str, DefaultValue]) -> dict[str, DefaultValue]:
        for key, value in values.items():
            column, bind = key.removesuffix("@odata.bind"), key.endswith("@odata.bind")
            if not _LOGICAL_NAME.match(column):
                raise ValueError(f"{key!r}: expected {_LOGICAL_HINT}, or one with '@odata.bind'")
            if bind and not (isinstance(value, str) and _BIND.match(value)):
                raise ValueError(
                    f"{key!r}: a lookup is bound as '/<entity set>(<GUID>)', "
                    f"e.g. '/teams(00000000-0000-0000-0000-000000000001)'; got {value!r}"
                )
        return values

    def for_table(self, table: Table) -> dict[str, DefaultValue]:
        values: dict[str, DefaultValue] = getattr(self, table)
        return dict(values)


class CountryLookup(_Strict):
    """The account's country as a lookup: the ISO code lives in ``code_column`` of ``table``."""

    column: str = Field(description="the account's lookup column, e.g. cr1a2_countryid")
    table: str = Field(description="the looked-up table's entity set, e.g. cr1a2_countries")
    code_column: str = Field(description="its column holding the ISO 3166 code")

    @field_validator("column", "code_column")
    @classmethod
    def _column(cls, value: str) -> str:
        return _logical_name(value)

    @field_validator("table")
    @classmethod
    def _entity_set(cls, value: str) -> str:
        if not _ENTITY_SET.match(value):
            raise ValueError("expected an entity set name (lower-case, e.g. cr1a2_countries)")
        return value


class CountryRule(_Strict):
    lookup: CountryLookup


class CrmMapping(_Strict):
    """The whole mapping; the default (``CrmMapping()``) is the behaviour of SPEC 4.1-4.6."""

    fields: FieldRules = Field(default_factory=FieldRules)
    extra: tuple[ExtraField, ...] = ()
    defaults: Defaults = Field(default_factory=Defaults)
    account_match: tuple[str, ...] = DEFAULT_ACCOUNT_MATCH
    country: CountryRule | None = None

    @field_validator("account_match")
    @classmethod
    def _match_columns(cls, columns: tuple[str, ...]) -> tuple[str, ...]:
        if not columns:
            raise ValueError('expected at least one account column, e.g. ["name"]')
        for column in columns:
            _logical_name(column)
        if len(set(columns)) != len(columns):
            raise ValueError("a column is named twice")
        return columns

    @model_validator(mode="after")
    def _distinct_columns(self) -> CrmMapping:
        columns = [extra.crm for extra in self.extra]
        twice = sorted({c for c in columns if columns.count(c) > 1})
        if twice:
            raise ValueError(f"extra: column(s) mapped twice: {', '.join(twice)}")
        return self

    def direction_of(self, field: str) -> Direction:
        """The direction of a built-in Deal field (``both`` unless the mapping narrows it)."""
        rule: FieldRule | OneWayFieldRule | None = getattr(self.fields, field)
        if rule is not None:
            return rule.direction
        return "crm_to_pc" if field in ONE_WAY_FIELDS else "both"

    @property
    def customised(self) -> bool:
        return self != CrmMapping()


def load_mapping(*, text: str | None = None, file: str | None = None) -> CrmMapping:
    """The mapping from ``CRM_MAPPING`` (``text``) or ``CRM_MAPPING_FILE`` (``file``), validated;
    the default when neither is given. Raises ``SettingsError`` naming each problem."""
    if text is not None and file is not None:
        raise MappingError(["CRM_MAPPING, CRM_MAPPING_FILE: set one of them, not both"])
    source = "CRM_MAPPING"
    if file is not None:
        source = f"CRM_MAPPING_FILE ({file})"
        try:
            text = Path(file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise MappingError([f"{source}: cannot be read: {exc.__class__.__name__}"]) from None
    if text is None:
        return CrmMapping()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise MappingError([f"{source}: not valid JSON at {where}: {exc.msg}"]) from None
    if not isinstance(data, dict):
        raise MappingError([f"{source}: $: expected a JSON object, got {type(data).__name__}"])
    try:
        return CrmMapping.model_validate(data)
    except ValidationError as exc:
        raise MappingError(describe(exc, source)) from None


class MappingError(SettingsError):
    """The mapping is wrong; ``problems`` has one line per problem, each naming its source
    setting and JSON path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid mapping:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


def describe(exc: ValidationError, source: str) -> list[str]:
    """One line per problem: its setting, JSON path, what is wrong, and what is expected."""
    lines = []
    for error in exc.errors():
        path = json_path(error["loc"])
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        elif error["type"] == "literal_error":
            message = f"{message} (got {error.get('input')!r})"
        lines.append(f"{source}: {path}: {message}")
    return lines


def json_path(loc: tuple[int | str, ...]) -> str:
    """pydantic's location as a JSON path: ``("extra", 0, "crm")`` → ``$.extra[0].crm``."""
    path = "$"
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith(("function-", "literal[", "str", "int", "float", "bool")):
            continue  # a union member's name, not a key
        else:
            path += f".{part}"
    return path


NO_MAPPING = CrmMapping()  # the behaviour of SPEC 4.1-4.6 (frozen: one instance serves all)
