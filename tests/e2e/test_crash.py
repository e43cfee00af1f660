"""Crash-safe ingest, proven on the running service: SIGKILL mid-ingest loses and duplicates nothing,
and a million messages waiting in the broker do not wait in Bafang's memory.

Real `bafang run` processes, a real Mosquitto (with persistence) from the ``mosquitto_factory``
fixture, QoS 1 publishers, the readings database read with sqlite3 beside the running service. The
service, publishers and counts are benchmarks/crash_ingest.py's, so the benchmark measures exactly
what these tests assert.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from benchmarks.crash_ingest import (
    ROOT,
    Service,
    crash_run,
    plan,
    publish_raw,
    stored_count,
    wait_subscribed,
    write_config,
)
from tests.conftest import Mosquitto

pytestmark = pytest.mark.mosquitto

MB = 2**20
CRASH_READINGS = 20_000
BACKLOG = 1_000_000
STALL_S = 20.0


@pytest.mark.parametrize(
    ("protocol", "timeless"),
    [
        ("5", False),
        ("3.1.1", False),
        # Payloads without a time, two values each: stamped on arrival, so a redelivery after the kill
        # is stamped anew and only the message's packet id and digest tell it is the same message.
        ("5", True),
    ],
    ids=["mqtt5", "mqtt3.1.1", "mqtt5-no-time"],
)
def test_sigkill_mid_ingest_loses_nothing_and_counts_rejections_once(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto], protocol: str, timeless: bool
) -> None:
    broker = mosquitto_factory(persistence=True)
    result = crash_run(
        tmp_path,
        broker.port,
        readings=CRASH_READINGS,
        devices=4,
        invalid_every=500,  # 40 invalid: 20 malformed JSON, 20 out of range
        kills=3,
        seed=20261129 + len(protocol),
        protocol=protocol,
        timeout=50,
        timeless=timeless,
    )
    assert len(result.kills) == 3
    rows = CRASH_READINGS * (2 if timeless else 1)
    assert all(k < rows for k in result.kills), f"a kill came after ingest ended: {result.kills}"
    assert (result.stored, result.lost, result.duplicates, result.unexpected) == (CRASH_READINGS, 0, 0, 0)
    # 40 invalid messages: 20 malformed, 20 out of range (two values each without a time)
    assert sum(n for r in result.rejected_expected.values() for n in r.values()) == (60 if timeless else 40)
    # The counts served by the last incarnation: every rejected message counted once, across crashes.
    assert result.rejected_counted == result.rejected_expected


def test_crash_benchmark_smoke_run() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/crash_ingest.py"), "--readings", "2000", "--kills", "1",
         "--invalid-every", "100", "--timeout", "40"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert figures["sent"] == figures["stored"] == 2000
    assert figures["lost"] == figures["duplicates"] == 0
    assert figures["rejected_counted"] == figures["rejected_expected"] == 20
    assert figures["rss_peak_mb"] > 0


def test_ingest_benchmark_drain_run_smoke() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/ingest.py"), "--messages", "100", "--devices", "10",
         "--drain-messages", "500"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"pipeline_per_s", "bare_per_s", "ratio", "drain_per_s", "bare_drain_per_s", "drain_ratio"} <= set(
        figures
    )
    assert figures["drain_per_s"] > 0 and figures["bare_drain_per_s"] > 0
    assert figures["drain_ratio"] == pytest.approx(
        figures["drain_per_s"] / figures["bare_drain_per_s"], rel=0.01
    )


def test_rss_stays_flat_while_a_million_messages_wait_in_the_broker(
    tmp_path: Path, mosquitto_factory: Callable[..., Mosquitto]
) -> None:
    broker = mosquitto_factory()
    config = write_config(tmp_path, port=broker.port, devices=4, protocol="5")
    db, log = tmp_path / "readings.db", tmp_path / "bafang.log"

    # Idle: started with an empty queue, its session registered and one probe reading stored.
    service = Service(config, log)
    try:
        service.wait_url()
        wait_subscribed(service, broker.port, db)
        idle = 0
        until = time.monotonic() + 1.0
        while time.monotonic() < until:
            idle = max(idle, service.rss())
            time.sleep(0.02)
        assert service.stop() == 0, service.output()
    finally:
        if service.proc.poll() is None:
            service.kill()

    work = plan(BACKLOG, devices=4, invalid_every=0)
    publish_s = publish_raw(broker.port, work.messages)
    del work

    service = Service(config, log)
    peak, samples, stored = 0, 0, 0
    # A tenth of the way in, another process (a backup, say) holds the readings database for STALL_S:
    # the service keeps receiving only if it does not bound what it holds unacknowledged, and then
    # its memory grows with the backlog. Bafang must stop reading from the broker instead.
    stall: sqlite3.Connection | None = None
    stall_from: float | None = None
    stored_at_stall = 0
    started = time.monotonic()
    try:
        service.wait_url()
        deadline = started + 170
        next_count = 0.0
        while stored < BACKLOG:
            peak = max(peak, service.rss())
            samples += 1
            now = time.monotonic()
            if now >= next_count:  # count(*) over a growing table: not on every RSS sample
                stored = stored_count(db)
                next_count = now + 0.5
            if stall_from is None and stored >= BACKLOG // 10:
                stall = sqlite3.connect(db, timeout=10, isolation_level=None)
                stall.execute("BEGIN IMMEDIATE")  # the write lock: the service's commits wait
                stored_at_stall = stored
                stall_from = now
            elif stall is not None and stall_from is not None and now - stall_from > STALL_S:
                stall.execute("ROLLBACK")
                stall.close()
                stall = None
            assert service.proc.poll() is None, service.output()
            assert now < deadline, f"{stored:,} of {BACKLOG:,} stored after 170 s"
            time.sleep(0.02)
        drain_s = time.monotonic() - started
        assert service.stop() == 0, service.output()
    finally:
        if stall is not None:
            stall.close()
        if service.proc.poll() is None:
            service.kill()
    print(
        f"backlog of {BACKLOG:,}: published in {publish_s:.1f} s, drained in {drain_s:.1f} s "
        f"with the database locked for {STALL_S:g} s from {stored_at_stall:,} stored; "
        f"RSS idle {idle / MB:.1f} MB, peak {peak / MB:.1f} MB over {samples} samples"
    )
    assert samples > 100 and stall_from is not None
    assert peak - idle <= 50 * MB, f"RSS grew {(peak - idle) / MB:.1f} MB over idle {idle / MB:.1f} MB"
