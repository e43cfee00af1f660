"""Benchmark crash safety: QoS 1 readings into `bafang run`, killed with SIGKILL mid-ingest, restarted.

A paho publisher sends ``--readings`` valid QoS 1 messages (one temperature reading each, with its own
timestamp ``ts`` so each reading has an identity) over ``--devices`` exact topics, plus one invalid
message every ``--invalid-every`` (alternately malformed JSON and out of range). Meanwhile the real
service (`bafang run -c devices.yaml --port 0`, persistent session, manual acks) ingests them; it is
killed with SIGKILL at ``--kills`` random moments (seeded: when a random share of the readings is
stored, plus a random delay, so kills land mid-batch) and restarted each time with the same
configuration. At the end the readings database is compared with what was sent: lost readings,
duplicates, readings that were never sent, and the rejected counts the API reports.

    python benchmarks/crash_ingest.py [--readings 100000] [--kills 3] [--seed 4] [--protocol 5|3.1.1]

A peer's figure, not measured by this script and never printed: Node-RED (acks on arrival, in-memory
queue), killed once after the broker had handed over 100,000 messages, lost 92,131 of 99,000 valid
readings, its memory grown to 300–600 MB under the backlog (quoted in this repository since
2026-11-29, commit 013eb52; its payload was not recorded with it).

Last line: ``{"sent": …, "stored": …, "lost": …, "duplicates": …, "rss_peak_mb": …}`` (plus details).

The helpers here (service process, publishers, database counts) are also used by tests/e2e/test_crash.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import psutil  # type: ignore[import-untyped, unused-ignore]  # no stubs in the test extra
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "crash/{}"
PROBE = "probe"  # a device of its own whose readings prove the service's subscription is live
# Readings are stamped from a fixed recent origin (ms) so that they fall inside the raw retention.
_DAY_MS = 86_400_000


# ---------------------------------------------------------------------------------------------
# Broker


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, alive: Callable[[], bool]) -> None:
    """Wait until something listens on 127.0.0.1:port."""
    deadline = time.monotonic() + timeout
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if not alive() or time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")
        time.sleep(0.01)


def start_mosquitto(
    workdir: Path, receive_maximum: int = 1000, *, persistence: bool = True
) -> tuple[subprocess.Popen[bytes], int]:
    """Mosquitto on a free port, configured as devices.yaml documents (persistent unless told not)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(binary, os.X_OK):
        sys.exit("the benchmarks need the mosquitto binary (apt-get install mosquitto)")
    port = free_port()
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "max_queued_messages 2000000",  # the default 1000 silently drops QoS 1 messages
        "max_queued_bytes 0",
        f"max_inflight_messages {receive_maximum}",  # the in-flight bound for MQTT 3.1.1
        "log_dest stderr",
        "log_type error",
    ]
    if persistence:
        lines += ["persistence true", f"persistence_location {workdir}/", "autosave_interval 1"]
    if os.geteuid() == 0:
        lines.append("user root")
    conf = workdir / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    wait_port(port, 10, lambda: proc.poll() is None)
    return proc, port


# ---------------------------------------------------------------------------------------------
# The service


def write_config(
    workdir: Path,
    *,
    port: int,
    devices: int,
    protocol: str = "5",
    client_id: str = "bafang-crash",
    receive_maximum: int = 1000,
    timeless: bool = False,
) -> Path:
    """devices.yaml for `bafang run`: ``devices`` temperature sensors and the probe, on exact topics.

    ``timeless``: the sensors send temperature and humidity without a time (stamped on arrival), as
    most T/H sensors do; the probe keeps its own time.
    """
    lines = [
        "site: {name: 崩溃测试档案室}",
        f'mqtt: {{url: "mqtt://127.0.0.1:{port}", client_id: "{client_id}", protocol: "{protocol}", '
        f"receive_maximum: {receive_maximum}}}",
        "storage:",
        f'  database: "sqlite:///{workdir}/bafang.db"',
        "  timeseries: {backend: sqlite}",
        "rooms:",
        "  - {id: r1, name: 一号库房}",
        "devices:",
    ]
    for name in [*(f"th-{d}" for d in range(devices)), PROBE]:
        if timeless and name != PROBE:
            lines += [
                f"  - id: {name}",
                "    room: r1",
                f"    mqtt: {{topic: {TOPIC.format(name)}}}",
                "    points:",
                "      - {metric: temperature, path: t}",
                "      - {metric: humidity, path: rh}",
            ]
            continue
        lines += [
            f"  - id: {name}",
            "    room: r1",
            f"    mqtt: {{topic: {TOPIC.format(name)}, time_path: ts}}",
            "    points:",
            "      - {metric: temperature, path: t}",
        ]
    config = workdir / "devices.yaml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config


def bafang_command() -> list[str]:
    """The installed `bafang` script, as the README runs it."""
    script = Path(sys.executable).parent / "bafang"
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]


class Service:
    """One `bafang run -c CONFIG --port 0` process; its output goes to a log file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self._offset = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [*bafang_command(), "run", "-c", str(config), "--port", "0", "--log-level", "warning"],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        self.ps = psutil.Process(self.proc.pid)
        self.url = ""

    def output(self) -> str:
        """What this process has written so far."""
        with self.log.open("rb") as f:
            f.seek(self._offset)
            return f.read().decode(errors="replace")

    def wait_url(self, timeout: float = 60.0) -> str:
        """The API's URL once the service prints it (it has started collecting by then)."""
        deadline = time.monotonic() + timeout
        while True:
            if m := re.search(r"(http://127\.0\.0\.1:\d+/)", self.output()):
                self.url = m.group(1)
                return self.url
            if self.proc.poll() is not None:
                raise RuntimeError(f"bafang exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"bafang printed no URL within {timeout:g} s:\n{self.output()}")
            time.sleep(0.02)

    def rss(self) -> int:
        """Resident memory in bytes (0 once the process is gone)."""
        try:
            return int(self.ps.memory_info().rss)
        except psutil.Error:
            return 0

    def kill(self) -> None:
        """SIGKILL: no flush, no goodbye, as a power cut."""
        self.proc.kill()
        self.proc.wait()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait for a clean exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"bafang did not stop within {timeout:g} s:\n{self.output()}") from None

    def rejected(self) -> dict[str, dict[str, int]]:
        """GET /api/v1/devices: device → reason → rejected count."""
        devices = httpx.get(self.url + "api/v1/devices", timeout=10).json()
        return {d["id"]: dict(d["rejected"]) for d in devices}


# ---------------------------------------------------------------------------------------------
# The readings database, read beside the running service (WAL: readers never block its writer)


def stored_count(db: Path, device_prefix: str = "th-") -> int:
    """Readings stored for the benchmark's devices (not the probe)."""
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            row = conn.execute(
                "SELECT count(*) FROM readings WHERE series_id IN (SELECT id FROM series WHERE device LIKE ?)",
                (device_prefix + "%",),
            ).fetchone()
            return int(row[0])
    except sqlite3.OperationalError:
        return 0  # the service is creating the schema


def stored_ids(db: Path, device_prefix: str = "th-", *, timeless: bool = False) -> list[tuple[Any, ...]]:
    """Every stored (device, ts ms) of the benchmark's devices, duplicates included if there were any.

    ``timeless``: the readings were stamped on arrival, so a message is known by what it carried: every
    (device, temperature, humidity) pair stored at one millisecond.
    """
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        if not timeless:
            rows = conn.execute(
                "SELECT s.device, r.ts FROM readings AS r JOIN series AS s ON s.id = r.series_id "
                "WHERE s.device LIKE ?",
                (device_prefix + "%",),
            ).fetchall()
            return [(str(d), int(ts)) for d, ts in rows]
        rows = conn.execute(
            "SELECT s.device, r.ts, s.metric, r.value FROM readings AS r JOIN series AS s ON s.id = r.series_id "
            "WHERE s.device LIKE ?",
            (device_prefix + "%",),
        ).fetchall()
    pairs: dict[tuple[str, int], dict[str, float]] = {}
    for device, ts, metric, value in rows:
        pairs.setdefault((str(device), int(ts)), {})[str(metric)] = round(float(value), 1)
    return [(d, m.get("temperature"), m.get("humidity")) for (d, _), m in pairs.items()]


def wait_subscribed(service: Service, port: int, db: Path, timeout: float = 30.0) -> None:
    """Publish probe readings until one is stored: the service's session and subscription exist."""
    publisher = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{os.getpid()}")
    publisher.connect("127.0.0.1", port)
    publisher.loop_start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            body = json.dumps({"t": 20.0, "ts": round(time.time() * 1000)})
            publisher.publish(TOPIC.format(PROBE), body, qos=1).wait_for_publish(5)
            until = time.monotonic() + 0.5
            while time.monotonic() < until:
                if stored_count(db, PROBE):
                    return
                if service.proc.poll() is not None:
                    raise RuntimeError(f"bafang exited:\n{service.output()}")
                time.sleep(0.02)
        raise RuntimeError(f"no probe reading stored within {timeout:g} s:\n{service.output()}")
    finally:
        publisher.disconnect()
        publisher.loop_stop()


# ---------------------------------------------------------------------------------------------
# What is sent


@dataclass
class Plan:
    """The messages of a run: (topic, payload) in order, and what a correct service makes of them."""

    messages: list[tuple[str, bytes]]
    valid: set[tuple[Any, ...]]  # (device, ts ms) of every valid reading; timeless: (device, t, rh)
    rejected: dict[str, dict[str, int]]  # device → reason → count expected

    @property
    def invalid(self) -> int:
        """How many messages are invalid."""
        return sum(n for reasons in self.rejected.values() for n in reasons.values())


def plan(
    readings: int, devices: int, invalid_every: int, origin_ms: int | None = None, *, timeless: bool = False
) -> Plan:
    """``readings`` valid messages round-robin over the devices, one invalid after every
    ``invalid_every - 1`` valid ones, alternately malformed JSON and out of range; never last.

    ``timeless``: each message carries temperature and humidity and no time (the pair is unique, so
    that a message is still known once stored: 500 temperatures × humidity in steps of 0.1 %RH).
    """
    t0 = origin_ms if origin_ms is not None else (round(time.time() * 1000) // 1000 * 1000 - _DAY_MS)
    messages: list[tuple[str, bytes]] = []
    valid: set[tuple[Any, ...]] = set()
    rejected: dict[str, dict[str, int]] = {}
    n_invalid = 0
    for i in range(readings):
        device = f"th-{i % devices}"
        if timeless:
            t, rh = round(15 + (i % 500) / 10, 1), round(10 + (i // 500) / 10, 1)
            messages.append((TOPIC.format(device), b'{"t":%.1f,"rh":%.1f}' % (t, rh)))
            valid.add((device, t, rh))
        else:
            ts = t0 + i  # one millisecond apart: every reading its own identity
            messages.append((TOPIC.format(device), b'{"t":%.1f,"ts":%d}' % (15 + (i % 150) / 10, ts)))
            valid.add((device, ts))
        if invalid_every and i % invalid_every == invalid_every // 2 and i < readings - 1:
            # Every invalid payload is different: a broker may reuse a packet id, a key must not clash.
            bad_ts = t0 - 1 - n_invalid
            counts = rejected.setdefault(device, {})
            if n_invalid % 2 == 0:
                payload, reason, n = b'{"t":21.0,"ts":%d' % bad_ts, "malformed", 1
            elif timeless:  # both values out of range: nothing of it stored
                payload, reason, n = b'{"t":120.0,"rh":%d}' % (150 + n_invalid), "out_of_range", 2
            else:
                payload, reason, n = b'{"t":120.0,"ts":%d}' % bad_ts, "out_of_range", 1
            messages.append((TOPIC.format(device), payload))
            counts[reason] = counts.get(reason, 0) + n
            n_invalid += 1
    return Plan(messages, valid, rejected)


class Publisher:
    """A paho QoS 1 publisher on its own thread, sending a plan's messages while the service runs."""

    def __init__(
        self, port: int, messages: Iterable[tuple[str, bytes]], client_id: str = "crash-pub"
    ) -> None:
        self._messages = list(messages)
        self.acked = 0
        self.error: BaseException | None = None
        self.seconds = 0.0
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.max_inflight_messages_set(1000)
        self._client.max_queued_messages_set(0)
        self._client.on_publish = self._on_publish
        self._client.connect("127.0.0.1", port)
        self._thread = threading.Thread(target=self._run, name="crash-publisher", daemon=True)

    def _on_publish(self, client: paho.Client, userdata: object, mid: int, reason: Any, props: Any) -> None:
        self.acked += 1

    def start(self) -> None:
        """Start publishing in the background."""
        self._client.loop_start()
        self._thread.start()

    def _run(self) -> None:
        started = time.perf_counter()
        try:
            for i, (topic, payload) in enumerate(self._messages):
                self._client.publish(topic, payload, qos=1)
                # Packet ids are 16 bits: never let 65,535 wait for the broker's PUBACK.
                while i - self.acked > 20_000:
                    time.sleep(0.001)
            while self.acked < len(self._messages):
                time.sleep(0.001)
        except BaseException as exc:  # reported by join()
            self.error = exc
        self.seconds = time.perf_counter() - started

    @property
    def done(self) -> bool:
        """Whether the broker has acknowledged every message (or publishing failed)."""
        return not self._thread.is_alive()

    def join(self, timeout: float) -> None:
        """Wait until the broker has acknowledged every message."""
        self._thread.join(timeout)
        self._client.disconnect()
        self._client.loop_stop()
        if self.error is not None:
            raise self.error
        if self._thread.is_alive():
            raise RuntimeError(
                f"publisher: {self.acked} of {len(self._messages)} acknowledged after {timeout:g} s"
            )


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _varint(len(body)) + body


def publish_raw(port: int, messages: Iterable[tuple[str, bytes]], chunk: int = 50_000) -> float:
    """Publish at QoS 1 over a bare MQTT 3.1.1 socket, ``chunk`` at a time, each chunk acknowledged.

    To fill a broker's queue with a million messages in seconds: paho publishes about 11,000 QoS 1
    messages/s here (Python per message), `mosquitto_pub -l` quits before its QoS 1 queue is sent
    (83,506 of 1,000,000 arrived). Returns the seconds taken.
    """
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        cid = f"raw-pub-{os.getpid()}".encode()
        # CONNECT: MQTT 3.1.1, clean session, no keepalive (we never idle).
        s.sendall(_packet(0x10, b"\x00\x04MQTT\x04\x02\x00\x00" + struct.pack(">H", len(cid)) + cid))
        if s.recv(4) != b"\x20\x02\x00\x00":
            raise RuntimeError(f"broker 127.0.0.1:{port} refused the raw publisher")
        pending: list[bytes] = []

        def send() -> None:
            s.sendall(b"".join(pending))
            need, got = 4 * len(pending), 0  # one 4-byte PUBACK each
            while got < need:
                data = s.recv(1 << 20)
                if not data:
                    raise RuntimeError(f"broker 127.0.0.1:{port} closed the raw publisher's connection")
                got += len(data)
            pending.clear()

        topics: dict[str, bytes] = {}
        for topic, payload in messages:
            head = topics.get(topic)
            if head is None:
                raw = topic.encode()
                head = topics[topic] = struct.pack(">H", len(raw)) + raw
            pid = len(pending) % 65535 + 1
            pending.append(_packet(0x32, head + struct.pack(">H", pid) + payload))
            if len(pending) >= min(chunk, 65535):
                send()
        if pending:
            send()
        s.sendall(b"\xe0\x00")  # DISCONNECT
    return time.perf_counter() - started


# ---------------------------------------------------------------------------------------------
# The run


@dataclass
class CrashResult:
    """What a crash run sent, stored and counted."""

    sent: int
    stored: int
    lost: int
    duplicates: int
    unexpected: int  # stored readings that were never sent
    rejected_expected: dict[str, dict[str, int]]
    rejected_counted: dict[str, dict[str, int]]
    kills: list[int] = field(default_factory=list)  # readings stored when each SIGKILL was sent
    rss_peak_mb: float = 0.0
    seconds: float = 0.0
    publish_seconds: float = 0.0


def crash_run(
    workdir: Path,
    port: int,
    *,
    readings: int,
    devices: int = 4,
    invalid_every: int = 500,
    kills: int = 3,
    seed: int = 4,
    protocol: str = "5",
    timeout: float = 300.0,
    stall: float = 10.0,
    log: Callable[[str], None] = lambda _: None,
    timeless: bool = False,
) -> CrashResult:
    """Publish a plan while the service ingests, SIGKILL and restart it ``kills`` times, compare.

    ``timeless``: messages without a time, two readings each (stamped on arrival by the service).
    """
    rng = random.Random(seed)
    config = write_config(workdir, port=port, devices=devices, protocol=protocol, timeless=timeless)
    db = workdir / "readings.db"
    logfile = workdir / "bafang.log"
    work = plan(readings, devices, invalid_every, timeless=timeless)
    rows = readings * (2 if timeless else 1)  # rows stored once every message is
    # Kill when a random share of the readings is stored, then after a random delay of up to 50 ms,
    # so that the kill lands anywhere in a batch: receiving, writing, committing or acknowledging.
    shares = sorted(rng.uniform(0.05, 0.9) for _ in range(kills))
    delays = [rng.uniform(0.0, 0.05) for _ in range(kills)]
    peak = 0
    started = time.monotonic()
    deadline = started + timeout

    def wait_stored(target: int, service: Service) -> bool:
        """Wait until ``target`` readings are stored; False if the count stopped growing (lost)."""
        nonlocal peak
        last, progressed = -1, time.monotonic()
        while (count := stored_count(db)) < target:
            peak = max(peak, service.rss())
            if service.proc.poll() is not None:
                raise RuntimeError(f"bafang exited by itself:\n{service.output()}")
            now = time.monotonic()
            if count != last:
                last, progressed = count, now
            elif now - progressed > stall and publisher.done:
                log(f"no reading stored for {stall:g} s with {count:,} of {rows:,} stored")
                return False
            if now > deadline:
                raise RuntimeError(f"{count} of {rows} readings stored after {timeout:g} s")
            time.sleep(0.005)
        return True

    service = Service(config, logfile)
    service.wait_url()
    wait_subscribed(service, port, db)  # the session exists: from now on the broker queues for us
    publisher = Publisher(port, work.messages, client_id=f"crash-pub-{os.getpid()}")
    publisher.start()
    killed_at: list[int] = []
    try:
        for share, delay in zip(shares, delays, strict=True):
            # Also wait for this incarnation to store something: each kill interrupts a working service.
            target = min(max(int(share * rows), killed_at[-1] + 1 if killed_at else 0), rows)
            if not wait_stored(target, service):
                break  # readings were lost: no use waiting for more, compare below
            time.sleep(delay)
            peak = max(peak, service.rss())
            killed_at.append(stored_count(db))
            service.kill()
            log(f"SIGKILL with {killed_at[-1]:,} of {rows:,} readings stored; restarting")
            service = Service(config, logfile)
            service.wait_url()
        publisher.join(max(1.0, deadline - time.monotonic()))
        log(
            f"publisher: {len(work.messages):,} messages acknowledged by the broker in {publisher.seconds:.1f} s"
        )
        wait_stored(rows, service)  # if the count stops short, readings were lost: compare below
        # The last message is valid and the broker delivers in order, so every invalid one before it
        # has been handled; its rejection is counted in the same or an earlier transaction.
        counted = service.rejected()
        peak = max(peak, service.rss())
        code = service.stop()
        if code != 0:
            raise RuntimeError(f"bafang exited with {code} on SIGTERM:\n{service.output()}")
    finally:
        if service.proc.poll() is None:
            service.kill()
    ids = stored_ids(db, timeless=timeless)
    distinct = set(ids)
    return CrashResult(
        sent=readings,
        stored=len(ids),
        lost=len(work.valid - distinct),
        duplicates=len(ids) - len(distinct),
        unexpected=len(distinct - work.valid),
        rejected_expected=work.rejected,
        rejected_counted={d: r for d, r in counted.items() if r},
        kills=killed_at,
        rss_peak_mb=round(peak / 2**20, 1),
        seconds=round(time.monotonic() - started, 2),
        publish_seconds=round(publisher.seconds, 2),
    )


def main() -> None:
    """Run the benchmark and print its figures; the last line is one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--readings", type=int, default=100_000, help="valid QoS 1 readings to send")
    parser.add_argument("--devices", type=int, default=4, help="sensors (exact topics)")
    parser.add_argument("--invalid-every", type=int, default=500, help="one invalid message per N (0: none)")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs during ingest")
    parser.add_argument("--seed", type=int, default=4, help="seed of the kill moments")
    parser.add_argument("--protocol", choices=["3.1.1", "5"], default="5")
    parser.add_argument(
        "--timeless", action="store_true", help="payloads without a time, temperature and humidity each"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="give up after this many seconds")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bafang-crash-") as tmp:
        workdir = Path(tmp)
        broker, port = start_mosquitto(workdir)
        try:
            result = crash_run(
                workdir,
                port,
                readings=args.readings,
                devices=args.devices,
                invalid_every=args.invalid_every,
                kills=args.kills,
                seed=args.seed,
                protocol=args.protocol,
                timeout=args.timeout,
                log=print,
                timeless=args.timeless,
            )
        finally:
            broker.terminate()
            broker.wait(10)
    expected = sum(n for r in result.rejected_expected.values() for n in r.values())
    counted = sum(n for r in result.rejected_counted.values() for n in r.values())
    print(
        f"sent {result.sent:,} valid readings (+{expected} invalid) over MQTT {args.protocol}, "
        f"{len(result.kills)} SIGKILLs at {', '.join(f'{k:,}' for k in result.kills)} stored; "
        f"{result.seconds:.1f} s in all"
    )
    print(
        f"stored {result.stored:,}: lost {result.lost}, duplicates {result.duplicates}, never sent "
        f"{result.unexpected}; rejected counted {counted} of {expected} "
        f"({'exact' if result.rejected_counted == result.rejected_expected else 'MISMATCH'}); "
        f"service RSS peak {result.rss_peak_mb} MB"
    )
    print(
        json.dumps(
            {
                "sent": result.sent,
                "stored": result.stored,
                "lost": result.lost,
                "duplicates": result.duplicates,
                "rss_peak_mb": result.rss_peak_mb,
                "unexpected": result.unexpected,
                "rejected_expected": expected,
                "rejected_counted": counted,
                "kills": len(result.kills),
                "seconds": result.seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
