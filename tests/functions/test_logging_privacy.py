"""No personal data in the app's logs as Azure runs it (issue 13, class 10).

The Python worker sends every record at or above the root level (``Information`` in Azure) to
Application Insights. The app must keep customer names, e-mail addresses and phone numbers out
of them by itself: httpx logs each request URL at INFO, and a Dataverse ``$filter`` names the
customer (``name eq 'Fabrikam Ltd'``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from urllib.parse import quote, quote_plus

import pytest
from azure.functions.queue import QueueMessage

import function_app
from shared.jobs import SyncJob
from tests.partner_center.payloads import cosell_deal

from .conftest import App

_PLAIN = ("Fabrikam", "ana@example.com", "+10000000001", "10115")
PERSONAL = (*_PLAIN, *(quote_plus(p) for p in _PLAIN), *(quote(p) for p in _PLAIN))


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


@pytest.fixture
def azure_logging() -> Iterator[Capture]:
    """The root logger as the Functions worker sets it up: INFO and one handler."""
    root = logging.getLogger()
    capture, level = Capture(), root.level
    root.addHandler(capture)
    root.setLevel(logging.INFO)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(level)


async def test_a_sync_that_creates_an_opportunity_logs_no_personal_data(
    app: App, azure_logging: Capture
) -> None:
    incoming = cosell_deal(name="Fabrikam - co-sell")
    del incoming["externalReferenceId"]
    async with app.control() as control:
        referral_id = (await control.post("/_emulator/microsoft/referrals", json=incoming)).json()[
            "id"
        ]
    job = SyncJob.now("referral", referral_id, reason="webhook:referral-created")
    message = QueueMessage(id=str(uuid.uuid4()), body=job.to_json().encode(), dequeue_count=1)

    await function_app.sync_job(message)

    assert any("sync_job" in line for line in azure_logging.lines)  # the app did log
    leaks = [line for line in azure_logging.lines if any(p in line for p in PERSONAL)]
    assert leaks == []
