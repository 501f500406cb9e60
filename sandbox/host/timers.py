"""Timer triggers: 6-field NCRONTAB schedules, past-due runs, and the singleton lock (§2.3).

Runs of one timer never overlap on a host (a lock per timer, which admin-API runs take too). A
run that starts more than a second late (the previous one overran) gets ``past_due=True``;
occurrences missed meanwhile are not replayed one by one. With a ``TableLease`` (several hosts on
one storage, ``FunctionHost(host_id=...)``) the timer's listener runs on one instance at a time,
as the Azure host's ``SingletonMode.Listener`` lock does: the instance holding the lease fires the
schedule and renews the lease; the others retry every third of a lease period and take over once
it is released or has expired. ``runOnStartup`` fires when the listener starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from azure.functions.timer import TimerRequest

from sandbox.host.clock import Clock, wait_or_stop
from sandbox.host.indexing import FunctionSpec
from sandbox.host.invoker import Invoker
from sandbox.host.queues import cancel
from sandbox.host.singleton import TableLease
from shared.ncrontab import Schedule

logger = logging.getLogger("sandbox.host")


class TimerListener:
    """Fires one timer function on its schedule until ``stop`` is set."""

    def __init__(
        self,
        spec: FunctionSpec,
        schedule: Schedule,
        invoker: Invoker,
        *,
        clock: Clock,
        stop: asyncio.Event,
        lease: TableLease | None = None,
    ) -> None:
        self.spec = spec
        self.schedule = schedule
        self.invoker = invoker
        self.clock = clock
        self.lock = asyncio.Lock()  # one run at a time on this host
        self.lease = lease
        self._stop = stop

    async def run(self) -> None:
        if self.lease is None:
            await self._fire_on_schedule()
            return
        retry_s = self.lease.period_s / 3
        while not self._stop.is_set():
            try:
                acquired = await self.lease.acquire()
            except Exception as exc:  # noqa: BLE001 - storage hiccup: try again later
                logger.warning(
                    "Timer %s: lease check failed: %s", self.spec.name, type(exc).__name__
                )
                acquired = False
            if acquired:
                logger.info("Timer %s: this instance holds its singleton lock", self.spec.name)
                await self._run_while_held(self.lease)
                continue
            if await wait_or_stop(self._stop, retry_s, self.clock):
                return

    async def _run_while_held(self, lease: TableLease) -> None:
        renewal = asyncio.ensure_future(self._keep(lease))
        firing = asyncio.ensure_future(self._fire_on_schedule())
        try:
            await asyncio.wait({renewal, firing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            await cancel(renewal)
            await cancel(firing)
        if not self._stop.is_set():
            logger.warning("Timer %s: singleton lock lost; waiting to get it back", self.spec.name)

    async def _keep(self, lease: TableLease) -> None:
        """Renew every third of the period; return once the lease is lost or expired."""
        renewed = self.clock.monotonic()
        while not await wait_or_stop(self._stop, lease.period_s / 3, self.clock):
            try:
                if not await lease.acquire():
                    return
                renewed = self.clock.monotonic()
            except Exception as exc:  # noqa: BLE001 - retried until the lease would expire
                logger.warning("Timer %s: renewal failed: %s", self.spec.name, type(exc).__name__)
                if self.clock.monotonic() - renewed > lease.period_s:
                    return
        await asyncio.Event().wait()  # stopping: keep the lease until the host releases it

    async def release(self) -> None:
        if self.lease is not None:
            with contextlib.suppress(Exception):
                await self.lease.release()

    async def _fire_on_schedule(self) -> None:
        """Fire on schedule; runs never overlap; a late run gets ``past_due=True``."""
        spec, schedule, clock = self.spec, self.schedule, self.clock
        if spec.trigger.get("runOnStartup"):
            async with self.lock:
                await self._fire(past_due=False, last=None)
        last = clock.now()
        while not self._stop.is_set():
            due = schedule.next_after(last)
            delay = (due - clock.now()).total_seconds()
            if delay > 0 and await wait_or_stop(self._stop, delay, clock):
                return
            early = (due - clock.now()).total_seconds()
            if early > 0:  # the loop's timer can wake a hair early
                await clock.sleep(early + 0.005)
            past_due = (clock.now() - due) > timedelta(seconds=1)
            async with self.lock:
                await self._fire(past_due=past_due, last=last)
            # Occurrences missed while the run was going are not replayed one by one.
            last = clock.now().replace(microsecond=0) if past_due else due

    async def run_now(self) -> None:
        """An admin-API run: now, after any run in progress on this host."""
        with contextlib.suppress(Exception):
            async with self.lock:
                await self.invoker.call(self.spec, TimerRequest(past_due=False))

    async def _fire(self, *, past_due: bool, last: datetime | None) -> None:
        now = self.clock.now()
        status = {
            "Last": (last or now).isoformat(),
            "Next": self.schedule.next_after(now).isoformat(),
            "LastUpdated": now.isoformat(),
        }
        timer = TimerRequest(
            past_due=past_due, schedule_status=status, schedule={"AdjustForDST": True}
        )
        with contextlib.suppress(Exception):  # logged by invoke(); a timer never retries itself
            await self.invoker.call(self.spec, timer)
