"""Benchmark: the Modbus collector polling many simulated units every second through APScheduler.

The simulated TCP gateways run in a separate process, so the CPU measured here is the collector's.
Measures achieved polls/s against the configured rate, the share of polls that finished within half an
interval of their scheduled time, and the collector process's CPU as % of one core; then, in the same
run and against the same servers, a bare pymodbus client baseline (max reads/s with N concurrent
connections). Target: ≥ 99 % on time using ≤ 30 % of one core for 1,000 units at 1 s.

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
from core.types import DeviceStatus, Reading, Rejection

POINTS = [
    {"metric": "humidity", "address": 0, "table": "holding", "type": "uint16", "scale": 0.1},
    {"metric": "temperature", "address": 1, "table": "holding", "type": "int16", "scale": 0.1},
]


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


# ---------------------------------------------------------------------------------------------
# The collector side


class CountingSink:
    """A sink that only counts: the pipeline is not what is measured here."""

    def __init__(self) -> None:
        self.readings = 0
        self.rejections = 0
        self.offline: set[str] = set()

    def submit(self, readings: Sequence[Reading]) -> None:
        """Count readings."""
        self.readings += len(readings)

    def reject(self, rejection: Rejection) -> None:
        """Count rejections."""
        self.rejections += 1

    def status(self, device: str, status: DeviceStatus, error: str | None, time: float) -> None:
        """Track devices not online."""
        if status is DeviceStatus.ONLINE:
            self.offline.discard(device)
        else:
            self.offline.add(device)


async def run_collector(ports: list[int], units: int, seconds: float, interval: float) -> dict[str, Any]:
    """Poll ``units`` devices spread over the servers for ``seconds`` after a warm-up; return figures."""
    devices: list[ModbusDevice] = []
    per_server = -(-units // len(ports))
    for i in range(units):
        port, unit = ports[i // per_server], i % per_server + 1
        devices.append(
            ModbusDevice.model_validate(
                {
                    "id": f"th-{i}",
                    "room": "r1",
                    "modbus": {"host": "127.0.0.1", "port": port, "unit": unit, "timeout": 1.0},
                    "poll": interval,
                    "points": POINTS,
                }
            )
        )
    sink = CountingSink()
    collector = ModbusCollector(devices, sink)
    scheduler = AsyncIOScheduler(timezone=UTC)
    events: list[tuple[int, float, float]] = []  # (code, scheduled, finished) as epoch seconds

    def listen(event: JobEvent) -> None:
        scheduled = getattr(event, "scheduled_run_time", None)
        events.append((event.code, scheduled.timestamp() if scheduled else 0.0, time.time()))

    scheduler.add_listener(
        listen, EVENT_JOB_EXECUTED | EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR
    )
    collector.schedule(scheduler)
    scheduler.start()
    warmup = min(interval, 5.0) + 2 * interval  # every device has started and run twice
    await asyncio.sleep(warmup)
    t0, cpu0, readings0 = time.time(), _cpu(), sink.readings
    await asyncio.sleep(seconds)
    t1, cpu1, readings1 = time.time(), _cpu(), sink.readings
    # Polls scheduled before t1 finish (or are more than an interval late) before the scheduler stops;
    # pausing first lets the polls in flight end instead of being cancelled by the shutdown.
    await asyncio.sleep(interval)
    scheduler.pause()
    await asyncio.sleep(min(interval, 0.5))
    scheduler.shutdown(wait=False)
    await collector.close()

    window = [e for e in events if t0 <= e[1] < t1]
    executed = [e for e in window if e[0] == EVENT_JOB_EXECUTED]
    expected = units * seconds / interval
    on_time = sum(1 for _, sched, done in executed if done - sched <= interval / 2)
    lateness = sorted(done - sched for _, sched, done in executed)
    elapsed = t1 - t0
    return {
        "expected_polls": round(expected),
        "polls": len(executed),
        "polls_per_s": len(executed) / elapsed,
        "configured_per_s": units / interval,
        "on_time": on_time,
        "on_time_pct": min(100.0, 100.0 * on_time / expected) if expected else 0.0,
        "missed": sum(1 for e in window if e[0] == EVENT_JOB_MISSED),
        "skipped_busy": sum(1 for e in window if e[0] == EVENT_JOB_MAX_INSTANCES),
        "errors": sum(1 for e in window if e[0] == EVENT_JOB_ERROR),
        "lateness_p50_ms": 1000 * lateness[len(lateness) // 2] if lateness else None,
        "lateness_p99_ms": 1000 * lateness[int(len(lateness) * 0.99)] if lateness else None,
        "lateness_max_ms": 1000 * lateness[-1] if lateness else None,
        "cpu_pct_of_core": 100.0 * (cpu1 - cpu0) / elapsed,
        "readings_per_s": (readings1 - readings0) / elapsed,
        "devices_not_online": len(sink.offline),
    }


async def run_bare(
    ports: list[int], units_per_server: int, connections: int, seconds: float
) -> dict[str, Any]:
    """A bare pymodbus client: ``connections`` concurrent connections reading as fast as they can."""
    clients = []
    for i in range(connections):
        client = AsyncModbusTcpClient("127.0.0.1", port=ports[i % len(ports)], timeout=3, retries=0)
        await client.connect()
        clients.append(client)
    count = 0
    stop_at = 0.0

    async def hammer(client: AsyncModbusTcpClient, offset: int) -> None:
        nonlocal count
        unit = offset
        while time.monotonic() < stop_at:
            rr = await client.read_holding_registers(0, count=2, device_id=unit % units_per_server + 1)
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


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark and print its figures; the last line is one JSON object."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--units", type=int, default=1000, help="simulated Modbus units (devices)")
    parser.add_argument("--servers", type=int, default=10, help="simulated TCP gateways (separate process)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured polling time")
    parser.add_argument("--interval", type=float, default=1.0, help="poll interval of every device, seconds")
    parser.add_argument("--bare-seconds", type=float, default=3.0, help="bare pymodbus baseline time")
    parser.add_argument(
        "--bare-connections", type=int, default=10, help="bare baseline concurrent connections"
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
        collector = asyncio.run(run_collector(ports, args.units, args.seconds, args.interval))
        bare = asyncio.run(run_bare(ports, per_server, args.bare_connections, args.bare_seconds))
    finally:
        parent.send("stop")
        proc.join(timeout=10)
        if proc.is_alive():
            proc.kill()

    print(
        f"units {args.units} on {args.servers} servers, interval {args.interval:g} s, measured {args.seconds:g} s"
    )
    print(
        f"collector: {collector['polls_per_s']:.1f} polls/s of {collector['configured_per_s']:.1f} configured; "
        f"on time {collector['on_time_pct']:.2f} % ({collector['on_time']} of {collector['expected_polls']}); "
        f"missed {collector['missed']}, skipped busy {collector['skipped_busy']}, errors {collector['errors']}"
    )
    print(
        f"lateness (finish − scheduled): p50 {collector['lateness_p50_ms']:.1f} ms, "
        f"p99 {collector['lateness_p99_ms']:.1f} ms, max {collector['lateness_max_ms']:.1f} ms"
    )
    cpu_per_poll = (
        1e4 * collector["cpu_pct_of_core"] / collector["polls_per_s"] if collector["polls_per_s"] else 0
    )
    print(f"collector CPU: {collector['cpu_pct_of_core']:.1f} % of one core ({cpu_per_poll:.0f} µs per poll)")
    print(
        f"bare pymodbus ({args.bare_connections} connections): {bare['bare_reads_per_s']:.0f} reads/s "
        f"at {bare['bare_cpu_pct_of_core']:.0f} % of a core ({bare['bare_cpu_us_per_read']:.0f} µs per read)"
    )
    ratio = collector["polls_per_s"] / bare["bare_reads_per_s"] if bare["bare_reads_per_s"] else 0.0
    print(f"collector polls/s ÷ bare max reads/s = {ratio:.3f}")
    result = {
        "units": args.units,
        "on_time_pct": round(collector["on_time_pct"], 2),
        "cpu_pct_of_core": round(collector["cpu_pct_of_core"], 1),
        "polls_per_s": round(collector["polls_per_s"], 1),
        "configured_per_s": round(collector["configured_per_s"], 1),
        "bare_reads_per_s": round(bare["bare_reads_per_s"]),
        "ratio": round(ratio, 4),
        "cpu_us_per_poll": round(cpu_per_poll),
        "bare_cpu_us_per_read": round(bare["bare_cpu_us_per_read"] or 0),
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
