"""What a sync returns (``SyncResult``) and raises when it gives up for now (``SyncRetry``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.errors import CosellError
from shared.sync.merge import FieldPlan
from shared.sync.steps import Outcome, Step

__all__ = ["Outcome", "SyncResult", "SyncRetry"]


class SyncRetry(CosellError):
    """The pair kept changing under us (412s / lost races); the host retries the job later."""


@dataclass
class SyncResult:
    """What one sync did, or with ``dry_run`` would do (also what ``cosell sync`` prints)."""

    outcome: Outcome
    referral_id: str | None = None
    opportunity_id: str | None = None
    plan: FieldPlan | None = None  # the merge's field plan
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    steps: tuple[Step, ...] = ()  # what was run (dry run: what would run), in order
    remote_calls: int = 0
    duration_ms: int = 0
    dry_run: bool = False
    retry_after: float | None = None  # deferred: run the job again in this many seconds
