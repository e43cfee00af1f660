"""Benchmark the rules engine: evaluations per second, and what it costs the ingest pipeline.

The site: ``--rooms`` rooms (default 100), each with every kind of sensor the protections read, so every
protection has inputs: a T/H transmitter, a dust and gas sensor (pm25, pm10, co2, hcho), a smoke
detector, a light and UV meter, a door contact with an intrusion detector, a leak rope, a pest trap and a
rodent sensor: 14 series and 12 protections a room (the classic eight, water, mold, pollution,
monitoring). Values are normal, so the alert book sees steady conditions, as on an ordinary day.

1. Pure evaluation: ``RulesEngine.evaluate`` over every room, repeated for ``--seconds``, in one thread
   pinned to one CPU. ``evals_per_s`` = protection evaluations (the engine's ``evaluations``) per second.
   It includes building each room's view, the device-health snapshot the runtime passes, and the alert
   book's ``observe`` of every condition.
2. Pipeline throughput: ``--readings`` readings submitted from a thread, one device's poll per
   ``submit`` as collectors do, through ``Pipeline`` into a fresh ``SqliteReadingStore``; timed until the
   last batch is stored and every listener has seen it. Run alternately without and with the rules
   engine as a listener (``--repeats`` times each, best of each kept); the ratio is with ÷ without.

    python benchmarks/rules.py [--rooms 100] [--readings 300000] [--seconds 5] [--repeats 3]

Last line: ``{"evals_per_s": …, "throughput_with_rules_ratio": …, "readings_per_s_without": …,
"readings_per_s_with": …, "pipeline_evals_per_s": …, "rooms": …, "protections_per_room": …}``.
Targets: ≥ 50,000 evaluations/s; ratio ≥ 0.75.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.clock import SystemClock
from core.config import Config, parse_config
from core.metrics import METRICS
from core.types import Reading
from rules.engine import RulesEngine, bind_evaluators
from rules.lifecycle import AlertBook
from store.db import make_engine, migrate
from store.ingest import DeviceInfo, Pipeline
from store.sqlite import SqliteReadingStore
from store.writer import RecordsWriter

# (device prefix, poll seconds or None for report-on-change MQTT, {metric: normal value}).
DEVICES: tuple[tuple[str, float | None, dict[str, float]], ...] = (
    ("th", 30.0, {"temperature": 20.0, "humidity": 50.0}),
    ("aq", 60.0, {"pm25": 20.0, "pm10": 40.0, "co2": 600.0, "hcho": 0.05}),
    ("smoke", 5.0, {"smoke": 0.0}),
    ("lux", 60.0, {"light": 0.0, "uv": 0.0}),
    ("door", None, {"door": 0.0, "intrusion": 0.0}),
    ("leak", None, {"water_leak": 0.0}),
    ("pest", None, {"pest": 0.0, "rodent": 0.0}),
)


def site_yaml(rooms: int) -> str:
    """devices.yaml text of the benchmark site."""
    lines = ["site: {name: 基准测试档案馆, timezone: Asia/Shanghai}", "rooms:"]
    lines += [f"  - {{id: r{r}, name: {r}号库房, kind: paper}}" for r in range(rooms)]
    lines.append("devices:")
    for r in range(rooms):
        host = f"10.{r // 200}.{r % 200}.1"  # one Modbus hub per room: (host, unit, address) stay unique
        for unit, (prefix, poll, metrics) in enumerate(DEVICES, start=1):
            lines.append(f"  - id: {prefix}-{r}")
            lines.append(f"    room: r{r}")
            if poll is None:
                lines.append(f"    mqtt: {{topic: bench/r{r}/{prefix}}}")
                lines.append("    points:")
                lines += [f"      - {{metric: {m}, path: {m}}}" for m in metrics]
            else:
                lines.append(f"    modbus: {{host: {host}, unit: {unit}}}")
                lines.append(f"    poll: {poll:g}s")
                lines.append("    points:")
                for address, m in enumerate(metrics):
                    table = "discrete" if METRICS[m].binary else "holding"
                    lines.append(f"      - {{metric: {m}, address: {address}, table: {table}}}")
    return "\n".join(lines) + "\n"


def polls(config: Config, rounds: int, start: float, step: float) -> list[list[Reading]]:
    """Every device's readings, ``rounds`` times, one list per device poll (what one ``submit`` gets)."""
    out: list[list[Reading]] = []
    values = {prefix: metrics for prefix, _, metrics in DEVICES}
    for i in range(rounds):
        at = start + i * step
        for d in config.devices:
            normal = values[d.id.split("-", 1)[0]]
            poll = []
            for p in d.points:
                v = normal[p.metric]
                if p.metric == "temperature":
                    v += (i % 7) * 0.1  # a little movement for the windows
                elif p.metric == "humidity":
                    v += (i % 5) * 0.2
                poll.append(Reading(d.id, d.room, p.metric, v, METRICS[p.metric].unit, at))
            out.append(poll)
    return out


def device_infos(config: Config) -> list[DeviceInfo]:
    """What the pipeline is told about the configured devices."""
    return [DeviceInfo(d.id, d.room, d.protocol, 3 * d.poll if d.poll else None) for d in config.devices]


def new_rules(config: Config, workdir: Path, name: str, pipeline: Pipeline) -> tuple[RulesEngine, AlertBook]:
    """A rules engine over a fresh alert book, with the pipeline's device health (as the runtime wires it)."""
    db = make_engine(f"sqlite:///{workdir}/{name}.db")
    migrate(db)
    writer = RecordsWriter(db)
    writer.start()
    book = AlertBook(db, writer, clock=SystemClock())
    book.load()
    rules = RulesEngine(
        config, book, bind_evaluators(config), clock=SystemClock(), offline=pipeline.unavailable
    )
    return rules, book


def pure_evaluations(config: Config, workdir: Path, seconds: float) -> tuple[float, int]:
    """Evaluations per second of ``RulesEngine.evaluate`` over every room, on one CPU; evaluations per pass."""
    pipeline = Pipeline(SqliteReadingStore(workdir / "unused.db"), devices=device_infos(config))
    now = time.time()
    batches = polls(config, 3, now - 3.0, 1.0)
    for b in batches:
        pipeline.submit(b)  # device health as the collectors leave it: every device online
    rules, book = new_rules(config, workdir, "pure", pipeline)
    rules.ingest([r for b in batches for r in b])
    rules.evaluate(time.time())  # the first pass opens nothing (normal values) but warms caches
    per_pass = rules.evaluations
    cpus = os.sched_getaffinity(0)
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {min(cpus)})  # this thread only: one core
    try:
        rules.evaluations = 0
        started = time.perf_counter()
        passes = 0
        while time.perf_counter() - started < seconds:
            rules.evaluate(time.time())
            passes += 1
        elapsed = time.perf_counter() - started
    finally:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, cpus)
    book.flush()
    open_alerts = len(book.open_alerts())
    rate = rules.evaluations / elapsed
    print(
        f"pure: {passes} passes over {len(config.rooms)} rooms = {rules.evaluations:,} evaluations "
        f"in {elapsed:.2f} s = {rate:,.0f} evaluations/s on one core "
        f"({elapsed / passes * 1000:.1f} ms a pass; {open_alerts} open alerts)"
    )
    return rate, per_pass


async def pipeline_run(
    config: Config, workdir: Path, name: str, batches: Sequence[Sequence[Reading]], with_rules: bool
) -> tuple[float, int]:
    """Seconds from the first submit until every reading is stored and seen by the listeners; evaluations."""
    total = sum(len(b) for b in batches)
    store = SqliteReadingStore(workdir / f"{name}.db")
    await store.open()
    # The feeder submits faster than any store writes: the buffer bound (storage.timeseries.max_pending)
    # would drop readings, and this measures throughput, not the bound.
    pipeline = Pipeline(store, devices=device_infos(config), max_pending=max(100_000, total))
    rules: RulesEngine | None = None
    if with_rules:
        rules, _ = new_rules(config, workdir, f"{name}-alerts", pipeline)
        pipeline.add_listener(rules.on_readings)
    seen = 0
    done = asyncio.Event()
    finished = 0.0

    async def last(batch: Sequence[Reading]) -> None:
        # Added after the rules engine: runs once it has evaluated this batch.
        nonlocal seen, finished
        seen += len(batch)
        if seen >= total:
            finished = time.perf_counter()
            done.set()

    pipeline.add_listener(last)
    await pipeline.start()

    def feed() -> None:
        for b in batches:
            pipeline.submit(b)

    started = time.perf_counter()
    feeder = threading.Thread(target=feed, name="bench-collector")
    feeder.start()
    try:
        await asyncio.wait_for(done.wait(), 600)
    except TimeoutError:
        sys.exit(f"{name}: {seen} of {total} readings stored after 600 s ({pipeline.dropped} dropped)")
    feeder.join()
    await pipeline.stop()
    await store.close()
    return finished - started, rules.evaluations if rules is not None else 0


def main() -> None:
    """Run the benchmark and print its figures; the last line is one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rooms", type=int, default=100)
    parser.add_argument("--readings", type=int, default=300_000, help="readings per pipeline run")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of the pure evaluation")
    parser.add_argument("--repeats", type=int, default=3, help="pipeline runs without and with rules, each")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    config = parse_config(site_yaml(args.rooms), name="benchmark.yaml", environ={})
    series = sum(len(d.points) for d in config.devices)
    rounds = max(1, -(-args.readings // series))
    with tempfile.TemporaryDirectory(prefix="bafang-rules-") as tmp:
        workdir = Path(tmp)
        evals_per_s, per_pass = pure_evaluations(config, workdir, args.seconds)
        protections = per_pass / len(config.rooms)

        # 10 ms apart (distinct rows), ending now: fresh for the staleness checks.
        batches = polls(config, rounds, time.time() - rounds * 0.01, 0.01)
        readings = sum(len(b) for b in batches)
        print(
            f"pipeline: {readings:,} readings ({len(config.devices)} devices, {series} series, {rounds} rounds) "
            f"in {len(batches):,} submits from one thread"
        )
        without: list[float] = []
        with_: list[float] = []
        evals: list[float] = []
        for i in range(args.repeats):
            for rules_on in (False, True):
                name = f"{'with' if rules_on else 'without'}-{i}"
                elapsed, n = asyncio.run(pipeline_run(config, workdir, name, batches, rules_on))
                rate = readings / elapsed
                (with_ if rules_on else without).append(rate)
                extra = ""
                if rules_on:
                    evals.append(n / elapsed)
                    extra = f"; {n:,} rule evaluations = {n / elapsed:,.0f}/s"
                print(f"  {name} rules: {elapsed:.2f} s = {rate:,.0f} readings/s{extra}")
    best_without, best_with = max(without), max(with_)
    ratio = best_with / best_without
    print(
        f"rule evaluations/s (pure, one core): {evals_per_s:,.0f} (target ≥ 50,000); "
        f"{protections:g} protections × {len(config.rooms)} rooms a pass"
    )
    print(
        f"pipeline throughput with rules ÷ without: {best_with:,.0f} ÷ {best_without:,.0f} = {ratio:.2f} "
        "(target ≥ 0.75; best run of each)"
    )
    print(
        json.dumps(
            {
                "evals_per_s": round(evals_per_s, 1),
                "throughput_with_rules_ratio": round(ratio, 3),
                "readings_per_s_without": round(best_without, 1),
                "readings_per_s_with": round(best_with, 1),
                "pipeline_evals_per_s": round(max(evals), 1),
                "rooms": len(config.rooms),
                "protections_per_room": protections,
            }
        )
    )


if __name__ == "__main__":
    main()
