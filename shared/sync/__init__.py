"""The sync engine: read a snapshot → a pure plan of typed steps → apply them (SPEC 4).

``SyncEngine`` runs jobs; ``plan`` and the step types are the decisions, readable and testable
without any I/O; ``merge`` is the three-way merge of one pair's fields.
"""

from shared.sync.deal import Contact, Customer, Deal, DealStatus
from shared.sync.engine import SyncEngine
from shared.sync.merge import OWNERSHIP, Change, FieldPlan, Flow, SyncBase, merge
from shared.sync.plan import SyncPolicy, plan
from shared.sync.result import SyncResult, SyncRetry
from shared.sync.steps import Plan, Step
from shared.sync.validation import validate_for_partner_center

__all__ = [
    "OWNERSHIP",
    "Change",
    "Contact",
    "Customer",
    "Deal",
    "DealStatus",
    "FieldPlan",
    "Flow",
    "Plan",
    "Step",
    "SyncBase",
    "SyncEngine",
    "SyncPolicy",
    "SyncResult",
    "SyncRetry",
    "merge",
    "plan",
    "validate_for_partner_center",
]
