"""Shared fixtures: real MQTT brokers on free ports, and small helpers.

``mosquitto`` is one real Mosquitto for the session (tests use their own topics and client ids).
``mosquitto_factory`` starts dedicated ones (persistence, passwords, TLS, restarts). Without the
mosquitto binary, ``mosquitto`` falls back to the embedded amqtt broker, the dedicated ones skip,
and the terminal summary says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

import psycopg
import pytest

MOSQUITTO = shutil.which("mosquitto") or (
    "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None
)
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd")
OPENSSL = shutil.which("openssl")

if os.environ.get("BAFANG_TEST_NO_MOSQUITTO"):  # exercise the fallback on a machine that has mosquitto
    MOSQUITTO = None

_fallbacks: list[str] = []  # what ran on a substitute, for the terminal summary


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind port 0 and let the kernel choose)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_until(predicate: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``predicate`` until it is true, or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.005)


def _wait_port(host: str, port: int, timeout: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.2)
            if s.connect_ex((host, port)) == 0:
                return
        if not alive():
            raise RuntimeError(f"broker on {host}:{port} exited during start-up")
        if time.monotonic() > deadline:
            raise RuntimeError(f"broker on {host}:{port} did not listen within {timeout:g} s")
        time.sleep(0.01)


class MqttTestBroker(Protocol):
    """What tests need of a broker."""

    kind: str  # "mosquitto" or "amqtt"
    host: str
    port: int

    def stop(self) -> None:
        """Stop it."""
        ...


class Mosquitto:
    """A real Mosquitto process with a generated configuration, on a free port of 127.0.0.1."""

    kind = "mosquitto"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        persistence: bool = False,
        users: dict[str, str] | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        assert MOSQUITTO is not None
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} {self.host}",
            # Unacknowledged QoS 1 messages in flight to one client (Bafang's default receive_maximum;
            # an MQTT 5 client's own Receive Maximum applies when lower). The default is 20.
            "max_inflight_messages 1000",
            # The default (1000) silently dropped about 2.4 % of QoS 1 messages to a slow subscriber; a
            # backlog of a million messages must wait in the broker whole.
            "max_queued_messages 2000000",
            "max_queued_bytes 0",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            lines.append("user root")  # else mosquitto drops to the 'mosquitto' user and cannot read workdir
        if persistence:
            lines += ["persistence true", f"persistence_location {workdir}/", "autosave_interval 1"]
        if users:
            pwfile = workdir / "passwd"
            pwfile.write_text("")
            for user, password in users.items():
                assert MOSQUITTO_PASSWD is not None
                subprocess.run(
                    [MOSQUITTO_PASSWD, "-b", str(pwfile), user, password], check=True, capture_output=True
                )
            lines += [f"password_file {pwfile}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        if tls:
            lines += [f"certfile {tls[0]}", f"keyfile {tls[1]}"]
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")
        self.log = workdir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start (again, on the same port)."""
        assert MOSQUITTO is not None and self._proc is None
        with self.log.open("ab") as out:
            self._proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=out, stderr=out)
        proc = self._proc
        try:
            _wait_port(self.host, self.port, 10.0, lambda: proc.poll() is None)
        except RuntimeError as exc:
            self.stop()
            raise RuntimeError(f"{exc}; log:\n{self.log.read_text(errors='replace')}") from None

    def stop(self) -> None:
        """Stop; with persistence, Mosquitto saves its database on the way out."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def restart(self) -> None:
        """Stop and start on the same port."""
        self.stop()
        self.start()


class EmbeddedTestBroker:
    """The embedded amqtt broker on its own event loop in a thread (fallback without Mosquitto)."""

    kind = "amqtt"

    def __init__(self) -> None:
        from service.broker import EmbeddedBroker

        self.host = "127.0.0.1"
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="amqtt-test-broker", daemon=True)
        self._thread.start()
        self._broker = EmbeddedBroker()
        self.port = self._run(self._broker.start(self.host, 0))

    def _run(self, coro: Any) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout=30)

    def stop(self) -> None:
        """Stop the broker and its loop."""
        if self._loop.is_running():
            with contextlib.suppress(Exception):
                self._run(self._broker.stop())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MqttTestBroker]:
    """A real Mosquitto for the whole session; the embedded amqtt broker where mosquitto is missing."""
    broker: MqttTestBroker
    if MOSQUITTO is not None:
        broker = Mosquitto(tmp_path_factory.mktemp("mosquitto"))
    else:
        _fallbacks.append("mosquitto not installed: MQTT tests ran against the embedded amqtt broker")
        broker = EmbeddedTestBroker()
    yield broker
    broker.stop()


@pytest.fixture
def mosquitto_factory(tmp_path: Path) -> Iterator[Callable[..., Mosquitto]]:
    """Start dedicated Mosquitto processes (persistence=, users=, tls=, port=); skips without the binary."""
    if MOSQUITTO is None:
        _fallbacks.append("mosquitto not installed: tests needing a dedicated Mosquitto were skipped")
        pytest.skip("needs the mosquitto binary")
    started: list[Mosquitto] = []

    def make(**options: Any) -> Mosquitto:
        broker = Mosquitto(tmp_path / f"mosquitto-{len(started)}", **options)
        started.append(broker)
        return broker

    yield make
    for broker in started:
        broker.stop()


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1 / localhost (needs openssl)."""
    if OPENSSL is None:
        pytest.skip("needs openssl")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


# A records database on the real PostgreSQL: each test gets its own schema (search_path set through the
# connection options), dropped afterwards, so test runs never see each other's tables. PostgreSQL must be
# reachable (CI starts it): when it is not, the postgres tests fail, they do not skip.
POSTGRES_URL = os.environ.get("BAFANG_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {POSTGRES_URL} is not reachable (CI starts it): {exc}", pytrace=False)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL of the test database whose search_path is a fresh, empty schema."""
    schema = f"bafang_test_{uuid.uuid4().hex[:12]}"
    with _admin() as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    with _admin() as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """Say when tests ran on a substitute for a missing system package."""
    for line in dict.fromkeys(_fallbacks):
        terminalreporter.write_line(f"NOTE: {line}", yellow=True)
