"""The sync engine: canonical deal, mappings, three-way merge, creation without duplicates."""

from shared.sync.deal import Contact, Customer, Deal, DealStatus
from shared.sync.engine import SyncEngine
from shared.sync.merge import OWNERSHIP, Change, Flow, Plan, SyncBase, merge
from shared.sync.run import SyncResult, SyncRetry
from shared.sync.validation import validate_for_partner_center

__all__ = [
    "OWNERSHIP",
    "Change",
    "Contact",
    "Customer",
    "Deal",
    "DealStatus",
    "Flow",
    "Plan",
    "SyncBase",
    "SyncEngine",
    "SyncResult",
    "SyncRetry",
    "merge",
    "validate_for_partner_center",
]
