"""The two systems as the sync uses them: ``PartnerCenterSide`` and ``CrmSide``.

Each adapter turns the few reads and writes the sync needs into client calls, in the fewest
requests, and answers in the sync's own types (``Referral``, ``CrmOpportunity``, versions).
"Not found" is ``None`` on reads; everything else is the client's typed error. No decisions
live here: ``plan.py`` makes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from shared.crm_mapping import CountryLookup
from shared.dataverse import (
    VERSION_COLUMNS,
    AlreadyExists,
    Create,
    DataverseClient,
    Expand,
    NotFound,
    all_of,
    any_of,
    content_id,
    eq,
    etag_of,
)
from shared.partner_center import NotFound as PcNotFound
from shared.partner_center import PartnerCenterClient, PartnerCenterError, PatchOperation, Referral
from shared.sync.crm_limits import ACCOUNT_NAME, fit
from shared.sync.deal import Customer
from shared.sync.mapping import (
    CONTACT_SELECT,
    LOOKUP_COUNTRY_CODE,
    Columns,
    account_customer,
    new_account,
    record_id,
)
from shared.sync.pc_refusals import refused_operations
from shared.sync.snapshot import (
    AccountMatch,
    CrmOpportunity,
    LeadState,
    modified_on_in,
    opportunity_of,
    row_versions,
    version_in,
)

MISSING_CURRENCY_TTL_S = 600.0
# A lookup country's table (SPEC 13) is read once and kept this long by each worker: a country
# an admin adds is seen within it. A code a referral has and the table lacks re-reads it sooner.
COUNTRY_TABLE_TTL_S = 600.0
COUNTRY_RECHECK_S = 60.0
# The longest a referral POST may take with its retries; ``plan.CREATE_LEASE`` is longer.
CREATE_REFERRAL_DEADLINE_S = 90.0


@dataclass(frozen=True)
class Version:
    """A Dataverse row's version after a write: its etag, ``modifiedon`` and ``versionnumber``
    (and its solution rows' newest, when the write returned them)."""

    etag: str | None
    modified_on: datetime | None
    # ``versionnumber`` by kind of row, see ``SyncLink.row_versions``.
    row_versions: Mapping[str, int] = field(default_factory=dict)
    confirmed_at: datetime | None = None  # see ``SyncLink.opportunity_confirmed_at``

    def after(self, written: Version, *, conditional: bool = False) -> Version:
        """This version once ``written`` landed (rows it did not return keep their versions).

        A write made ``conditional`` on this version's etag proves nothing changed since it
        was read, so it keeps ``confirmed_at``; any other write (a create, an If-Match: *
        update, an action) leaves the new version unconfirmed until a sync reads it.
        """
        return replace(
            written,
            row_versions={**self.row_versions, **written.row_versions},
            confirmed_at=self.confirmed_at if conditional else None,
        )


@dataclass(frozen=True)
class PatchOutcome:
    """A patch as Partner Center took it: the referral after it (None when every operation was
    refused, so nothing changed) and each refused field with Partner Center's reason."""

    referral: Referral | None
    refused: Mapping[str, str] = field(default_factory=dict)


class PartnerCenterSide:
    """Referral reads and writes."""

    def __init__(self, client: PartnerCenterClient) -> None:
        self.client = client

    async def get_referral(self, referral_id: str) -> Referral | None:
        try:
            return await self.client.get_referral(referral_id)
        except PcNotFound:
            return None

    async def list_related(self, referral: Referral) -> list[Referral]:
        """The other referrals of the referral's engagement (one query)."""
        assert referral.engagement_id is not None
        return [
            other
            async for other in self.client.list_related_referrals(referral.engagement_id)
            if other.id and other.id != referral.id
        ]

    async def find_by_external_id(self, opportunity_id: str) -> Referral | None:
        """The referral whose ``externalReferenceId`` is this opportunity, if any."""
        async for referral in self.client.list_referrals(
            filter=f"externalReferenceId eq '{opportunity_id}'", top=1
        ):
            return referral
        return None

    async def create_referral(self, body: Mapping[str, Any], *, lease_since: datetime) -> Referral:
        """POST the referral, giving up (``TimeoutError``) ``CREATE_REFERRAL_DEADLINE_S`` after
        the creation lease was taken (``lease_since``), whatever the retries of 429/503 would
        still wait: the lease must outlast the POST. It counts from the lease, not from this
        call: reads slowed by throttling before the POST must not push its end past the lease's,
        or another sync could take the lease over while this POST can still land."""
        elapsed = (datetime.now(UTC) - lease_since).total_seconds()
        remaining = CREATE_REFERRAL_DEADLINE_S - elapsed
        if remaining <= 0:
            raise TimeoutError(
                f"the lease on this creation was taken {elapsed:.0f} s ago: too late to POST "
                "safely before it expires; the job is retried and looks the referral up first"
            )
        async with asyncio.timeout(remaining):
            return await self.client.create_referral(body)

    async def patch_referral(
        self, referral_id: str, operations: Sequence[PatchOperation], *, etag: str | None
    ) -> Referral:
        """Patch and return the new referral (read back when the service answers 204)."""
        updated = await self.client.patch_referral(referral_id, operations, etag=etag)
        return updated if updated is not None else await self.client.get_referral(referral_id)

    async def patch_keeping_the_rest(
        self, referral_id: str, operations: Sequence[PatchOperation], *, etag: str | None
    ) -> PatchOutcome:
        """Patch; when Partner Center refuses one field (a 400 naming its path), send the patch
        again without it, keeping the rest (``pc_refusals``). A 400 changes nothing, so the
        same ``etag`` still holds. A 400 that names none of the operations is raised."""
        remaining = list(operations)
        refused: dict[str, str] = {}
        while remaining:
            try:
                updated = await self.patch_referral(referral_id, remaining, etag=etag)
            except PartnerCenterError as error:
                found = refused_operations(error, remaining)
                if found is None:
                    raise
                field_name, dropped = found
                refused[field_name] = error.message
                remaining = [o for o in remaining if o not in dropped]
                continue
            return PatchOutcome(updated, refused)
        return PatchOutcome(None, refused)


@dataclass(frozen=True)
class CountryTable:
    """A lookup country's table (SPEC 13) as one worker read it: each row's ISO code by row id,
    each code's row, and the account's navigation property that binds the lookup."""

    navigation: str
    code_by_id: Mapping[str, str]  # row id (lower case) → the code column's value
    id_by_code: Mapping[str, str]  # code as a Customer holds it (trimmed, upper case) → row id
    read_at: float  # time.monotonic()

    def code_of(self, row_id: str) -> str | None:
        return self.code_by_id.get(row_id.lower())

    def id_of(self, code: str) -> str | None:
        return self.id_by_code.get(code.strip().upper())


class CrmSide:
    """Opportunity, account, contact and lead reads and writes in Dataverse.

    An opportunity is read in one request (``$expand`` of its account, contact, currency and
    solution rows, reference 2.4).
    """

    def __init__(self, dataverse: DataverseClient, columns: Columns) -> None:
        self.dataverse = dataverse
        self.columns = columns
        self.nested_binds = True  # see _insert
        self._missing_currencies: dict[str, float] = {}  # ISO code → when found missing
        mapped = columns.mapping.country
        self._country_lookup: CountryLookup | None = mapped.lookup if mapped else None
        self._countries: CountryTable | None = None
        self._country_metadata: tuple[str, str] | None = None  # (primary key, navigation)
        self._countries_lock = asyncio.Lock()  # concurrent syncs share one read of the table

    # -- reads --------------------------------------------------------------------------------

    def _expand(self) -> list[str | Expand]:
        return [
            Expand("parentaccountid", self.columns.account_select),
            Expand("parentcontactid", CONTACT_SELECT),
            Expand("transactioncurrencyid", ["isocurrencycode"]),
            Expand(
                self.columns.solutions_relationship,
                [self.columns.solutionidentifier, "versionnumber"],
            ),
        ]

    async def get_opportunity(self, opportunity_id: str) -> CrmOpportunity | None:
        try:
            row = await self.dataverse.get(
                "opportunities",
                opportunity_id,
                select=self.columns.opportunity_select,
                expand=self._expand(),
            )
        except NotFound:
            return None
        return opportunity_of(await self._with_account_country(row), self.columns)

    async def find_for_referral(
        self, referral_id: str, external_reference_id: str | None
    ) -> CrmOpportunity | None:
        """An opportunity already carrying this referral id, or named by the referral's
        ``externalReferenceId`` (SPEC 4.5), in one query."""
        conditions = [eq(self.columns.referralid, referral_id)]
        if external_reference_id and _is_guid(external_reference_id):
            conditions.append(eq("opportunityid", uuid.UUID(external_reference_id)))
        row = await self.dataverse.first(
            "opportunities",
            select=self.columns.opportunity_select,
            filter=any_of(*conditions) if len(conditions) > 1 else conditions[0],
            expand=self._expand(),
        )
        if row is None:
            return None
        return opportunity_of(await self._with_account_country(row), self.columns)

    async def find_account(self, customer: Customer) -> AccountMatch:
        """The account matching the mapping's ``account_match`` columns (name + postal code by
        default, SPEC 4.5); else a new one whose id is derived from those values, so two
        referrals for one new customer make one account."""
        wanted = new_account(customer, columns=self.columns)
        match = self.columns.mapping.account_match
        values = [wanted.get(column) for column in match]
        # The first column always counts (a customer has a name); the others when known.
        conditions = [eq(match[0], values[0] or "")]
        conditions += [eq(c, v) for c, v in zip(match[1:], values[1:], strict=True) if v]
        # Name + postal code give the ids earlier versions derived ("<name>|<postal code>").
        account_id = record_id("account", "|".join(str(v or "") for v in values))
        # The account made for this customer earlier may have been renamed since: its derived
        # id still says whose it is. Without this, creating it again would collide forever.
        found = await self.dataverse.first(
            "accounts",
            select=self.columns.account_select,
            filter=any_of(all_of(*conditions), eq("accountid", uuid.UUID(account_id))),
        )
        if found is not None:
            found = await self._with_country_code(found)
            return AccountMatch(
                str(found["accountid"]), account_customer(found, columns=self.columns)
            )
        body = {k: v for k, v in wanted.items() if v}
        if "name" in body:
            body["name"] = fit(body["name"], ACCOUNT_NAME)  # a new account must be created
        if self._country_lookup is None or not customer.country:
            return AccountMatch(account_id, customer, body)
        bind, refused = await self._country_bind(self._country_lookup, customer.country)
        if refused:
            customer = customer.model_copy(update={"country": None})  # what the account holds
        return AccountMatch(account_id, customer, body | bind, refused=refused)

    # -- the lookup country (SPEC 13) -------------------------------------------------------

    async def _with_account_country(self, row: dict[str, Any]) -> dict[str, Any]:
        """An opportunity row with its expanded account's lookup country translated."""
        account = row.get("parentaccountid")
        if self._country_lookup is None or not isinstance(account, dict):
            return row
        return {**row, "parentaccountid": await self._with_country_code(account)}

    async def _with_country_code(self, account: dict[str, Any]) -> dict[str, Any]:
        """``account`` with the ISO code of the row its country lookup points at, under
        ``LOOKUP_COUNTRY_CODE`` (None when the lookup is empty); unchanged for a text country.
        The plan then validates it like the text column (SPEC 4.6)."""
        lookup = self._country_lookup
        if lookup is None:
            return account
        row_id = account.get(f"_{lookup.column}_value")
        code = None
        if row_id:
            table = await self._country_table()
            code = table.code_of(str(row_id))
            if code is None:
                # The account points at a row added since the table was read: read it again.
                code = (await self._country_table(stale=table)).code_of(str(row_id))
        return {**account, LOOKUP_COUNTRY_CODE: code}

    async def _country_bind(
        self, lookup: CountryLookup, code: str
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The new account's bind to the country row whose code is ``code``; or, when the
        table has none, no bind and the reason (the account is then made without a country:
        an approximate row would be a wrong country)."""
        table = await self._country_table()
        row_id = table.id_of(code)
        if row_id is None and time.monotonic() - table.read_at >= COUNTRY_RECHECK_S:
            table = await self._country_table(stale=table)  # an admin may have added it
            row_id = table.id_of(code)
        if row_id is not None:
            return {f"{table.navigation}@odata.bind": f"/{lookup.table}({row_id})"}, {}
        return {}, {
            "customer": (
                f"Partner Center's country {code} has no row in the country table "
                f"{lookup.table} ({lookup.code_column} = {code}): the account was created "
                "without a country. Add the row, then set the account's country."
            )
        }

    async def _country_table(self, *, stale: CountryTable | None = None) -> CountryTable:
        """The lookup country's table, read once per ``COUNTRY_TABLE_TTL_S`` (it is small:
        one request for every row's id and code). ``stale``: the table a caller found behind;
        read again unless a concurrent caller already did."""
        lookup = self._country_lookup
        assert lookup is not None
        async with self._countries_lock:
            cached = self._countries
            if (
                cached is not None
                and cached is not stale
                and time.monotonic() - cached.read_at < COUNTRY_TABLE_TTL_S
            ):
                return cached
            key, navigation = await self._country_table_metadata(lookup)
            code_by_id: dict[str, str] = {}
            id_by_code: dict[str, str] = {}
            rows = self.dataverse.list_rows(
                lookup.table, select=[key, lookup.code_column], orderby=[key]
            )
            async for row in rows:
                row_id, code = str(row[key]).lower(), row.get(lookup.code_column)
                if isinstance(code, str) and code.strip():
                    code_by_id[row_id] = code
                    # Two rows with one code both stand for it: the first (by id) is taken.
                    id_by_code.setdefault(code.strip().upper(), row_id)
            self._countries = CountryTable(navigation, code_by_id, id_by_code, time.monotonic())
            return self._countries

    async def _country_table_metadata(self, lookup: CountryLookup) -> tuple[str, str]:
        """The country table's primary key, and the account's single-valued navigation
        property of the lookup: what ``@odata.bind`` must name. Dataverse names it after the
        lookup's SchemaName (mixed case, ``cr1a2_CountryId``) unless its maker chose another,
        and refuses the logical name then; so both are read from metadata, not assumed from
        conventions (reference 4.5): the table by its entity set (``EntityDefinitions``), then
        its relationship to account (``OneToManyRelationships``). Kept for the worker's life."""
        if self._country_metadata is not None:
            return self._country_metadata
        # No $top: metadata queries take only $select, $filter and $expand.
        tables = self.dataverse.list_rows(
            "EntityDefinitions",
            select=["LogicalName", "PrimaryIdAttribute"],
            filter=eq("EntitySetName", lookup.table),
        )
        table = await anext(tables, None)
        if table is None:
            raise NotFound(
                f"the country table {lookup.table} of CRM_MAPPING's $.country.lookup does not "
                "exist; run `cosell mapping check`"
            )
        relationships = await self.dataverse.list_one_to_many(str(table["LogicalName"]))
        navigation = next(
            (
                r.referencing_navigation_property_name
                for r in relationships
                if r.referencing_entity == "account"
                and r.referencing_attribute == lookup.column
                and r.referencing_navigation_property_name
            ),
            None,
        )
        if navigation is None:
            raise NotFound(
                f"account has no lookup {lookup.column} to {lookup.table} (CRM_MAPPING's "
                "$.country.lookup); run `cosell mapping check`"
            )
        self._country_metadata = (str(table["PrimaryIdAttribute"]), navigation)
        return self._country_metadata

    async def has_currency(self, iso_code: str) -> bool:
        """Whether the org has this currency. A missing one is remembered for a while (an
        admin may add it), so an unknown code does not cost a request on every sync."""
        code = iso_code.upper()
        missing_since = self._missing_currencies.get(code)
        if missing_since is not None and time.monotonic() - missing_since < MISSING_CURRENCY_TTL_S:
            return False
        try:
            await self.dataverse.currency_id(code)
        except NotFound:
            self._missing_currencies[code] = time.monotonic()
            return False
        self._missing_currencies.pop(code, None)
        return True

    async def get_lead(self, lead_id: str) -> LeadState | None:
        try:
            lead = await self.dataverse.get(
                "leads",
                lead_id,
                select=["statecode", "_qualifyingopportunityid_value", self.columns.referralid],
            )
        except NotFound:
            return None
        opportunity_id = lead.get("_qualifyingopportunityid_value")
        state = lead.get("statecode")
        referral_id = lead.get(self.columns.referralid)
        return LeadState(
            int(state) if isinstance(state, int) else None,
            str(uuid.UUID(str(opportunity_id))) if opportunity_id else None,
            str(referral_id).lower() if referral_id else None,
        )

    # -- writes -------------------------------------------------------------------------------

    async def create_once(self, entity_set: str, body: Mapping[str, Any], row_id: str) -> None:
        """Create a row with a derived id; if it exists, an earlier or concurrent run made it."""
        with contextlib.suppress(AlreadyExists):
            await self.dataverse.create(entity_set, body, row_id=row_id)

    async def update_contact(self, contact_id: str, columns: Mapping[str, Any]) -> int | None:
        """Update our contact; returns its new ``versionnumber`` (for the link)."""
        return version_in(await self.dataverse.update("contacts", contact_id, columns))

    async def upsert_contact(self, contact_id: str, columns: Mapping[str, Any]) -> int | None:
        """Create the contact with this (derived) id, or bring it up to date if it exists;
        returns its new ``versionnumber``."""
        written, _ = await self.dataverse.upsert("contacts", contact_id, columns)
        return version_in(written)

    async def update_opportunity(
        self,
        opportunity_id: str,
        columns: Mapping[str, Any],
        *,
        currency: str | None = None,
        etag: str = "*",
    ) -> Version:
        """PATCH the opportunity (If-Match ``etag``); ``currency`` is bound by ISO code."""
        update = dict(columns)
        if currency:
            update.update(await self._currency_bind(currency))
        written = await self.dataverse.update(
            "opportunities",
            opportunity_id,
            update,
            etag=etag,
            select=VERSION_COLUMNS,
        )
        return self._version_of(written)

    async def _currency_bind(self, iso_code: str) -> dict[str, str]:
        currency_id = await self.dataverse.currency_id(iso_code)
        return {"transactioncurrencyid@odata.bind": f"/transactioncurrencies({currency_id})"}

    async def close_opportunity(self, opportunity_id: str, *, won: bool, status: int) -> Version:
        """Win or lose through the action, then read the new version back for the link."""
        action = self.dataverse.win_opportunity if won else self.dataverse.lose_opportunity
        await action(opportunity_id, status=status)
        fresh = await self.dataverse.get("opportunities", opportunity_id, select=VERSION_COLUMNS)
        return self._version_of(fresh)

    def _version_of(self, written: dict[str, Any]) -> Version:
        return Version(
            etag_of(written),
            modified_on_in(written),
            row_versions(written, self.columns.solutions_relationship),
        )

    async def create_opportunity(
        self,
        opportunity_id: str,
        body: Mapping[str, Any],
        *,
        currency: str | None,
        account_id: str,
        new_account: Mapping[str, Any] | None,
    ) -> Version:
        """The deep insert of the opportunity (with contact and solution rows, and a new
        account if one is given): all or nothing. ``AlreadyExists`` means another run made the
        opportunity (or the account) first."""
        data = dict(body)
        if currency:
            # The plan leaves out a currency the org lacks; one removed since keeps the base.
            with contextlib.suppress(NotFound):
                data.update(await self._currency_bind(currency))
        written = await self._insert(
            data, opportunity_id, account_id=account_id, new_account=new_account
        )
        # The solution rows are stamped too: the link must cover their modifiedon, or the next
        # poll would take our own insert for a seller's change.
        stamps = [
            modified_on_in(row) for row in written.get(self.columns.solutions_relationship) or []
        ]
        modified = [m for m in (modified_on_in(written), *stamps) if m is not None]
        return replace(self._version_of(written), modified_on=max(modified, default=None))

    async def _insert(
        self,
        body: dict[str, Any],
        opportunity_id: str,
        *,
        account_id: str,
        new_account: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """One request (reference 4.1). A new account rides in it as ``parentaccountid`` and
        is bound as ``customerid`` too (required, SPEC 4.1).

        UNCERTAIN: whether Dataverse takes a bind to a row the same deep insert creates (the
        platform makes such related rows first, so it should). If it refuses with a NotFound
        that names the account ("account With Id = … Does Not Exist"; any other refusal is
        raised as it is), the account and the opportunity go as one ``$batch`` change set, the
        opportunity binding both lookups to the account as ``$1`` (reference 5): still all or
        nothing, still one request, but two operations against service protection — and from
        then on for this worker.
        """
        select = VERSION_COLUMNS
        # Every row the insert makes comes back with its version, so the poll knows them ours.
        expand: list[str | Expand] = [
            Expand(self.columns.solutions_relationship, VERSION_COLUMNS),
            Expand("parentaccountid", VERSION_COLUMNS),
            Expand("parentcontactid", VERSION_COLUMNS),
        ]

        async def deep_insert(data: dict[str, Any]) -> dict[str, Any]:
            return await self.dataverse.create(
                "opportunities", data, row_id=opportunity_id, select=select, expand=expand
            )

        if new_account is None:
            return await deep_insert(body)
        if self.nested_binds:
            nested = {**body, "parentaccountid": {**new_account, "accountid": account_id}}
            del nested["parentaccountid@odata.bind"]
            try:
                return await deep_insert(nested)
            except NotFound as error:
                if not _names_row(error, account_id):
                    raise  # a missing currency or contact: a change set would not help
                self.nested_binds = False
        batched = {
            **body,
            "parentaccountid@odata.bind": content_id(0),
            "customerid_account@odata.bind": content_id(0),
        }
        account = Create("accounts", new_account, row_id=account_id, select=["accountid"])
        opportunity = Create(
            "opportunities", batched, row_id=opportunity_id, select=select, expand=expand
        )
        return (await self.dataverse.create_in_change_set([account, opportunity]))[1]


def _names_row(error: NotFound, row_id: str) -> bool:
    """Whether Dataverse's "<table> With Id = <id> Does Not Exist" names this row. Only its
    message counts: the request's URL (in ``str(error)``) may carry any id."""
    return row_id.lower() in error.message.lower()


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
