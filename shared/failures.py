"""Why a sync job failed, recorded so that a poisoned job explains itself (issue 18).

The Functions host moves a job to ``sync-jobs-poison`` after ``maxDequeueCount`` failed
attempts; the message it moves is its own copy of the job, with no reason. So the reason is
recorded at each failed attempt, where it can be found again by the job's ids:

* **a history row per failed attempt** (``synchistory``, outcome ``error``, with a
  ``FailureRecord``), keyed as the sync's other rows are: the referral id when the job's deal
  has a link, else the job's own id (a new referral, an opportunity without a referral);
* **the link's last result** (status ``failed``, the summary as message) when the job's deal
  is a linked pair, so ``cosell status`` and ``cosell drift`` show it too.

``last_failure`` is the lookup: the job's kind and id → the same key → the newest history row
with a failure. ``cosell poison list`` and ``/api/health`` use it; the poison message itself
stays the host's copy, so a replay is the job unchanged.

What is recorded carries no personal data: the error's type, the HTTP status, the service's
error code, the method and the path of the call with every id replaced by ``(…)``
(``GET opportunities(…)``) — never a message or a body, which may quote a customer's name.
"""

from __future__ import annotations

import contextlib
import re
from datetime import UTC, datetime

from azure.core.exceptions import AzureError, HttpResponseError

from shared.dataverse import DataverseError
from shared.errors import CosellError, StateError
from shared.jobs import SyncJob
from shared.partner_center import PartnerCenterError
from shared.state import (
    FailureRecord,
    HistoryEntry,
    HistoryStore,
    LinkResult,
    LinkStore,
    SyncLink,
)
from shared.telemetry import current_traceparent

ELIDED = "(…)"
_GUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_API_PREFIXES = (
    re.compile(r"^/api/data/v\d+(?:\.\d+)*/"),  # Dataverse Web API
    re.compile(r"^/v\d+(?:\.\d+)*/engagements/"),  # Partner Center referrals
    re.compile(r"^/webhooks/v\d+/"),  # Partner Center webhooks
)
# A key in parentheses (a GUID, an alternate key's values) or a GUID path segment.
_KEYS = re.compile(r"\([^)]*\)")
_GUIDS = re.compile(rf"/(?:\{{)?{_GUID}(?:\}})?")
_LOOKUP_DEPTH = 10  # history rows read to find the newest failure


def path_template(path: str) -> str:
    """``/api/data/v9.2/opportunities(6f1f…)`` → ``opportunities(…)``; Partner Center's
    ``/v1.0/engagements/referrals/6f1f…`` → ``referrals/(…)``. No query (a filter may quote
    data), no ids."""
    text = path.split("?", 1)[0]
    for prefix in _API_PREFIXES:
        text = prefix.sub("", text)
    text = _KEYS.sub(ELIDED, text)
    text = _GUIDS.sub("/" + ELIDED, text)
    return text.lstrip("/") or "/"


def describe(exc: BaseException, *, attempt: int | None = None) -> FailureRecord:
    """What failed, from the typed errors' attributes only (never their messages)."""
    error = type(exc).__name__
    if isinstance(exc, DataverseError):
        return FailureRecord(
            service="Dataverse",
            error=error,
            status=exc.status,
            code=exc.code or None,
            method=exc.method or None,
            path=path_template(exc.url) if exc.url else None,
            attempt=attempt,
        )
    if isinstance(exc, PartnerCenterError):
        return FailureRecord(
            service="Partner Center",
            error=error,
            status=exc.status or None,
            code=exc.code or None,
            method=exc.method or None,
            path=path_template(exc.url) if exc.url else None,
            request_id=exc.request_id,
            attempt=attempt,
        )
    if isinstance(exc, StateError | AzureError):
        status = exc.status_code if isinstance(exc, HttpResponseError) else None
        code = getattr(exc, "error_code", None) if isinstance(exc, HttpResponseError) else None
        return FailureRecord(
            service="Table Storage",
            error=error,
            status=status,
            code=str(code) if code else None,
            attempt=attempt,
        )
    service = "sync" if isinstance(exc, CosellError) else "app"
    return FailureRecord(service=service, error=error, attempt=attempt)


async def deal_link(links: LinkStore, job: SyncJob) -> SyncLink | None:
    """The link of the job's deal, if it has one (one or two point reads)."""
    if job.kind == "referral":
        return await links.get_link(str(job.id))
    return await links.get_link_by_opportunity(str(job.id))


def history_key(job: SyncJob, link: SyncLink | None) -> str:
    """The partition the job's history rows go to (SPEC 5): the referral id when linked."""
    return link.referral_id if link is not None else str(job.id)


async def record_failure(
    links: LinkStore,
    history: HistoryStore,
    job: SyncJob,
    failure: FailureRecord,
    *,
    duration_ms: int = 0,
    remote_calls: int = 0,
    now: datetime | None = None,
) -> None:
    """The history row of a failed attempt and, for a linked pair, the link's last result.

    The link is written conditionally on its ETag: a sync that changed it meanwhile wins (its
    result is newer than this failure), so a lost race is not retried here.
    """
    at = now or datetime.now(UTC)
    link = await deal_link(links, job)
    await history.add_entry(
        HistoryEntry(
            key=history_key(job, link),
            at=at,
            outcome="error",
            reason=str(job.reason),
            errors=[failure.summary],
            duration_ms=duration_ms,
            remote_calls=remote_calls,
            failure=failure,
            trace_parent=current_traceparent(),  # the failed attempt's trace (issue 18)
        )
    )
    if link is not None:
        result = LinkResult(status="failed", message=failure.summary, at=at)
        # Another sync that wrote the link since has the newer result: a lost race is fine.
        with contextlib.suppress(StateError):
            await links.update_link(link.model_copy(update={"last_result": result}))


async def last_failure(
    links: LinkStore, history: HistoryStore, job: SyncJob
) -> HistoryEntry | None:
    """The newest history row with a failure of the job's deal (keyed as above), or None.

    Also looked up under the job's own id when the deal is linked: an opportunity's failures
    before it had a referral are keyed by the opportunity id.
    """
    link = await deal_link(links, job)
    keys = dict.fromkeys((history_key(job, link), str(job.id)))
    newest: HistoryEntry | None = None
    for key in keys:
        for entry in await history.list_entries(key, limit=_LOOKUP_DEPTH):
            if entry.failure is not None:
                if newest is None or entry.at > newest.at:
                    newest = entry
                break
    return newest
