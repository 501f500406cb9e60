"""``python -m bench chaos``: the whole sandbox under faults and host kills, then a full check.

1. The sandbox stack (Azurite, both emulators, the local host running ``function_app.py``)
   with the Dataverse poll every second, reconcile every 15 s, a 1 s queue visibility timeout
   and a 6 s message lease (so the jobs of a killed host come back after 6 s).
2. Both emulators fail 10 % of API requests (429, 500, 503 and 504 standing for a timeout);
   Partner Center drops 10 % of webhooks, Dataverse 10 % of its pushes to ``dataverse_webhook``
   (the sellers edit as a Dataverse user of their own, so their edits are pushed; the poll
   catches what a lost push missed).
3. Microsoft sends ``referrals`` co-sell referrals (two per customer, so accounts must be
   shared, one contact each). While they are created and edited, the host is killed at random
   moments (``FunctionHost.stop`` with no grace: running invocations are cancelled wherever
   they are) and a new host is started on the same storage and port.
4. ``rounds`` rounds of edits: in each, every pair gets one edit of one field (name, deal
   value or notes) on one side (Partner Center or Dataverse), chosen at random. A round lasts
   at least ``ROUND_S`` seconds, so two edits of one pair are always more than a second apart.
   Beside Microsoft's referrals, the families of issue 13 (``bench/families/``): the
   seller's own opportunities, flagged for sync while Partner Center throttles harder, each
   with 2-3 poll jobs at once (creation races); jobs for Microsoft's side of their
   engagements in every round (reconcile, backfill, manual); referrals in a currency
   Dataverse lacks; seller contacts shared by several opportunities, whose referrals get a new
   contact from Partner Center in the first round; names and notes over Dataverse's column
   limits (as Microsoft sends them, or by a Partner Center edit in the first round); deals the
   seller wins, that Partner Center edits while they are closed, and that the seller reopens
   and edits (from when most pairs are linked on; no round edits for those: their referral
   is Closed); marketplace leads the seller qualifies and flags for sync within one poll
   interval while poll jobs race (``SYNC_COSELL_ONLY=false`` for the whole run: nothing else
   depends on it); referrals naming two solution ids that differ only by case (their derived
   row ids must not collide). The edits end when those families' work is done.
5. Faults off, webhooks delivered again; the queue drains (a job deferred on a creation's
   lease stays in the queue invisible, so only visible messages count, and the drain waits for
   every seller's referral); ``cosell backfill --inline`` runs until a round changes nothing
   (at most ``MAX_BACKFILLS``; a pair refusing an unknown currency or an oversize value ends
   in "error" by design).
6. Checks. The expected value of each field of each pair is the value of its *last* edit (by
   the time the edit was acknowledged), or the original one when it was never edited. With
   ``CONFLICT_POLICY=newest`` one more outcome is right: when both sides edited a field between
   two syncs, the side whose *record* changed last wins (SPEC 4.4 compares ``updatedDateTime``
   with ``modifiedon``: whole records, not fields), so if the other side edited the field and
   later edited anything else, its value may win; those are counted apart
   ("settled by policy"), not as lost. Anything else is a lost edit. Also checked: one
   opportunity per referral and one referral per opportunity; one account per customer (name +
   postal code), which is also the opportunity's potential customer; one contact per referral;
   every pair equal field by field (name without the sync mark, deal value, notes, status ↔
   state/status reason, account name, contact e-mail, currency) but for what a family rightly
   changes (``Families.not_compared``, ``Families.status_of``), and each family's check
   (``families.check_families``; currencies in ``_check``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from azure.data.tables.aio import TableClient
from azure.storage.queue.aio import QueueClient

from bench import families as fam
from bench import push_latency
from bench.common import control_client, set_faults, without_mark
from sandbox import partner_center
from sandbox.host import FunctionHost
from sandbox.partner_center.samples import cosell_referral_from_microsoft
from sandbox.stack import EMULATOR_TOKEN, SandboxStack, _close_app_runtime
from shared import wiring
from shared.dataverse import DataverseClient
from shared.errors import CosellError, ThrottledError
from shared.jobs import POISON_QUEUE, SYNC_JOBS_QUEUE, JobQueue
from shared.partner_center import PartnerCenterClient
from shared.state import HISTORY_TABLE, LINKS_TABLE, HistoryEntry, HistoryStore, LinkStore
from shared.storage import queue_client
from shared.sync.plan import CREATE_LEASE

log = logging.getLogger("bench.chaos")

FAULT_STATUSES = (429, 500, 503, 504)  # 504: a gateway timeout
FAULTS = {"error_rate": 0.1, "statuses": list(FAULT_STATUSES), "retry_after_s": 1,
          "drop_webhook_rate": 0.1}  # fmt: skip
FIELDS = ("name", "deal_value", "notes")
SIDES = ("pc", "crm")
ROUND_S = 2.0
EDIT_CONCURRENCY = 8
MAX_BACKFILLS = 5
KILL_EVERY_S = (2.0, 6.0)
THROTTLED_WAIT_CAP_S = 30.0
PUSH_DROP_RATE = 0.10
DOWN_FOR_S = (0.2, 1.5)
HOST_OPTIONS: dict[str, Any] = {"visibility_timeout": 1, "lease_s": 6.0}
SETTINGS = {
    "DATAVERSE_POLL_SCHEDULE": "*/1 * * * * *",
    "PARTNER_CENTER_RECONCILE_SCHEDULE": "*/15 * * * * *",
    # Marketplace leads become Dataverse leads (the lead races of families.leads). The setting
    # changes only what happens to a marketplace lead (plan._new_referral) and makes the poll
    # read changed leads too (triggers/poll.py); every other referral here is co-sell.
    "SYNC_COSELL_ONLY": "false",
}
ORIGINAL_VALUE = 120000
ORIGINAL_NOTES = "Customer wants to move 40 VMs."


@dataclass
class Edit:
    side: str
    field: str
    value: Any
    at: float


@dataclass
class Pair:
    number: int
    referral_id: str
    opportunity_id: str | None = None
    edits: list[Edit] = field(default_factory=list)

    def expected(self, name: str) -> Any:
        done = [e for e in self.edits if e.field == name]
        if done:
            return max(done, key=lambda e: e.at).value
        return {"name": f"Chaos deal {self.number}", "deal_value": ORIGINAL_VALUE,
                "notes": ORIGINAL_NOTES}[name]  # fmt: skip

    def newest_may_keep(self, name: str) -> Any:
        """The other value CONFLICT_POLICY=newest may rightly keep for ``name``, or None.

        The policy compares whole records (``updatedDateTime`` vs ``modifiedon``), not fields:
        when both sides changed ``name`` between two syncs, the side whose record changed last
        wins — also when that last change was to another field. So if side B edited ``name``
        and later edited any field after side A's last edit of ``name``, B's last value of
        ``name`` is a correct outcome too (whether the conflict arose depends on sync timing).
        """
        done = [e for e in self.edits if e.field == name]
        if not done:
            return None
        last = max(done, key=lambda e: e.at)
        other = [e for e in done if e.side != last.side]
        later_on_other_side = [e for e in self.edits if e.side != last.side and e.at > last.at]
        if not other or not later_on_other_side:
            return None
        return max(other, key=lambda e: e.at).value


@dataclass
class ChaosReport:
    referrals: int
    seconds: dict[str, float] = field(default_factory=dict)
    edits: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    kills_mid_sync: int = 0
    invocations_cancelled: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    webhooks_dropped: int = 0
    # Dataverse pushes to dataverse_webhook (issue 16): made, delivered, failed, dropped.
    pushes: dict[str, int] = field(default_factory=dict)
    invocations: int = 0
    poison: int = 0
    backfills: list[dict[str, int]] = field(default_factory=list)
    # The last backfill round's syncs that ended in error not by design: kind, id, problems.
    backfill_errors: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    unequal: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    traces: list[str] = field(default_factory=list)
    settled_by_policy: list[str] = field(default_factory=list)
    families: str = ""
    family_counts: dict[str, int] = field(default_factory=dict)
    converged: bool = False

    @property
    def ok(self) -> bool:
        return (
            self.converged
            and not self.duplicates
            and not self.unequal
            and not self.lost
            and not self.missing
        )

    def lines(self) -> list[str]:
        total = sum(self.seconds.values())
        out = [
            f"referrals                 {self.referrals}",
            f"edits                     {sum(self.edits.values())} "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.edits.items())),
            f"issue 13 families         {self.families}",
            f"host kills                {self.kills} ({self.kills_mid_sync} mid-sync, "
            f"{self.invocations_cancelled} invocations cancelled)",
            "faults injected           "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())),
            f"webhooks dropped          {self.webhooks_dropped}",
            "dataverse pushes          "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.pushes.items())),
            f"function invocations      {self.invocations}",
            f"poison messages           {self.poison}",
            f"backfill rounds           {len(self.backfills)}: "
            + "; ".join(
                ", ".join(f"{k} {v}" for k, v in sorted(b.items())) for b in self.backfills
            ),
            f"converged                 {'yes' if self.converged else 'NO'}",
            *(f"  last backfill error: {e}" for e in self.backfill_errors[:10]),
            f"missing records           {len(self.missing)}",
            f"duplicates                {len(self.duplicates)}",
            f"pairs unequal             {len(self.unequal)}",
            f"lost edits                {len(self.lost)}",
            f"conflicts where the record-level 'newest' kept the older field value "
            f"{len(self.settled_by_policy)}",
            "time                      "
            + ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items())
            + f" (total {total:.0f} s)",
        ]
        for title, problems in (("missing", self.missing), ("duplicate", self.duplicates),
                                ("unequal", self.unequal), ("lost", self.lost)):  # fmt: skip
            out += [f"  {title}: {p}" for p in problems[:20]]
            if len(problems) > 20:
                out.append(f"  … and {len(problems) - 20} more {title}")
        if self.traces:
            out.append("traces of the first pairs with a lost edit or a duplicate, then of slow "
                       "creations (edits, then sync history):")  # fmt: skip
            out += [f"  {line}" for line in self.traces]
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "referrals": self.referrals,
            "ok": self.ok,
            "converged": self.converged,
            "edits": dict(self.edits),
            "kills": self.kills,
            "kills_mid_sync": self.kills_mid_sync,
            "faults": self.faults,
            "webhooks_dropped": self.webhooks_dropped,
            "pushes": self.pushes,
            "poison": self.poison,
            "duplicates": len(self.duplicates),
            "unequal": len(self.unequal),
            "lost": len(self.lost),
            "missing": len(self.missing),
            "settled_by_policy": len(self.settled_by_policy),
            "families": self.family_counts,
            "seconds": self.seconds,
        }


def _quiet_uvicorn() -> None:
    """uvicorn logs each request a killed host cancelled, with a traceback: expected here.
    (Each uvicorn server start re-applies uvicorn's logging config, so this runs after each.)"""
    for name in ("uvicorn.error", "uvicorn"):
        logger = logging.getLogger(name)
        if _drop_cancelled not in logger.filters:
            logger.addFilter(_drop_cancelled)
        for handler in logger.handlers:
            if _drop_cancelled not in handler.filters:
                handler.addFilter(_drop_cancelled)


def _drop_cancelled(record: logging.LogRecord) -> bool:
    """False for the tracebacks a kill causes: cancelled requests, callers hanging up."""
    kind = record.exc_info[0] if record.exc_info else None
    return kind is None or not (
        issubclass(kind, asyncio.CancelledError) or kind.__name__ == "ClientDisconnect"
    )


class StatusCounter:
    """ASGI middleware: counts the statuses of API answers (the emulator counts no faults)."""

    def __init__(self, app: Any, counts: Counter[int]) -> None:
        self.app = app
        self.counts = counts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or "/_emulator/" in scope.get("path", ""):
            await self.app(scope, receive, send)
            return

        async def counted(message: Any) -> None:
            if message.get("type") == "http.response.start":
                self.counts[int(message["status"])] += 1
            await send(message)

        await self.app(scope, receive, counted)


class Killer:
    """Kills the stack's host at random moments and starts a new one on the same port."""

    def __init__(self, stack: SandboxStack, rng: random.Random, report: ChaosReport) -> None:
        self.stack = stack
        self.rng = rng
        self.report = report
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                await asyncio.wait_for(self._stop.wait(), self.rng.uniform(*KILL_EVERY_S))
                return
            except TimeoutError:
                pass
            await self.kill_and_restart()

    async def kill_and_restart(self) -> None:
        stack, host = self.stack, self.stack.host
        assert host is not None
        port = host.port
        running = len(host._inflight)
        host.shutdown_timeout = 0.0  # no grace: cancel what runs, wherever it is
        await host.stop()
        self.report.kills += 1
        self.report.kills_mid_sync += running > 0
        self.report.invocations_cancelled += running
        self.report.invocations += sum(host.invocations.values())
        await asyncio.sleep(self.rng.uniform(*DOWN_FOR_S))
        for attempt in range(50):
            fresh = FunctionHost(
                stack.module,
                app_dir=stack.app_dir,
                host=stack.bind,
                port=port,
                function_key=stack.function_key,
                max_polling_interval=stack.max_polling_interval,
                on_stop=[_close_app_runtime],
                **stack.host_options,
            )
            try:
                await fresh.start()
            except (OSError, SystemExit, RuntimeError):
                if attempt == 49:
                    raise
                await asyncio.sleep(0.2)
                continue
            stack.host = fresh
            _quiet_uvicorn()
            return


async def _with_retries(action: Any, attempts: int = 8) -> Any:
    """The harness's own edits: retried on 412 (the product wrote in between) and on faults
    that outlasted the client's retries (the emulators fail before doing anything)."""
    for attempt in range(attempts):
        try:
            return await action()
        except (CosellError, httpx.HTTPError) as exc:
            if attempt == attempts - 1:
                raise
            log.debug("edit retried after %s", type(exc).__name__)
            await asyncio.sleep(_pause(exc, attempt))
    return None


def _pause(exc: Exception, attempt: int) -> float:
    """How long the harness waits before trying again: a throttled answer's own hint (the
    harness shares the product's Dataverse budget, 6,000 requests in 5 minutes), else a beat."""
    if isinstance(exc, ThrottledError) and exc.retry_after:
        return min(THROTTLED_WAIT_CAP_S, exc.retry_after)
    return 0.2 * (attempt + 1)


async def _edit(
    pair: Pair, side: str, name: str, value: Any, pc: PartnerCenterClient, crm: DataverseClient
) -> None:
    if side == "pc":
        path = {"name": "/name", "deal_value": "/details/dealValue", "notes": "/details/notes",
                "contact": "/customerProfile/team"}  # fmt: skip

        async def patch() -> None:
            current = await pc.get_referral(pair.referral_id)
            operation = [{"op": "replace", "path": path[name], "value": value}]
            await pc.patch_referral(pair.referral_id, operation, etag=current.e_tag)

        await _with_retries(patch)
    else:
        column = {"name": "name", "deal_value": "estimatedvalue", "notes": "description"}
        assert pair.opportunity_id is not None
        opportunity_id = pair.opportunity_id

        async def update() -> None:
            await crm.update("opportunities", opportunity_id, {column[name]: value})

        await _with_retries(update)
    # A contact edit is recorded as the team's e-mail (what the check compares).
    recorded = value[0]["email"] if name == "contact" else value
    pair.edits.append(Edit(side, name, recorded, time.monotonic()))


async def run_chaos(referrals: int, *, rounds: int = 3, seed: int = 2026) -> ChaosReport:
    rng = random.Random(seed)
    report = ChaosReport(referrals=referrals)
    pc_statuses: Counter[int] = Counter()
    pc_app = partner_center.create_app(token=EMULATOR_TOKEN)
    pc_app.add_middleware(StatusCounter, counts=pc_statuses)
    stack = SandboxStack(settings=SETTINGS, host_options=HOST_OPTIONS, partner_center_app=pc_app)
    async with (
        stack,
        control_client(stack.partner_center_url) as pc_control,
        control_client(stack.dataverse_url) as dv_control,
        wiring.partner_center_client(stack.app_settings()) as pc,
        # The sellers edit as a Dataverse user of their own, so their edits are pushed to
        # dataverse_webhook (the app user's own writes are echoes, issue 16).
        push_latency.seller_client(stack) as crm,
        JobQueue(queue_client(stack.app_settings(), SYNC_JOBS_QUEUE)) as queue,
    ):
        links = LinkStore(TableClient.from_connection_string(stack.connection_string, LINKS_TABLE))
        killer = Killer(stack, rng, report)
        try:
            await _chaos(stack, rng, report, referrals, rounds, pc_control, dv_control,
                         pc, crm, queue, links, killer, pc_statuses)  # fmt: skip
        finally:
            await killer.stop()
            await links.close()
        assert stack.host is not None
        report.invocations += sum(stack.host.invocations.values())
    return report


async def _chaos(
    stack: SandboxStack,
    rng: random.Random,
    report: ChaosReport,
    referrals: int,
    rounds: int,
    pc_control: httpx.AsyncClient,
    dv_control: httpx.AsyncClient,
    pc: PartnerCenterClient,
    crm: DataverseClient,
    queue: JobQueue,
    links: LinkStore,
    killer: Killer,
    pc_statuses: Counter[int],
) -> None:
    clock = clock_zero = time.monotonic()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.monotonic()
        report.seconds[name] = now - clock
        clock = now

    # The issue 13 families (bench/families/): the seller's records are made first,
    # with no faults, and flagged for sync once the faults are on.
    families = fam.Families(fam.FamilySizes.of(referrals))
    fam.pick_microsoft_pairs(families, referrals, lambda n, name: Pair(n, "").expected(name))
    await fam.seed_seller_opportunities(crm, families, first_number=referrals)

    await set_faults(dv_control, FAULTS)
    await set_faults(pc_control, fam.BURST)  # until the seller's referrals exist
    # 10 % of Dataverse's pushes are lost: the poll (every second here) catches them.
    await push_latency.drop_pushes(stack.dataverse_url, PUSH_DROP_RATE)
    killer.start()

    # -- creation
    pairs: list[Pair] = []
    limit = asyncio.Semaphore(8)

    async def send(number: int) -> None:
        body = cosell_referral_from_microsoft(name=f"Chaos deal {number}")
        body["customerProfile"] = {
            **body["customerProfile"],
            "name": f"Chaos customer {number // 2} Ltd",
            "team": [{**body["customerProfile"]["team"][0],
                      "email": f"buyer{number}@example.com"}],
        }  # fmt: skip
        if families.is_unknown_currency(number):
            body["details"] = {**body["details"], "currency": fam.UNKNOWN_CURRENCY}
        body = fam.with_oversize(families, number, body)
        body = fam.with_case_twins(families, number, body)
        async with limit:
            answer = await pc_control.post("/_emulator/microsoft/referrals", json=body)
            answer.raise_for_status()
        pairs.append(Pair(number, str(answer.json()["id"])))

    await asyncio.gather(
        *(send(n) for n in range(referrals)),
        fam.flag_and_race(crm, queue, families, rng, _with_retries),
        fam.send_leads(pc_control, families, referrals + families.sizes.crm_created),
    )
    by_referral = {p.referral_id: p for p in pairs}
    # The seller's pairs: the opportunity is known, the referral is what the product makes.
    sellers = [Pair(s.number, "", s.opportunity_id) for s in families.seller]
    by_opportunity = {p.opportunity_id: p for p in sellers}
    pairs += sellers
    pairs.sort(key=lambda p: p.number)
    by_number = {p.number: p for p in pairs}

    def edited(number: int, side: str, name: str, value: Any) -> None:
        by_number[number].edits.append(Edit(side, name, value, time.monotonic()))
        report.edits[f"{side}:{name}"] += 1

    def linked() -> set[int]:
        return {p.number for p in pairs if p.opportunity_id and p.referral_id}

    def reopen() -> asyncio.Future[None]:
        """The reopened deals start once most of Microsoft's pairs are linked (the rest of the
        creation phase mostly waits for the seller's referrals) and run under the same faults
        and kills as everything else, as do the lead races from the start."""
        fam.pick_reopened(families, referrals, linked())
        ids = {n: (by_number[n].referral_id, by_number[n].opportunity_id)
               for n in families.reopened}  # fmt: skip
        return asyncio.ensure_future(
            fam.reopen_deals(pc, crm, links, families, ids, edited, _with_retries)
        )

    leads = asyncio.ensure_future(fam.qualify_leads(crm, queue, families, rng, _with_retries))
    reopening: asyncio.Future[None] | None = None
    burst = True
    deadline = time.monotonic() + 60 + referrals * 0.5
    while time.monotonic() < deadline:
        try:
            await _find_ids(crm, by_referral, by_opportunity, families)
        except ThrottledError as exc:  # the product's budget is spent: look again later
            await asyncio.sleep(_pause(exc, 0))
            continue
        if burst and all(p.referral_id for p in sellers):
            await set_faults(pc_control, FAULTS)
            burst = False
        if reopening is None and not burst and len(linked()) >= 0.9 * len(pairs):
            reopening = reopen()
        if all(p.opportunity_id and p.referral_id for p in pairs):
            break
        await asyncio.sleep(1.0)
    if burst:
        await set_faults(pc_control, FAULTS)
    await fam.find_microsoft_referrals(
        pc, families, {p.number: p.referral_id for p in sellers}, _with_retries
    )
    lap("creation")
    ready = [p for p in pairs if p.opportunity_id and p.referral_id]
    fam.drop_unlinked_oversize_edits(families, {p.number for p in ready})
    if reopening is None:
        reopening = reopen()
    family_work = asyncio.gather(leads, reopening)
    contact_edits = {s.number for s in families.seller if s.contact_edit}

    # -- edits
    counter = 0
    edit_slots = asyncio.Semaphore(EDIT_CONCURRENCY)
    for round_number in range(rounds):
        started = time.monotonic()

        async def one(pair: Pair, side: str, name: str, value: Any) -> None:
            async with edit_slots:
                await _edit(pair, side, name, value, pc, crm)
            report.edits[f"{side}:{name}"] += 1

        # Microsoft's referrals of the seller's engagements, by reconcile/backfill/manual.
        work = [fam.enqueue_related(queue, families, round_number, _with_retries)]
        for pair in rng.sample(ready, len(ready)):
            if families.excluded_from_edits(pair.number):
                continue
            side, name = rng.choice(SIDES), rng.choice(families.edit_fields(pair.number, FIELDS))
            counter += 1
            value: Any = {
                "name": f"Chaos deal {pair.number} r{round_number} {side}",
                "deal_value": rng.randint(1000, 999999),
                "notes": f"notes {pair.number} round {round_number} from {side} #{counter}",
            }[name]
            if round_number == 0 and pair.number in contact_edits:
                # Partner Center gives the referral another contact (the seller's own record
                # is shared with other opportunities and must stay as it is).
                side, name, value = "pc", "contact", fam.new_contact(pair.number)
            oversize = fam.oversize_edit(families, pair.number) if round_number == 0 else None
            if oversize is not None:
                # Partner Center takes a value no opportunity column can hold.
                side, (name, value) = "pc", oversize
            work.append(one(pair, side, name, value))
        await asyncio.gather(*work)
        rest = ROUND_S - (time.monotonic() - started)
        if rest > 0:
            await asyncio.sleep(rest)
    await family_work
    lap("edits")

    # -- converge
    await killer.stop()
    for control in (pc_control, dv_control):
        await set_faults(control, None)
    stats_pc = (await pc_control.get("/_emulator/stats")).json()
    stats_dv = (await dv_control.get("/_emulator/stats")).json()
    report.webhooks_dropped = int(stats_pc["webhooks"].get("dropped", 0))
    pushes = await push_latency.push_stats(stack.dataverse_url)
    report.pushes = {k: int(v) for k, v in pushes.items() if isinstance(v, int)}
    report.faults["dataverse"] = int(stats_dv.get("faults_injected", 0))
    report.faults["partner center"] = sum(
        n for status, n in pc_statuses.items() if status in FAULT_STATUSES
    )

    async def creating() -> bool:
        """A seller's pair still without its referral (a creation waits on a lease)."""
        await _find_ids(crm, by_referral, by_opportunity, families)
        return not all(p.referral_id for p in sellers)

    await _drain(stack, creating)
    for _ in range(MAX_BACKFILLS):
        # Pairs in a currency Dataverse lacks or with an oversize value end every sync in
        # "error" (by design: the pair says why): those are counted apart, not as unsettled.
        # Read before each round: a referral whose creation only the backfill made (a dropped
        # webhook) has an opportunity id from then on.
        await _find_ids(crm, by_referral, by_opportunity, families)
        ids = {p.number: (p.referral_id, p.opportunity_id) for p in pairs}
        outcomes, report.backfill_errors = await _backfill(stack, families.refusing_ids(ids))
        report.backfills.append(outcomes)
        if not any(outcomes.get(k, 0) for k in UNSETTLED) and outcomes:
            report.converged = True
            break
        await _drain(stack, creating)
    report.poison = await _depth(stack, POISON_QUEUE)
    poison = await _poison_texts(stack) if report.poison else []
    lap("converge")

    # Microsoft's side of a seller's engagement whose referral came late (a creation's lease).
    late = {p.number: p.referral_id for p in sellers if p.number not in families.microsoft}
    await fam.find_microsoft_referrals(pc, families, late, _with_retries)
    report.families = families.summary()
    report.family_counts = families.counts()

    await _check(report, pairs, families, pc, crm, links, poison)
    await _trace(report, pairs, stack, clock_zero, also=families.microsoft,
                 slow=families.slow_links())  # fmt: skip
    lap("check")


async def _find_ids(
    crm: DataverseClient,
    by_referral: dict[str, Pair],
    by_opportunity: dict[str | None, Pair],
    families: fam.Families,
) -> None:
    """Fill in the opportunity of each of Microsoft's pairs and the referral of each of the
    seller's, as the product records them (``cosell_referralid``)."""
    async for row in crm.list_rows("opportunities", select=["opportunityid", "cosell_referralid"]):
        referral_id = str(row.get("cosell_referralid") or "").lower()
        pair = by_referral.get(referral_id)
        if pair is not None and pair.opportunity_id is None:
            pair.opportunity_id = str(row["opportunityid"])
        seller = by_opportunity.get(str(row["opportunityid"]).lower())
        if seller is not None and not seller.referral_id and referral_id:
            seller.referral_id = referral_id
            families.linked(seller.number)


async def _depth(stack: SandboxStack, queue: str) -> int:
    async with QueueClient.from_connection_string(stack.connection_string, queue) as client:
        try:
            return int((await client.get_queue_properties()).approximate_message_count or 0)
        except Exception:  # noqa: BLE001 - no such queue yet: empty
            return 0


# Backfill outcomes that mean the run has not settled yet ("deferred": a creation's lease).
UNSETTLED = ("synced", "created", "error", "deferred")


async def _drain(
    stack: SandboxStack,
    creating: Callable[[], Awaitable[bool]],
    *,
    within_s: float = CREATE_LEASE.total_seconds() + 120,
) -> None:
    """Wait until ``sync-jobs`` has nothing to run and the host runs nothing for a while.

    A job deferred on a creation's lease stays in the queue, invisible for up to the lease
    (``CREATE_LEASE``), and is mostly a loser of a race that has nothing left to do; so once the
    queue holds only invisible messages, quiet means: nothing visible and nothing running for
    longer than a killed host's messages stay hidden, and no seller's pair still waiting for
    its referral (``creating``: that one waits for the lease of a killed creator to end).
    """
    deadline = time.monotonic() + within_s
    quiet_since: float | None = None
    while time.monotonic() < deadline:
        depth = await _depth(stack, SYNC_JOBS_QUEUE)
        running = bool(stack.host and stack.host._inflight)
        busy = running or (depth > 0 and await _visible(stack, SYNC_JOBS_QUEUE))
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        else:
            needed = 2.0 if depth == 0 else float(HOST_OPTIONS["lease_s"]) + 2.0
            if time.monotonic() - quiet_since > needed:
                if not await creating():
                    return
                quiet_since = None
        await asyncio.sleep(0.25)


async def _visible(stack: SandboxStack, queue: str) -> bool:
    """Whether ``queue`` has a message a host could take now (a peek sees only those)."""
    async with QueueClient.from_connection_string(stack.connection_string, queue) as client:
        try:
            return bool(await client.peek_messages(max_messages=1))
        except Exception:  # noqa: BLE001 - no such queue yet: empty
            return False


async def _poison_texts(stack: SandboxStack) -> list[str]:
    """The text of every message in the poison queue (the job JSON, or the worker's
    ``{"reason", "body"}``), taken off the queue: the run is over."""
    texts: list[str] = []
    async with QueueClient.from_connection_string(stack.connection_string, POISON_QUEUE) as client:
        try:
            async for message in client.receive_messages(
                messages_per_page=32, visibility_timeout=600
            ):
                texts.append(_unbase64(str(message.content or "")))
        except Exception:  # noqa: BLE001 - no such queue: nothing poisoned
            return texts
    return texts


def _unbase64(text: str) -> str:
    try:
        return base64.b64decode(text, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return text


async def _backfill(stack: SandboxStack, refusing: set[str]) -> tuple[dict[str, int], list[str]]:
    """``cosell backfill --inline`` in a child process; its outcome counts, and its errors
    (kind, id, problems). An error of a record in ``refusing`` whose problems are a family's
    refusal by design (the unknown currency, an oversize value:
    ``families.refused_by_design``) is counted apart, not listed."""
    with tempfile.TemporaryDirectory() as folder:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.backfill_child", str(Path(folder) / "usage.json"),
            "backfill", "--inline", "--json",
            env={**os.environ, **stack.settings},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        output, _ = await asyncio.wait_for(process.communicate(), timeout=600)
    try:
        document = json.loads(output or b"{}")
    except ValueError:
        return {"unreadable": 1}, []
    outcomes = Counter({str(k): int(v) for k, v in (document.get("outcomes") or {}).items()})
    errors = []
    for failure in document.get("failures") or []:
        problems = [str(p) for p in failure.get("problems") or []]
        label = fam.refused_by_design(problems)
        if str(failure.get("id")).lower() in refusing and label is not None:
            outcomes["error"] -= 1
            outcomes[label] += 1
        else:
            errors.append(f"{failure.get('kind')} {failure.get('id')}: {'; '.join(problems)}")
    return {k: v for k, v in outcomes.items() if v}, errors


STATUS_OF = {("New", 0, 2), ("Active", 0, 1)}


async def _check(
    report: ChaosReport,
    pairs: list[Pair],
    families: fam.Families,
    pc: PartnerCenterClient,
    crm: DataverseClient,
    links: LinkStore,
    poison: list[str],
) -> None:
    referrals = {}
    async for referral in pc.list_referrals():
        if referral.id:
            referrals[referral.id.lower()] = referral
    opportunities: dict[str, list[dict[str, Any]]] = defaultdict(list)
    async for row in crm.list_rows(
        "opportunities",
        select=["opportunityid", "name", "estimatedvalue", "description", "statecode",
                "statuscode", "cosell_referralid", "_parentaccountid_value",
                "_customerid_value", "_parentcontactid_value", "_transactioncurrencyid_value",
                "cosell_syncstatus", "cosell_audit"],
    ):  # fmt: skip
        opportunities[str(row.get("cosell_referralid") or "").lower()].append(row)
    currencies = await fam.currency_codes(crm)
    accounts: dict[str, dict[str, Any]] = {}
    per_customer: Counter[tuple[str, str]] = Counter()
    async for row in crm.list_rows("accounts", select=["accountid", "name", "address1_postalcode"]):
        accounts[str(row["accountid"]).lower()] = row
        per_customer[(str(row.get("name")), str(row.get("address1_postalcode")))] += 1
    contacts: dict[str, dict[str, Any]] = {}
    per_email: Counter[str] = Counter()
    async for row in crm.list_rows("contacts", select=["contactid", "emailaddress1"]):
        contacts[str(row["contactid"]).lower()] = row
        per_email[str(row.get("emailaddress1"))] += 1

    # Referrals: Microsoft's (one per pair it sent, one per marketplace lead), the seller's
    # (one per flagged opportunity) and Microsoft's side of each Shared one the seller's made;
    # anything else is a duplicate.
    known = (
        {p.referral_id for p in pairs}
        | set(families.microsoft.values())
        | families.lead_referrals()
    )
    if len(referrals) != len(known):
        report.duplicates.append(
            f"{len(referrals)} referrals in Partner Center, {len(known)} expected: "
            f"{len(pairs) - len(families.seller)} sent by Microsoft, {len(families.seller)} for "
            f"the seller's opportunities, {len(families.microsoft)} Microsoft's sides of those, "
            f"{len(families.leads)} marketplace leads"
        )
    report.duplicates += [
        f"referral {k} ({referrals[k].external_reference_id or 'no externalReferenceId'}) "
        "is no pair's"
        for k in sorted(set(referrals) - known)
    ]
    orphans = [k for k in opportunities if k not in referrals]
    report.duplicates += [f"opportunity for no known referral ({k or 'no id'})" for k in orphans]
    report.duplicates += [
        f"{n} accounts for customer {c}" for c, n in per_customer.items() if n > 1
    ]
    report.duplicates += [f"{n} contacts with e-mail {e}" for e, n in per_email.items() if n > 1]

    for pair in pairs:
        label = f"pair {pair.number} (referral {pair.referral_id or 'none'})"
        rows = opportunities.get(pair.referral_id, []) if pair.referral_id else []
        found = referrals.get(pair.referral_id)
        if len(rows) > 1:
            report.duplicates.append(f"{label}: {len(rows)} opportunities")
        if not rows or found is None:
            report.missing.append(
                f"{label}: referral {found is not None}, opportunities {len(rows)}"
            )
            continue
        row, referral = rows[0], found
        details = referral.details
        pc_side = {
            "name": referral.name,
            "deal_value": details.deal_value if details else None,
            "notes": details.notes if details else None,
        }
        crm_side = {
            "name": without_mark(row.get("name")),
            "deal_value": row.get("estimatedvalue"),
            "notes": row.get("description"),
        }
        for name in FIELDS:
            if name in families.not_compared(pair.number):
                continue  # the family's own check (check_families) says what must hold
            left, right, want = pc_side[name], crm_side[name], pair.expected(name)
            if name == "deal_value":
                left = float(left) if left is not None else None
                right = float(right) if right is not None else None
                want = float(want)
            if left != right:
                report.unequal.append(f"{label}: {name} PC={left!r} CRM={right!r}")
            allowed = pair.newest_may_keep(name)
            if allowed is not None and name == "deal_value":
                allowed = float(allowed)
            if left == right == allowed and left != want:
                report.settled_by_policy.append(
                    f"{label}: {name} = {left!r} (the other side's later edit {want!r} lost "
                    "the conflict: that side's record was older)"
                )
            elif left != want and right != want:
                report.lost.append(f"{label}: {name} expected {want!r}, PC={left!r} CRM={right!r}")
            elif left != want or right != want:
                report.lost.append(
                    f"{label}: {name} expected {want!r} on both sides, PC={left!r} CRM={right!r}"
                )
        status = (str(referral.status), row.get("statecode"), row.get("statuscode"))
        if status not in (families.status_of(pair.number) or STATUS_OF):
            report.unequal.append(f"{label}: status PC/CRM {status}")
        account = accounts.get(str(row.get("_parentaccountid_value") or "").lower())
        customer = referral.customer_profile.name if referral.customer_profile else None
        if account is None or account.get("name") != customer:
            report.unequal.append(
                f"{label}: account {account and account.get('name')!r} vs {customer!r}"
            )
        if row.get("_customerid_value") != row.get("_parentaccountid_value"):
            report.unequal.append(f"{label}: potential customer is not the account")
        contact = contacts.get(str(row.get("_parentcontactid_value") or "").lower())
        team = referral.customer_profile.team if referral.customer_profile else None
        email = team[0].email if team else None
        if contact is None or contact.get("emailaddress1") != email:
            crm_email = contact.get("emailaddress1") if contact else None
            report.unequal.append(f"{label}: contact e-mail PC={email!r} CRM={crm_email!r}")
        if any(e.field == "contact" for e in pair.edits) and email != pair.expected("contact"):
            report.lost.append(f"{label}: contact expected {pair.expected('contact')!r}, "
                               f"PC={email!r}")  # fmt: skip
        pc_currency = details.currency if details else None
        crm_currency = currencies.get(str(row.get("_transactioncurrencyid_value") or "").lower())
        if families.is_unknown_currency(pair.number):
            # Dataverse cannot hold this currency: the opportunity has the base currency as a
            # stand-in, so the two sides rightly differ and currency is not compared. What must
            # hold instead: Partner Center keeps its currency (no chaos edit changes one), and
            # the opportunity says it is not in sync (Error), as long as the currency is missing.
            if pc_currency != fam.UNKNOWN_CURRENCY:
                report.lost.append(f"{label}: currency {fam.UNKNOWN_CURRENCY} in Partner Center "
                                   f"rewritten to {pc_currency!r}")  # fmt: skip
            if row.get("cosell_syncstatus") != fam.SYNC_STATUS_ERROR:
                report.unequal.append(
                    f"{label}: sync status {row.get('cosell_syncstatus')!r}, expected Error "
                    f"({fam.SYNC_STATUS_ERROR}) while {fam.UNKNOWN_CURRENCY} is not in Dataverse"
                )
        elif pc_currency != crm_currency:
            report.unequal.append(f"{label}: currency PC={pc_currency!r} CRM={crm_currency!r}")

    of_families = await fam.check_families(
        families, {p.number: p.referral_id for p in pairs}, opportunities, pc, crm, links, poison
    )
    report.duplicates += of_families.duplicates
    report.lost += of_families.lost
    report.unequal += of_families.unequal


async def _trace(
    report: ChaosReport,
    pairs: list[Pair],
    stack: SandboxStack,
    zero: float,
    *,
    also: dict[int, str] | None = None,
    slow: set[int] | None = None,
    most: int = 3,
) -> None:
    """For the first pairs with a lost edit or a duplicate, then those of the seller's whose
    referral came late (``slow``): their edits and the product's sync history."""
    problems = [*report.lost, *report.duplicates]
    lost = [p for p in pairs if any(f"pair {p.number} (" in line for line in problems)]
    lost += [p for p in pairs if p.number in (slow or set()) and p not in lost]
    if not lost:
        return
    history = HistoryStore(
        TableClient.from_connection_string(stack.connection_string, HISTORY_TABLE)
    )
    async with history:
        for pair in lost[:most]:
            report.traces.append(f"pair {pair.number} referral {pair.referral_id} "
                                 f"opportunity {pair.opportunity_id}")  # fmt: skip
            for edit in pair.edits:
                report.traces.append(
                    f"  edit {edit.side} {edit.field} = {edit.value!r} acknowledged at "
                    f"+{edit.at - zero:.2f} s ({_wall(edit.at)})"
                )
            entries: list[HistoryEntry] = []
            # ``also``: another referral of the pair (Microsoft's side of its engagement).
            for key in (pair.referral_id, pair.opportunity_id, (also or {}).get(pair.number)):
                if key:
                    entries += await history.list_entries(key, limit=50)
            for entry in sorted(entries, key=lambda e: e.at):
                changes = ", ".join(
                    f"{c.field} {c.direction} {c.old!r}→{c.new!r}" for c in entry.changes
                )
                report.traces.append(
                    f"  sync {entry.at:%H:%M:%S.%f} {entry.reason} → {entry.outcome}"
                    + (f" [{changes}]" if changes else "")
                    + (f" conflicts {entry.conflicts}" if entry.conflicts else "")
                    + (f" errors {entry.errors}" if entry.errors else "")
                )


def _wall(monotonic_at: float) -> str:
    moment = datetime.now(UTC) - timedelta(seconds=time.monotonic() - monotonic_at)
    return f"{moment:%H:%M:%S.%f}"
