"""An ASGI app under uvicorn in a daemon thread, on a free port of 127.0.0.1 (never a fixed
one), optionally over TLS: the CLI tests serve the emulators this way, and the test of
Microsoft's Dataverse SDK (which refuses http) serves one with a certificate made at test time."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import uvicorn


class ServerThread:
    def __init__(self, app: Any, *, tls: tuple[Path, Path] | None = None) -> None:
        """``tls``: the server's certificate and key files (PEM)."""
        options: dict[str, Any] = {}
        if tls is not None:
            options = {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])}
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", **options)
        self.scheme = "https" if tls is not None else "http"
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"{self.scheme}://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
