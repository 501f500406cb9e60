"""What the three stores share: a table client, creation of the table, error translation."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from azure.core import MatchConditions
from azure.core.exceptions import (
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import UpdateMode
from azure.data.tables.aio import TableClient

from shared.errors import ConcurrencyError, RowExistsError


class TableStore:
    """Base of the stores: owns one async ``TableClient`` and closes it on exit."""

    def __init__(self, client: TableClient) -> None:
        self._table = client

    async def __aenter__(self) -> TableStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._table.close()

    async def create_table(self) -> None:
        """Create the table if it does not exist (idempotent; Bicep creates it in Azure)."""
        with suppress(ResourceExistsError):
            await self._table.create_table()

    async def _read(self, partition_key: str, row_key: str) -> tuple[dict[str, Any], str] | None:
        """The row and its ETag, or None if there is no such row."""
        try:
            entity = await self._table.get_entity(partition_key, row_key)
        except ResourceNotFoundError:
            return None
        return dict(entity), str(entity.metadata["etag"])

    async def _insert(self, entity: dict[str, Any], *, what: str) -> str:
        """Create a row that must not exist yet; returns its ETag."""
        with translated(what):
            result = await self._table.create_entity(entity)
        return str(result["etag"])

    async def _replace(self, entity: dict[str, Any], *, etag: str | None, what: str) -> str:
        """Replace a row, conditionally on ``etag`` when given; returns the new ETag."""
        with translated(what):
            if etag is None:
                result = await self._table.upsert_entity(entity, mode=UpdateMode.REPLACE)
            else:
                result = await self._table.update_entity(
                    entity,
                    mode=UpdateMode.REPLACE,
                    etag=etag,
                    match_condition=MatchConditions.IfNotModified,
                )
        return str(result["etag"])


@contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn the SDK's concurrency errors into ours, naming the row concerned."""
    try:
        yield
    except ResourceExistsError:
        raise RowExistsError(f"{what} exists already") from None
    except ResourceModifiedError:
        raise ConcurrencyError(
            f"{what} was changed by someone else since it was read; re-read and retry"
        ) from None
    except ResourceNotFoundError:
        raise ConcurrencyError(f"{what} was deleted by someone else since it was read") from None
