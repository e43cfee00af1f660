"""What the Modbus collector logs at the default level: one sentence per edge, never one per poll."""

from __future__ import annotations

import logging

import pytest

from collectors.modbus import ModbusCollector
from collectors.sim_modbus import ModbusSimulator
from core.clock import ManualClock
from core.config import ModbusDevice
from core.types import DeviceStatus, Reason
from tests.collectors.conftest import RecordingSink, SimFactory, modbus_device

TH = [
    {"metric": "humidity", "address": 0, "table": "holding", "type": "uint16", "scale": 0.1},
    {"metric": "temperature", "address": 1, "table": "holding", "type": "int16", "scale": 0.1},
]
CO2 = [{"metric": "co2", "address": 4, "table": "input", "type": "uint16"}]


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Every record at INFO or above since the polls began, from any logger (pymodbus included)."""
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO]


async def run(
    sink: RecordingSink,
    caplog: pytest.LogCaptureFixture,
    device: ModbusDevice,
    polls: int,
    *,
    before: dict[int, object],
) -> None:
    """A collector of ``device`` on a ManualClock, polled ``polls`` times 1 s apart, awaiting
    ``before[n]`` (a coroutine) ahead of poll n, then closed. The log is read from the first poll."""
    clock = ManualClock()
    collector = ModbusCollector([device], sink, clock=clock)
    caplog.clear()  # the simulator's "Server listening."
    try:
        for n in range(polls):
            step = before.get(n)
            if step is not None:
                await step  # type: ignore[misc]
            await collector.poll(device.id)
            clock.advance(1.0)
    finally:
        await collector.close()


async def test_one_isolated_bad_value_in_100_polls_writes_at_most_two_lines(
    modbus_sim: SimFactory, sink: RecordingSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sim = await modbus_sim([1])
    await sim.set_registers(1, "holding", 0, [546, 205])
    await run(
        sink,
        caplog,
        modbus_device("th-1", TH, port=sim.port),
        100,
        before={
            50: sim.set_registers(1, "holding", 0, [0xFFFF]),  # the transmitter's fault code, once
            51: sim.set_registers(1, "holding", 0, [547]),
        },
    )
    label = f"device th-1 (127.0.0.1:{sim.port} unit 1)"
    assert lines(caplog) == [
        f"{label}: humidity (holding 0) rejected: sensor fault code 0xFFFF (fault_code)",
        f"{label}: humidity valid again after 1 rejected (fault_code)",
    ]
    assert caplog.records[0].levelno == logging.WARNING
    # the value is still counted, and the device never stopped being online
    assert sink.reasons("th-1") == [("humidity", Reason.FAULT_CODE)]
    assert [s for _, s, _, _ in sink.statuses] == [DeviceStatus.ONLINE]
    assert len(sink.readings) == 199


async def test_a_device_whose_only_value_is_rejected_says_so_in_the_same_two_lines(
    modbus_sim: SimFactory, sink: RecordingSink, caplog: pytest.LogCaptureFixture
) -> None:
    """A one-value transmitter: its status edges (faulty, back online) ride on the streak's lines."""
    caplog.set_level(logging.INFO)
    sim = await modbus_sim([3])
    await sim.set_registers(3, "input", 4, [612])
    await run(
        sink,
        caplog,
        modbus_device("co2-3", CO2, port=sim.port, unit=3),
        100,
        before={
            10: sim.set_registers(3, "input", 4, [0xFFFF]),
            11: sim.set_registers(3, "input", 4, [615]),
        },
    )
    label = f"device co2-3 (127.0.0.1:{sim.port} unit 3)"
    assert lines(caplog) == [
        f"{label}: co2 (input 4) rejected: sensor fault code 0xFFFF (fault_code); no valid value left: faulty",
        f"{label}: co2 valid again after 1 rejected (fault_code); back online",
    ]
    assert [s for _, s, _, _ in sink.statuses] == [
        DeviceStatus.ONLINE,
        DeviceStatus.FAULTY,
        DeviceStatus.ONLINE,
    ]


async def test_a_streak_is_logged_on_its_edges_with_its_count_and_reasons(
    modbus_sim: SimFactory, sink: RecordingSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sim = await modbus_sim([1])
    await sim.set_registers(1, "holding", 0, [546, 205])
    await run(
        sink,
        caplog,
        modbus_device("th-1", TH, port=sim.port),
        30,
        before={
            5: sim.set_registers(1, "holding", 1, [0x7FFF]),  # int16 fault code for 10 polls
            15: sim.set_registers(1, "holding", 1, [900]),  # then 90.0 °C, outside −40…85, twice
            17: sim.set_registers(1, "holding", 1, [210]),
        },
    )
    label = f"device th-1 (127.0.0.1:{sim.port} unit 1)"
    assert lines(caplog) == [
        f"{label}: temperature (holding 1) rejected: sensor fault code 0x7FFF (fault_code)",
        f"{label}: temperature valid again after 12 rejected (fault_code 10, out_of_range 2)",
    ]
    assert len(sink.reasons("th-1")) == 12  # every rejected value is still counted


async def test_a_silent_unit_is_logged_when_it_goes_and_when_it_comes_back(
    sink: RecordingSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    sim = ModbusSimulator([1, 2])
    port = await sim.start_tcp(0)
    await sim.set_registers(2, "holding", 0, [500, 200])
    sim.set_silent(2)
    clock = ManualClock()
    collector = ModbusCollector(
        [modbus_device("th-2", TH, port=port, unit=2, timeout=0.05)], sink, clock=clock
    )
    caplog.clear()
    try:
        for _ in range(20):
            await collector.poll("th-2")
            clock.advance(1.0)
        sim.set_silent(2, False)
        for _ in range(20):
            await collector.poll("th-2")
            clock.advance(1.0)
    finally:
        await collector.close()
        await sim.stop()
    label = f"device th-2 (127.0.0.1:{port} unit 2)"
    assert lines(caplog) == [
        f"{label}: read holding 0×2: timeout (no answer within 0.05 s) (offline)",
        f"{label}: back online",
    ]
    assert len(sink.reasons("th-2")) == 20  # each failed poll is still counted
