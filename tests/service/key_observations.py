"""What the service graph does with a configuration, observed from outside: the observations that
tests/service/test_every_key.py compares between the shipped devices.yaml and a changed copy.

Each observation builds the graph of one configuration the way the service does
(service/services.py ``build_services``, through tests/support.py), drives it with a ManualClock and
real protocol objects, and returns plain data: what the rules decided, what a collector put on the wire
and stored, where the stores are, what the API answers. None of them reads the configuration back: a key
that validates but that no running component uses leaves every observation unchanged.

The inputs are the field's, fixed whatever the configuration says: readings as the shipped sensors report
them (their poll intervals, the documented payloads of devices.yaml's comments), at fixed times.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTProtocolVersion

from api.app import create_app
from collectors import modbus as modbus_collector
from collectors.mqtt import default_client_factory
from collectors.sim_modbus import ModbusSimulator
from core.clock import ManualClock
from core.config import Config, ModbusConnection, MqttBroker, MqttDevice
from core.types import Reading
from service import runtime
from service.services import Services, build_services
from tests.collectors.mqtt_support import deliver, message
from tests.service.wire import BrokerEnd, SilentModbus, WireClient
from tests.support import build, opened

Observation = Callable[[Config, Path], Awaitable[Any]]

# 2026-01-05 09:30 in Asia/Shanghai, a Monday: the rules' day starts before the 10:00 door opening.
RULES_START = 1_767_576_600.0
RULES_MINUTES = 220  # 09:30 → 13:10: r1's lunch break (12:00–13:30) comes in it
# devices.yaml's documented r3 payload carries "ts": 1767225600; the MQTT day starts 45 s later.
MQTT_START = 1_767_225_645.0


# ---------------------------------------------------------------------------------------------
# The rules: a scripted morning of every shipped sensor


def _step(table: Sequence[tuple[float, float]], minute: int) -> float:
    return next(v for end, v in table if minute < end)


# minute (from 09:30) before which the value holds → value. Humidity sweeps through 58, 60 and 70 %RH
# and back down through the hysteresis band; temperature through 20 and 24 °C.
HUMIDITY = ((20, 50.0), (40, 57.5), (60, 59.0), (80, 61.0), (100, 66.0), (120, 71.0), (140, 59.0),
            (160, 57.0), (180, 55.5), (200, 53.0), (1e9, 50.0))  # fmt: skip
TEMPERATURE = ((60, 19.0), (100, 22.0), (140, 25.0), (1e9, 19.0))
POWER_OFF = range(150, 158)  # minutes r1's air conditioner draws 0.5 W: eight minutes, past the rule's 5
TH1_SILENT = range(170, 174)  # minutes th-1 says nothing: four, past three 30 s polls
DOOR = {0: 0.0, 30: 1.0, 70: 0.0, 180: 1.0, 185: 0.0}  # 10:00 open for 40 min; 12:30 (lunch) for 5
R3_SENSORS = ("th-31", "th-32")  # heard on archive/r3/th/<sensor id>


def _cadence() -> list[tuple[str, str, float, float, Callable[[int], float]]]:
    """(device, metric, every seconds, offset in the interval, value at minute) of the polled sensors."""

    def hum(m: int) -> float:
        return _step(HUMIDITY, m)

    def temp(m: int) -> float:
        return _step(TEMPERATURE, m)

    out: list[tuple[str, str, float, float, Callable[[int], float]]] = [
        ("th-1", "humidity", 30, 2.1, hum),
        ("th-1", "temperature", 30, 2.1, temp),
        ("pm-1", "pm25", 60, 11.7, lambda m: 30.0),
        ("di-1", "smoke", 5, 0.4, lambda m: 0.0),
        ("ac-1", "power", 30, 5.2, lambda m: 0.5 if m in POWER_OFF else 1450.0),
        ("th-2", "temperature", 30, 7.4, temp),
        ("th-2", "humidity", 30, 7.4, hum),
    ]
    for i, sensor in enumerate(R3_SENSORS):
        out.append((sensor, "temperature", 60, 20.0 + 9 * i, temp))
        out.append((sensor, "humidity", 60, 20.0 + 9 * i, hum))
    return out


def _rooms_of(cfg: Config) -> dict[str, str]:
    """Device id → room, as the collectors tag readings (a wildcard entry's room for its sensors)."""
    rooms = {d.id: d.room for d in cfg.devices}
    for d in cfg.devices:
        if isinstance(d, MqttDevice) and d.mqtt.device_id_segment is not None:
            rooms.update(dict.fromkeys(R3_SENSORS, d.room))
    return rooms


def _minute_readings(rooms: dict[str, str], m: int, units: dict[str, str]) -> list[Reading]:
    at = RULES_START + 60 * m
    out: list[Reading] = []
    for device, metric, every, offset, value in _cadence():
        if device == "th-1" and m in TH1_SILENT:
            continue
        for k in range(round(60 / every)):
            out.append(
                Reading(device, rooms[device], metric, value(m), units[metric], at + offset + k * every)
            )
    if m in DOOR:
        out.append(Reading("door-1", rooms["door-1"], "door", DOOR[m], "", at + 3.3))
        out.append(Reading("door-1", rooms["door-1"], "battery", 87.0, "%", at + 3.3))
    if m == 0:
        out.append(Reading("leak-1", rooms["leak-1"], "water_leak", 0.0, "", at + 1.0))
    return sorted(out, key=lambda r: r.time)


async def rules_timeline(cfg: Config, folder: Path) -> list[tuple[Any, ...]]:
    """The alert transitions of a scripted morning: every sensor at its poll interval, humidity and
    temperature sweeping through the thresholds, the door opened inside and outside access hours, the
    air conditioner's power off for 8 minutes, th-1 silent for 4. Evaluated once a minute."""
    units = {"humidity": "%RH", "temperature": "°C", "pm25": "µg/m³", "smoke": "", "power": "W"}
    clock = ManualClock(RULES_START)
    rooms = _rooms_of(cfg)
    seen: list[tuple[Any, ...]] = []
    async with opened(build(cfg, folder, clock=clock)) as s:
        for m in range(RULES_MINUTES):
            s.rules.ingest(_minute_readings(rooms, m, units))
            clock.advance(60)
            for t in s.rules.evaluate(clock.now()):
                a = t.alert
                seen.append(
                    (
                        m + 1,
                        a.protection,
                        a.rule,
                        a.room,
                        a.device,
                        t.from_state,
                        t.to_state,
                        a.severity,
                        a.message,
                    )
                )
    return seen


# ---------------------------------------------------------------------------------------------
# MQTT: what the collector tells the broker, and what the documented payloads become


def _mqtt_messages() -> list[tuple[float, str, bytes]]:
    """(seconds after MQTT_START, topic, payload): devices.yaml's documented shapes."""
    door = {"contact": "open", "battery": 87}
    return [
        (0.0, "archive/r1/door-1/status", b"online"),
        (0.0, "archive/r1/door-1", json.dumps(door).encode()),
        (5.0, "archive/r1/leak-1", b"0"),
        (5.0, "archive/r3/th/th-31", b'{"sensor": {"t": 19.8, "rh": 51.2}, "ts": 1767225600}'),
        (5.0, "archive/r3/th/th-32", b'{"sensor": {"t": 20.1, "rh": 50.4}, "ts": 1767225610}'),
        # A gateway whose clock runs two minutes ahead: within mqtt.max_clock_skew (5 min), or not.
        (5.0, "archive/r3/th/th-33", b'{"sensor": {"t": 19.9, "rh": 50.8}, "ts": 1767225770}'),
        (60.0, "archive/r1/door-1", json.dumps({**door, "contact": "closed", "battery": 86}).encode()),
        (65.0, "archive/r1/door-1/status", b"offline"),
    ]


async def _stored(s: Services) -> dict[str, Any]:
    """What reached the readings store and the device health, once everything buffered is written."""
    await s.pipeline.stop()  # writes what is buffered (the runtime's stop does it again: a no-op)
    latest = sorted(
        (r.device, r.room, r.metric, round(r.value, 6), r.unit, r.time) for r in await s.readings.latest()
    )
    rejected = {
        device: {reason: (n, detail) for reason, (n, detail, _) in sorted(reasons.items())}
        for device, reasons in sorted((await s.readings.rejection_counts()).items())
    }
    health = [(h.id, h.room, h.protocol, str(h.status), h.last_error) for h in s.pipeline.devices()]
    return {"latest": latest, "rejected": rejected, "health": health}


async def mqtt_session(cfg: Config, folder: Path) -> dict[str, Any]:
    """The broker address the collector connects to, its CONNECT and SUBSCRIBE packets as sent by the
    production-built paho client, and what the documented payloads of the MQTT devices become."""
    end = BrokerEnd()
    clients: list[WireClient] = []

    def factory(broker: MqttBroker, *, protocol: MQTTProtocolVersion, tls: bool) -> paho.Client:
        # The production factory builds and configures the client (credentials, session, TLS): the test
        # keeps all of that and only takes the network from it.
        client = WireClient.adopt(default_client_factory(broker, protocol=protocol, tls=tls), end)
        clients.append(client)
        return client

    clock = ManualClock(MQTT_START)
    try:
        async with opened(build(cfg, folder, clock=clock, mqtt_client_factory=factory)) as s:
            (collector,) = s.mqtt
            collector.start()
            (client,) = clients
            connect, subscribe = await client.handshake()
            start = clock.now()
            for mid, (at, topic, payload) in enumerate(_mqtt_messages(), 1):
                clock.advance(start + at - clock.now())
                deliver(client, message(topic, payload, qos=1, mid=mid))
            stored = await _stored(s)
    finally:
        end.close()
    return {
        "asked": client.asked,
        "connect": dataclasses.asdict(connect),
        "subscribe": subscribe.filters,
        **stored,
    }


# ---------------------------------------------------------------------------------------------
# Modbus: the clients production builds, and what one poll of every device stores


def _comm(client: Any) -> tuple[Any, ...]:
    """The settings a pymodbus client was built with (its public ``comm_params``)."""
    p = client.comm_params
    return (p.comm_type.name, p.host, p.port, p.baudrate, p.bytesize, p.parity, p.stopbits, p.timeout_connect)


class _ModbusFactory:
    """The production ``default_client_factory``; TCP buses are pointed at a test server on loopback.

    For each bus it also builds the client exactly as configured (never connected) and keeps its
    settings: what production would have opened.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.built: list[tuple[Any, ...]] = []

    def __call__(self, connection: ModbusConnection, *, timeout: float) -> Any:
        configured = modbus_collector.default_client_factory(connection, timeout=timeout)
        self.built.append(_comm(configured))
        if connection.serial is not None:
            return configured  # nothing to point elsewhere: the poll meets the missing serial port
        modbus_collector.with_close(configured)
        local = connection.model_copy(update={"host": "127.0.0.1", "port": self.port})
        return modbus_collector.default_client_factory(local, timeout=timeout)


async def _simulator() -> ModbusSimulator:
    """The shipped Modbus units behind one TCP port, with known values (and a unit 6 to move to)."""
    sim = ModbusSimulator([1, 3, 4, 5, 6])
    await sim.set_registers(1, "holding", 0, [546, 213, 612])  # RH 54.6 %, T 21.3 °C, then 61.2
    await sim.set_registers(1, "input", 0, [487])  # what holding 0 would be in the input table: 48.7
    await sim.set_value(3, "input", 10, 12.5, "float32", "CDAB")  # PM2.5 12.5 µg/m³, words swapped
    await sim.set_bits(4, "discrete", 0, [True])  # the smoke contact closed
    await sim.set_registers(5, "input", 0, [1480])  # the air conditioner draws 1480 W
    await sim.set_registers(6, "holding", 0, [333, 111])  # another transmitter: 33.3 %RH, 11.1 °C
    await sim.start_tcp()
    return sim


async def modbus_poll(cfg: Config, folder: Path) -> dict[str, Any]:
    """The pymodbus clients production builds for every bus, and what one poll of every Modbus device
    stores (readings with device, room, metric, value and unit; rejections; device health)."""
    sim = await _simulator()
    assert sim.port is not None
    factory = _ModbusFactory(sim.port)
    try:
        async with opened(build(cfg, folder, clock=ManualClock(), modbus_client_factory=factory)) as s:
            (collector,) = s.modbus
            await asyncio.gather(*(collector.poll(d) for d in collector.device_ids))
            stored = await _stored(s)
    finally:
        await sim.stop()
    return {"clients": sorted(factory.built), **stored}


async def modbus_silent_unit(cfg: Config, folder: Path) -> dict[str, Any]:
    """th-1 polled once behind a gateway where no unit answers: requests sent per unit (the retries),
    the error it reports (the timeout) and the client's own timeout."""
    silent = SilentModbus()
    port = await silent.start()
    factory = _ModbusFactory(port)
    try:
        async with opened(build(cfg, folder, clock=ManualClock(), modbus_client_factory=factory)) as s:
            (collector,) = s.modbus
            await collector.poll("th-1")
            stored = await _stored(s)
    finally:
        await silent.stop()
    return {"requests": dict(silent.requests), "clients": factory.built, **stored}


# ---------------------------------------------------------------------------------------------
# Storage


def _files(folder: Path) -> dict[str, list[str]]:
    """The SQLite files under a folder (not their -wal/-shm), each with its tables."""
    out: dict[str, list[str]] = {}
    for path in sorted(folder.rglob("*.db")):
        with contextlib.closing(sqlite3.connect(path)) as conn:
            tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        out[path.relative_to(folder).as_posix()] = sorted(tables)
    return out


async def storage_files(cfg: Config, folder: Path) -> dict[str, list[str]]:
    """Where the graph puts its records (migrated by Alembic) and readings, with the storage section as
    written (relative paths are relative to the service's working directory, here ``folder``)."""
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    with contextlib.chdir(folder):
        s = build_services(cfg, clock=ManualClock())
        try:
            await runtime.open_stores(s)
        finally:
            await runtime.stop(s)
    return await asyncio.to_thread(_files, folder)


async def retention(cfg: Config, folder: Path) -> list[tuple[float, float, int]]:
    """Raw history of th-1's humidity after maintenance, from readings 60 days, 10 days and 1 hour old:
    past the retention only hourly aggregates are left (time on the hour, with a count)."""
    clock = ManualClock()
    now = clock.now()
    async with opened(build(cfg, folder, clock=clock)) as s:
        room = s.config.device("th-1").room
        ages = (60 * 86400 - 1234.5, 10 * 86400 - 1234.5, 3600 - 1234.5)
        s.pipeline.submit(
            [Reading("th-1", room, "humidity", 50.0 + i, "%RH", now - a) for i, a in enumerate(ages)]
        )
        await s.pipeline.stop()
        await s.readings.maintain(now)
        points = await s.readings.history(device="th-1", metric="humidity", start=now - 100 * 86400, end=now)
    return [(p.time, p.mean, p.count) for p in points]


async def batching(cfg: Config, folder: Path) -> list[int]:
    """The store writes a burst of 25 polled readings takes: the size of each stored batch."""
    clock = ManualClock()
    sizes: list[int] = []

    async def note(batch: Sequence[Reading]) -> None:
        sizes.append(len(batch))

    async with opened(build(cfg, folder, clock=clock)) as s:
        s.pipeline.add_listener(note)
        room = s.config.device("di-1").room
        s.pipeline.submit([Reading("di-1", room, "smoke", 0.0, "", clock.now() + i) for i in range(25)])
        await s.pipeline.stop()
    return sizes


async def pending_bound(cfg: Config, folder: Path) -> dict[str, int]:
    """3,000 polled readings while another connection holds the readings file: what waits, what is
    dropped (storage.timeseries.max_pending)."""
    clock = ManualClock()
    async with opened(build(cfg, folder, clock=clock)) as s:
        locker = sqlite3.connect(folder / "readings.db", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            room = s.config.device("th-1").room
            for i in range(1500):
                at = clock.now() + i
                s.pipeline.submit(
                    [
                        Reading("th-1", room, "humidity", 50.0, "%RH", at),
                        Reading("th-1", room, "temperature", 20.0, "°C", at),
                    ]
                )
            seen = {"pending": s.pipeline.pending, "dropped": s.pipeline.dropped}
        finally:
            locker.execute("ROLLBACK")
            locker.close()
    return seen


async def _settle(rounds: int = 20) -> None:
    for _ in range(rounds):
        await asyncio.sleep(0)


async def lingering(cfg: Config, folder: Path) -> int | None:
    """How long (in 5 ms steps of the clock) the pipeline lingers after a lone reading before it writes:
    a burst is over after flush_interval / 50 without a reading."""
    clock = ManualClock()
    stored = asyncio.Event()

    async def note(batch: Sequence[Reading]) -> None:
        stored.set()

    async with opened(build(cfg, folder, clock=clock)) as s:
        s.pipeline.add_listener(note)
        room = s.config.device("di-1").room
        s.pipeline.submit([Reading("di-1", room, "smoke", 0.0, "", clock.now())])
        await _settle()  # the flusher wakes and starts lingering on the clock
        for step in range(1, 61):
            clock.advance(0.005)
            await _settle()
            if s.pipeline.pending == 0:  # taken for writing in this step
                await asyncio.wait_for(stored.wait(), 5.0)
                return step
    return None


# ---------------------------------------------------------------------------------------------
# The API


async def api_answers(cfg: Config, folder: Path) -> dict[str, Any]:
    """GET /api/v1/site, /api/v1/rooms and /api/v1/devices."""
    async with opened(build(cfg, folder, clock=ManualClock())) as s:
        app = create_app(s)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bafang") as c:
            return {
                path: (await c.get(path)).json()
                for path in ("/api/v1/site", "/api/v1/rooms", "/api/v1/devices")
            }
