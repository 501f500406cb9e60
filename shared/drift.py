"""What is out of sync right now (SPEC 10 ``cosell drift``, issue 18), for the CLI, ``/api/health``
and a dashboard.

``find_drift`` reads both sides and the link table with a few paged list queries — every
referral (Partner Center's list, page by page), every opportunity with the sync flag on (one
Dataverse query, plus one for the audit of those whose sync status is Error), one scan of
``synclinks`` — and no per-row call. It sorts what does not line up into kinds (``KINDS``):

* ``referral_without_opportunity`` — a referral Partner Center lists with no opportunity: no
  link, and no flagged opportunity names it (a dropped webhook, a failed creation, a referral
  older than the reconcile window). Marketplace leads are left out with ``SYNC_COSELL_ONLY``.
* ``opportunity_without_referral`` — a flagged opportunity with no referral: nothing has
  created one yet (its push and poll were lost, or it waits for its first sync), or it names a
  referral Partner Center does not list.
* ``validation_failed`` — the opportunity's sync status is Error (SPEC 4.6 validation, or a
  value Dataverse cannot hold), linked or not; the reasons are the audit's last ✖ lines.
* ``stale`` — a linked pair whose link holds an older version of the referral (its eTag) or
  of the opportunity (its ``versionnumber`` / etag) than the side has now: a change not synced
  yet (a lost event, a job waiting or failing), or an opportunity naming a referral that is
  not linked to it.
* ``refused`` — a refusal nobody resolved: the link's or the opportunity index row's last
  result is an error (a service refused a write as invalid, or the other side was deleted).
* ``job_failed`` — the link's last result is a failed attempt of a job (``shared.failures``):
  the queue retries it, or it is in ``sync-jobs-poison``.

Each deal appears once, under the first kind that applies in that order of precedence:
validation, failure, refusal, then what is missing or lagging.

Health must stay cheap, so ``/api/health`` does not call this: the ``reconcile_partner_center``
timer runs it after its own work (``refresh``, at most every ``SCAN_EVERY``) and stores the
counts as a small summary row in ``synccursors``; ``cosell drift`` stores the counts it finds
too. Health reads that one row (one point read) and is degraded while a kind that needs an
operator (every kind but ``validation_failed``, which waits on a seller) has items older than
the grace — changes younger than that are in flight (a webhook's job in the queue), not drift.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from shared.crm_schema import crm_schema
from shared.dataverse import DataverseClient, eq
from shared.partner_center import PartnerCenterClient, Referral
from shared.settings import Settings
from shared.state import CursorStore, LinkStore, OpportunityIndex, SyncLink
from shared.sync.mapping import program_of, strip_mark
from shared.sync.plan import MARKETPLACE_LEAD

log = logging.getLogger(__name__)

DriftKind = Literal[
    "referral_without_opportunity",
    "opportunity_without_referral",
    "validation_failed",
    "stale",
    "refused",
    "job_failed",
]
SUMMARY = "drift"  # the summary row's name in synccursors
LISTING = "drift-items"  # the last scan's items (the dashboard's list), a row beside it
MAX_LISTED = 200  # items kept in the listing row (the counts cover them all)
GRACE = timedelta(minutes=5)  # younger changes are in flight (webhook → queue → sync), not drift
SCAN_EVERY = timedelta(minutes=10)  # the timer's scan is skipped while the summary is newer
SYNC_STATUS_ERROR = 2
MAX_REASONS_CHARS = 300


@dataclass(frozen=True)
class KindInfo:
    title: str
    meaning: str
    what_to_do: str
    degrades: bool  # health is degraded while this kind has settled items


KINDS: dict[DriftKind, KindInfo] = {
    "referral_without_opportunity": KindInfo(
        "referrals without an opportunity",
        "Partner Center lists the referral; no opportunity is linked to it or names it",
        "`cosell sync referral ID`, or `cosell backfill --direction pc-to-crm`; if many, check "
        "the webhook (`cosell webhook show`) and the reconcile timer",
        True,
    ),
    "opportunity_without_referral": KindInfo(
        "flagged opportunities without a referral",
        "the sync flag is on and no referral exists for it (or the one it names is not listed)",
        "`cosell sync opportunity ID`; if many, check the Dataverse push and the poll",
        True,
    ),
    "validation_failed": KindInfo(
        "opportunities in sync status Error",
        "validation before Partner Center (SPEC 4.6) or a value Dataverse cannot hold",
        "the seller fixes what the audit says (the next edit retries)",
        False,
    ),
    "stale": KindInfo(
        "pairs whose last sync lags a side",
        "the referral or the opportunity changed after the link's stored version",
        "`cosell sync referral|opportunity ID`; `cosell poison list` if jobs fail",
        True,
    ),
    "refused": KindInfo(
        "unresolved refusals",
        "a service refused the sync's write, or the other side of the pair was deleted",
        "read the reason (`cosell history ID`), fix the record, then edit it or sync it",
        True,
    ),
    "job_failed": KindInfo(
        "pairs whose last job failed",
        "the last attempt raised (a service down, a 5xx after the retries)",
        "`cosell poison list`; fix the cause, then `cosell poison replay`",
        True,
    ),
}


class DriftItem(BaseModel):
    kind: DriftKind
    referral_id: str | None = None
    opportunity_id: str | None = None
    name: str | None = None  # the deal's name (without the ✔/✖ mark), for the operator
    since: datetime | None = None  # when the side that is ahead (or the problem) last changed
    detail: str = ""


class DriftSummary(BaseModel):
    """What ``/api/health`` reads: counts only (no ids, no names)."""

    checked_at: datetime
    counts: dict[str, int]
    settled: dict[str, int]  # items older than ``grace_s`` at ``checked_at``
    grace_s: float
    source: str = ""

    def problems(self) -> list[str]:
        found: list[str] = []
        for kind, info in KINDS.items():
            settled = self.settled.get(kind, 0)
            if info.degrades and settled:
                found.append(f"{settled} {info.title}: see `cosell drift`")
        return found


class DriftListing(BaseModel):
    """The last scan's items, for the dashboard (the first ``MAX_LISTED``): kinds, ids, the
    deal's name and the reason, as ``cosell drift`` prints them."""

    checked_at: datetime
    items: list[DriftItem] = Field(default_factory=list)
    total: int = 0  # items the scan found (more than ``items`` when it was cut)
    source: str = ""


class DriftReport(BaseModel):
    checked_at: datetime
    items: list[DriftItem] = Field(default_factory=list)
    read: dict[str, int] = Field(default_factory=dict)  # referrals, opportunities, links read

    def counts(self, *, older_than: timedelta | None = None) -> dict[str, int]:
        cutoff = self.checked_at - older_than if older_than is not None else None
        found = Counter(
            i.kind for i in self.items if cutoff is None or i.since is None or i.since <= cutoff
        )
        return {kind: found.get(kind, 0) for kind in KINDS}

    def summary(self, *, grace: timedelta = GRACE, source: str = "") -> DriftSummary:
        return DriftSummary(
            checked_at=self.checked_at,
            counts=self.counts(),
            settled=self.counts(older_than=grace),
            grace_s=grace.total_seconds(),
            source=source,
        )


async def find_drift(
    *,
    pc: PartnerCenterClient,
    dataverse: DataverseClient,
    links: LinkStore,
    settings: Settings,
    now: datetime | None = None,
) -> DriftReport:
    """Everything out of sync now (see the module's docstring), from paged list queries."""
    checked_at = now or datetime.now(UTC)
    schema = crm_schema(settings.crm_column_prefix)
    flag, referral_col = (
        schema.sync_with_partner_center.logical_name,
        schema.referral_id.logical_name,
    )
    status_col, audit_col = schema.sync_status.logical_name, schema.audit.logical_name
    referrals = {
        r.id.lower(): r async for r in pc.list_referrals() if r.id is not None
    }  # fmt: skip
    opportunities: dict[str, dict[str, Any]] = {}
    async for row in dataverse.list_rows(
        "opportunities",
        select=["opportunityid", "name", referral_col, status_col, "modifiedon", "versionnumber"],
        filter=eq(flag, True),
        orderby=["opportunityid"],
    ):
        opportunities[str(row["opportunityid"]).lower()] = row
    audits: dict[str, str] = {}
    if any(row.get(status_col) == SYNC_STATUS_ERROR for row in opportunities.values()):
        async for row in dataverse.list_rows(
            "opportunities",
            select=["opportunityid", audit_col],
            filter=eq(flag, True) & eq(status_col, SYNC_STATUS_ERROR),
            orderby=["opportunityid"],
        ):
            audits[str(row["opportunityid"]).lower()] = str(row.get(audit_col) or "")
    stored, indexes = await links.scan()
    sorter = _Sorter(
        referrals=referrals,
        opportunities=opportunities,
        links={link.referral_id: link for link in stored},
        indexes={index.opportunity_id: index for index in indexes},
        audits=audits,
        referral_col=referral_col,
        status_col=status_col,
        cosell_only=settings.sync_cosell_only,
    )
    return DriftReport(
        checked_at=checked_at,
        items=sorter.items(),
        read={
            "referrals": len(referrals),
            "opportunities": len(opportunities),
            "links": len(stored),
        },
    )


@dataclass
class _Sorter:
    referrals: dict[str, Referral]
    opportunities: dict[str, dict[str, Any]]
    links: dict[str, SyncLink]
    indexes: dict[str, OpportunityIndex]
    audits: dict[str, str]
    referral_col: str
    status_col: str
    cosell_only: bool

    def items(self) -> list[DriftItem]:
        found: list[DriftItem] = []
        reported: set[str] = set()  # referral and opportunity ids already listed
        linked_to = {
            link.opportunity_id: link.referral_id
            for link in self.links.values()
            if link.opportunity_id
        }
        naming = {
            str(row.get(self.referral_col)).lower(): oid
            for oid, row in self.opportunities.items()
            if row.get(self.referral_col)
        }

        def add(item: DriftItem) -> None:
            found.append(item)
            reported.update(i for i in (item.referral_id, item.opportunity_id) if i)

        # 1. the seller's part: sync status Error, linked or not.
        for oid, row in self.opportunities.items():
            if row.get(self.status_col) == SYNC_STATUS_ERROR:
                rid = linked_to.get(oid) or _lower(row.get(self.referral_col))
                index = self.indexes.get(oid)
                link = self.links.get(rid) if rid else None
                result = (link.last_result if link else None) or (
                    index.last_result if index else None
                )
                reasons = _audit_reasons(self.audits.get(oid, "")) or (
                    result.message if result else ""
                )
                add(
                    DriftItem(
                        kind="validation_failed",
                        referral_id=rid,
                        opportunity_id=oid,
                        name=_name(row),
                        since=_when(row.get("modifiedon")),
                        detail=reasons[:MAX_REASONS_CHARS],
                    )
                )
        # 2. the links' own results: failed jobs, then refusals.
        for link in self.links.values():
            result = link.last_result
            if result is None or result.status not in ("failed", "error"):
                continue
            if link.referral_id in reported or (link.opportunity_id or "") in reported:
                continue
            out_of_scope = link.opportunity_id not in self.opportunities
            if out_of_scope and link.referral_id not in self.referrals:
                continue  # neither side is still in sync scope: nothing to resolve
            referral = self.referrals.get(link.referral_id)
            add(
                DriftItem(
                    kind="job_failed" if result.status == "failed" else "refused",
                    referral_id=link.referral_id,
                    opportunity_id=link.opportunity_id,
                    name=referral.name if referral else None,
                    since=result.at,
                    detail=result.message[:MAX_REASONS_CHARS],
                )
            )
        # 3. referrals: missing or lagging opportunities.
        for rid, referral in self.referrals.items():
            if rid in reported:
                continue
            if self.cosell_only and program_of(referral) == MARKETPLACE_LEAD:
                continue  # not synced by design (SYNC_COSELL_ONLY=true)
            link = self.links.get(rid)
            waiting = link is not None and link.pending_create is not None
            if link is None or (link.opportunity_id is None and not waiting):
                named_by = naming.get(rid)
                if named_by is not None and named_by not in reported:
                    add(self._unlinked(referral, named_by))
                elif named_by is None:
                    add(
                        DriftItem(
                            kind="referral_without_opportunity",
                            referral_id=rid,
                            name=referral.name,
                            since=referral.updated_date_time or referral.created_date_time,
                            detail=_status(referral),
                        )
                    )
                continue
            if link.opportunity_id is None or link.opportunity_id not in self.opportunities:
                continue  # waiting on a lead, or the pair is paused (sync flag off)
            lag = self._lag(link, referral, self.opportunities[link.opportunity_id])
            if lag is not None:
                add(lag)
        # 4. flagged opportunities without a referral.
        for oid, row in self.opportunities.items():
            if oid in reported or oid in linked_to:
                continue
            index = self.indexes.get(oid)
            named = _lower(row.get(self.referral_col)) or (index.referral_id if index else None)
            result = index.last_result if index else None
            if named is None and result is not None and result.status == "error":
                add(
                    DriftItem(
                        kind="refused",
                        opportunity_id=oid,
                        name=_name(row),
                        since=result.at,
                        detail=result.message[:MAX_REASONS_CHARS],
                    )
                )
                continue
            if named is not None and named in self.referrals:
                continue  # listed under its referral (step 3) already
            if named is not None:
                detail = f"names referral {named}, which Partner Center does not list"
            elif index is not None and index.pending_create is not None:
                detail = "a referral is being created for it"
            else:
                detail = "no referral created yet"
            add(
                DriftItem(
                    kind="opportunity_without_referral",
                    referral_id=named,
                    opportunity_id=oid,
                    name=_name(row),
                    since=_when(row.get("modifiedon")),
                    detail=detail,
                )
            )
        return found

    def _unlinked(self, referral: Referral, oid: str) -> DriftItem:
        row = self.opportunities[oid]
        return DriftItem(
            kind="stale",
            referral_id=referral.id.lower() if referral.id else None,
            opportunity_id=oid,
            name=_name(row),
            since=_latest(referral.updated_date_time, _when(row.get("modifiedon"))),
            detail="the opportunity names the referral, but the pair is not linked yet",
        )

    def _lag(self, link: SyncLink, referral: Referral, row: dict[str, Any]) -> DriftItem | None:
        pc_ahead = link.referral_etag is not None and referral.e_tag != link.referral_etag
        stored_version = link.row_versions.get("opportunity")
        version = row.get("versionnumber")
        if isinstance(version, int) and stored_version is not None:
            crm_ahead = version > stored_version
        else:
            etag = row.get("@odata.etag")
            crm_ahead = bool(etag and link.opportunity_etag and etag != link.opportunity_etag)
        if not (pc_ahead or crm_ahead):
            return None
        sides = [s for s, ahead in (("Partner Center", pc_ahead), ("CRM", crm_ahead)) if ahead]
        times = (
            referral.updated_date_time if pc_ahead else None,
            _when(row.get("modifiedon")) if crm_ahead else None,
        )
        return DriftItem(
            kind="stale",
            referral_id=link.referral_id,
            opportunity_id=link.opportunity_id,
            name=_name(row),
            since=_latest(*times),
            detail=f"{' and '.join(sides)} changed since the last sync",
        )


async def load_summary(cursors: CursorStore) -> DriftSummary | None:
    """The stored summary (one point read), or None before the first scan."""
    document = await cursors.get_summary(SUMMARY)
    return DriftSummary.model_validate(document) if document else None


async def save_summary(cursors: CursorStore, summary: DriftSummary) -> None:
    await cursors.save_summary(SUMMARY, summary.model_dump(mode="json"))


async def save_report(cursors: CursorStore, report: DriftReport, summary: DriftSummary) -> None:
    """Store a scan: its listing (for the dashboard) and its summary (for ``/api/health``)."""
    listing = DriftListing(
        checked_at=report.checked_at,
        items=report.items[:MAX_LISTED],
        total=len(report.items),
        source=summary.source,
    )
    await cursors.save_summary(LISTING, listing.model_dump(mode="json"))
    await save_summary(cursors, summary)


async def load_listing(cursors: CursorStore) -> DriftListing | None:
    """The last stored listing (one point read), or None before the first scan stored one."""
    document = await cursors.get_summary(LISTING)
    return DriftListing.model_validate(document) if document else None


async def refresh(
    *,
    pc: PartnerCenterClient,
    dataverse: DataverseClient,
    links: LinkStore,
    cursors: CursorStore,
    settings: Settings,
    now: datetime | None = None,
    every: timedelta = SCAN_EVERY,
    source: str = "reconcile_partner_center",
) -> DriftSummary | None:
    """The timer's scan: find the drift and store its counts, unless the stored summary is
    younger than ``every``; never raises (health then shows the last summary's age)."""
    moment = now or datetime.now(UTC)
    try:
        last = await load_summary(cursors)
        if last is not None and moment - last.checked_at < every:
            return None
        report = await find_drift(
            pc=pc, dataverse=dataverse, links=links, settings=settings, now=moment
        )
        summary = report.summary(source=source)
        await save_report(cursors, report, summary)
    except Exception as exc:  # noqa: BLE001 - the scan is extra: the timer's work stands
        log.warning("drift scan failed: %s", type(exc).__name__)
        return None
    log.info(
        "drift: %s",
        ", ".join(f"{n} {kind}" for kind, n in summary.counts.items() if n) or "nothing",
        extra={"drift": summary.counts},
    )
    return summary


def _lower(value: Any) -> str | None:
    return str(value).strip().strip("{}").lower() if value else None


def _name(row: dict[str, Any]) -> str | None:
    name = row.get("name")
    return strip_mark(str(name)) if name else None


def _when(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _latest(*moments: datetime | None) -> datetime | None:
    known = [m for m in moments if m is not None]
    return max(known) if known else None


def _status(referral: Referral) -> str:
    status = str(getattr(referral.status, "value", referral.status) or "?")
    substatus = str(getattr(referral.substatus, "value", referral.substatus) or "?")
    return f"{status}/{substatus}"


def _audit_reasons(audit: str) -> str:
    """The ✖ lines the audit's newest entry holds (its last stamp), without the stamp."""
    lines = [line for line in audit.splitlines() if "✖" in line]
    if not lines:
        return ""
    stamp = lines[-1].split(" ✖ ", 1)[0]
    newest = [line.split(" ✖ ", 1)[-1] for line in lines if line.startswith(stamp + " ✖ ")]
    return "; ".join(newest)
