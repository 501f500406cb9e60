"""uvicorn in the background of a running event loop (the host's and the emulators' servers)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Iterator

import uvicorn


class _QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its owner (several run in one loop)."""

    task: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


QuietServer = _QuietServer


def quiet_server(config: uvicorn.Config) -> _QuietServer:
    return _QuietServer(config)


async def serve_in_background(server: uvicorn.Server, *, within_s: float = 15.0) -> int:
    """Start ``server`` on the running loop; return the port it really listens on.

    The socket is bound here, not by uvicorn, so a busy port is an ``OSError`` naming the
    address (uvicorn would log and call ``sys.exit``) and port 0 yields the port picked.
    """
    host, port = server.config.host, server.config.port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except OSError as exc:
        listener.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    task = asyncio.ensure_future(server.serve(sockets=[listener]))
    if isinstance(server, _QuietServer):
        server.task = task
    deadline = time.monotonic() + within_s
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("the HTTP server stopped while starting")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the HTTP server did not start in time")
        await asyncio.sleep(0.01)
    return int(server.servers[0].sockets[0].getsockname()[1])


async def stop_server(server: _QuietServer, grace_s: float) -> None:
    """Let ``server`` finish its requests (``grace_s``), then force it."""
    server.should_exit = True
    task = server.task
    if task is None:
        return
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), grace_s)
    if not task.done():
        server.force_exit = True
        await asyncio.gather(task, return_exceptions=True)
