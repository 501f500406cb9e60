"""``cosell history ID`` names the ids support asks for (issue 18): the trace id of each sync
(App Insights' operation_Id) and Partner Center's request id."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from azure.data.tables.aio import TableClient

from shared.state import HISTORY_TABLE, FailureRecord, HistoryEntry, HistoryStore
from tests.cli.conftest import Sandbox

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


def _seed(connection: str, referral_id: str) -> None:
    async def seed() -> None:
        async with HistoryStore(TableClient.from_connection_string(connection, HISTORY_TABLE)) as h:
            await h.create_table()
            at = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
            await h.add_entry(
                HistoryEntry(
                    key=referral_id,
                    at=at,
                    outcome="created",
                    reason="webhook:referral-created",
                    trace_parent=TRACEPARENT,
                    pc_request_id="pc-request-1",
                )
            )
            await h.add_entry(
                HistoryEntry(
                    key=referral_id,
                    at=at.replace(hour=10),
                    outcome="error",
                    reason="poll",
                    failure=FailureRecord(
                        service="Partner Center", error="ServerError", request_id="pc-failed-2"
                    ),
                )
            )
            # A row written before issue 18: neither id.
            await h.add_entry(
                HistoryEntry(key=referral_id, at=at.replace(hour=8), outcome="synced")
            )

    asyncio.run(seed())


def test_history_shows_the_trace_id_and_partner_center_s_request_id(
    cli_env: Sandbox, cosell: Any, storage_connection_string: str
) -> None:
    referral_id = str(uuid.uuid4())
    _seed(storage_connection_string, referral_id)

    document = cosell("history", referral_id, "--json").json()
    table = cosell("history", referral_id).out

    created = next(e for e in document["entries"] if e["outcome"] == "created")
    assert (created["trace_parent"], created["pc_request_id"]) == (TRACEPARENT, "pc-request-1")
    [created_line] = [line for line in table.splitlines() if "created" in line]
    assert f"{TRACE_ID} / pc-request-1" in created_line
    [failed_line] = [line for line in table.splitlines() if " error " in line]
    assert "- / pc-failed-2" in failed_line
