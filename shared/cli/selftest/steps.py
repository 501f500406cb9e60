"""The selftest's steps: read-only checks, and the ``--write`` round trip.

Each step is a small async function over the (recording) clients that returns its detail or
raises; ``Steps.run`` turns that into one PASS/WARN/FAIL/SKIP row and labels the requests the
step made, so their answers are compared under the step's name.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from shared import crm_schema as crm
from shared.cli import mapping as mapping_check
from shared.cli import schema as schema_check
from shared.cli.selftest.replay import Recorder
from shared.dataverse import DataverseClient
from shared.jobs import SyncJob
from shared.partner_center import (
    REFERRALS_RESOURCE,
    WEBHOOKS_RESOURCE,
    PartnerCenterClient,
    PatchOperation,
    ReferralStatus,
    ReferralSubstatus,
    TokenProvider,
)
from shared.settings import Settings

Status = Literal["pass", "warn", "fail", "skip"]
NAME_PREFIX = "Co-sell Sync selftest"
LOST = 2  # opportunity statecode Lost (SPEC 4.3)


class Warn(Exception):
    """A step that ran and found something to look at, which does not fail the selftest."""


class Skip(Exception):
    """A step that could not run because an earlier one failed."""


@dataclass
class StepResult:
    name: str
    status: Status
    detail: str

    def row(self) -> dict[str, str]:
        return {"step": self.name, "status": self.status, "detail": self.detail}


@dataclass
class Steps:
    recorder: Recorder
    results: list[StepResult] = field(default_factory=list)

    async def run(self, name: str, probe: Callable[[], Awaitable[str]]) -> bool:
        self.recorder.step = name
        try:
            detail = await probe()
        except Skip as exc:
            self.results.append(StepResult(name, "skip", str(exc)))
            return False
        except Warn as exc:
            self.results.append(StepResult(name, "warn", str(exc)))
            return True
        except Exception as exc:  # noqa: BLE001 - a selftest reports every failure, goes on
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            self.results.append(StepResult(name, "fail", f"{type(exc).__name__}: {text}"))
            return False
        self.results.append(StepResult(name, "pass", detail))
        return True

    @property
    def failed(self) -> bool:
        return any(r.status == "fail" for r in self.results)


@dataclass
class Facts:
    """What the tenant showed, for seeding the emulators with comparable data."""

    referral_id: str | None = None
    registration: bool = False


async def read_only(
    steps: Steps,
    *,
    settings: Settings,
    tokens: TokenProvider,
    pc: PartnerCenterClient,
    dataverse: DataverseClient,
) -> Facts:
    facts = Facts()

    async def pc_tokens() -> str:
        for resource in (REFERRALS_RESOURCE, WEBHOOKS_RESOURCE):
            await tokens.get_token(resource)
        return "acquired for the referrals and the webhook API"

    async def dataverse_token() -> str:
        await dataverse.check_token()
        return f"acquired for {dataverse.url}/.default"

    async def who_am_i() -> str:
        me = await dataverse.who_am_i()
        return f"application user {me.user_id}"

    async def one_page() -> str:
        found = []
        # One request: stop at the first referral rather than let the pager ask for more.
        pages = pc.list_referrals(top=1)
        try:
            async for referral in pages:
                found.append(referral)
                break
        finally:
            await pages.aclose()  # type: ignore[attr-defined]  # an async generator
        if not found:
            raise Warn("the tenant has no referrals yet (nothing to compare but the envelope)")
        facts.referral_id = found[0].id
        return "listed one referral ($top=1); it parses"

    async def read_one() -> str:
        if facts.referral_id is None:
            raise Skip("no referral listed")
        referral = await pc.get_referral(facts.referral_id)
        return f"read {referral.id} ({referral.type}, {referral.status}/{referral.substatus})"

    async def registration() -> str:
        current = await pc.get_webhook_registration()
        if current is None or not current.webhook_url:
            raise Warn("no webhook registered (run `cosell webhook register`)")
        facts.registration = True
        events = await pc.list_webhook_events()
        return f"registered for {len(current.webhook_events)} event(s); {len(events)} available"

    async def schema() -> str:
        comparison = await schema_check.compare(dataverse, settings.crm_column_prefix)
        comparison.findings += await schema_check.compare_extra(dataverse, settings.mapping)
        bad = comparison.missing + comparison.differs
        if bad:
            names = ", ".join(f"{f.wanted.table}.{f.wanted.name}" for f in bad[:5])
            raise RuntimeError(
                f"{len(bad)} missing or different ({names}); see `cosell schema check`"
            )
        return f"{len(comparison.findings)} columns and tables as the sync needs them"

    async def mapping() -> str:
        checks = await mapping_check.check_mapping(
            dataverse,
            settings.mapping,
            deal_value_field=settings.crm_deal_value_field,
            country_field=settings.crm_country_field,
        )
        failed = [c for c in checks if c.status == "fail"]
        if failed:
            entries = ", ".join(c.entry for c in failed[:5])
            raise RuntimeError(
                f"{len(failed)} entries fail ({entries}); see `cosell mapping check`"
            )
        return f"{len(checks)} entries fit the Dataverse metadata"

    await steps.run("Partner Center tokens", pc_tokens)
    await steps.run("Dataverse token", dataverse_token)
    await steps.run("Dataverse WhoAmI", who_am_i)
    await steps.run("referrals: one page", one_page)
    await steps.run("referrals: read one", read_one)
    await steps.run("webhook registration", registration)
    await steps.run("schema check", schema)
    await steps.run("mapping check", mapping)
    return facts


def selftest_name(now: datetime) -> str:
    """What every record the selftest creates is called, so a partner can find them."""
    return f"{NAME_PREFIX} {now.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S')}Z"


@dataclass
class Created:
    """Ids of what ``--write`` made (reported, so nothing is left unaccounted for)."""

    referral: str | None = None  # the private referral the selftest created in Partner Center
    opportunity: str | None = None  # the test opportunity it created in Dataverse
    synced_opportunity: str | None = None  # what the engine made of the referral
    synced_referral: str | None = None  # what the engine made of the opportunity
    account: str | None = None
    contact: str | None = None
    solution: str | None = None

    def rows(self) -> list[tuple[str, str]]:
        labels = (
            ("referral (Partner Center, created)", self.referral),
            ("opportunity (Dataverse, created)", self.opportunity),
            ("opportunity of the referral (by the sync)", self.synced_opportunity),
            ("referral of the opportunity (by the sync)", self.synced_referral),
            ("account", self.account),
            ("contact", self.contact),
            ("solution row", self.solution),
        )
        return [(label, value) for label, value in labels if value]


@dataclass(frozen=True)
class WriteOptions:
    name: str
    solution_id: str
    currency: str
    country: str = "US"


def referral_body(options: WriteOptions, closing: date) -> dict[str, Any]:
    """A private deal (Independent, not shared with Microsoft): the smallest referral the
    service takes (reference §2.1; SPEC 4.6: a solution and a country)."""
    return {
        "name": options.name,
        "type": "Independent",
        "qualification": "SalesQualified",
        "customerProfile": {
            "name": options.name,
            "address": {
                "addressLine1": "1 Example Way",
                "city": "Redmond",
                "state": "WA",
                "postalCode": "98052",
                "country": options.country,
            },
            "team": [
                {
                    "firstName": "Selftest",
                    "lastName": "Contact",
                    "email": "selftest@example.com",
                    "phoneNumber": "+10000000000",
                }
            ],
        },
        "consent": {
            "consentToToShareInfoWithOthers": False,
            "consentToContact": True,
            "consentToShareReferralWithMicrosoftSellers": False,
        },
        "details": {
            "notes": "Made by `cosell selftest --write`; it closes this deal as lost.",
            "dealValue": 1,
            "currency": options.currency,
            "closingDateTime": f"{closing.isoformat()}T00:00:00Z",
            "requirements": {"solutions": [{"type": "Name", "id": options.solution_id}]},
        },
        "team": [],
        "target": [{"type": "SolutionProfile", "id": options.solution_id}],
    }


async def write_round_trip(
    steps: Steps,
    *,
    settings: Settings,
    options: WriteOptions,
    pc: PartnerCenterClient,
    dataverse: DataverseClient,
    engine: Any,  # shared.sync.SyncEngine (imported by the caller, lazily)
    today: date,
) -> Created:
    created = Created()
    schema = crm.crm_schema(settings.crm_column_prefix)
    closing = today + timedelta(days=90)

    async def create_referral() -> str:
        referral = await pc.create_referral(referral_body(options, closing))
        created.referral = referral.id
        return f"referral {referral.id} ({referral.type}, {referral.status})"

    async def create_opportunity() -> str:
        account_id, contact_id, opportunity_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        account: dict[str, Any] = {
            "name": options.name,
            "address1_line1": "1 Example Way",
            "address1_city": "Redmond",
            "address1_postalcode": "98052",
        }
        if settings.mapping.country is None:
            account[settings.crm_country_field] = options.country
        await dataverse.create("accounts", account, row_id=account_id)
        created.account = str(account_id)
        contact = {
            "firstname": "Selftest",
            "lastname": "Contact",
            "emailaddress1": "selftest@example.com",
            "parentcustomerid_account@odata.bind": f"/accounts({account_id})",
        }
        await dataverse.create("contacts", contact, row_id=contact_id)
        created.contact = str(contact_id)
        currency = await dataverse.currency_id(options.currency)
        opportunity = {
            "name": options.name,
            "customerid_account@odata.bind": f"/accounts({account_id})",
            "parentaccountid@odata.bind": f"/accounts({account_id})",
            "parentcontactid@odata.bind": f"/contacts({contact_id})",
            "transactioncurrencyid@odata.bind": f"/transactioncurrencies({currency})",
            settings.crm_deal_value_field: 1,
            "estimatedclosedate": closing.isoformat(),
            "description": "Made by `cosell selftest --write`; it closes this deal as lost.",
            schema.sync_with_partner_center.logical_name: True,
        }
        await dataverse.create("opportunities", opportunity, row_id=opportunity_id)
        created.opportunity = str(opportunity_id)
        solution_id = uuid.uuid4()
        solution = {
            schema.solution.primary_name.logical_name: options.solution_id,
            schema.solution_identifier.logical_name: options.solution_id,
            schema.solution_opportunity.bind_name: f"/opportunities({opportunity_id})",
        }
        await dataverse.create(schema.solution.entity_set, solution, row_id=solution_id)
        created.solution = str(solution_id)
        return (
            f"opportunity {opportunity_id} with account, contact and solution {options.solution_id}"
        )

    def need(value: str | None, what: str) -> str:
        if value is None:
            raise Skip(f"no {what} (an earlier step failed)")
        return value

    async def sync(kind: Literal["referral", "opportunity"], record: str) -> Any:
        result = await engine.sync(SyncJob.now(kind, record, reason="manual"))
        if result.outcome in ("error", "skipped", "deferred"):
            reasons = "; ".join([*result.problems, *result.notes]) or "no reason given"
            raise RuntimeError(f"outcome {result.outcome}: {reasons}")
        return result

    async def sync_referral() -> str:
        result = await sync("referral", need(created.referral, "referral"))
        created.synced_opportunity = result.opportunity_id and str(result.opportunity_id)
        return f"{result.outcome}: opportunity {result.opportunity_id}"

    async def sync_opportunity() -> str:
        result = await sync("opportunity", need(created.opportunity, "opportunity"))
        created.synced_referral = result.referral_id and str(result.referral_id)
        return f"{result.outcome}: referral {result.referral_id}"

    async def close_referral() -> str:
        referral = await pc.get_referral(need(created.referral, "referral"))
        operations = [
            PatchOperation.replace("/status", ReferralStatus.CLOSED.value),
            PatchOperation.replace("/substatus", ReferralSubstatus.LOST.value),
            PatchOperation.replace("/statusReason", "Closed by cosell selftest"),
        ]
        await pc.patch_referral(str(referral.id), operations, etag=referral.e_tag)
        return f"referral {referral.id} closed as lost"

    async def close_opportunity() -> str:
        opportunity = need(created.opportunity, "opportunity")
        await dataverse.lose_opportunity(opportunity, subject=options.name)
        return f"opportunity {opportunity} closed as lost (Out-Sold)"

    async def follow_referral() -> str:
        referral = need(created.referral, "referral")
        opportunity = need(created.synced_opportunity, "synced opportunity")
        result = await sync("referral", referral)
        row = await dataverse.get("opportunities", opportunity, select=["statecode"])
        if row.get("statecode") != LOST:
            raise RuntimeError(f"opportunity {opportunity} has statecode {row.get('statecode')}")
        return f"{result.outcome}: opportunity {opportunity} is Lost"

    async def follow_opportunity() -> str:
        opportunity = need(created.opportunity, "opportunity")
        referral_id = need(created.synced_referral, "synced referral")
        result = await sync("opportunity", opportunity)
        referral = await pc.get_referral(referral_id)
        if referral.status != ReferralStatus.CLOSED:
            raise RuntimeError(f"referral {referral_id} is {referral.status}/{referral.substatus}")
        return f"{result.outcome}: referral {referral_id} is {referral.status}/{referral.substatus}"

    await steps.run("write: create private referral", create_referral)
    await steps.run("write: create test opportunity", create_opportunity)
    await steps.run("write: sync the referral", sync_referral)
    await steps.run("write: sync the opportunity", sync_opportunity)
    await steps.run("write: close the referral as lost", close_referral)
    await steps.run("write: close the opportunity as lost", close_opportunity)
    await steps.run("write: sync the closed referral", follow_referral)
    await steps.run("write: sync the closed opportunity", follow_opportunity)
    return created


def today_utc() -> date:
    return datetime.now(UTC).date()


__all__ = [
    "NAME_PREFIX",
    "Created",
    "Facts",
    "StepResult",
    "Steps",
    "WriteOptions",
    "read_only",
    "referral_body",
    "selftest_name",
    "write_round_trip",
]
