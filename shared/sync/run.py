"""What one sync attempt carries (``Run``) and what a sync returns (``SyncResult``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from shared.errors import CosellError
from shared.jobs import SyncJob
from shared.sync.merge import Plan

Outcome = Literal["synced", "no_change", "created", "error", "skipped"]


class SyncRetry(CosellError):
    """The pair kept changing under us (412s / lost races); the host retries the job later."""


class Restart(Exception):
    """Someone else changed something we read: start the sync again from fresh reads."""


@dataclass
class SyncResult:
    """What one sync did (also what ``cosell sync`` prints)."""

    outcome: Outcome
    referral_id: str | None = None
    opportunity_id: str | None = None
    plan: Plan | None = None
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    remote_calls: int = 0
    duration_ms: int = 0
    dry_run: bool = False


@dataclass
class Run:
    """One attempt: the job, whether it may write, the remote calls made, notes for the audit."""

    job: SyncJob
    dry_run: bool
    attempt: int = 0  # restarts so far: a later attempt knows someone else was busy here
    calls: int = 0
    notes: list[str] = field(default_factory=list)

    def count(self, n: int = 1) -> None:
        self.calls += n
