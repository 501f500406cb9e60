"""Cursors and history against Azurite."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import AlreadyExistsError, ConcurrencyError, InvalidKeyError
from shared.state import Cursor, CursorStore, FieldChange, HistoryEntry, HistoryStore

T0 = datetime(2026, 11, 27, 9, 0, 0, 250000, tzinfo=UTC)


async def test_cursor_round_trips_with_its_state(cursors: CursorStore) -> None:
    state = {"ids_at_watermark": ["a", "b"]}
    saved = await cursors.save_cursor(Cursor(name="poll_dataverse", watermark=T0, state=state))

    loaded = await cursors.get_cursor("poll_dataverse")

    assert loaded is not None
    assert loaded.watermark == T0
    assert loaded.state == state
    assert loaded.etag == saved.etag
    age = loaded.age_seconds()
    assert age is not None
    assert age >= 0


async def test_missing_cursor_reads_as_none(cursors: CursorStore) -> None:
    assert await cursors.get_cursor("reconcile_partner_center") is None


async def test_two_runs_cannot_both_advance_a_cursor(cursors: CursorStore) -> None:
    first = await cursors.save_cursor(Cursor(name="poll", watermark=T0))
    a = first.model_copy(update={"watermark": T0 + timedelta(minutes=1)})
    b = first.model_copy(update={"watermark": T0 + timedelta(minutes=2)})

    results = await asyncio.gather(
        cursors.save_cursor(a), cursors.save_cursor(b), return_exceptions=True
    )

    assert sum(isinstance(r, Cursor) for r in results) == 1
    assert sum(isinstance(r, ConcurrencyError) for r in results) == 1


async def test_creating_a_cursor_that_exists_is_a_lost_race(cursors: CursorStore) -> None:
    await cursors.save_cursor(Cursor(name="poll", watermark=T0))

    with pytest.raises(AlreadyExistsError):
        await cursors.save_cursor(Cursor(name="poll", watermark=T0))


async def test_list_cursors_returns_every_cursor(cursors: CursorStore) -> None:
    await cursors.save_cursor(Cursor(name="poll_dataverse", watermark=T0))
    await cursors.save_cursor(Cursor(name="reconcile_partner_center", watermark=T0))

    names = sorted(c.name for c in await cursors.list_cursors())

    assert names == ["poll_dataverse", "reconcile_partner_center"]


async def test_history_lists_newest_first_with_limit(history: HistoryStore) -> None:
    key = "5b3c1a2e-0000-4000-8000-000000000001"
    for minute in (3, 1, 4, 2, 5):  # written out of order on purpose
        await history.add_entry(
            HistoryEntry(key=key, at=T0 + timedelta(minutes=minute), outcome="synced")
        )

    entries = await history.list_entries(key, limit=3)

    assert [e.at.minute for e in entries] == [5, 4, 3]


async def test_history_entry_round_trips_changes_and_large_counters(history: HistoryStore) -> None:
    entry = HistoryEntry(
        key="5B3C1A2E-0000-4000-8000-000000000002",
        at=T0,
        outcome="synced",
        reason="webhook:referral-updated",
        direction="pc_to_crm",
        changes=[FieldChange(field="deal_value", direction="pc_to_crm", old=100.0, new=250.0)],
        conflicts=["notes: both sides changed; newest (Partner Center) kept"],
        duration_ms=2**40,  # beyond Int32: must be stored as Int64
        remote_calls=3,
    )
    await history.add_entry(entry)

    [loaded] = await history.list_entries(entry.key)

    assert loaded.model_dump() == entry.model_copy(update={"key": entry.key.lower()}).model_dump()


async def test_two_entries_in_the_same_instant_are_both_kept(history: HistoryStore) -> None:
    key = "5b3c1a2e-0000-4000-8000-000000000003"
    await history.add_entry(HistoryEntry(key=key, at=T0, outcome="synced"))
    await history.add_entry(HistoryEntry(key=key, at=T0, outcome="error", errors=["boom"]))

    assert len(await history.list_entries(key)) == 2


async def test_history_key_with_forbidden_character_is_refused(history: HistoryStore) -> None:
    with pytest.raises(InvalidKeyError, match="history key"):
        await history.add_entry(HistoryEntry(key="bad/key", at=T0, outcome="synced"))
