"""The Modbus collector against a real pymodbus TCP server on a free port."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from pymodbus.client import AsyncModbusTcpClient

from collectors.modbus import ModbusCollector, default_client_factory
from collectors.sim_modbus import ModbusSimulator, start_demo
from core.clock import ManualClock
from core.config import ModbusConnection, ModbusDevice
from core.types import DeviceStatus, Reason
from tests.collectors.conftest import RecordingSink, SimFactory, modbus_device

TH = [
    {"metric": "humidity", "address": 0, "table": "holding", "type": "uint16", "scale": 0.1},
    {"metric": "temperature", "address": 1, "table": "holding", "type": "int16", "scale": 0.1},
]
PM = [{"metric": "pm25", "address": 10, "table": "input", "type": "float32", "byte_order": "CDAB"}]


async def poll_all(collector: ModbusCollector, rounds: int = 1) -> None:
    for _ in range(rounds):
        await asyncio.gather(*(collector.poll(d) for d in collector.device_ids))


async def test_poll_stores_valid_values(modbus_sim: SimFactory, sink: RecordingSink) -> None:
    sim = await modbus_sim([1, 2, 3])
    await sim.set_registers(1, "holding", 0, [546, 0xFF33])  # 54.6 %RH, −20.5 °C
    await sim.set_value(2, "input", 10, 12.5, "float32", "CDAB")
    await sim.set_bits(3, "discrete", 0, [True])
    clock = ManualClock()
    devices = [
        modbus_device("th-1", TH, port=sim.port, unit=1),
        modbus_device("pm-1", PM, port=sim.port, unit=2, room="r2"),
        modbus_device(
            "di-1", [{"metric": "smoke", "address": 0, "table": "discrete"}], port=sim.port, unit=3
        ),
    ]
    collector = ModbusCollector(devices, sink, clock=clock)
    try:
        await poll_all(collector)
        assert len(sink.batches) == 3  # one submit per poll
        by_metric = {(r.device, r.metric): r for r in sink.readings}
        assert by_metric["th-1", "humidity"].value == 54.6
        assert by_metric["th-1", "humidity"].unit == "%RH"
        assert by_metric["th-1", "temperature"].value == -20.5
        assert by_metric["th-1", "temperature"].unit == "°C"
        assert by_metric["pm-1", "pm25"].value == 12.5
        assert by_metric["pm-1", "pm25"].room == "r2"
        assert by_metric["di-1", "smoke"].value == 1.0
        assert all(r.time == clock.now() for r in sink.readings)
        assert not sink.rejections
        assert sorted((d, s) for d, s, _, _ in sink.statuses) == [
            ("di-1", DeviceStatus.ONLINE),
            ("pm-1", DeviceStatus.ONLINE),
            ("th-1", DeviceStatus.ONLINE),
        ]
        # values change; status is reported on edges only
        await sim.set_registers(1, "holding", 1, [0x00FA])
        clock.advance(1)
        await poll_all(collector, rounds=2)
        assert sink.values("th-1")["temperature"] == 25.0
        assert len(sink.statuses) == 3
    finally:
        await collector.close()


async def test_coil_and_discrete_bit_order(modbus_sim: SimFactory, sink: RecordingSink) -> None:
    """Door and smoke contacts: bit n of the table is address n, whatever pymodbus packs internally."""
    sim = await modbus_sim([4])
    pattern = [
        True,
        False,
        False,
        True,
        True,
        False,
        True,
        False,
        False,
        False,
        False,
        False,
        False,
        False,
        False,
        True,
    ]
    await sim.set_bits(4, "coil", 0, pattern)
    await sim.set_bits(4, "discrete", 0, [not b for b in pattern] + [True])
    # a bare pymodbus client sees the same bits at the same addresses
    assert sim.port is not None
    client = AsyncModbusTcpClient("127.0.0.1", port=sim.port, timeout=1, retries=0, reconnect_delay=0)
    await client.connect()
    try:
        rr = await client.read_coils(0, count=16, device_id=4)
        assert rr.bits[:16] == pattern
        rr = await client.read_discrete_inputs(3, count=2, device_id=4)
        assert rr.bits[:2] == [False, False]
        rr = await client.read_discrete_inputs(15, count=2, device_id=4)
        assert rr.bits[:2] == [False, True]
    finally:
        client.close()
    points = [
        {"metric": "smoke", "address": 0, "table": "coil"},
        {"metric": "door", "address": 1, "table": "coil"},
        {"metric": "water_leak", "address": 3, "table": "coil"},
        {"metric": "fire", "address": 15, "table": "coil"},
        {"metric": "rodent", "address": 6, "table": "discrete"},
        {"metric": "intrusion", "address": 15, "table": "discrete"},
        {"metric": "running", "address": 16, "table": "discrete"},
    ]
    collector = ModbusCollector(
        [modbus_device("di-4", points, port=sim.port, unit=4)], sink, clock=ManualClock()
    )
    try:
        await collector.poll("di-4")
    finally:
        await collector.close()
    assert sink.values("di-4") == {
        "smoke": 1.0,
        "door": 0.0,
        "water_leak": 1.0,
        "fire": 1.0,
        "rodent": 0.0,
        "intrusion": 0.0,
        "running": 1.0,
    }


async def test_fault_codes_nan_and_out_of_range_are_rejected(
    modbus_sim: SimFactory, sink: RecordingSink
) -> None:
    sim = await modbus_sim([1, 2, 3])
    await sim.set_registers(1, "holding", 0, [0xFFFF, 0x7FFF])  # uint16 and int16 fault codes
    await sim.set_registers(2, "input", 10, [0x0000, 0x7FC0])  # NaN, CDAB
    await sim.set_registers(3, "holding", 0, [1001, 0x00FA])  # 100.1 %RH out of range; 25.0 °C fine
    devices = [
        modbus_device("th-1", TH, port=sim.port, unit=1),
        modbus_device("pm-2", PM, port=sim.port, unit=2),
        modbus_device("th-3", TH, port=sim.port, unit=3),
    ]
    collector = ModbusCollector(devices, sink, clock=ManualClock())
    try:
        await poll_all(collector, rounds=2)
    finally:
        await collector.close()
    assert {(r.device, r.metric) for r in sink.readings} == {("th-3", "temperature")}
    assert sink.values("th-3") == {"temperature": 25.0}
    assert sink.reasons("th-1") == [("humidity", Reason.FAULT_CODE), ("temperature", Reason.FAULT_CODE)] * 2
    assert sink.reasons("pm-2") == [("pm25", Reason.NAN)] * 2
    assert sink.reasons("th-3") == [("humidity", Reason.OUT_OF_RANGE)] * 2
    # answering with nothing usable is a fault of the device; one usable value keeps it online
    assert sink.status_of("th-1") is DeviceStatus.FAULTY
    assert "fault code 0xFFFF" in (sink.error_of("th-1") or "")
    assert sink.status_of("pm-2") is DeviceStatus.FAULTY
    assert sink.status_of("th-3") is DeviceStatus.ONLINE
    assert len(sink.statuses) == 3  # one edge each, not one per poll


async def test_exception_reply_marks_only_that_device_faulty(
    modbus_sim: SimFactory, sink: RecordingSink
) -> None:
    sim = await modbus_sim([1, 2], registers=20)
    await sim.set_registers(1, "holding", 0, [500, 200])
    await sim.set_registers(2, "holding", 0, [510, 210])
    devices = [
        modbus_device("th-1", TH, port=sim.port, unit=1),
        modbus_device("pm-1", [{"metric": "pm10", "address": 30, "table": "input"}], port=sim.port, unit=1),
        modbus_device("th-2", TH, port=sim.port, unit=2),
    ]
    collector = ModbusCollector(devices, sink, clock=ManualClock())
    try:
        await poll_all(collector, rounds=3)
    finally:
        await collector.close()
    assert sink.status_of("pm-1") is DeviceStatus.FAULTY
    assert sink.error_of("pm-1") == "read input 30×1: exception 2 illegal data address"
    assert sink.status_of("th-1") is DeviceStatus.ONLINE
    assert sink.status_of("th-2") is DeviceStatus.ONLINE
    assert sink.reasons("pm-1") == [(None, Reason.READ_ERROR)] * 3  # once per failed poll
    assert [s[1] for s in sink.statuses if s[0] == "pm-1"] == [DeviceStatus.FAULTY]  # one edge
    assert len([r for r in sink.readings if r.device in ("th-1", "th-2")]) == 12


async def test_merged_read_refused_falls_back_to_exact_reads(
    modbus_sim: SimFactory, sink: RecordingSink
) -> None:
    """A sparse device refuses the unused registers a merged read spans: read its points one by one."""
    sim = await modbus_sim([1], registers=20, holes=[(2, 3)])
    await sim.set_registers(1, "holding", 0, [500, 200])
    await sim.set_registers(1, "holding", 5, [400])
    points = [*TH, {"metric": "co2", "address": 5, "table": "holding"}]
    collector = ModbusCollector([modbus_device("th-1", points, port=sim.port)], sink, clock=ManualClock())
    try:
        await collector.poll("th-1")
        await collector.poll("th-1")
    finally:
        await collector.close()
    assert sink.values("th-1") == {"humidity": 50.0, "temperature": 20.0, "co2": 400.0}
    assert len(sink.batches) == 2 and not sink.rejections
    assert sink.statuses == [("th-1", DeviceStatus.ONLINE, None, ManualClock().now())]


async def test_silent_unit_marks_only_it_offline(modbus_sim: SimFactory, sink: RecordingSink) -> None:
    sim = await modbus_sim([1, 2, 3])
    for unit in (1, 2, 3):
        await sim.set_registers(unit, "holding", 0, [500, 200])
    sim.set_silent(2)
    devices = [modbus_device(f"th-{u}", TH, port=sim.port, unit=u, timeout=0.1, retries=1) for u in (1, 2, 3)]
    collector = ModbusCollector(devices, sink, clock=ManualClock())
    try:
        # more rounds than pymodbus' own "retries + 3 unanswered → close the connection" rule
        await poll_all(collector, rounds=6)
        assert sink.status_of("th-2") is DeviceStatus.OFFLINE
        assert sink.error_of("th-2") == "read holding 0×2: timeout (no answer within 0.1 s)"
        assert sink.status_of("th-1") is DeviceStatus.ONLINE
        assert sink.status_of("th-3") is DeviceStatus.ONLINE
        assert len([r for r in sink.readings if r.device == "th-1"]) == 12
        assert len([r for r in sink.readings if r.device == "th-3"]) == 12
        assert [s for d, s, _, _ in sink.statuses if d in ("th-1", "th-3")] == [DeviceStatus.ONLINE] * 2
        assert sink.reasons("th-2") == [(None, Reason.READ_ERROR)] * 6
        # it comes back
        sim.set_silent(2, False)
        await collector.poll("th-2")
        assert sink.status_of("th-2") is DeviceStatus.ONLINE
    finally:
        await collector.close()


async def test_gateway_restart_recovers_without_new_collector(sink: RecordingSink) -> None:
    sim = ModbusSimulator([1, 2])
    port = await sim.start_tcp(0)
    await sim.set_registers(1, "holding", 0, [500, 200])
    await sim.set_registers(2, "holding", 0, [510, 210])
    clock = ManualClock()
    devices = [modbus_device(f"th-{u}", TH, port=port, unit=u, timeout=0.2) for u in (1, 2)]
    collector = ModbusCollector(devices, sink, clock=clock)
    try:
        await poll_all(collector)
        assert {sink.status_of("th-1"), sink.status_of("th-2")} == {DeviceStatus.ONLINE}
        await sim.stop()  # the gateway reboots
        for _ in range(2):
            await poll_all(collector)
            clock.advance(0.5)
        assert sink.status_of("th-1") is DeviceStatus.OFFLINE
        assert sink.status_of("th-2") is DeviceStatus.OFFLINE
        assert "cannot connect to 127.0.0.1" in (sink.error_of("th-1") or "")
        # while backing off, a poll fails at once instead of knocking on the door again
        started = time.monotonic()
        await poll_all(collector)
        assert time.monotonic() - started < 0.1
        await sim.start_tcp(port)  # back, on the same port
        deadline = time.monotonic() + 5.0
        while (
            sink.status_of("th-1") is not DeviceStatus.ONLINE
            or sink.status_of("th-2") is not DeviceStatus.ONLINE
        ):
            assert time.monotonic() < deadline, sink.statuses
            clock.advance(1.0)
            await poll_all(collector)
        assert sink.values("th-2") == {"humidity": 51.0, "temperature": 21.0}
    finally:
        await collector.close()
        await sim.stop()


async def test_reconnect_backoff_doubles_from_1_s_to_60_s(sink: RecordingSink) -> None:
    sim = ModbusSimulator([1])
    port = await sim.start_tcp(0)
    await sim.stop()  # nothing listens on this port now: every connect is refused
    clock = ManualClock()
    attempts: list[float] = []

    def counting_factory(connection: ModbusConnection, *, timeout: float) -> Any:
        client = default_client_factory(connection, timeout=timeout)
        connect = client.connect

        async def counted() -> bool:
            attempts.append(clock.monotonic())
            return bool(await connect())

        client.connect = counted
        return client

    collector = ModbusCollector(
        [modbus_device("th-1", TH, port=port)], sink, clock=clock, client_factory=counting_factory
    )
    try:
        for _ in range(400):
            await collector.poll("th-1")
            clock.advance(1.0)
    finally:
        await collector.close()
    assert attempts == [0, 1, 3, 7, 15, 31, 63, 123, 183, 243, 303, 363]
    assert len(sink.rejections) == 400  # every poll still reports its failure
    assert sink.statuses == [("th-1", DeviceStatus.OFFLINE, sink.error_of("th-1"), clock.now() - 400)]


async def test_schedule_polls_each_bus_and_interval_in_one_job(
    modbus_sim: SimFactory, sink: RecordingSink
) -> None:
    """One APScheduler job per bus and poll interval polls its devices in turn, in config order."""
    sim = await modbus_sim([1, 2, 3])
    other = await modbus_sim([1])
    for unit in (1, 2, 3):
        await sim.set_registers(unit, "holding", 0, [500 + unit, 200])
    await other.set_registers(1, "holding", 0, [520, 220])
    devices = [
        modbus_device("fast-1", TH, port=sim.port, unit=1, poll=0.1),
        modbus_device("slow", TH, port=sim.port, unit=2, poll=60),
        modbus_device("fast-3", TH, port=sim.port, unit=3, poll=0.1),
        modbus_device("fast-b", TH, port=other.port, unit=1, poll=0.1),
    ]
    collector = ModbusCollector(devices, sink)
    scheduler = AsyncIOScheduler()
    planned = collector.schedule(scheduler)
    bus, bus_b = f"127.0.0.1:{sim.port}", f"127.0.0.1:{other.port}"
    assert planned == {
        f"modbus:{bus}@0.1s": ("fast-1", "fast-3"),
        f"modbus:{bus}@60s": ("slow",),
        f"modbus:{bus_b}@0.1s": ("fast-b",),
    }
    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == set(planned)
    fast = jobs[f"modbus:{bus}@0.1s"]
    assert fast.coalesce and fast.max_instances == 1
    assert fast.trigger.interval.total_seconds() == 0.1
    assert jobs[f"modbus:{bus}@60s"].trigger.interval.total_seconds() == 60

    def polls(device: str) -> int:
        return len([b for b in sink.batches if b[0].device == device])

    scheduler.start()
    try:
        deadline = time.monotonic() + 5.0
        while min(polls("fast-1"), polls("fast-3"), polls("fast-b")) < 5:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        scheduler.shutdown(wait=False)
        await collector.close()
    assert polls("slow") == 1  # at start, then not before 60 s
    order = [b[0].device for b in sink.batches if b[0].device in ("fast-1", "fast-3")]
    assert order[:4] == ["fast-1", "fast-3", "fast-1", "fast-3"]  # in turn, one after the other
    assert sink.values("fast-3") == {"humidity": 50.3, "temperature": 20.0}


async def test_demo_simulator_serves_plausible_rooms(sink: RecordingSink) -> None:
    sim, task, entries = await start_demo(["r1", "r2"], seed=7)
    devices = [ModbusDevice.model_validate(e) for e in entries]
    collector = ModbusCollector(devices, sink, clock=ManualClock())
    try:
        await poll_all(collector)
    finally:
        await collector.close()
        task.cancel()
        await sim.stop()
    assert {d for d, s, _, _ in sink.statuses if s is DeviceStatus.ONLINE} == {d.id for d in devices}
    values = {(r.device, r.metric): r.value for r in sink.readings}
    for room in ("r1", "r2"):
        assert 14 <= values[f"th-{room}", "temperature"] <= 28
        assert 40 <= values[f"th-{room}", "humidity"] <= 70
        assert 0 < values[f"pm-{room}", "pm25"] < 300
        assert values[f"di-{room}", "smoke"] in (0.0, 1.0)


def test_benchmark_smoke_run() -> None:
    """benchmarks/modbus_poll.py runs at a small size and ends with one JSON object."""
    root = Path(__file__).resolve().parents[2]
    args = ["--units", "20", "--servers", "2", "--seconds", "1", "--interval", "0.25"]
    args += ["--bare-seconds", "0.3", "--bare-connections", "2"]
    done = subprocess.run(
        [sys.executable, str(root / "benchmarks" / "modbus_poll.py"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=root,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["units"] == 20
    assert result["polls_per_s"] > 0 and result["bare_reads_per_s"] > 0
    assert 0 < result["on_time_pct"] <= 100
    assert result["cpu_pct_of_core"] >= 0
    assert result["stored_per_s"] > 0  # polls went through the real pipeline into SQLite
    assert result["cpu_ratio_vs_bare"] > 0 and result["cpu_ratio_vs_bare_paced"] > 0
