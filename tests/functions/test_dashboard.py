"""The ``dashboard`` function (issue 18) against Azurite and both emulators in-process: its
forms' CSRF protection (a POST without a token, with a stale or forged one, or from another
site is refused with 403 and changes nothing), escaping of what came from outside, the page's
headers, and the latency percentiles. The browser story is tests/e2e/test_dashboard_browser.py.
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import pytest

from sandbox.partner_center.samples import cosell_referral_from_microsoft
from shared.dashboard import csrf
from shared.dashboard.data import hourly_latency, percentile
from shared.dashboard.render import latency_svg
from shared.jobs import SyncJob
from shared.state import HistoryEntry
from shared.triggers.dashboard import DashboardAnswer, handle_dashboard
from tests.functions.conftest import App

KEY = "the-function-key"
URL = f"http://127.0.0.1:7071/api/dashboard?code={KEY}"
SAME_ORIGIN = {"Origin": "http://127.0.0.1:7071", "Host": "127.0.0.1:7071"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PARAMS = {"code": KEY}


async def _get(app: App, params: dict[str, str] | None = None) -> DashboardAnswer:
    return await handle_dashboard(
        "GET", URL, {"Host": "127.0.0.1:7071"}, b"", {**PARAMS, **(params or {})},
        runtime=app.runtime,
    )  # fmt: skip


async def _post(
    app: App, form: dict[str, str], headers: dict[str, str] | None = None
) -> DashboardAnswer:
    body = urlencode(form).encode()
    return await handle_dashboard(
        "POST", URL, {**FORM, **(SAME_ORIGIN if headers is None else headers)}, body, PARAMS,
        runtime=app.runtime,
    )  # fmt: skip


async def _poisoned(app: App) -> tuple[str, SyncJob]:
    """A job the host moved to the poison queue; its message id (as the page shows it)."""
    job = SyncJob.now("referral", uuid.uuid4(), reason="poll")
    await app.runtime.poison.enqueue(job)
    [message] = await app.poison_queue.peek_messages(max_messages=1)
    return str(message.id), job


def _token_of(page: str, action: str, message_id: str) -> str:
    """The token the page's form for ``action`` on ``message_id`` carries."""
    pattern = (
        rf'name="action" value="{action}"><input type="hidden" name="message" '
        rf'value="{re.escape(message_id)}"><input type="hidden" name="token" value="([^"]+)"'
    )  # the form as render._form writes it
    found = re.search(pattern, page)
    assert found, f"no {action} form for {message_id}"
    return found.group(1)


# --- CSRF ------------------------------------------------------------------------------------


def test_a_token_is_valid_for_its_action_and_target_in_its_window_and_the_next() -> None:
    now = time.time()
    token = csrf.issue(KEY, "replay", "m1", now=now)

    assert csrf.valid(KEY, token, "replay", "m1", now=now)
    assert csrf.valid(KEY, token, "replay", "m1", now=now + csrf.WINDOW_S)
    assert not csrf.valid(KEY, token, "replay", "m1", now=now + 2 * csrf.WINDOW_S)  # stale
    assert not csrf.valid(KEY, token, "replay", "m1", now=now - csrf.WINDOW_S)  # from the future
    assert not csrf.valid(KEY, token, "delete", "m1", now=now)  # another action
    assert not csrf.valid(KEY, token, "replay", "m2", now=now)  # another message
    assert not csrf.valid("another-key", token, "replay", "m1", now=now)
    window = token.split(".")[1]
    assert not csrf.valid(KEY, f"v1.{window}.{'0' * 32}", "replay", "m1", now=now)  # forged
    assert not csrf.valid(KEY, "", "replay", "m1", now=now)


@pytest.mark.parametrize(
    ("headers", "same"),
    [
        ({"Origin": "http://127.0.0.1:7071"}, True),
        ({"Referer": "http://127.0.0.1:7071/api/dashboard?code=x"}, True),
        ({"Origin": "https://evil.example"}, False),
        ({"Origin": "http://127.0.0.1:7072"}, False),  # another port is another origin
        ({"Origin": "null"}, False),
        ({}, False),
        ({"Origin": "https://cosell.contoso.com", "X-Forwarded-Host": "cosell.contoso.com"}, True),
    ],
)
def test_the_origin_must_be_the_host_the_request_was_sent_to(
    headers: dict[str, str], same: bool
) -> None:
    assert csrf.same_origin(URL, headers) is same


async def test_a_post_without_a_token_or_with_a_stale_or_forged_one_is_refused(app: App) -> None:
    message_id, _ = await _poisoned(app)
    stale = csrf.issue(KEY, "replay", message_id, now=time.time() - 2 * csrf.WINDOW_S)
    other_key = csrf.issue("not-the-key", "replay", message_id)
    for_delete = csrf.issue(KEY, "delete", message_id)  # a real token, for another action
    forms = [
        {"action": "replay", "message": message_id},
        {"action": "replay", "message": message_id, "token": stale},
        {"action": "replay", "message": message_id, "token": other_key},
        {"action": "replay", "message": message_id, "token": for_delete},
        {"action": "replay", "message": message_id, "token": "v1.1.forged"},
        {"action": "delete", "message": message_id, "token": stale},
    ]
    for form in forms:
        answer = await _post(app, form)
        assert answer.status == 403, form
        assert "token" in answer.body

    assert [j.id for j in (await app.jobs())] == []
    assert len(await app.poison()) == 1  # still there: nothing changed


async def test_a_post_from_another_site_is_refused_even_with_a_valid_token(app: App) -> None:
    message_id, _ = await _poisoned(app)
    token = _token_of((await _get(app)).body, "replay", message_id)
    form = {"action": "replay", "message": message_id, "token": token}

    for headers in ({"Origin": "https://evil.example"}, {}):
        answer = await _post(app, form, headers=headers)
        assert answer.status == 403

    assert await app.jobs() == []
    assert len(await app.poison()) == 1


async def test_the_page_s_replay_form_moves_the_job_back_to_sync_jobs(app: App) -> None:
    message_id, job = await _poisoned(app)
    token = _token_of((await _get(app)).body, "replay", message_id)

    answer = await _post(app, {"action": "replay", "message": message_id, "token": token})

    assert answer.status == 303
    assert answer.headers["Location"] == f"/api/dashboard?code={KEY}&notice=replayed"
    assert [j.id for j in await app.jobs()] == [job.id]
    assert await app.poison() == []
    after = await _get(app, {"notice": "replayed"})
    assert "The job is back on sync-jobs" in after.body


async def test_the_page_s_delete_form_removes_the_message(app: App) -> None:
    message_id, _ = await _poisoned(app)
    token = _token_of((await _get(app)).body, "delete", message_id)
    form = {"action": "delete", "message": message_id, "token": token}

    unconfirmed = await _post(app, form)  # the box the browser requires was not ticked
    assert unconfirmed.status == 400
    assert len(await app.poison()) == 1

    answer = await _post(app, {**form, "confirm": "yes"})

    assert answer.status == 303 and answer.headers["Location"].endswith("notice=deleted")
    assert await app.poison() == []
    assert await app.jobs() == []


# --- escaping and the page's headers ---------------------------------------------------------


async def test_a_referral_name_with_a_script_is_shown_as_text(app: App) -> None:
    name = "<script>alert('x')</script> & \"Contoso\""
    async with app.control() as control:
        sent = await control.post(
            "/_emulator/microsoft/referrals", json=cosell_referral_from_microsoft(name=name)
        )
        assert sent.status_code == 201, sent.text
    await app.runtime.history().add_entry(
        HistoryEntry(
            key=str(uuid.uuid4()),
            outcome="error",
            reason="poll",
            errors=["<img src=x onerror=alert(1)> refused"],
        )
    )
    page = (await _get(app)).body
    scan = re.search(r'value="scan"><input type="hidden" name="message" value="">'
                     r'<input type="hidden" name="token" value="([^"]+)"', page)  # fmt: skip
    assert scan is not None
    scanned = await _post(app, {"action": "scan", "message": "", "token": scan.group(1)})
    assert scanned.status == 303

    page = (await _get(app, {"notice": "scanned"})).body

    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;Contoso&quot;" in page
    assert "&lt;img src=x onerror=alert(1)&gt; refused" in page
    assert "<script" not in page and "<img" not in page
    assert "Drift scanned now" in page


async def test_the_page_forbids_scripts_frames_and_caching_and_ignores_unknown_notices(
    app: App,
) -> None:
    answer = await _get(app, {"notice": "<b>you were hacked</b>"})

    assert answer.status == 200 and answer.mimetype == "text/html"
    policy = answer.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["Referrer-Policy"] == "same-origin"
    assert "hacked" not in answer.body
    assert '<meta name="viewport"' in answer.body
    assert 'action="?code=the-function-key"' in answer.body


# --- the latency chart -----------------------------------------------------------------------


def test_percentiles_are_nearest_rank() -> None:
    values = list(range(1, 101))
    assert (percentile(values, 50), percentile(values, 95)) == (50, 95)
    assert percentile([7], 95) == 7
    assert percentile([], 50) is None


def test_latency_is_grouped_by_utc_hour_and_failed_attempts_are_left_out() -> None:
    now = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)
    entries = [
        HistoryEntry(key="a", at=now - timedelta(minutes=5), outcome="synced", duration_ms=100),
        HistoryEntry(key="a", at=now - timedelta(minutes=10), outcome="created", duration_ms=300),
        HistoryEntry(key="b", at=now - timedelta(hours=2), outcome="synced", duration_ms=50),
        HistoryEntry(key="c", at=now, outcome="error", duration_ms=9000),
        HistoryEntry(key="d", at=now - timedelta(hours=30), outcome="synced", duration_ms=1),
    ]
    hours = hourly_latency(entries, now=now, hours=24)

    assert len(hours) == 24 and hours[-1].hour == datetime(2026, 12, 2, 10, tzinfo=UTC)
    assert (hours[-1].count, hours[-1].p50_ms, hours[-1].p95_ms) == (2, 100, 300)
    assert (hours[-3].count, hours[-3].p50_ms) == (1, 50)
    assert sum(h.count for h in hours) == 3
    svg = latency_svg(hours)
    assert svg.startswith("<svg") and svg.count("<rect") >= 4


async def test_on_empty_storage_the_page_says_what_is_not_there_yet(app: App) -> None:
    answer = await _get(app)

    assert answer.status == 200
    assert "No drift scan stored yet" in answer.body
    assert "The poison queue is empty." in answer.body
    assert "No syncs recorded in the last 24 hours." in answer.body
    assert "Not everything could be read" not in answer.body
