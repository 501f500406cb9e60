"""``python -m sandbox up``: run the whole sandbox (SPEC 9) until Ctrl-C or SIGTERM.

Ports come from ``SANDBOX_HOST_PORT`` (7071), ``SANDBOX_PC_PORT`` (7101),
``SANDBOX_DATAVERSE_PORT`` (7102), ``SANDBOX_QUEUE_PORT`` (10001) and ``SANDBOX_TABLE_PORT``
(10002), 0 meaning any free port; the function key from ``SANDBOX_FUNCTION_KEY`` (``sandbox``).
``SANDBOX_HOSTS=N`` runs N host instances, each a process of its own on a free port, behind a
round-robin front door on the host port (queue messages and timers shared as in Azure).
App settings set in the environment (``CRM_MAPPING``, ``SYNC_COSELL_ONLY``...) go to the app, over
the sandbox's values; a wrong one stops start-up before anything runs, with the app's message
naming it (for the mapping, its JSON path) on standard error and exit status 1.
Standard output gets a few lines with the URLs and then exactly one line ``ready``; logs go to
standard error. The settings it runs with are written to ``.sandbox/local.settings.json``
(``SANDBOX_LOCAL_SETTINGS`` names another file) for ``cosell --settings-file``.
``python -m sandbox seed`` then creates sample referrals and flagged opportunities in it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import httpx

from sandbox.stack import LOCAL_SETTINGS, SandboxStack
from shared.errors import SettingsError


def _say(line: str) -> None:
    print(line, flush=True)


async def up() -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Not every platform lets asyncio handle signals; Ctrl-C still interrupts there.
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    stack = SandboxStack.from_environ(os.environ)
    stack.check_settings()
    async with stack:
        key = stack.function_key
        front = f"; round-robin over {len(stack.processes)} instances" if stack.processes else ""
        _say(f"Functions host       {stack.host_url}  (function key: {key}{front})")
        for process in stack.processes:  # SANDBOX_HOSTS=N: the front door above, then each
            _say(f"  instance {process.name:<11} {process.url}  (pid {process.pid})")
        functions = stack.functions
        for name in sorted(functions):
            spec = functions[name]
            if spec.trigger_type == "httpTrigger":
                _say(f"  {name:<20} {stack.function_url(name)}")
            else:
                _say(f"  {name:<20} {spec.trigger_type}")
        if "dashboard" in functions:  # the admin's page (issue 18)
            _say(f"Dashboard            {stack.function_url('dashboard')}  (open in a browser)")
        _say(f"Partner Center       {stack.settings['PARTNER_CENTER_API_URL']}")
        _say(f"Dataverse            {stack.dataverse_url}")
        _say(f"Azurite              queue {stack.queue_port}, table {stack.table_port}")
        if stack.webhook_url is None:
            _say("Webhook              not registered (function_app has no partner_center_webhook)")
        else:
            _say("Webhook              registered with the Partner Center emulator")
        if stack.push_url is not None:
            poll = stack.settings.get("DATAVERSE_POLL_SCHEDULE", "")
            _say(f"Dataverse push       registered (service endpoint and steps); poll {poll!r}")
        written = stack.write_local_settings(
            Path(os.environ.get("SANDBOX_LOCAL_SETTINGS") or LOCAL_SETTINGS)
        )
        shown = written.relative_to(Path.cwd()) if written.is_relative_to(Path.cwd()) else written
        _say(f"Settings             {shown}")
        _say(f"  cosell --settings-file {shown} status")
        if not stop.is_set():  # Ctrl-C during start-up: stop without claiming to be ready
            _say("ready")
        await stop.wait()
        logging.getLogger("sandbox").info("Stopping the sandbox")
    return 0


async def run_demo() -> int:
    from sandbox.demo import demo

    # Any free ports unless SANDBOX_* say otherwise: the demo must run on a busy machine too.
    ports = ("HOST", "PC", "DATAVERSE", "QUEUE", "TABLE")
    environ = {**{f"SANDBOX_{name}_PORT": "0" for name in ports}, **os.environ}
    stack = SandboxStack.from_environ(environ)
    stack.check_settings()
    return await demo(stack)


def run_seed(arguments: argparse.Namespace) -> int:
    from sandbox.seed import read_settings, seed

    try:
        done = seed(
            read_settings(arguments.settings_file),
            referrals=arguments.referrals,
            opportunities=arguments.opportunities,
        )
    except (OSError, ValueError, KeyError, httpx.HTTPError) as exc:
        print(f"sandbox seed: {exc}", file=sys.stderr)
        return 1
    for referral_id in done.referrals:
        _say(f"referral from Microsoft     {referral_id}  (the app creates its opportunity)")
    for opportunity_id in done.opportunities:
        _say(f"opportunity to share        {opportunity_id}  (the app creates its referral)")
    _say(f"then: cosell --settings-file {arguments.settings_file} drift")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("up", help="start Azurite, both emulators and the local Functions host")
    commands.add_parser("demo", help="start the sandbox, play a scripted co-sell story, print it")
    seeding = commands.add_parser(
        "seed", help="create sample referrals and flagged opportunities in a running sandbox"
    )
    seeding.add_argument("--referrals", type=int, default=3, help="referrals from Microsoft")
    seeding.add_argument("--opportunities", type=int, default=2, help="opportunities to share")
    seeding.add_argument(
        "--settings-file",
        type=Path,
        default=Path(os.environ.get("SANDBOX_LOCAL_SETTINGS") or LOCAL_SETTINGS),
        help="the settings `sandbox up` wrote (default .sandbox/local.settings.json)",
    )
    arguments = parser.parse_args(argv)
    if arguments.command == "seed":
        return run_seed(arguments)
    logging.basicConfig(
        level=os.environ.get("SANDBOX_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # The storage SDK logs every request and response header at INFO.
    logging.getLogger("azure").setLevel(logging.WARNING)
    # httpx logs each request URL at INFO, and those carry the function key (?code=).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if arguments.command == "demo":
        # The story's table is the output; the host's per-invocation logs would drown it.
        logging.getLogger().setLevel(os.environ.get("SANDBOX_LOG_LEVEL", "WARNING").upper())
    try:
        if arguments.command == "demo":
            return asyncio.run(run_demo())
        return asyncio.run(up())
    except SettingsError as exc:
        # What the app would refuse at its first invocation (and its health endpoint report):
        # every wrong setting on its own line, the mapping's by JSON path.
        print(f"sandbox: could not start: {exc}", file=sys.stderr)
        return 1
    except (OSError, RuntimeError, ValueError) as exc:
        # A busy port, Azurite missing, a wrong SANDBOX_* value: say it in one line.
        print(f"sandbox: could not start: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
