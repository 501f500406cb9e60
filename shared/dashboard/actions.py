"""The dashboard's POST actions: replay or delete one poison message, scan for drift now.

Each returns a notice key (``NOTICES``): the page after the redirect says what happened in fixed
words, never by echoing what was posted.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from azure.core.exceptions import AzureError

from shared import drift, poison
from shared.errors import CosellError
from shared.runtime import Runtime

log = logging.getLogger(__name__)

Action = Literal["replay", "delete", "scan"]
ACTIONS: tuple[Action, ...] = ("replay", "delete", "scan")
SCAN_BUDGET_S = 120.0  # a scan reads every referral and flagged opportunity (paged)

NOTICES = {
    "replayed": "The job is back on sync-jobs; the worker picks it up within seconds.",
    "deleted": "The message was deleted from sync-jobs-poison.",
    "scanned": "Drift scanned now: the list below is fresh.",
    "not_found": "That message is no longer in sync-jobs-poison (replayed or deleted already?).",
    "not_a_job": "That message is not a valid job: it cannot be replayed, only deleted.",
    "failed": "The action failed (storage or a service did not answer); nothing was changed.",
    "scan_failed": "The drift scan failed or took too long; the stored list is unchanged.",
}


async def run(runtime: Runtime, action: Action, target: str) -> str:
    """Do ``action`` (on the poison message ``target``); the notice key of what happened."""
    try:
        await runtime.ensure_storage()
        if action == "scan":
            return await _scan(runtime)
        if action == "replay":
            outcome = await poison.replay(runtime.poison_queue, runtime.jobs, ids=[target])
            if outcome.skipped:
                return "not_a_job"
        else:
            outcome = await poison.delete(runtime.poison_queue, ids=[target])
    except (AzureError, CosellError) as exc:
        log.warning("dashboard: %s failed: %s", action, type(exc).__name__)
        return "failed"
    if not outcome.done:
        return "not_found"
    log.info("dashboard: %s of poison message %s", action, target)
    return "replayed" if action == "replay" else "deleted"


async def _scan(runtime: Runtime) -> str:
    try:
        async with asyncio.timeout(SCAN_BUDGET_S):
            report = await drift.find_drift(
                pc=runtime.partner_center(),
                dataverse=runtime.dataverse(),
                links=runtime.links(),
                settings=runtime.settings,
            )
            await drift.save_report(runtime.cursors(), report, report.summary(source="dashboard"))
    except Exception as exc:  # noqa: BLE001 - any failure of the scan is reported on the page
        log.warning("dashboard: drift scan failed: %s", type(exc).__name__)
        return "scan_failed"
    return "scanned"
