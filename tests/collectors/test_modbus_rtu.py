"""Modbus RTU through a socat pseudo-terminal pair: real RTU framing and CRCs, several units on one line."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from collectors.modbus import ModbusCollector
from collectors.sim_modbus import ModbusSimulator
from core.clock import ManualClock
from core.types import DeviceStatus, Reason
from tests.collectors.conftest import RecordingSink, modbus_device

XY_MD02 = [  # input 1 = T×10 (signed), input 2 = RH×10, FC 04
    {"metric": "temperature", "address": 1, "table": "input", "type": "int16", "scale": 0.1},
    {"metric": "humidity", "address": 2, "table": "input", "type": "uint16", "scale": 0.1},
]
RENKE = [  # holding 0 = RH×10, holding 1 = T×10 (signed), FC 03
    {"metric": "humidity", "address": 0, "table": "holding", "type": "uint16", "scale": 0.1},
    {"metric": "temperature", "address": 1, "table": "holding", "type": "int16", "scale": 0.1},
]


@pytest.mark.socat
async def test_two_units_and_a_silent_one_on_an_rtu_line(
    socat_pair: tuple[str, str], sink: RecordingSink
) -> None:
    line_a, line_b = socat_pair
    sim = ModbusSimulator([1, 2, 5])
    await sim.set_registers(1, "input", 1, [0x0131, 0x0222])  # the XY-MD02 frame: 30.5 °C, 54.6 %RH
    await sim.set_registers(2, "holding", 0, [0x01F4, 0xFF33])  # 50.0 %RH, −20.5 °C
    await sim.set_bits(5, "discrete", 0, [False, True])
    await sim.start_rtu(line_a, baudrate=9600)
    devices = [
        modbus_device("xy-1", XY_MD02, serial=line_b, unit=1, timeout=0.3),
        modbus_device("rk-2", RENKE, serial=line_b, unit=2, timeout=0.3),
        modbus_device("di-5", [{"metric": "door", "address": 1, "table": "discrete"}], serial=line_b, unit=5),
        modbus_device("th-9", RENKE, serial=line_b, unit=9, timeout=0.2),  # nobody answers to unit 9
    ]
    collector = ModbusCollector(devices, sink, clock=ManualClock())
    try:
        # concurrent polls share the line through the hub's lock
        for _ in range(2):
            await asyncio.gather(*(collector.poll(d) for d in collector.device_ids))
        assert sink.values("xy-1") == {"temperature": 30.5, "humidity": 54.6}
        assert sink.values("rk-2") == {"humidity": 50.0, "temperature": -20.5}
        assert sink.values("di-5") == {"door": 1.0}
        assert sink.status_of("th-9") is DeviceStatus.OFFLINE
        assert sink.error_of("th-9") == "read holding 0×2: timeout (no answer within 0.2 s)"
        assert sink.reasons("th-9") == [(None, Reason.READ_ERROR)] * 2
        for device in ("xy-1", "rk-2", "di-5"):
            assert sink.status_of(device) is DeviceStatus.ONLINE
        # a unit that falls silent mid-life, then recovers; the others keep answering meanwhile
        sim.set_silent(1)
        await collector.poll("xy-1")
        await collector.poll("rk-2")
        assert sink.status_of("xy-1") is DeviceStatus.OFFLINE
        assert sink.status_of("rk-2") is DeviceStatus.ONLINE
        sim.set_silent(1, False)
        await sim.set_registers(1, "input", 1, [0x00FA])
        await collector.poll("xy-1")
        assert sink.status_of("xy-1") is DeviceStatus.ONLINE
        assert sink.values("xy-1")["temperature"] == 25.0
    finally:
        await collector.close()
        await sim.stop()


async def test_missing_serial_port_is_offline_not_fatal(tmp_path: Path, sink: RecordingSink) -> None:
    clock = ManualClock()
    device = modbus_device("th-1", RENKE, serial=str(tmp_path / "ttyUSB9"))
    collector = ModbusCollector([device], sink, clock=clock)
    try:
        for _ in range(3):
            await collector.poll("th-1")
            clock.advance(1.0)
    finally:
        await collector.close()
    assert sink.status_of("th-1") is DeviceStatus.OFFLINE
    assert (sink.error_of("th-1") or "").startswith(f"cannot connect to {tmp_path / 'ttyUSB9'}")
    assert sink.reasons("th-1") == [(None, Reason.READ_ERROR)] * 3


def test_devices_on_one_line_must_share_its_settings(tmp_path: Path, sink: RecordingSink) -> None:
    """One port is opened once: a second device at another baud rate is refused, not silently re-timed."""
    line = str(tmp_path / "ttyUSB0")
    first = modbus_device("th-1", RENKE, serial=line, unit=1)
    same = modbus_device("th-2", RENKE, serial=line, unit=2)
    faster = first.model_copy(
        update={"id": "th-3", "modbus": first.modbus.model_copy(update={"baudrate": 19200, "unit": 3})}
    )
    ModbusCollector([first, same], sink)  # agreeing devices share the hub
    with pytest.raises(ValueError, match=r"device th-3: .*ttyUSB0 is already used at 9600 8N1 by th-1"):
        ModbusCollector([first, same, faster], sink)
