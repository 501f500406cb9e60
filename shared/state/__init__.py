"""Sync state in Azure Table Storage: links, cursors and history (SPEC section 5)."""

from shared.state.cursors import CURSORS_TABLE, Cursor, CursorStore
from shared.state.history import (
    HISTORY_TABLE,
    FailureRecord,
    FieldChange,
    HistoryEntry,
    HistoryStore,
)
from shared.state.links import (
    LINKS_TABLE,
    LinkResult,
    LinkStore,
    OpportunityIndex,
    PendingCreate,
    SyncLink,
)

TABLE_NAMES = (LINKS_TABLE, CURSORS_TABLE, HISTORY_TABLE)

__all__ = [
    "CURSORS_TABLE",
    "HISTORY_TABLE",
    "LINKS_TABLE",
    "TABLE_NAMES",
    "Cursor",
    "CursorStore",
    "FailureRecord",
    "FieldChange",
    "HistoryEntry",
    "HistoryStore",
    "LinkResult",
    "LinkStore",
    "OpportunityIndex",
    "PendingCreate",
    "SyncLink",
]
