"""Is a changed Dataverse row the engine's own write (or already synced)? One answer for both
ways a change is noticed: ``poll_dataverse`` (rows read by ``modifiedon``) and
``dataverse_webhook`` (rows Dataverse pushes).

The link (or, before a referral exists, the opportunity's index row) records the
``modifiedon`` and, per kind of row, the ``versionnumber`` the last sync read or wrote.
Dataverse stamps ``modifiedon`` to the second, so a seller's edit in the same second as our write
has the same ``modifiedon``: the check compares ``versionnumber`` (it grows with every write)
where both sides have one; only where no version is known does a ``modifiedon`` *strictly*
older than the recorded one count as covered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from shared.state import LinkStore


@dataclass(frozen=True)
class Seen:
    """One changed row as noticed: its ``modifiedon`` and ``versionnumber`` (None if absent)."""

    at: datetime
    version: int | None = None

    def newer_than(self, other: Seen) -> bool:
        if self.version is not None and other.version is not None:
            return self.version > other.version
        return self.at > other.at


async def is_echo(links: LinkStore, opportunity_id: str, rows: dict[str, Seen]) -> bool:
    """True when the link (or the index row) already records these rows' versions: the change
    is the engine's own write or already synced. ``rows`` is by kind of row: "opportunity",
    "solutions" (its newest solution row), "account", "contact" (the rows it uses)."""
    link = await links.get_link_by_opportunity(opportunity_id)
    if link is not None:
        at, versions = link.opportunity_modified_on, link.row_versions
    else:
        index = await links.get_opportunity_index(opportunity_id)
        if index is None:
            return False
        at, versions = index.opportunity_modified_on, index.row_versions
    return all(covered(seen, versions.get(kind), at) for kind, seen in rows.items())


def covered(seen: Seen, version: int | None, at: datetime | None) -> bool:
    if seen.version is not None and version is not None:
        return seen.version <= version
    # No version to compare: only an older second is surely covered (same second: a seller's
    # edit may have followed our write, so the worker reads it).
    return at is not None and seen.at < at
