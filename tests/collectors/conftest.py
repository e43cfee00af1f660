"""Fixtures for the collector tests: a recording sink, pymodbus simulators on free ports, socat pty pairs,
and MQTT collectors and publishers on the session's broker."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from collectors.mqtt import MqttCollector
from collectors.sim_modbus import ModbusSimulator
from core.config import ModbusDevice, MqttBroker, MqttDevice
from core.types import DeviceStatus, Reading, Reason, Rejection
from tests.collectors.mqtt_support import Publisher, Start
from tests.conftest import MqttTestBroker, _fallbacks, wait_until

SOCAT = shutil.which("socat")


class RecordingSink:
    """The collector's boundary: records what it is handed (the real pipeline lives elsewhere)."""

    def __init__(self) -> None:
        self.batches: list[list[Reading]] = []
        self.rejections: list[Rejection] = []
        self.statuses: list[tuple[str, DeviceStatus, str | None, float]] = []

    def submit(self, readings: Sequence[Reading]) -> None:
        """Record a batch."""
        self.batches.append(list(readings))

    def reject(self, rejection: Rejection) -> None:
        """Record a rejection."""
        self.rejections.append(rejection)

    def status(self, device: str, status: DeviceStatus, error: str | None, time: float) -> None:
        """Record a status edge."""
        self.statuses.append((device, status, error, time))

    @property
    def readings(self) -> list[Reading]:
        """Every reading, in order."""
        return [r for batch in self.batches for r in batch]

    def values(self, device: str) -> dict[str, float]:
        """The latest value of each metric of a device."""
        return {r.metric: r.value for r in self.readings if r.device == device}

    def status_of(self, device: str) -> DeviceStatus:
        """The last status reported for a device."""
        for dev, status, _, _ in reversed(self.statuses):
            if dev == device:
                return status
        return DeviceStatus.UNKNOWN

    def error_of(self, device: str) -> str | None:
        """The last error text reported for a device."""
        for dev, _, error, _ in reversed(self.statuses):
            if dev == device:
                return error
        return None

    def reasons(self, device: str) -> list[tuple[str | None, Reason]]:
        """(metric, reason) of each rejection of a device."""
        return [(r.metric, r.reason) for r in self.rejections if r.device == device]


def modbus_device(
    device_id: str,
    points: list[dict[str, Any]],
    *,
    port: int | None = None,
    serial: str | None = None,
    unit: int = 1,
    timeout: float = 0.25,
    retries: int = 0,
    poll: float = 1.0,
    room: str = "r1",
) -> ModbusDevice:
    """A validated ModbusDevice on 127.0.0.1:port (TCP) or a serial path (RTU)."""
    conn: dict[str, Any] = {"unit": unit, "timeout": timeout, "retries": retries}
    if serial is not None:
        conn["serial"] = serial
    else:
        conn.update(host="127.0.0.1", port=port)
    return ModbusDevice.model_validate(
        {"id": device_id, "room": room, "modbus": conn, "poll": poll, "points": points}
    )


@pytest.fixture
def sink() -> RecordingSink:
    """A fresh recording sink."""
    return RecordingSink()


SimFactory = Callable[..., Awaitable[ModbusSimulator]]


@pytest.fixture
async def modbus_sim() -> AsyncIterator[SimFactory]:
    """Start simulators: ``await modbus_sim(units, **options)`` serves TCP on a free port of 127.0.0.1."""
    started: list[ModbusSimulator] = []

    async def make(units: Iterable[int], **options: Any) -> ModbusSimulator:
        sim = ModbusSimulator(units, **options)
        started.append(sim)
        await sim.start_tcp(0)
        return sim

    yield make
    for sim in started:
        await sim.stop()


@pytest.fixture
def socat_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked pseudo-terminals made by socat: real bytes, so real RTU framing and CRCs."""
    if SOCAT is None:
        _fallbacks.append("socat not installed: the Modbus RTU tests were skipped")
        pytest.skip("needs the socat binary")
    a, b = tmp_path / "ttyA", tmp_path / "ttyB"
    proc = subprocess.Popen(
        [SOCAT, "-d", "-d", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 5.0
    while not (a.exists() and b.exists()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("socat did not create the pty pair")
        time.sleep(0.005)
    yield str(a), str(b)
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture
def publish(mosquitto: MqttTestBroker) -> Iterator[Publisher]:
    """Publish to the session broker."""
    pub = Publisher(mosquitto)
    yield pub
    pub.close()


@pytest.fixture
def start_collector() -> Iterator[Start]:
    """Start collectors and wait until they are subscribed; stop them after the test."""
    running: list[MqttCollector] = []

    def start(broker: MqttBroker, devices: Sequence[MqttDevice], sink: Any, **kw: Any) -> MqttCollector:
        collector = MqttCollector(broker, devices, sink, **kw)
        collector.start()
        running.append(collector)
        wait_until(lambda: collector.connected, 10.0, "the collector to connect and subscribe")
        return collector

    yield start
    for collector in running:
        collector.stop()
