"""Benchmark alert latency: a leak message published → its alert ``firing`` in the API, under load.

A real Mosquitto on a free port and a real ``bafang run`` process (its own SQLite files, the API on a
free port). ``--rooms`` rooms each hold T/H sensors that together publish ``--load`` readings/s in the
background (two readings a message, QoS 1, paced in 10 ms ticks), and one leak sensor per trial
(``{metric: water_leak}``, the payload itself 0 or 1). All leak sensors first report 0.

A trial publishes ``1`` (QoS 1) on the next, still quiet, leak sensor, so every trial opens a fresh
alert (a leak is an event: ``hold`` 0, firing at once), and polls ``GET /api/v1/alerts?state=active``
(filtered to protection=water) back to back until that device's alert shows ``firing``. The latency is
from just before ``publish`` to the arrival of the first response showing it: it includes the broker,
the collector, the pipeline's batching and SQLite commit, the rules engine, the alert book's commit and
one API round trip. Trials start at random 100–300 ms intervals, so that they fall anywhere in the
pipeline's flush cycle.

The service runs with the timeseries defaults (``flush_interval`` 1 s, ``batch_size`` 1000) unless
``--flush-interval`` / ``--batch-size`` say otherwise.

    python benchmarks/alert_latency.py [--trials 50] [--load 1000] [--rooms 10]
                                       [--flush-interval 1s] [--batch-size 1000]

Last line: ``{"alert_p50_ms": …, "alert_p99_ms": …, "alert_max_ms": …, "trials": …,
"load_readings_per_s": …}``. Target: p99 ≤ 250 ms.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from benchmarks.crash_ingest import start_mosquitto

ROOT = Path(__file__).resolve().parent.parent
TH_PER_ROOM = 10


def site_yaml(
    workdir: Path, port: int, rooms: int, trials: int, flush_interval: str | None, batch_size: int | None
) -> str:
    """devices.yaml of the benchmark site."""
    ts = ["backend: sqlite"]
    if flush_interval is not None:
        ts.append(f"flush_interval: {flush_interval}")
    if batch_size is not None:
        ts.append(f"batch_size: {batch_size}")
    lines = [
        "site: {name: 告警延迟基准, timezone: Asia/Shanghai}",
        f'mqtt: {{url: "mqtt://127.0.0.1:{port}", client_id: bafang-latency, protocol: "3.1.1"}}',
        "storage:",
        f'  database: "sqlite:///{workdir}/bafang.db"',
        f"  timeseries: {{{', '.join(ts)}}}",
        "rooms:",
    ]
    lines += [f"  - {{id: r{r}, name: {r}号库房}}" for r in range(rooms)]
    lines.append("devices:")
    for r in range(rooms):
        for i in range(TH_PER_ROOM):
            lines += [
                f"  - id: th-{r}-{i}",
                f"    room: r{r}",
                f"    mqtt: {{topic: bench/r{r}/th-{i}}}",
                "    points:",
                "      - {metric: temperature, path: t}",
                "      - {metric: humidity, path: rh}",
            ]
    for k in range(trials):
        lines += [
            f"  - id: leak-{k}",
            f"    room: r{k % rooms}",
            f"    mqtt: {{topic: bench/r{k % rooms}/leak-{k}}}",
            "    points:",
            "      - {metric: water_leak}",
        ]
    return "\n".join(lines) + "\n"


class Load(threading.Thread):
    """Publishes ``rate`` readings/s (two a message) over the T/H topics until stopped."""

    def __init__(self, port: int, rooms: int, rate: float) -> None:
        super().__init__(name="bench-load", daemon=True)
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-load")
        self.client.max_inflight_messages_set(1000)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.topics = [f"bench/r{r}/th-{i}" for r in range(rooms) for i in range(TH_PER_ROOM)]
        self.per_s = rate / 2
        self.stop_event = threading.Event()
        self.sent = 0
        self.started = 0.0
        self.ended = 0.0

    def run(self) -> None:
        tick = 0.01
        self.started = time.perf_counter()
        next_at = self.started
        while not self.stop_event.is_set():
            # Publish what is due by now: the rate holds even when a tick runs late.
            due = int((time.perf_counter() - self.started) * self.per_s) + 1
            while self.sent < due:
                i = self.sent
                body = b'{"t":%.1f,"rh":%.1f}' % (20.0 + (i % 10) / 10, 50.0 + (i % 7) / 10)
                self.client.publish(self.topics[i % len(self.topics)], body, qos=1)
                self.sent += 1
            next_at += tick
            delay = next_at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        self.ended = time.perf_counter()

    def close(self) -> float:
        """Stop publishing; the readings/s achieved."""
        self.stop_event.set()
        self.join(10)
        self.client.disconnect()
        self.client.loop_stop()
        return 2 * self.sent / (self.ended - self.started)


def start_service(config: Path) -> tuple[subprocess.Popen[str], str, list[str]]:
    """``bafang run`` on a free port; its URL and (drained in a thread) its output."""
    script = Path(sys.executable).parent / "bafang"
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]
    proc = subprocess.Popen(
        [*cmd, "run", "-c", str(config), "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    output: list[str] = []
    url = ""
    deadline = time.monotonic() + 60
    for line in proc.stdout:
        output.append(line)
        if m := re.search(r"(http://127\.0\.0\.1:\d+/)", line):
            url = m.group(1)
            break
        if time.monotonic() > deadline:
            break
    if not url:
        proc.kill()
        sys.exit("bafang run did not print its URL:\n" + "".join(output))
    stdout = proc.stdout

    def drain() -> None:
        for line in stdout:
            output.append(line)

    threading.Thread(target=drain, name="bafang-output", daemon=True).start()
    return proc, url, output


def wait_for(http: httpx.Client, what: str, check: object, limit: float = 30.0) -> None:
    """Poll until ``check(http)`` is true."""
    deadline = time.monotonic() + limit
    while not check(http):  # type: ignore[operator]
        if time.monotonic() > deadline:
            sys.exit(f"timed out after {limit:g} s waiting for {what}")
        time.sleep(0.05)


def firing(http: httpx.Client, device: str, round_trips: list[float]) -> bool:
    """Whether the device's water alert is firing in the API (the request's round trip appended)."""
    started = time.perf_counter()
    rows = http.get("/api/v1/alerts", params={"state": "active", "protection": "water"}).json()
    round_trips.append(time.perf_counter() - started)
    return any(a["device"] == device and a["state"] == "firing" for a in rows)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0–100), linear between closest ranks."""
    s = sorted(values)
    if len(s) == 1:
        return s[0]
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def main() -> None:
    """Run the benchmark and print its figures; the last line is one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--load", type=float, default=1000.0, help="background readings/s over MQTT")
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--flush-interval", default=None, help="timeseries flush_interval (default: 1s)")
    parser.add_argument("--batch-size", type=int, default=None, help="timeseries batch_size (default: 1000)")
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    with tempfile.TemporaryDirectory(prefix="bafang-latency-") as tmp:
        workdir = Path(tmp)
        broker, port = start_mosquitto(workdir, persistence=False)
        proc: subprocess.Popen[str] | None = None
        load: Load | None = None
        pub: paho.Client | None = None
        output: list[str] = []
        code = 0
        try:
            config = workdir / "devices.yaml"
            text = site_yaml(workdir, port, args.rooms, args.trials, args.flush_interval, args.batch_size)
            config.write_text(text, encoding="utf-8")
            proc, url, output = start_service(config)
            pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-leaks")
            pub.connect("127.0.0.1", port)
            pub.loop_start()
            with httpx.Client(base_url=url, timeout=10) as http:

                def subscribed(h: httpx.Client) -> bool:
                    # The collector is subscribed once a probe published now arrives.
                    pub.publish("bench/r0/leak-0", b"0", qos=1).wait_for_publish(5)
                    rows = h.get("/api/v1/devices").json()
                    return any(d["id"] == "leak-0" and d["status"] == "online" for d in rows)

                wait_for(http, "the service to subscribe", subscribed)
                load = Load(port, args.rooms, args.load)
                load.start()
                for k in range(args.trials):
                    pub.publish(f"bench/r{k % args.rooms}/leak-{k}", b"0", qos=1)

                def quiet(h: httpx.Client) -> bool:
                    rows = {d["id"]: d for d in h.get("/api/v1/devices").json()}
                    return all(
                        rows.get(f"leak-{k}", {}).get("status") == "online" for k in range(args.trials)
                    )

                wait_for(http, "every leak sensor to report 0", quiet)
                stored_before = http.get("/healthz").json()["readings_stored"]
                time.sleep(2.0)  # steady load before the first trial

                latencies: list[float] = []
                round_trips: list[float] = []
                for k in range(args.trials):
                    device = f"leak-{k}"
                    time.sleep(rng.uniform(0.1, 0.3))
                    started = time.perf_counter()
                    pub.publish(f"bench/r{k % args.rooms}/{device}", b"1", qos=1)
                    deadline = started + 10
                    while not firing(http, device, round_trips):
                        if time.perf_counter() > deadline:
                            sys.exit(f"trial {k}: {device}'s alert not firing after 10 s")
                    latencies.append((time.perf_counter() - started) * 1000)
                health = http.get("/healthz").json()
                rate = load.close()
                load = None
            stored = health["readings_stored"] - stored_before
        finally:
            if load is not None:
                load.close()
            if pub is not None:
                pub.disconnect()
                pub.loop_stop()
            if proc is not None:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                try:
                    code = proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    code = proc.wait()
            broker.terminate()
            broker.wait(10)
    if code != 0:
        sys.exit(f"bafang run exited {code}:\n" + "".join(output[-30:]))

    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    print(
        f"background load: {rate:,.0f} readings/s over MQTT ({args.rooms * TH_PER_ROOM} T/H sensors); "
        f"{stored:,} readings stored during the trials; "
        f"flush_interval {args.flush_interval or '1s (default)'}, batch_size {args.batch_size or '1000 (default)'}"
    )
    print(
        f"leak published → alert firing in GET /api/v1/alerts, {len(latencies)} trials: "
        f"p50 {p50:.0f} ms, p90 {percentile(latencies, 90):.0f} ms, p99 {p99:.0f} ms, "
        f"min {min(latencies):.0f} ms, max {max(latencies):.0f} ms, mean {statistics.fmean(latencies):.0f} ms "
        "(target p99 ≤ 250 ms)"
    )
    print(
        f"API round trip of the polling GET: median {statistics.median(round_trips) * 1000:.1f} ms, "
        f"max {max(round_trips) * 1000:.1f} ms ({len(round_trips)} requests)"
    )
    print(
        json.dumps(
            {
                "alert_p50_ms": round(p50, 1),
                "alert_p99_ms": round(p99, 1),
                "alert_max_ms": round(max(latencies), 1),
                "trials": len(latencies),
                "load_readings_per_s": round(rate, 1),
            }
        )
    )


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
