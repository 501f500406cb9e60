"""``python -m bench run``: every row of SPEC section 11, measured, then ``bench/README.md``."""

from __future__ import annotations

import math
import time

from bench import backfill, calls, chaos, fuzz, latency, push_latency, shared_budget
from bench.common import summary
from bench.png import Series, histogram_chart
from bench.report import HERE, Row, seconds, write
from sandbox.azurite import Azurite

CHART = "latency.png"
WEBHOOK_TARGET_S = 2.0


def _step(title: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {title}", flush=True)


async def run_all(
    *,
    backfill_referrals: int,
    latency_samples: int,
    fuzz_bodies: int,
    chaos_referrals: int,
) -> int:
    started = time.perf_counter()
    rows: list[Row] = []
    notes: list[str] = []

    _step(f"latency: {latency_samples} edits each way through the sandbox")
    lat = await latency.measure(samples=latency_samples)
    hook, poll = summary(lat.webhook_s), summary(lat.poll_s)
    poll_target = lat.poll_interval_s + 2.0
    rows.append(Row(
        "Partner Center change → visible in Dataverse (sandbox, webhook path)",
        "Microsoft connector: \"wait 10 minutes\"; Suger: about 3 h",
        "p95 ≤ 2 s",
        f"p50 {seconds(hook['p50'])}, p95 {seconds(hook['p95'])}, max {seconds(hook['max'])} "
        f"(n = {len(lat.webhook_s)})",
        hook["p95"] <= WEBHOOK_TARGET_S and len(lat.webhook_s) == latency_samples,
        "sandbox stack over real sockets (Azurite, both emulators under uvicorn, the local "
        "Functions host running `function_app.py`). The deal value is patched in Partner "
        "Center; the emulator's signed `referral-updated` webhook reaches "
        "`partner_center_webhook`, the job goes through `sync-jobs` to `sync_job`; the clock "
        "stops when a read of the opportunity (every 20 ms) shows the value.",
    ))  # fmt: skip
    rows.append(Row(
        "Dataverse change → visible in Partner Center",
        "Microsoft connector: 10 min; Suger: about 6 h",
        f"p95 ≤ poll interval + 2 s = {poll_target:.0f} s (poll every {lat.poll_interval_s} s)",
        f"p50 {seconds(poll['p50'])}, p95 {seconds(poll['p95'])}, max {seconds(poll['max'])} "
        f"(n = {len(lat.poll_s)})",
        poll["p95"] <= poll_target and len(lat.poll_s) == latency_samples,
        f"same stack with `DATAVERSE_POLL_SCHEDULE` = `{latency.POLL_SCHEDULE}` (every "
        f"{lat.poll_interval_s} s; the sandbox default is 5 s, Azure's 1 min). The deal value is "
        "edited on the opportunity; `poll_dataverse` enqueues it; the clock stops when a read "
        "of the referral (every 20 ms) shows it. Timeouts (30 s): "
        f"{lat.timeouts}.",
    ))  # fmt: skip
    _step(f"push: {latency_samples} opportunity edits through dataverse_webhook")
    pushed = (await push_latency.measure(samples=latency_samples)).summary()
    rows.append(Row(
        "Dataverse change → visible in Partner Center, push path (`dataverse_webhook`)",
        "Microsoft connector: 10 min; Suger: about 6 h",
        "p95 ≤ 1 s",
        f"p50 {seconds(pushed['p50_s'] or math.nan)}, p95 {seconds(pushed['p95_s'] or math.nan)} "
        f"(n = {pushed['samples']}); remote calls per changed field: max "
        f"{pushed['max_calls_per_edit']}, per echo: max {pushed['max_calls_per_echo']}",
        bool(pushed["target_met"]) and (pushed["max_calls_per_edit"] or 99) <= 3
        and pushed["max_calls_per_echo"] == 0,
        "the sandbox stack with `DATAVERSE_POLL_SCHEDULE` = `0 0 * * * *` (hourly: the poll "
        "plays no part) and the push registered as `cosell webhook register` does; a seller "
        "(another Dataverse user, `MSCRMCallerID`) edits the deal value; the emulator posts the "
        "`RemoteExecutionContext` to `dataverse_webhook`, the job goes through `sync-jobs`; the "
        "clock stops when a read of the referral shows it. Echo: our own write, pushed back, "
        f"is dropped at the webhook. Timeouts: {pushed['timeouts']}.",
    ))  # fmt: skip
    chart_path = HERE / CHART
    x_max = max([*lat.webhook_s, *lat.poll_s, poll_target]) * 1.05
    histogram_chart(
        chart_path,
        [Series(lat.webhook_s, (40, 110, 200), WEBHOOK_TARGET_S),
         Series(lat.poll_s, (230, 140, 30), poll_target)],
        x_max=x_max,
    )  # fmt: skip

    with Azurite() as azurite:
        _step("remote calls per sync (engine + emulators in process)")
        counted = await calls.measure(azurite.connection_string)
        _step(f"fuzz: {fuzz_bodies} webhook bodies")
        fuzzed = await fuzz.measure(azurite.connection_string, fuzz_bodies)
    field_max = max(counted.changed_field)
    rows.append(Row(
        "Remote calls for one changed field",
        "reads + one write = 3",
        "≤ 3; duplicate event or echo: 0",
        f"changed field: max {field_max}, mean "
        f"{sum(counted.changed_field) / len(counted.changed_field):.1f} "
        f"(n = {len(counted.changed_field)}); duplicate event: max {max(counted.duplicate)}; "
        f"echo: max {max(counted.echo)}",
        field_max <= 3 and max(counted.duplicate) == 0 and max(counted.echo) == 0,
        "the engine alone (`SyncEngine.sync`) with both emulators in process "
        "(`httpx.ASGITransport`) and its state on Azurite — a call count does not depend on "
        "sockets — and the mapping of `bench/mapping.py` in effect (three extra mapped "
        "fields, one a choice through a value map, and defaults on every created row). "
        "Counted by the emulators' `/_emulator/stats` (control API left out) across "
        "one sync. Half the edits are made in Partner Center (job `webhook:referral-updated`), "
        "half in Dataverse (job `poll`); then the same job again, as the queue redelivers it "
        "(duplicate event: same insertion time; the first delivery ran 1 s or more after the "
        "enqueue, the clock-skew allowance — one handled sooner is read once more), and what our "
        "own write costs when it comes back (echo: for a Dataverse write, through "
        "`poll_dataverse` as in the product, counting the jobs it enqueues for it; for a "
        "Partner Center patch, the `webhook:referral-updated` job). For scale: creating one "
        f"linked pair from a new referral took {counted.creation[0]} calls in both systems.",
    ))  # fmt: skip

    _step(f"backfill: {backfill_referrals} new referrals, 20 ms latency, service protection")
    filled = await backfill.measure(backfill_referrals)
    rows.append(Row(
        "Dataverse requests per referral on backfill (new account + contact + opportunity)",
        "naive: 5-7",
        "≤ 2",
        f"{filled.requests_per_referral:.2f} ({filled.dataverse_requests} requests for "
        f"{filled.referrals} referrals)",
        filled.requests_per_referral <= 2.0 + 10 / max(1, filled.referrals),
        "Dataverse requests admitted by the emulator (429 answers left out) during "
        "`cosell backfill --direction pc-to-crm --inline` of new referrals, each with its own "
        "customer, divided by the referrals, with the mapping of `bench/mapping.py` (three "
        "extra fields and defaults on the new opportunity, account and contact: they ride in "
        "the same deep insert). Beyond 2 × referrals: one-off lookups (currency), allowed as "
        "10 requests in total.",
    ))  # fmt: skip
    scaled = backfill_referrals != 10_000
    rows.append(Row(
        "Backfill of 10,000 referrals with 20 ms emulated latency and real Dataverse limits"
        + (f" — here {filled.referrals:,} referrals" if scaled else ""),
        "Dataverse ceiling: 20 requests/s per user",
        "≥ 90 % of the ceiling, zero 429 failures, peak RSS ≤ 300 MB",
        f"{filled.rate_per_s:.1f} requests/s = {filled.share_of_ceiling:.0%} of the ceiling in "
        f"{filled.seconds:.0f} s; 429 answers {filled.throttled}, syncs failed "
        f"{filled.failed_syncs} (outcomes: "
        + ", ".join(f"{k} {v}" for k, v in sorted(filled.outcomes.items()))
        + f"); peak RSS {filled.peak_rss_mb:.0f} MB",
        filled.share_of_ceiling >= 0.9
        and filled.failed_syncs == 0
        and filled.exit_code == 0
        and filled.peak_rss_mb <= 300,
        f"Azurite and both emulators under uvicorn (real sockets); every Partner Center and "
        f"Dataverse request answered after {filled.latency_ms:.0f} ms; Dataverse service "
        f"protection at {backfill.LIMIT_REQUESTS} requests per {backfill.LIMIT_WINDOW_S:.0f} s "
        "(the documented 6,000 per 300 s scaled to the same 20 requests/s, so the run spends "
        "its time at the ceiling rather than inside one 5-minute burst window) and 52 "
        "concurrent. `cosell backfill --inline --concurrency "
        f"{backfill.CONCURRENCY}` runs in its own process: rate = Dataverse requests admitted ÷ "
        "time from the first to the last Dataverse request; a 429 is a failure only if a sync "
        "ends in error; peak RSS is the backfill process's `ru_maxrss`."
        + (f" Scaled down from 10,000 to {filled.referrals:,} referrals to fit the 15-minute "
           "budget of `make bench` (10,000 at 20 requests/s would take 17 minutes alone)."
           if scaled else ""),
    ))  # fmt: skip
    rows.append(Row(
        "CPU time per sync in the engine alone",
        "—",
        "(no target; reported)",
        f"{filled.cpu_ms_per_sync:.1f} ms per new-referral sync "
        f"({filled.cpu_s:.1f} s CPU for {filled.referrals} syncs)",
        None,
        "user + system CPU time of the backfill process above (engine, clients, state store; "
        "the emulators and Azurite run in other processes) divided by the syncs; it includes "
        "the process's start-up (imports, settings) and listing the referrals.",
    ))  # fmt: skip

    _step(f"shared budget: {shared_budget.INSTANCES} instances on one Dataverse user")
    pooled = await shared_budget.measure()
    rows.append(Row(
        f"{pooled.instances} instances on one Dataverse application user (shared budget)",
        "per-instance throttles: N instances send N × the budget, then 429s",
        "together ≥ 90 % of the ceiling, zero 429s, never over 52 concurrent",
        f"{pooled.share_of_ceiling:.0%} of the ceiling ({pooled.admitted} requests in "
        f"{pooled.seconds:.0f} s; per instance {', '.join(map(str, pooled.per_instance))}); "
        f"429 answers {pooled.throttled}; peak concurrent {pooled.peak_concurrent}; "
        f"{pooled.storage_calls_per_request:.2f} storage calls per Dataverse request",
        pooled.share_of_ceiling >= 0.9
        and pooled.throttled == 0
        and pooled.peak_concurrent <= 52,
        f"{pooled.instances} separate processes, each the app's Dataverse client with its "
        "throttle on `shared.state.budget.TableBudget` (one ledger row in Azurite), "
        f"{shared_budget.WORKERS} workers each sending `WhoAmI` as fast as admitted for "
        f"{pooled.seconds:.0f} s; the emulator answers after 20 ms and enforces "
        f"{shared_budget.LIMIT_REQUESTS} requests per {shared_budget.LIMIT_WINDOW_S:.0f} s "
        "(the documented 20 requests/s) and 52 concurrent. Storage calls = the ledger's reads "
        "and writes and the heartbeats, over all instances. This measures the limiter, not a "
        "3-host backfill (issue 20's `make bench-full` is still to come).",
    ))  # fmt: skip

    _step(f"chaos: {chaos_referrals} referrals")
    chaotic = await chaos.run_chaos(chaos_referrals)
    rows.append(Row(
        "Chaos: 1,000 referrals, edits on both sides, 10 % faults, a worker killed mid-sync"
        + (f" — here {chaos_referrals:,} referrals" if chaos_referrals != 1000 else ""),
        "—",
        "converges; 0 lost updates, 0 duplicates",
        f"converged: {'yes' if chaotic.converged else 'no'}; lost edits {len(chaotic.lost)}, "
        f"duplicates {len(chaotic.duplicates)}, unequal pairs {len(chaotic.unequal)}, missing "
        f"{len(chaotic.missing)}, conflicts settled by record-level newest "
        f"{len(chaotic.settled_by_policy)}; {sum(chaotic.edits.values())} edits, "
        f"{chaotic.kills} host "
        f"kills ({chaotic.kills_mid_sync} mid-sync), faults injected "
        + ", ".join(f"{k} {v}" for k, v in sorted(chaotic.faults.items()))
        + f", {chaotic.webhooks_dropped} webhooks dropped, "
        f"{len(chaotic.backfills)} backfill round(s) to quiet",
        chaotic.ok,
        "`python -m bench chaos` (see `bench/chaos.py` for the model): the sandbox stack, 10 % "
        "of API requests on both emulators failing with 429/500/503/504, 10 % of webhooks "
        "dropped, the local host killed with no grace every 2-6 s and restarted on the same "
        "storage, three rounds of random edits on both sides; the families of issue 13 "
        "(`bench/families/`): the seller's flagged opportunities with 2-3 poll jobs "
        "racing while Partner Center answers 30 % 429/503, Microsoft's side of each of their "
        "engagements synced by reconcile/backfill/manual jobs, 5 % of referrals in a currency "
        "Dataverse lacks, seller contacts shared by three opportunities whose referrals get "
        "new contacts, names over 300 and notes over 2,000 characters (as Microsoft sends "
        "them or by a Partner Center edit; Partner Center keeps them, the opportunity holds "
        "them cut or unchanged and says Error), deals won, edited in Partner Center while "
        "closed and reopened by the seller (the Closed referral never changes, the edit lands "
        "once reopened, no poison messages), marketplace leads (`SYNC_COSELL_ONLY=false`) "
        "qualified and flagged for sync within one poll interval while poll jobs race (one "
        "referral per deal, Microsoft's, accepted); then faults off, queue drained, "
        "`cosell backfill --inline` until a round changes nothing, and every pair compared "
        "field by field with the last edit of each field, plus each family's check."
        + (f" `make bench` runs {chaos_referrals:,} referrals to stay in its time budget; "
           "`make chaos` runs 1,000." if chaos_referrals != 1000 else ""),
    ))  # fmt: skip
    if chaotic.lost or chaotic.duplicates or chaotic.unequal or chaotic.missing:
        problems = chaotic.missing + chaotic.duplicates + chaotic.unequal + chaotic.lost
        notes.append(
            "Chaos problems (first 10): "
            + "; ".join(f"`{p}`" for p in problems[:10])
            + ". Traces: "
            + "; ".join(f"`{line.strip()}`" for line in chaotic.traces[:40])
        )
    kinds = ", ".join(f"{k}: {v}" for k, v in sorted(fuzzed.enqueued_invalid_kinds.items()))
    rows.append(Row(
        "Fuzzed webhook bodies",
        "—",
        "every one answered 2xx/4xx, none enqueued unless valid",
        f"{fuzzed.bodies:,} bodies in {fuzzed.seconds:.0f} s: answers "
        + ", ".join(f"{k} × {v}" for k, v in sorted(fuzzed.statuses.items()))
        + f"; not 2xx/4xx {fuzzed.wrong_class}; invalid enqueued {fuzzed.enqueued_invalid}"
        + (f" ({kinds})" if kinds else "")
        + f"; valid {fuzzed.valid}, queue grew by {fuzzed.queue_growth}",
        fuzzed.ok,
        "`shared.triggers.webhook.handle_webhook` (what the HTTP function calls) on a runtime "
        "with a real Azurite queue, signature mode off. Families: "
        + ", ".join(f"{k} {v}" for k, v in sorted(fuzzed.families.items()))
        + ". Valid events each name a new referral id, so none is a duplicate.",
    ))  # fmt: skip
    if fuzzed.enqueued_invalid:
        notes.append(
            "Fuzz: a webhook body whose `ResourceChangeUtcDate` is a JSON number (e.g. `5`) "
            "is accepted and enqueued — pydantic reads the number as Unix time (1970). The "
            "documented field is an ISO date string; the job is harmless (the engine reads "
            "current state), but SPEC 8 says only the documented fields are accepted. Fix in "
            "the event model (a strict datetime), not here."
        )
    notes.append("Latency percentiles are nearest-rank over the samples; the chart shows them all.")
    text = write(rows, notes=notes, chart=CHART, run_s=time.perf_counter() - started)
    failed = [row.what for row in rows if row.passed is False]
    print(text)
    minutes = (time.perf_counter() - started) / 60
    _step(f"wrote {HERE / 'README.md'} and {chart_path} in {minutes:.1f} min")
    return 1 if failed else 0
