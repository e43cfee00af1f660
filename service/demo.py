"""`bafang demo`: three simulated archive rooms, over Modbus TCP and MQTT, with nothing installed.

A pymodbus TCP server plays each room's T/H transmitter, PM2.5 sensor and smoke DI module (daily
curves and occasional damp or hot excursions); an in-process MQTT broker carries door contacts, leak
ropes and a wireless gateway's T/H sensors. The service itself runs exactly as `bafang run` would.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
from pathlib import Path
from typing import Any

from collectors.sim_modbus import start_demo
from collectors.sim_mqtt import MqttSimulator, SimClimate, SimDoor, SimLeak
from core.config import Config
from service.serve import serve, url_of
from service.services import Services

ROOMS = [
    {"id": "r1", "name": "一号库房", "kind": "paper"},
    {"id": "r2", "name": "二号库房", "kind": "paper"},
    {"id": "r3", "name": "特藏室", "kind": "special"},
]
SITE = {"name": "国网示范县供电公司档案室（演示）", "timezone": "Asia/Shanghai"}
MQTT_PERIOD = 5.0


def mqtt_devices() -> list[dict[str, Any]]:
    """The demo's MQTT devices, as devices.yaml entries."""
    door_points = [
        {"metric": "door", "path": "contact", "map": {"open": 1, "closed": 0}},
        {"metric": "battery", "path": "battery"},
    ]
    return [
        {
            "id": "door-r1",
            "room": "r1",
            "name": "一号库房门磁",
            "mqtt": {"topic": "archive/r1/door", "availability_topic": "archive/r1/door/status"},
            "poll": "15s",
            "points": door_points,
        },
        {
            "id": "door-r2",
            "room": "r2",
            "name": "二号库房门磁",
            "mqtt": {"topic": "archive/r2/door"},
            "poll": "15s",
            "points": door_points,
        },
        {
            "id": "leak-r1",
            "room": "r1",
            "name": "一号库房漏水绳",
            "mqtt": {"topic": "archive/r1/leak"},
            "poll": "15s",
            "points": [{"metric": "water_leak"}],
        },
        {
            "id": "leak-r3",
            "room": "r3",
            "name": "特藏室漏水绳",
            "mqtt": {"topic": "archive/r3/leak"},
            "poll": "15s",
            "points": [{"metric": "water_leak"}],
        },
        {
            "id": "gw-r3",
            "room": "r3",
            "name": "特藏室无线温湿度",
            "mqtt": {"topic": "archive/r3/th/+", "device_id_segment": 3},
            "poll": "15s",
            "points": [
                {"metric": "temperature", "path": "sensor.t"},
                {"metric": "humidity", "path": "sensor.rh"},
            ],
        },
    ]


def demo_config(modbus_devices: list[dict[str, Any]], data_dir: Path) -> Config:
    """The demo's configuration: embedded broker, SQLite under data_dir."""
    return Config.model_validate(
        {
            "site": SITE,
            # amqtt speaks MQTT 3.1.1 only.
            "mqtt": {"url": "embedded", "protocol": "3.1.1", "client_id": "bafang-demo"},
            "storage": {
                "database": f"sqlite:///{data_dir / 'bafang.db'}",
                "timeseries": {"backend": "sqlite"},
            },
            "rooms": ROOMS,
            "devices": modbus_devices + mqtt_devices(),
        }
    )


async def run_demo(sock: socket.socket, data_dir: Path | None = None) -> None:
    """Run the simulators and the service until Ctrl-C or SIGTERM."""
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bafang-demo-")))
        data_dir.mkdir(parents=True, exist_ok=True)
        sim, task, modbus_devices = await start_demo([r["id"] for r in ROOMS])
        config = demo_config(modbus_devices, data_dir)
        publisher: list[MqttSimulator] = []

        async def started(services: Services) -> None:
            (broker,) = services.brokers  # the demo runs the embedded broker
            mqtt_sim = MqttSimulator(
                "127.0.0.1",
                broker.port,
                [
                    SimDoor("archive/r1/door", "archive/r1/door/status"),
                    SimDoor("archive/r2/door"),
                    SimLeak("archive/r1/leak"),
                    SimLeak("archive/r3/leak"),
                    SimClimate("archive/r3/th/th-r3a", base_t=18.0, base_rh=50.0),
                    SimClimate("archive/r3/th/th-r3b", base_t=17.5, base_rh=49.0),
                ],
                period=MQTT_PERIOD,
                timezone=config.site.timezone,
            )
            await asyncio.to_thread(mqtt_sim.start)
            publisher.append(mqtt_sim)

        async def stopping(services: Services) -> None:
            for p in publisher:
                await asyncio.to_thread(p.stop)

        banner = (
            f"Bafang 八防 demo is running: open {url_of(sock)}  (API docs: {url_of(sock)}docs)\n"
            f"Simulated: {len(ROOMS)} rooms, Modbus TCP on 127.0.0.1:{modbus_devices[0]['modbus']['port']}, "
            f"embedded MQTT broker; data in {data_dir}. Ctrl-C stops."
        )
        try:
            await serve(config, sock, banner=banner, started=started, stopping=stopping)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await sim.stop()
