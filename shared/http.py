"""Serving an ASGI application inside a process that already runs an event loop.

`memberflow up`, `memberflow api` and each worker process serve HTTP beside their own work, on
their own event loop. uvicorn's `Server.serve` would take over SIGINT and SIGTERM (our stop
handlers set an event and drain the workers first), and on a port that is taken it logs and
calls `sys.exit`. So the socket is bound here, where a busy port is one clear error, and the
server runs without signal handling:

    server = await HttpServer.start(app, "127.0.0.1", 8787)   # PortBusy if taken
    print(server.url)
    ...
    await server.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from shared.trouble import PortBusy as PortBusy  # raised here

log = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # The process's own stop handlers stay in charge; `stop()` ends the server.
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0: any free port), or PortBusy naming the setting."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
        raise PortBusy(exc.errno or 0, f"HTTP address {host}:{port} {why}; choose another with "
                                       "MEMBERFLOW_HTTP_PORT or --http-port") from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class HttpServer:
    """One ASGI application served on one socket until `stop()`."""

    def __init__(self, server: _Server, task: asyncio.Task[None], sock: socket.socket) -> None:
        self._server = server
        self._task = task
        self._sock = sock
        host, port = sock.getsockname()[:2]
        self.port: int = port
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}"

    @classmethod
    async def start(cls, app: Any, host: str, port: int) -> HttpServer:
        sock = bind(host, port)
        config = uvicorn.Config(app, lifespan="off", access_log=False, log_level="warning",
                                http="httptools", server_header=False,
                                timeout_graceful_shutdown=5)
        server = _Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]), name=f"http:{port}")
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT_S
        while not server.started:
            if task.done() or asyncio.get_running_loop().time() > deadline:
                server.should_exit = True
                sock.close()
                if task.done():
                    task.result()       # its error, if it failed
                raise RuntimeError(f"HTTP server on {host}:{port} did not start")
            await asyncio.sleep(0.01)   # uvicorn offers no event for "listening"
        return cls(server, task, sock)

    async def stop(self) -> None:
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._sock.close()
