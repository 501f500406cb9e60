from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from azure.data.tables.aio import TableClient

from shared.state import CursorStore, HistoryStore, LinkStore


def _table(connection_string: str, name: str) -> TableClient:
    return TableClient.from_connection_string(connection_string, table_name=name)


@pytest.fixture
async def links(storage_connection_string: str, unique_name: str) -> AsyncIterator[LinkStore]:
    async with LinkStore(_table(storage_connection_string, unique_name)) as store:
        await store.create_table()
        yield store


@pytest.fixture
async def cursors(storage_connection_string: str, unique_name: str) -> AsyncIterator[CursorStore]:
    async with CursorStore(_table(storage_connection_string, unique_name)) as store:
        await store.create_table()
        yield store


@pytest.fixture
async def history(storage_connection_string: str, unique_name: str) -> AsyncIterator[HistoryStore]:
    async with HistoryStore(_table(storage_connection_string, unique_name)) as store:
        await store.create_table()
        yield store
