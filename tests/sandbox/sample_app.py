"""A tiny Functions app for the local host's tests: one function per trigger kind.

Every setting it uses is a ``%SETTING%`` so each test can give its own queue names and schedule.
What the functions saw is kept in ``SEEN`` so tests can assert it (the host runs in-process). The
timer reads the time and sleeps on ``SEEN.clock``, the host's clock in timer tests (virtual there).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

import azure.functions as func

from sandbox.host import SYSTEM_CLOCK, Clock

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@dataclass
class Seen:
    """What the functions were called with (guarded: sync functions run in threads)."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    ticks: list[tuple[datetime, bool]] = field(default_factory=list)
    # (message id, dequeue count, body, time.monotonic() at the call)
    messages: list[tuple[str, int | None, bytes, float]] = field(default_factory=list)
    running: int = 0
    most_running: int = 0
    tick_seconds: float = 0.0  # how long each timer run takes
    ticks_running: int = 0
    most_ticks_running: int = 0
    startups: int = 0
    clock: Clock = SYSTEM_CLOCK  # what the timer reads the time from and sleeps on

    def reset(self) -> None:
        with self.lock:
            self.ticks.clear()
            self.messages.clear()
            self.running = self.most_running = 0
            self.tick_seconds = 0.0
            self.ticks_running = self.most_ticks_running = 0
            self.startups = 0
            self.clock = SYSTEM_CLOCK


SEEN = Seen()


@app.route(route="items/{item_id:int}/{label?}", methods=["GET", "POST"])
def item(req: func.HttpRequest) -> func.HttpResponse:
    """Sync on purpose (runs in the host's thread pool); echoes what the host handed over."""
    answer = {
        "method": req.method,
        "route_params": dict(req.route_params),
        "params": dict(req.params),
        "body": req.get_body().decode("utf-8"),
        "header": req.headers.get("x-test"),
    }
    return func.HttpResponse(json.dumps(answer), status_code=200, mimetype="application/json")


@app.route(route="open", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
async def open_door(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    return func.HttpResponse(f"open {context.function_name}", status_code=200)


@app.route(route="boom", methods=["GET"])
async def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("this text must not reach the HTTP answer")


@app.route(route="enqueue", methods=["POST"])
@app.queue_output(arg_name="out", queue_name="%TEST_OUT_QUEUE%", connection="TEST_STORAGE")
async def enqueue(req: func.HttpRequest, out: func.Out[str]) -> func.HttpResponse:
    out.set(req.get_body().decode("utf-8"))
    return func.HttpResponse(status_code=202)


@app.timer_trigger(arg_name="timer", schedule="%TEST_SCHEDULE%")
async def tick(timer: func.TimerRequest) -> None:
    with SEEN.lock:
        SEEN.ticks.append((SEEN.clock.now(), timer.past_due))
        SEEN.ticks_running += 1
        SEEN.most_ticks_running = max(SEEN.most_ticks_running, SEEN.ticks_running)
    try:
        if SEEN.tick_seconds:
            await SEEN.clock.sleep(SEEN.tick_seconds)
    finally:
        with SEEN.lock:
            SEEN.ticks_running -= 1


@app.timer_trigger(arg_name="timer", schedule="0 0 0 1 1 *", run_on_startup=True)
async def on_startup(timer: func.TimerRequest) -> None:
    """Scheduled once a year; runs at host start because of run_on_startup."""
    with SEEN.lock:
        SEEN.startups += 1


@app.queue_trigger(arg_name="msg", queue_name="%TEST_QUEUE%", connection="TEST_STORAGE")
async def work(msg: func.QueueMessage) -> None:
    """Bodies starting with ``fail`` always raise; ``slow`` ones take half a second."""
    body = msg.get_body()
    with SEEN.lock:
        count = getattr(msg, "dequeue_count", None)
        SEEN.messages.append((msg.id or "", count, body, time.monotonic()))
        SEEN.running += 1
        SEEN.most_running = max(SEEN.most_running, SEEN.running)
    try:
        if body.startswith(b"slow"):
            await asyncio.sleep(0.5)
        if body.startswith(b"fail"):
            raise RuntimeError("fails on purpose")
    finally:
        with SEEN.lock:
            SEEN.running -= 1
