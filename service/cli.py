"""The `bafang` command: check a configuration, run the service, run the demo."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from pathlib import Path
from typing import Annotated

import typer

from core.config import Config, ConfigError, load_config

app = typer.Typer(
    help="Bafang 八防: archive-room monitoring (temperature, humidity, smoke, door, leak, RFID...).",
    no_args_is_help=True,
    add_completion=False,
)

ConfigOpt = Annotated[Path, typer.Option("-c", "--config", help="devices.yaml to use", show_default=True)]
HostOpt = Annotated[str, typer.Option("--host", help="address the API listens on")]
PortOpt = Annotated[int, typer.Option("--port", help="port the API listens on (0 = any free port)")]
LogOpt = Annotated[str, typer.Option("--log-level", help="debug, info, warning or error")]


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # pymodbus and amqtt log every retry and every connection at INFO: keep ours readable.
    noisy_loggers = (
        "pymodbus",
        "amqtt",
        "transitions",
        "alembic",
        "apscheduler.executors",
        "apscheduler.scheduler",
    )
    for noisy in noisy_loggers:
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def _load(path: Path) -> Config:
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        for issue in exc.issues:
            typer.echo(str(issue), err=True)
        typer.echo(f"{path}: {len(exc.issues)} error(s)", err=True)
        raise typer.Exit(2) from None
    from rules.protections import check_config

    # Overrides that contradict the room kind's defaults only show once both meet.
    problems = check_config(cfg)
    if problems:
        for problem in problems:
            typer.echo(f"{path}: {problem}", err=True)
        typer.echo(f"{path}: {len(problems)} error(s)", err=True)
        raise typer.Exit(2)
    return cfg


@app.command()
def check(
    file: Annotated[Path | None, typer.Argument(help="devices.yaml to check (or use -c)")] = None,
    config: ConfigOpt = Path("devices.yaml"),
) -> None:
    """Validate devices.yaml: exit 0, or print every error with file, line and field and exit 2."""
    path = file or config
    cfg = _load(path)
    n_points = sum(len(d.points) for d in cfg.devices)
    typer.echo(f"{path}: OK — {len(cfg.rooms)} rooms, {len(cfg.devices)} devices, {n_points} points")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket for the API (port 0 picks a free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP, and
    # without it every keep-alive response waits ~40 ms for the client's delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        typer.echo(f"cannot listen on {host}:{port}: {exc.strerror}; try --port 0 or another port", err=True)
        raise typer.Exit(1) from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


@app.command()
def run(
    config: ConfigOpt = Path("devices.yaml"),
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    log_level: LogOpt = "info",
) -> None:
    """Run the service: poll Modbus, subscribe to MQTT, store readings, serve the API (SIGHUP reloads -c)."""
    _logging(log_level)
    cfg = _load(config)
    from service.serve import serve

    sock = bind(host, port)
    asyncio.run(serve(cfg, sock, reload_from=config))


@app.command()
def demo(
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="keep the demo's databases here (default: a temporary folder)"),
    ] = None,
    log_level: LogOpt = "info",
) -> None:
    """Run everything without hardware: simulated rooms over Modbus TCP and MQTT, an in-process broker."""
    _logging(log_level)
    from service.demo import run_demo

    sock = bind(host, port)
    asyncio.run(run_demo(sock, data))


def main() -> None:
    """Entry point of the `bafang` script."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
