"""Memory stays bounded when the field misbehaves: 100,000 device ids on one wildcard topic while the
readings store is locked for ten minutes (of the injected clock) under polled readings.

The whole graph as the service builds it (tests/support.py), its MQTT collector handed real paho
messages (as paho's network thread hands them over: on_message on the client its factory built), the
readings SQLite file locked by another connection as a backup would. What must hold: the collector
stands for at most ``max_devices`` ids of the entry (the rest counted as too_many_devices), the pipeline
holds at most ``max_pending`` polled readings (the oldest dropped and counted per device), the process
does not grow with the flood, and once the file is free everything held is written.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sqlite3
from pathlib import Path

import psutil

from core.clock import ManualClock
from core.types import Reading
from tests.collectors.mqtt_support import ClientFactory, deliver, message
from tests.support import build, opened

POLLED = 50  # Modbus devices polled every second (two points each)
OUTAGE = 600  # seconds of the clock the store is locked
IDS = 100_000  # distinct device ids published on the wildcard topic meanwhile
MAX_PENDING = 10_000
MB = 1024 * 1024

CONFIG = """
site: {timezone: Asia/Shanghai}
mqtt: {url: "mqtt://127.0.0.1:1", client_id: bafang-bounded}
rooms: [{id: r1, name: 一号库房}, {id: r3, name: 三号库房}]
devices:
  - id: gw-th
    room: r3
    mqtt: {topic: "gw/th/+", device_id_segment: 2}
    poll: 1m
    points:
      - {metric: temperature, path: temperature}
      - {metric: humidity, path: humidity}
""" + "".join(
    f"""  - id: mb-{i}
    room: r1
    modbus: {{host: 127.0.0.1, port: 1502, unit: {i + 1}}}
    poll: 1s
    points:
      - {{metric: humidity, address: 0, scale: 0.1}}
      - {{metric: temperature, address: 1, type: int16, scale: 0.1}}
"""
    for i in range(POLLED)
)


def rss() -> int:
    gc.collect()
    return int(psutil.Process().memory_info().rss)


async def test_a_flood_of_device_ids_and_a_locked_store_keep_memory_bounded(tmp_path: Path) -> None:
    clock = ManualClock(1_767_578_400.0)
    factory = ClientFactory()
    services = build(
        CONFIG, tmp_path, clock=clock, mqtt_client_factory=factory, max_pending=MAX_PENDING, batch_size=1000
    )
    async with opened(services) as s:
        # A zigbee2mqtt-style T/H payload (docs: zigbee2mqtt.io, Aqara WSDCGQ11LM exposes).
        payload = json.dumps({"battery": 91, "humidity": 51.2, "linkquality": 120, "temperature": 19.8})
        locker = sqlite3.connect(tmp_path / "readings.db", isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")  # a backup holds the readings file: every write waits, fails
        try:
            base = rss()
            per_second = IDS // OUTAGE + 1
            sent = 0
            for second in range(OUTAGE):
                clock.advance(1.0)
                now = clock.now()
                s.pipeline.submit(
                    [
                        Reading(f"mb-{i}", "r1", metric, 20.0 + i / 100, unit, now)
                        for i in range(POLLED)
                        for metric, unit in (("humidity", "%RH"), ("temperature", "°C"))
                    ]
                )
                for _ in range(per_second):
                    if sent < IDS:
                        deliver(factory.client, message(f"gw/th/th-{sent:06d}", payload.encode()))
                        sent += 1
                if second % 60 == 0:
                    await asyncio.sleep(0)  # let the pipeline try (and fail) to write
            grown = rss() - base
            print(f"grew {grown / MB:.1f} MB")
            assert grown < 40 * MB, f"grew {grown / MB:.0f} MB under the flood"
            assert s.pipeline.pending <= MAX_PENDING + 2 * 1000  # at most one batch taken, in flight
            assert s.pipeline.dropped >= OUTAGE * POLLED * 2 - MAX_PENDING - 2 * 1000
            heard = {h.id for h in s.pipeline.devices() if h.id.startswith("th-")}
            assert len(heard) == 1000  # the entry's max_devices, not 100,000
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        # The store is back: what was held is written, the drops and the refused ids are counted.
        for _ in range(200):
            if not s.pipeline.pending:
                break
            clock.advance(30.0)
            await asyncio.sleep(0.05)
        assert s.pipeline.pending == 0
        counts = await s.readings.rejection_counts()
        assert counts["mb-0"]["dropped"][0] > 0
        assert counts["gw-th"]["too_many_devices"][0] == IDS - 1000
