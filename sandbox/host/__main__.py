"""``python -m sandbox.host``: one host instance in a process of its own, until SIGTERM/SIGINT.

What ``HostProcess`` (and so ``SANDBOX_HOSTS=N python -m sandbox up``) starts, once per instance.
The app settings come from the environment, as in Azure, and so does the function key
(``SANDBOX_FUNCTION_KEY``, default ``sandbox``). When the host listens it prints one
line ``listening <url>`` on standard output; logs go to standard error, each line naming the
instance (``--name``). ``--options`` is a JSON object of ``FunctionHost`` keyword options
(``max_polling_interval``, ``lease_s``, ``singleton_lease_s``...); ``--on-stop module:function``
names a coroutine function run at stop (e.g. ``shared.runtime:close_runtime``). The instance
also stops when the process that started it is gone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sandbox.host.function_host import FunctionHost


def _hook(dotted: str) -> Callable[[], Awaitable[None]]:
    module, _, name = dotted.partition(":")

    async def run() -> None:
        # Imported at stop: the app's modules are loaded by the host, after the settings.
        function: Callable[[], Awaitable[None]] = getattr(importlib.import_module(module), name)
        await function()

    return run


async def _stop_when_orphaned(stop: asyncio.Event) -> None:
    """Stop if the process that started this one ends (a killed ``sandbox up``): no strays."""
    parent = os.getppid()
    while os.getppid() == parent:  # noqa: ASYNC110 - no event tells of a parent's end
        await asyncio.sleep(1.0)
    logging.getLogger("sandbox.host").warning("Parent process gone: stopping")
    stop.set()


async def serve(arguments: argparse.Namespace) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    options: dict[str, Any] = json.loads(arguments.options or "{}")
    host = FunctionHost(
        arguments.module,
        app_dir=arguments.app_dir,
        host=arguments.bind,
        port=arguments.port,
        function_key=os.environ.get("SANDBOX_FUNCTION_KEY") or "sandbox",
        host_id=arguments.host_id,
        instance_id=arguments.name,
        on_stop=[_hook(dotted) for dotted in arguments.on_stop],
        **options,
    )
    async with host:
        print(f"listening {host.url}", flush=True)
        watch = asyncio.ensure_future(_stop_when_orphaned(stop))
        await stop.wait()
        watch.cancel()
        logging.getLogger("sandbox.host").info("Instance %s stopping", host.instance_id)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.host", description=__doc__)
    parser.add_argument("--module", default="function_app")
    parser.add_argument("--app-dir", type=Path, default=None)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--host-id", default=None, help="shared by every instance of the app")
    parser.add_argument("--name", default=None, help="this instance's id")
    parser.add_argument("--options", default=None, help="FunctionHost options as JSON")
    parser.add_argument("--on-stop", action="append", default=[], help="module:coroutine")
    arguments = parser.parse_args(argv)
    name = arguments.name or "host"
    logging.basicConfig(
        level=os.environ.get("SANDBOX_LOG_LEVEL", "INFO").upper(),
        format=f"%(asctime)s %(levelname)s [{name}] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        return asyncio.run(serve(arguments))
    except (OSError, RuntimeError, ValueError) as exc:
        print(f"sandbox.host [{name}]: could not start: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
