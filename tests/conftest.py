"""Test-session fixtures shared by every folder.

Azurite (queue + table, in memory) is started once per session, on ports the OS picks, the
first time a test asks for ``storage_connection_string``; it is stopped when the session ends.
Set ``COSELL_TEST_STORAGE`` to a connection string to use a storage account you started yourself.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from sandbox.azurite import Azurite


@pytest.fixture(scope="session")
def storage_connection_string() -> Iterator[str]:
    given = os.environ.get("COSELL_TEST_STORAGE")
    if given:
        yield given
        return
    with Azurite() as azurite:
        yield azurite.connection_string


@pytest.fixture
def unique_name() -> str:
    """A table/queue name no other test uses (letters and digits, starts with a letter)."""
    return "t" + uuid.uuid4().hex[:20]
