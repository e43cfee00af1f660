"""Serve the API and run the service graph in one event loop until SIGTERM or Ctrl-C; SIGHUP reloads.

A reload (``kill -HUP``, ``systemctl reload``) reads devices.yaml again. A file with errors is refused
with every error logged, and the running configuration goes on; a valid one replaces the service
graph: the old one stops as on SIGTERM (everything accepted is written, MQTT messages not yet stored
stay with the broker), the new one starts and the API serves it. Like a restart, a reload raises no
alert of its own: every device gets its whole interval again before it counts as silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from api.app import create_app
from core.config import Config, ConfigError, load_config
from service import runtime
from service.services import Services, build_services

log = logging.getLogger("bafang.serve")

Hook = Callable[[Services], Awaitable[None]]


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


def check(config: Config) -> list[str]:
    """Problems that only show once the protections' defaults meet the overrides (besides load errors)."""
    from rules.protections import check_config

    return check_config(config)


class _Service:
    """The running graph, swapped on reload."""

    def __init__(self, services: Services, app: FastAPI) -> None:
        self.services = services
        self.app = app
        self._lock = asyncio.Lock()

    async def reload(self, path: Path) -> None:
        async with self._lock:
            try:
                config = await asyncio.to_thread(load_config, path)
            except ConfigError as exc:
                for issue in exc.issues:
                    log.error("reload refused: %s", issue)
                log.error(
                    "reload refused: %s has %d error(s); still running the previous one",
                    path,
                    len(exc.issues),
                )
                return
            problems = check(config)
            if problems:
                for problem in problems:
                    log.error("reload refused: %s: %s", path, problem)
                return
            log.info("reloading %s", path)
            old = self.services
            new = build_services(config, clock=old.clock)
            await runtime.stop(old)
            try:
                await runtime.start(new)
            except Exception:
                log.exception("reload: the new configuration did not start; starting the previous one again")
                await runtime.stop(new)
                new = build_services(old.config, clock=old.clock)
                await runtime.start(new)
            self.services = new
            self.app.state.services = new
            log.info("reloaded %s: %d rooms, %d devices", path, len(config.rooms), len(config.devices))


async def serve(
    config: Config,
    sock: socket.socket,
    *,
    banner: str | None = None,
    started: Hook | None = None,
    stopping: Hook | None = None,
    reload_from: Path | None = None,
) -> None:
    """Start the services, serve HTTP on sock; on SIGTERM/SIGINT stop serving, then stop the services."""
    services = build_services(config)
    loop = asyncio.get_running_loop()
    service: _Service | None = None
    signals = [signal.SIGTERM, signal.SIGINT]
    reloads: set[asyncio.Task[None]] = set()
    try:
        await runtime.start(services)
        if started is not None:
            await started(services)
        app = create_app(services)
        service = _Service(services, app)
        server = _Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
        for sig in signals:
            loop.add_signal_handler(sig, _request_exit, server, sig)
        if reload_from is not None:
            signals.append(signal.SIGHUP)

            def hup(svc: _Service = service, path: Path = reload_from) -> None:
                task = loop.create_task(svc.reload(path))
                reloads.add(task)
                task.add_done_callback(reloads.discard)

            loop.add_signal_handler(signal.SIGHUP, hup)
        print(banner or f"Bafang 八防 is running: {url_of(sock)}", flush=True)
        await server.serve(sockets=[sock])
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        for task in list(reloads):
            with contextlib.suppress(Exception):
                await task
        current = service.services if service is not None else services
        if stopping is not None:
            await stopping(current)
        await runtime.stop(current)


def _request_exit(server: uvicorn.Server, sig: signal.Signals) -> None:
    if server.should_exit:
        server.force_exit = True  # a second Ctrl-C: stop waiting for open connections
    server.should_exit = True
    log.info("%s received: stopping", sig.name)
