"""The dashboard page in a real browser (issue 18): headless Debian Chromium (``/usr/bin/chromium``,
installed by the Makefile's ``.chromium`` target) driven by Playwright, against the sandbox stack
over real sockets — Azurite, both emulators under uvicorn and the local Functions host serving
function_app.py (maxDequeueCount 5, a 1 s visibility timeout).

* The page loads with the function key, and after **Scan now** lists a seller's flagged
  opportunity that failed validation (no country) with the audit's reason.
* Dataverse answers 500 until a job is poisoned; the page shows "Dataverse 500 on GET
  opportunities(…)" beside it; **Replay** puts the job back on ``sync-jobs`` (the worker tries it
  again: a new first attempt in the history), and once Dataverse is healthy again it syncs.

The reconcile timer is set to once a year, so only the page scans for drift.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio
from azure.data.tables.aio import TableClient
from azure.storage.queue.aio import QueueClient

from sandbox.stack import PORT_VARIABLES
from shared.jobs import POISON_QUEUE
from shared.state import HISTORY_TABLE, HistoryStore
from tests.e2e.story import Sandbox, customer, eventually, open_sandbox, set_faults, unique

playwright_api = pytest.importorskip("playwright.async_api")

pytestmark = pytest.mark.asyncio(loop_scope="module")

CHROMIUM = "/usr/bin/chromium"
HAVE_CHROMIUM = shutil.which(CHROMIUM) is not None
# What this machine's closed network needs (no calls home, no QUIC), as root without a sandbox.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ENVIRONMENT = {
    **{variable: "0" for variable, _ in PORT_VARIABLES.values()},
    "PARTNER_CENTER_RECONCILE_SCHEDULE": "0 0 0 1 1 *",  # only when the test runs it
}
POISONED_WITHIN_S = 180.0  # 5 attempts, each with the client's retries of the 500 (~4-8 s)
FAILED_REASON = "Dataverse 500 on GET opportunities(…)"
SCREENSHOTS = os.environ.get("COSELL_SCREENSHOTS")  # a folder: each story's page saved as PNG


async def _screenshot(page: Any, name: str) -> None:
    if SCREENSHOTS:
        await page.screenshot(path=os.path.join(SCREENSHOTS, f"{name}.png"), full_page=True)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def sandbox(storage_connection_string: str) -> AsyncIterator[Sandbox]:
    async with open_sandbox(ENVIRONMENT, storage_connection_string) as running:
        yield running


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def browser() -> AsyncIterator[Any]:
    if not HAVE_CHROMIUM:
        pytest.skip("Debian's chromium is not installed (make test installs it: .chromium)")
    async with playwright_api.async_playwright() as driver:
        # Playwright gives the browser a new empty profile (--user-data-dir) and --headless.
        launched = await driver.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest_asyncio.fixture(loop_scope="module")
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 390, "height": 844})  # a phone
    try:
        yield await context.new_page()
    finally:
        await context.close()


async def _flag_without_country(sandbox: Sandbox) -> str:
    """A seller flags a co-sell opportunity whose account has no country; its id."""
    crm = sandbox.crm
    account_id, contact_id, opportunity_id = (str(uuid.uuid4()) for _ in range(3))
    await crm.create("accounts", {"name": unique("Nowhere Ltd"), "address1_postalcode": "10115"},
                     row_id=account_id)  # fmt: skip
    await crm.create("contacts", {"firstname": "Ben", "lastname": "Example"}, row_id=contact_id)
    await crm.create(
        "opportunities",
        {
            "name": unique("Nowhere - analytics"),
            "estimatedvalue": 90000,
            "estimatedclosedate": "2027-06-30",
            "parentaccountid@odata.bind": f"/accounts({account_id})",
            "parentcontactid@odata.bind": f"/contacts({contact_id})",
            "cosell_helpneeded": 100000001,
            "cosell_syncwithpartnercenter": True,
        },
        row_id=opportunity_id,
    )
    await crm.create(
        "cosell_solutions",
        {"cosell_name": "Analytics accelerator", "cosell_solutionidentifier": "SOL-12345-ABC",
         "cosell_opportunityid@odata.bind": f"/opportunities({opportunity_id})"},
    )  # fmt: skip
    return opportunity_id


async def test_the_page_loads_and_lists_a_refused_opportunity_with_its_reason(
    sandbox: Sandbox, page: Any
) -> None:
    opportunity_id = await _flag_without_country(sandbox)

    async def refused() -> bool:
        row = await sandbox.crm.get(
            "opportunities", opportunity_id, select=["name", "cosell_audit"]
        )
        return str(row["name"]).startswith("✖ ") and "country" in str(row.get("cosell_audit"))

    await eventually(refused, "the opportunity refused for its missing country")

    answer = await page.goto(sandbox.stack.function_url("dashboard"))
    assert answer is not None and answer.status == 200
    assert await page.title() == "Co-sell Sync"
    assert await page.locator("#health").is_visible()
    viewport = page.locator('meta[name="viewport"]')
    assert "width=device-width" in (await viewport.get_attribute("content") or "")
    # Nothing but the page itself was loaded (no CDN, no script).
    assert await page.locator("script, link[rel=stylesheet], img").count() == 0

    await page.locator("#drift button", has_text="Scan now").click()
    await page.wait_for_load_state()
    assert "Drift scanned now" in await page.locator(".notice").first.inner_text()
    row = page.locator("#drift tr", has_text=opportunity_id)
    await row.wait_for()
    text = await row.inner_text()
    assert "opportunities in sync status Error" in text
    assert "country" in text
    await _screenshot(page, "dashboard-drift")
    # On a phone the table folds to labelled lines, all within the screen's width.
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390 + 1


async def test_a_poisoned_job_shows_its_reason_and_replay_brings_it_back(
    sandbox: Sandbox, page: Any
) -> None:
    referral_id = await sandbox.microsoft_sends(customerProfile=customer(unique("Replay GmbH")))
    opportunity = await eventually(lambda: sandbox.opportunity_for(referral_id), "the opportunity")
    poison = QueueClient.from_connection_string(sandbox.stack.connection_string, POISON_QUEUE)
    history = HistoryStore(
        TableClient.from_connection_string(sandbox.stack.connection_string, HISTORY_TABLE)
    )
    async with poison, history:
        with contextlib.suppress(Exception):  # ResourceExistsError
            await poison.create_queue()
        await poison.clear_messages()
        dataverse = sandbox.stack.dataverse_url
        await set_faults(dataverse, {"error_rate": 1.0, "statuses": [500]})
        try:
            # A partner's edit: the webhook's job reads the referral, then the opportunity (500).
            await sandbox.partner_edits(referral_id, details__dealValue=123456)

            async def poisoned() -> bool:
                return bool(await poison.peek_messages(max_messages=32))

            await eventually(poisoned, "the job in sync-jobs-poison", within_s=POISONED_WITHIN_S)

            await page.goto(sandbox.stack.function_url("dashboard"))
            row = page.locator("#poison tr", has_text=f"referral {referral_id}")
            assert FAILED_REASON in await row.inner_text()
            await _screenshot(page, "dashboard-poison")
            assert await page.locator("#recent", has_text=FAILED_REASON).count() == 1

            replayed_at = datetime.now(UTC)
            await row.locator("button", has_text="Replay").click()
            await page.wait_for_load_state()
            assert "back on sync-jobs" in await page.locator(".notice").first.inner_text()
            assert await page.locator("#poison tr", has_text=referral_id).count() == 0

            async def tried_again() -> bool:
                entries = await history.list_entries(referral_id, limit=5)
                return any(
                    e.failure is not None and e.failure.attempt == 1 and e.at > replayed_at
                    for e in entries
                )

            # From sync-jobs the worker runs it again: a first attempt, after the replay.
            await eventually(tried_again, "the replayed job's first attempt")
        finally:
            await set_faults(dataverse, None)

        async def synced() -> bool:
            row = await sandbox.opportunity(str(opportunity["opportunityid"]))
            return row.get("estimatedvalue") == 123456

        await eventually(synced, "the replayed job synced once Dataverse is healthy", within_s=90)
        await page.reload()
        assert await page.locator("#poison tr", has_text=referral_id).count() == 0
