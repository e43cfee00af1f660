"""Benchmark: the Modbus collector polling many simulated units every second, as the service does.

The simulated TCP gateways run in a separate process, so the CPU measured here (process CPU from
``resource.getrusage`` over the timed section, every thread of this process) is the service side's:
APScheduler job dispatch, ``ModbusCollector.poll`` (read, decode, validate) and the real sink, the
``store/ingest.py`` Pipeline writing to a ``store/sqlite.py`` SqliteReadingStore in a temporary
directory with the service's default batch size and flush interval. It reports the polls/s achieved
against the configured rate, the share of polls that finished within half an interval of their
scheduled time and the CPU as % of one core. The collector schedules one job per bus and interval that
polls the bus's devices in turn; a poll's lateness is counted as its job's (finish − scheduled), an
upper bound.

Then, in the same run and against the same servers, two bare pymodbus baselines reading the same two
holding registers, their CPU measured the same way:
- saturated: ``--bare-connections`` clients reading as fast as they can (the library's best case, where
  one wake-up of the event loop serves several replies);
- paced: one client per gateway reading each of the same units once per interval, spread over the
  interval (the service's work with nothing of the service around it).

``cpu_ratio_vs_bare`` = the service side's CPU seconds per completed poll ÷ the saturated bare client's
CPU seconds per read; ``cpu_ratio_vs_bare_paced`` divides by the paced client's instead.

    python benchmarks/modbus_poll.py [--units 1000] [--servers 10] [--seconds 20]

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apscheduler.events import (
    EVENT_JOB_ERROR,
    EVENT_JOB_EXECUTED,
    EVENT_JOB_MAX_INSTANCES,
    EVENT_JOB_MISSED,
    JobEvent,
)
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from pymodbus.client import AsyncModbusTcpClient

from collectors.modbus import ModbusCollector
from collectors.sim_modbus import ModbusSimulator
from core.config import ModbusDevice
from core.config.site import Timeseries
from core.types import DeviceStatus
from store.ingest import DeviceInfo, Pipeline
from store.sqlite import SqliteReadingStore

POINTS = [
    {"metric": "humidity", "address": 0, "table": "holding", "type": "uint16", "scale": 0.1},
    {"metric": "temperature", "address": 1, "table": "holding", "type": "int16", "scale": 0.1},
]
REGISTERS = 2  # what one poll reads: the two points above, in one request


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# ---------------------------------------------------------------------------------------------
# The servers' process


def _serve(servers: int, units_per_server: int, conn: Connection) -> None:
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

    async def main() -> None:
        sims = []
        ports = []
        for _ in range(servers):
            sim = ModbusSimulator(range(1, units_per_server + 1), registers=16, bits=16)
            for unit in range(1, units_per_server + 1):
                await sim.set_registers(unit, "holding", 0, [500 + unit % 100, 200 + unit % 50])
            ports.append(await sim.start_tcp(0))
            sims.append(sim)
        conn.send(ports)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, conn.recv)  # until the parent says stop
        for sim in sims:
            await sim.stop()

    asyncio.run(main())


def _addresses(ports: list[int], units: int) -> list[tuple[int, int]]:
    """(port, unit) of each simulated device: units spread evenly over the gateways."""
    per_server = -(-units // len(ports))
    return [(ports[i // per_server], i % per_server + 1) for i in range(units)]


# ---------------------------------------------------------------------------------------------
# The service side


async def run_collector(ports: list[int], units: int, seconds: float, interval: float) -> dict[str, Any]:
    """Poll ``units`` devices into the real pipeline and store for ``seconds`` after a warm-up."""
    devices = [
        ModbusDevice.model_validate(
            {
                "id": f"th-{i}",
                "room": "r1",
                "modbus": {"host": "127.0.0.1", "port": port, "unit": unit, "timeout": 1.0},
                "poll": interval,
                "points": POINTS,
            }
        )
        for i, (port, unit) in enumerate(_addresses(ports, units))
    ]
    ts = Timeseries()  # the service's defaults: batch_size, flush_interval
    with tempfile.TemporaryDirectory(prefix="bafang-modbus-bench-") as tmp:
        store = SqliteReadingStore(Path(tmp) / "readings.db", retention_days=ts.retention_days)
        await store.open()
        pipeline = Pipeline(
            store,
            devices=[DeviceInfo(d.id, d.room, d.protocol, d.poll) for d in devices],
            batch_size=ts.batch_size,
            flush_interval=ts.flush_interval,
        )
        await pipeline.start()
        collector = ModbusCollector(devices, pipeline)
        scheduler = AsyncIOScheduler(timezone=UTC)
        # (code, job id, scheduled datetime, finished epoch s); stamped later, outside the timed section
        events: list[tuple[int, str, Any, float]] = []

        def listen(event: JobEvent) -> None:
            events.append((event.code, event.job_id, getattr(event, "scheduled_run_time", None), time.time()))

        scheduler.add_listener(
            listen, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR
        )
        jobs = {job_id: len(ids) for job_id, ids in collector.schedule(scheduler).items()}
        scheduler.start()
        warmup = min(interval, 5.0) + 2 * interval  # every device has started and run twice
        await asyncio.sleep(warmup)
        t0, cpu0, stored0 = time.time(), _cpu(), pipeline.stored
        await asyncio.sleep(seconds)
        t1, cpu1, stored1 = time.time(), _cpu(), pipeline.stored
        # Polls scheduled before t1 finish (or are more than an interval late) before the scheduler
        # stops; pausing first lets the polls in flight end instead of being cancelled by the shutdown.
        await asyncio.sleep(interval)
        scheduler.pause()
        await asyncio.sleep(min(interval, 0.5))
        scheduler.shutdown(wait=False)
        await collector.close()
        await pipeline.stop()
        health = pipeline.devices()
        stored_total = pipeline.stored
        await store.close()

    # One job polls the devices of one bus in turn: each of its runs is that many polls, and a poll's
    # lateness is at most its job's (finish − scheduled), which is what is counted here.
    runs = [
        (code, jobs[job_id], sched.timestamp() if sched else 0.0, done)
        for code, job_id, sched, done in events
    ]
    window = [r for r in runs if t0 <= r[2] < t1]
    executed = [r for r in window if r[0] == EVENT_JOB_EXECUTED]
    polls = sum(n for _, n, _, _ in executed)
    # CPU per poll: the polls whose job finished while the CPU was being measured.
    finished = sum(n for code, n, _, done in runs if code == EVENT_JOB_EXECUTED and t0 <= done < t1)
    expected = units * seconds / interval
    on_time = sum(n for _, n, sched, done in executed if done - sched <= interval / 2)
    lateness = sorted(late for _, n, sched, done in executed for late in [done - sched] * n)
    elapsed = t1 - t0
    cpu = cpu1 - cpu0
    return {
        "expected_polls": round(expected),
        "polls": polls,
        "polls_per_s": polls / elapsed,
        "configured_per_s": units / interval,
        "on_time": on_time,
        "on_time_pct": min(100.0, 100.0 * on_time / expected) if expected else 0.0,
        "missed": sum(n for code, n, _, _ in window if code == EVENT_JOB_MISSED),
        "skipped_busy": sum(n for code, n, _, _ in window if code == EVENT_JOB_MAX_INSTANCES),
        "errors": sum(n for code, n, _, _ in window if code == EVENT_JOB_ERROR),
        "jobs": len(jobs),
        "lateness_p50_ms": 1000 * lateness[len(lateness) // 2] if lateness else None,
        "lateness_p99_ms": 1000 * lateness[int(len(lateness) * 0.99)] if lateness else None,
        "lateness_max_ms": 1000 * lateness[-1] if lateness else None,
        "cpu_pct_of_core": 100.0 * cpu / elapsed,
        "cpu_us_per_poll": 1e6 * cpu / finished if finished else None,
        "stored_per_s": (stored1 - stored0) / elapsed,
        "stored_total": stored_total,
        "devices_not_online": sum(1 for h in health if h.status is not DeviceStatus.ONLINE),
    }


# ---------------------------------------------------------------------------------------------
# Bare pymodbus baselines


async def _bare_clients(ports: Sequence[int]) -> list[AsyncModbusTcpClient]:
    clients = []
    for port in ports:
        client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=3, retries=0)
        await client.connect()
        clients.append(client)
    return clients


async def run_bare_paced(ports: list[int], units: int, seconds: float, interval: float) -> dict[str, Any]:
    """A bare pymodbus client per gateway reading each unit once per interval, spread over it."""
    clients = await _bare_clients(ports)
    by_port: dict[int, list[int]] = {}
    for port, unit in _addresses(ports, units):
        by_port.setdefault(port, []).append(unit)
    loop = asyncio.get_running_loop()
    counts = {"ok": 0, "failed": 0}
    measuring = False

    async def pace(client: AsyncModbusTcpClient, unit_ids: list[int], start: float, stop: float) -> None:
        step = interval / len(unit_ids)
        k = 0
        while True:
            due = start + k * step
            if due >= stop:
                return
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            rr = await client.read_holding_registers(
                0, count=REGISTERS, device_id=unit_ids[k % len(unit_ids)]
            )
            if measuring:
                counts["ok" if not rr.isError() and len(rr.registers) == REGISTERS else "failed"] += 1
            k += 1

    warmup = interval
    start = loop.time() + 0.05
    stop = start + warmup + seconds
    tasks = [
        asyncio.create_task(pace(c, by_port[port], start + i * interval / len(ports) / 10, stop))
        for i, (port, c) in enumerate(zip(ports, clients, strict=True))
    ]
    await asyncio.sleep(start + warmup - loop.time())
    measuring = True
    cpu0, t0 = _cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    measuring = False
    elapsed, cpu = time.monotonic() - t0, _cpu() - cpu0
    await asyncio.gather(*tasks)
    for client in clients:
        client.close()
    reads = counts["ok"]
    return {
        "paced_reads_per_s": reads / elapsed,
        "paced_failed": counts["failed"],
        "paced_cpu_pct_of_core": 100.0 * cpu / elapsed,
        "paced_cpu_us_per_read": 1e6 * cpu / reads if reads else None,
    }


async def run_bare(
    ports: list[int], units_per_server: int, connections: int, seconds: float
) -> dict[str, Any]:
    """A bare pymodbus client: ``connections`` concurrent connections reading as fast as they can."""
    clients = await _bare_clients([ports[i % len(ports)] for i in range(connections)])
    count = 0
    stop_at = 0.0

    async def hammer(client: AsyncModbusTcpClient, offset: int) -> None:
        nonlocal count
        unit = offset
        while time.monotonic() < stop_at:
            rr = await client.read_holding_registers(
                0, count=REGISTERS, device_id=unit % units_per_server + 1
            )
            if not rr.isError():
                count += 1
            unit += 1

    stop_at = time.monotonic() + seconds
    cpu0, t0 = _cpu(), time.monotonic()
    await asyncio.gather(*(hammer(c, i) for i, c in enumerate(clients)))
    elapsed, cpu = time.monotonic() - t0, _cpu() - cpu0
    for client in clients:
        client.close()
    return {
        "bare_reads_per_s": count / elapsed,
        "bare_cpu_pct_of_core": 100.0 * cpu / elapsed,
        "bare_cpu_us_per_read": 1e6 * cpu / count if count else None,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print its figures; the last line is one JSON object."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=1000, help="simulated Modbus units (devices)")
    parser.add_argument("--servers", type=int, default=10, help="simulated TCP gateways (separate process)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured polling time")
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval of every device, seconds")
    parser.add_argument(
        "--bare-seconds", type=float, default=5.0, help="measured time of each bare pymodbus baseline"
    )
    parser.add_argument(
        "--bare-connections", type=int, default=10, help="saturated baseline: concurrent connections"
    )
    args = parser.parse_args(argv)
    per_server = -(-args.units // args.servers)
    if per_server > 247:
        parser.error(f"{per_server} units per server: a Modbus gateway addresses at most 247; add --servers")
    logging.basicConfig(level=logging.WARNING)

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_serve, args=(args.servers, per_server, child), name="modbus-sim", daemon=True)
    proc.start()
    try:
        ports: list[int] = parent.recv()
        service = asyncio.run(run_collector(ports, args.units, args.seconds, args.interval))
        bare = asyncio.run(run_bare(ports, per_server, args.bare_connections, args.bare_seconds))
        paced = asyncio.run(run_bare_paced(ports, args.units, args.bare_seconds, args.interval))
    finally:
        parent.send("stop")
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()

    print(
        f"units {args.units} on {args.servers} servers, interval {args.interval:g} s, "
        f"measured {args.seconds:g} s (bare baselines {args.bare_seconds:g} s each)"
    )
    print(
        f"service: {service['polls_per_s']:.1f} polls/s of {service['configured_per_s']:.1f} configured; "
        f"on time {service['on_time_pct']:.2f} % ({service['on_time']} of {service['expected_polls']}); "
        f"missed {service['missed']}, skipped busy {service['skipped_busy']}, errors {service['errors']}; "
        f"{service['stored_per_s']:.0f} readings/s stored, {service['devices_not_online']} devices not online"
    )
    if service["lateness_p50_ms"] is not None:
        print(
            f"lateness (finish − scheduled): p50 {service['lateness_p50_ms']:.1f} ms, "
            f"p99 {service['lateness_p99_ms']:.1f} ms, max {service['lateness_max_ms']:.1f} ms"
        )
    us_poll = service["cpu_us_per_poll"]
    print(
        f"service CPU (scheduler + collector + pipeline + SQLite): {service['cpu_pct_of_core']:.1f} % of one core"
        + (f", {us_poll:.0f} µs per poll" if us_poll else "")
    )
    us_paced = paced["paced_cpu_us_per_read"]
    print(
        f"bare pymodbus, paced (1 client per gateway, each unit once per interval): "
        f"{paced['paced_reads_per_s']:.0f} reads/s at {paced['paced_cpu_pct_of_core']:.1f} % of a core"
        + (f", {us_paced:.0f} µs per read" if us_paced else "")
        + (f"; {paced['paced_failed']} failed" if paced["paced_failed"] else "")
    )
    us_bare = bare["bare_cpu_us_per_read"]
    print(
        f"bare pymodbus, saturated ({args.bare_connections} connections): {bare['bare_reads_per_s']:.0f} reads/s "
        f"at {bare['bare_cpu_pct_of_core']:.0f} % of a core"
        + (f", {us_bare:.0f} µs per read" if us_bare else "")
    )
    cpu_ratio = _ratio(us_poll, us_bare)
    cpu_ratio_paced = _ratio(us_poll, us_paced)
    if cpu_ratio is not None and cpu_ratio_paced is not None:
        print(
            f"service CPU per poll ÷ bare CPU per read = {cpu_ratio:.2f} (saturated bare), "
            f"{cpu_ratio_paced:.2f} (paced bare)"
        )
    ratio = _ratio(service["polls_per_s"], bare["bare_reads_per_s"]) or 0.0
    print(f"service polls/s ÷ bare max reads/s = {ratio:.3f}")
    result = {
        "units": args.units,
        "seconds": args.seconds,
        "on_time_pct": round(service["on_time_pct"], 2),
        "cpu_pct_of_core": round(service["cpu_pct_of_core"], 1),
        "polls_per_s": round(service["polls_per_s"], 1),
        "configured_per_s": round(service["configured_per_s"], 1),
        "errors": service["errors"],
        "stored_per_s": round(service["stored_per_s"]),
        "cpu_us_per_poll": round(us_poll, 1) if us_poll else None,
        "bare_paced_cpu_us_per_read": round(us_paced, 1) if us_paced else None,
        "bare_cpu_us_per_read": round(us_bare, 1) if us_bare else None,
        "bare_reads_per_s": round(bare["bare_reads_per_s"]),
        "cpu_ratio_vs_bare": round(cpu_ratio, 2) if cpu_ratio is not None else None,
        "cpu_ratio_vs_bare_paced": round(cpu_ratio_paced, 2) if cpu_ratio_paced is not None else None,
        "ratio": round(ratio, 4),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
