"""Start Azurite's queue and table services (from ``node_modules``) and stop them again.

Used by the test session and by ``python -m sandbox up``. Each service listens on the port it
is given; port 0 means "any free port": one is picked by binding a socket to port 0, and if
another process takes it before Azurite binds it (Azurite exits), a new one is picked. Nothing
assumes 10001/10002 are free.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ACCOUNT = "devstoreaccount1"
# Azurite's published development key (not a secret: it only opens the local emulator).
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_READY = re.compile(r"successfully (?:listens|started) on (?:https?://)?[\w.\[\]:-]*?:(\d+)")
_ATTEMPTS = 5


def connection_string(*, queue_port: int, table_port: int, host: str = "127.0.0.1") -> str:
    """The full devstoreaccount1 connection string for these ports (no blob endpoint)."""
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"QueueEndpoint=http://{host}:{queue_port}/{ACCOUNT};"
        f"TableEndpoint=http://{host}:{table_port}/{ACCOUNT};"
    )


@dataclass
class Azurite:
    """Azurite queue + table, in memory, started by ``start()`` and stopped by ``stop()``."""

    queue_port: int = 0
    table_port: int = 0
    host: str = "127.0.0.1"
    _processes: list[subprocess.Popen[str]] = field(default_factory=list, repr=False)

    @property
    def connection_string(self) -> str:
        return connection_string(
            queue_port=self.queue_port, table_port=self.table_port, host=self.host
        )

    def start(self, *, timeout: float = 60.0) -> Azurite:
        try:
            self.queue_port = self._launch("queue", self.queue_port, timeout)
            self.table_port = self._launch("table", self.table_port, timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for process in self._processes:
            if process.poll() is None:
                process.terminate()
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _launch(self, service: str, port: int, timeout: float) -> int:
        for _ in range(_ATTEMPTS if port == 0 else 1):
            chosen = port or free_port(self.host)
            started = self._launch_on(service, chosen, timeout)
            if started:
                return chosen
        raise RuntimeError(f"azurite-{service} could not bind a port on {self.host}")

    def _launch_on(self, service: str, port: int, timeout: float) -> bool:
        """Start one service on ``port``; False if it exited (port taken), error on timeout."""
        binary = _binary(f"azurite-{service}")
        process = subprocess.Popen(
            [
                binary,
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--loose",
                f"--{service}Host",
                self.host,
                f"--{service}Port",
                str(port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self._processes.append(process)
        found: list[int] = []
        seen: list[str] = []
        done = threading.Event()

        def read() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                if not done.is_set():
                    seen.append(line.rstrip())
                    match = _READY.search(line)
                    if match and int(match.group(1)) == port:
                        found.append(port)
                        done.set()
            done.set()

        # Keep draining stdout for the process's whole life so it never blocks on a full pipe.
        threading.Thread(target=read, name=f"azurite-{service}-log", daemon=True).start()
        if not done.wait(timeout):
            tail = "\n".join(seen[-10:])
            raise RuntimeError(f"azurite-{service} did not start within {timeout:.0f}s:\n{tail}")
        if found:
            return True
        process.wait()
        self._processes.remove(process)
        if port_in_use(seen):
            return False
        tail = "\n".join(seen[-10:])
        raise RuntimeError(f"azurite-{service} exited at start:\n{tail}")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now (the caller must cope with losing it to someone else)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def port_in_use(log: list[str]) -> bool:
    return any("EADDRINUSE" in line for line in log)


def _binary(name: str) -> str:
    local = ROOT / "node_modules" / ".bin" / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: run `make install` (npm ci installs Azurite)")
    return found
