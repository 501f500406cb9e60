"""``HostProcess``: one host instance in a process of its own, as a separate Azure instance is.

``await HostProcess(...).start()`` runs ``python -m sandbox.host`` with the given environment (the
app settings: every instance on the same storage and queues) and returns once it listens;
``url`` and ``port`` are then the instance's. ``stop()`` ends it as the platform does (SIGTERM:
running invocations finish, the timers' leases are released); ``kill()`` ends it as a crash does
(SIGKILL: its queue messages come back when their visibility lease ends, its timers move to
another instance when their singleton lease expires). ``status()`` reads its
``/admin/host/status`` (functions, invocations per function, the timers it holds).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]


class HostProcess:
    """``python -m sandbox.host`` for one instance (``name``) of an app shared by ``host_id``."""

    def __init__(
        self,
        module: str,
        *,
        name: str,
        host_id: str,
        environ: Mapping[str, str],
        function_key: str = "sandbox",
        app_dir: Path | None = None,
        bind: str = "127.0.0.1",
        port: int = 0,
        options: Mapping[str, Any] | None = None,
        on_stop: Sequence[str] = (),
    ) -> None:
        self.module = module
        self.name = name
        self.host_id = host_id
        self.environ = {**environ, "SANDBOX_FUNCTION_KEY": function_key}
        self.function_key = function_key
        self.app_dir = app_dir
        self.bind = bind
        self.port = port
        self.options = dict(options or {})
        self.on_stop = list(on_stop)
        self.process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.bind}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "sandbox.host", "--module", self.module]
        command += ["--name", self.name, "--host-id", self.host_id]
        command += ["--bind", self.bind, "--port", str(self.port)]
        if self.app_dir is not None:
            command += ["--app-dir", str(self.app_dir)]
        if self.options:
            command += ["--options", json.dumps(self.options)]
        for hook in self.on_stop:
            command += ["--on-stop", hook]
        return command

    async def start(self, *, within_s: float = 60.0) -> HostProcess:
        self.process = await asyncio.to_thread(
            partial(
                subprocess.Popen,
                self.command(),
                cwd=self.app_dir or ROOT,
                env=self.environ,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
        try:
            line = await asyncio.wait_for(asyncio.to_thread(self._first_line), within_s)
        except TimeoutError:
            self.kill()
            message = f"host instance {self.name} did not start in {within_s:.0f}s"
            raise RuntimeError(message) from None
        if not line.startswith("listening "):
            code = self.process.wait()
            raise RuntimeError(f"host instance {self.name} exited with status {code}")
        self.port = int(line.rsplit(":", 1)[1])
        # Anything else the instance prints must not fill the pipe and block it.
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _first_line(self) -> str:
        assert self.process is not None and self.process.stdout is not None
        return self.process.stdout.readline().strip()

    def _drain(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            sys.stderr.write(f"[{self.name}] {line}")

    async def status(self) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=10) as client:
            answer = await client.get(
                f"{self.url}/admin/host/status", params={"code": self.function_key}
            )
            answer.raise_for_status()
            status: dict[str, Any] = answer.json()
            return status

    async def stop(self, *, within_s: float = 30.0) -> int | None:
        """SIGTERM and wait (SIGKILL after ``within_s``); the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, within_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.wait()

    def kill(self) -> None:
        """End the instance at once, as a crash would (SIGKILL)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
