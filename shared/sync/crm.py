"""Reading and writing one opportunity (with its account, contact, currency and solutions).

Reads are one request (the opportunity with ``$expand`` of its account, contact and currency)
plus one for the solution rows, skipped when the opportunity's etag is the one the link
recorded (solution edits arrive as their own poll jobs). Writes are one PATCH with If-Match that
carries the changed columns, the audit, the sync status and the ✔/✖ mark together; closing goes
through WinOpportunity / LoseOpportunity, which Dataverse requires (SPEC 4.3).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from shared.dataverse import (
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
from shared.settings import Settings
from shared.sync.audit import append_audit
from shared.sync.deal import Customer, Deal
from shared.sync.mapping import (
    CONTACT_SELECT,
    ERROR_MARK,
    SYNC_STATUS,
    SYNCED_MARK,
    Columns,
    account_customer,
    contact_columns,
    new_account,
    new_opportunity,
    opportunity_to_deal,
    opportunity_update,
    record_id,
)
from shared.sync.merge import Change
from shared.sync.run import Run
from shared.sync.status import IN_PROGRESS, CrmStatus, to_crm


@dataclass(frozen=True)
class CrmOpportunity:
    """An opportunity as read: the raw row, its deal, and its version."""

    id: str
    row: Mapping[str, Any]
    deal: Deal
    etag: str | None
    modified_on: datetime | None
    sync_enabled: bool = True

    @property
    def contact_id(self) -> str | None:
        value = self.row.get("_parentcontactid_value")
        return str(value) if value else None


def _modified_on(row: Mapping[str, Any]) -> datetime | None:
    value = row.get("modifiedon")
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class CrmSide:
    """Dataverse reads and writes the engine needs, in the fewest requests."""

    def __init__(self, dataverse: DataverseClient, columns: Columns, settings: Settings) -> None:
        self.dataverse = dataverse
        self.columns = columns
        self.settings = settings
        self.nested_binds = True  # see _insert

    # -- reads --------------------------------------------------------------------------------

    @property
    def _solution_lookup(self) -> str:
        return f"_{self.columns.opportunityid}_value"

    def _expand(self) -> list[str | Expand]:
        # One request reads the opportunity, its account, contact, currency and solution rows
        # (single- and collection-valued $expand, reference 2.4).
        return [
            Expand("parentaccountid", self.columns.account_select),
            Expand("parentcontactid", CONTACT_SELECT),
            Expand("transactioncurrencyid", ["isocurrencycode"]),
            Expand(self.columns.solutions_relationship, [self.columns.solutionidentifier]),
        ]

    async def read(self, run: Run, opportunity_id: str) -> CrmOpportunity | None:
        """The opportunity and its deal (one request), or None if it does not exist."""
        run.count()
        try:
            row = await self.dataverse.get(
                "opportunities",
                opportunity_id,
                select=self.columns.opportunity_select,
                expand=self._expand(),
            )
        except NotFound:
            return None
        return self._opportunity(row)

    async def find_for_referral(
        self, run: Run, referral_id: str, external_reference_id: str | None
    ) -> CrmOpportunity | None:
        """An opportunity already carrying this referral id, or named by the referral's
        ``externalReferenceId`` (SPEC 4.5), in one query."""
        conditions = [eq(self.columns.referralid, referral_id)]
        if external_reference_id and _is_guid(external_reference_id):
            conditions.append(eq("opportunityid", uuid.UUID(external_reference_id)))
        run.count()
        row = await self.dataverse.first(
            "opportunities",
            select=self.columns.opportunity_select,
            filter=any_of(*conditions) if len(conditions) > 1 else conditions[0],
            expand=self._expand(),
        )
        return None if row is None else self._opportunity(row)

    def _opportunity(self, row: Mapping[str, Any]) -> CrmOpportunity:
        currency = row.get("transactioncurrencyid") or {}
        deal = opportunity_to_deal(
            row,
            columns=self.columns,
            account=row.get("parentaccountid"),
            contact=row.get("parentcontactid"),
            currency=currency.get("isocurrencycode") if isinstance(currency, dict) else None,
            solutions=row.get(self.columns.solutions_relationship) or [],
        )
        return CrmOpportunity(
            str(row["opportunityid"]),
            row,
            deal,
            etag_of(dict(row)),
            _modified_on(row),
            sync_enabled=bool(row.get(self.columns.syncwithpartnercenter)),
        )

    # -- writes -------------------------------------------------------------------------------

    def desired_name(self, name: str | None, status: Literal["synced", "error"]) -> str | None:
        if name is None or not self.settings.show_sync_mark_in_name:
            return name
        return (ERROR_MARK if status == "error" else SYNCED_MARK) + name

    async def write(
        self,
        run: Run,
        opportunity: CrmOpportunity,
        changes: Mapping[str, Change],
        merged: Deal,
        *,
        status: Literal["synced", "error"],
        audit: list[str],
        audit_if_writing: list[str] | None = None,
    ) -> CrmOpportunity:
        """Apply CRM-bound changes plus audit/status/mark; returns the new version.

        Writes nothing (and makes no call) when nothing differs from what the row holds;
        ``audit_if_writing`` lines go along only when something else is written anyway.
        """
        row = opportunity.row
        currency_ids: dict[str, str] = {}
        if "currency" in changes and merged.currency:
            run.count()
            currency_ids[merged.currency] = str(await self.dataverse.currency_id(merged.currency))
        update = opportunity_update(
            changes, merged, columns=self.columns, currency_ids=currency_ids
        )
        name = self.desired_name(merged.name, status)
        if name is not None and row.get("name") != name:
            update["name"] = name
        if row.get(self.columns.syncstatus) != SYNC_STATUS[status]:
            update[self.columns.syncstatus] = SYNC_STATUS[status]
        if "contact" in changes and merged.contact is not None:
            update.update(await self._write_contact(run, opportunity, merged))

        target = None
        if "status" in changes and merged.status is not None:
            target = to_crm(merged.status, close_reason=merged.close_reason)
            current = CrmStatus(int(row.get("statecode") or 0), int(row.get("statuscode") or 0))
            if not target.closed:
                # Reopening, or moving between open reasons, is a plain PATCH (reference 8.2).
                update["statecode"], update["statuscode"] = 0, target.statuscode
            elif current.closed:
                # Won ↔ Lost: reopen in this PATCH, then close again through the action.
                update["statecode"], update["statuscode"] = 0, IN_PROGRESS
        # Waiting audit lines ride along only when the opportunity is written anyway.
        lines = [*(audit_if_writing or []), *audit] if (update or audit) else []
        if lines:
            update[self.columns.audit] = append_audit(row.get(self.columns.audit), lines)
        etag, modified_on = opportunity.etag, opportunity.modified_on
        if update:
            run.count()
            written = await self.dataverse.update(
                "opportunities",
                opportunity.id,
                update,
                if_match=opportunity.etag or "*",
                select=["modifiedon"],
            )
            etag, modified_on = etag_of(written), _modified_on(written)
        if target is not None and target.closed:
            run.count()
            action = (
                self.dataverse.win_opportunity
                if target.statecode == 1
                else self.dataverse.lose_opportunity
            )
            await action(opportunity.id, status=target.statuscode)
            run.count()  # closing changes the row's version: read it back for the link
            fresh = await self.dataverse.get("opportunities", opportunity.id, select=["modifiedon"])
            etag, modified_on = etag_of(fresh), _modified_on(fresh)
        new_row = {**row, **{k: v for k, v in update.items() if "@" not in k}}
        return replace(opportunity, row=new_row, etag=etag, modified_on=modified_on)

    async def _write_contact(
        self, run: Run, opportunity: CrmOpportunity, merged: Deal
    ) -> dict[str, Any]:
        assert merged.contact is not None
        columns = {k: v for k, v in contact_columns(merged.contact).items() if v is not None}
        run.count()
        if opportunity.contact_id:
            await self.dataverse.update("contacts", opportunity.contact_id, columns)
            return {}
        contact_id = record_id("contact", opportunity.id)
        await self.create_once("contacts", columns, contact_id)
        return {"parentcontactid@odata.bind": f"/contacts({contact_id})"}

    # -- creation (PC → CRM, SPEC 4.5) ---------------------------------------------------------

    async def create_once(self, entity_set: str, body: Mapping[str, Any], row_id: str) -> None:
        """Create a row with a derived id; if it exists, an earlier or concurrent run made it."""
        with contextlib.suppress(AlreadyExists):
            await self.dataverse.create(entity_set, body, row_id=row_id)

    async def find_account(
        self, run: Run, customer: Customer
    ) -> tuple[str, Customer, dict[str, Any] | None]:
        """(account id, its customer data, body to create it or None if it exists): the
        account matching name + postal code (SPEC 4.5); a new one gets an id derived from both,
        so two referrals for one new customer make one account."""
        conditions = [eq("name", customer.name or "")]
        if customer.postal_code:
            conditions.append(eq("address1_postalcode", customer.postal_code))
        run.count()
        found = await self.dataverse.first(
            "accounts", select=self.columns.account_select, filter=all_of(*conditions)
        )
        if found is not None:
            return str(found["accountid"]), account_customer(found, columns=self.columns), None
        account_id = record_id("account", f"{customer.name}|{customer.postal_code or ''}")
        body = {k: v for k, v in new_account(customer, columns=self.columns).items() if v}
        return account_id, customer, body

    async def create_opportunity(
        self,
        run: Run,
        deal: Deal,
        *,
        referral_id: str,
        account_id: str,
        new_account_body: Mapping[str, Any] | None,
    ) -> CrmOpportunity:
        """Opportunity, contact, solution rows and a new account in one request (see
        ``_insert``), all or nothing, ids derived from the referral id.

        ``AlreadyExists`` means another run made the opportunity (or the new account) first:
        the caller restarts and finds them.
        """
        currency_id = None
        if deal.currency:
            run.count()
            try:
                currency_id = str(await self.dataverse.currency_id(deal.currency))
            except NotFound:
                currency_id = None  # unknown ISO code in this org: keep the base currency
        opportunity_id = record_id("opportunity", referral_id)
        body = new_opportunity(
            deal.model_copy(update={"name": self.desired_name(deal.name, "synced")}),
            columns=self.columns,
            account_id=account_id,
            contact_id=None,
            currency_id=currency_id,
        )
        contact_id = None
        if deal.contact is not None:
            contact_id = record_id("contact", referral_id)
            contact = {k: v for k, v in contact_columns(deal.contact).items() if v is not None}
            body["parentcontactid"] = {**contact, "contactid": contact_id}
        body[self.columns.solutions_relationship] = [
            {
                self.columns.name: identifier,
                self.columns.solutionidentifier: identifier,
                self.columns.solutionid: record_id("solution", f"{referral_id}|{identifier}"),
            }
            for identifier in deal.solutions
        ]
        written = await self._insert(
            run, body, opportunity_id, account_id=account_id, new_account=new_account_body
        )
        etag = etag_of(written)
        stamps = [
            _modified_on(row) for row in written.get(self.columns.solutions_relationship) or []
        ]
        modified_on = max(
            [m for m in (_modified_on(written), *stamps) if m is not None], default=None
        )
        if deal.status is not None and to_crm(deal.status).closed:
            target = to_crm(deal.status, close_reason=deal.close_reason)
            run.count()
            action = (
                self.dataverse.win_opportunity
                if target.statecode == 1
                else self.dataverse.lose_opportunity
            )
            await action(opportunity_id, status=target.statuscode)
            run.count()
            fresh = await self.dataverse.get("opportunities", opportunity_id, select=["modifiedon"])
            etag, modified_on = etag_of(fresh), _modified_on(fresh)
        row = {**body, "opportunityid": opportunity_id, "_parentcontactid_value": contact_id}
        return CrmOpportunity(opportunity_id, row, deal, etag, modified_on)

    async def _insert(
        self,
        run: Run,
        body: dict[str, Any],
        opportunity_id: str,
        *,
        account_id: str,
        new_account: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """The deep insert of the opportunity (reference 4.1). A new account rides in it as
        ``parentaccountid`` and is bound as ``customerid`` too (required, SPEC 4.1).

        UNCERTAIN: whether Dataverse takes a bind to a row the same deep insert creates (the
        platform makes such related rows first, so it should). If it refuses with "does not
        exist", the account and the opportunity go as one ``$batch`` change set instead, the
        opportunity binding both lookups to the account as ``$1`` (reference 5): still all or
        nothing, still one request, but two operations against service protection — and from
        then on for this worker.
        """
        select = ["modifiedon"]
        # The solution rows are stamped too: the link must cover their modifiedon, or the next
        # poll would take our own insert for a seller's change.
        expand: list[str | Expand] = [Expand(self.columns.solutions_relationship, ["modifiedon"])]

        async def deep_insert(data: dict[str, Any]) -> dict[str, Any]:
            run.count()
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
                if account_id.lower() not in str(error).lower():
                    raise
                self.nested_binds = False
        run.count()
        batched = {**body, "parentaccountid@odata.bind": content_id(0),
                   "customerid_account@odata.bind": content_id(0)}  # fmt: skip
        account = Create("accounts", new_account, row_id=account_id, select=["accountid"])
        opportunity = Create("opportunities", batched, row_id=opportunity_id, select=select,
                             expand=expand)  # fmt: skip
        return (await self.dataverse.create_in_change_set([account, opportunity]))[1]


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True
