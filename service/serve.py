"""Serve the API and run the collectors in one event loop until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator

import uvicorn

from core.config import Config
from service.runtime import Runtime

log = logging.getLogger("bafang.serve")

Hook = Callable[[Runtime], Awaitable[None]]


class _Server(uvicorn.Server):
    """uvicorn's server without its signal handling, which re-raises SIGTERM after serving and so
    would end the process before the runtime flushes; serve() handles the signals instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def url_of(sock: socket.socket) -> str:
    """The URL a person opens for a listening socket."""
    host, port = sock.getsockname()[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
    return f"http://{shown}:{port}/"


async def serve(
    config: Config,
    sock: socket.socket,
    *,
    banner: str | None = None,
    started: Hook | None = None,
    stopping: Hook | None = None,
) -> None:
    """Start the runtime, serve HTTP on sock; on SIGTERM/SIGINT stop serving, then stop the runtime."""
    runtime = Runtime(config)
    loop = asyncio.get_running_loop()
    try:
        await runtime.start()
        if started is not None:
            await started(runtime)
        server = _Server(uvicorn.Config(runtime.app(), log_level="warning", access_log=False, lifespan="off"))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _request_exit, server, sig)
        print(banner or f"Bafang 八防 is running: {url_of(sock)}", flush=True)
        await server.serve(sockets=[sock])
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if stopping is not None:
            await stopping(runtime)
        await runtime.stop()


def _request_exit(server: uvicorn.Server, sig: signal.Signals) -> None:
    if server.should_exit:
        server.force_exit = True  # a second Ctrl-C: stop waiting for open connections
    server.should_exit = True
    log.info("%s received: stopping", sig.name)
