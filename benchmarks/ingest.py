"""Benchmark MQTT ingest end to end: Mosquitto → MqttCollector → Pipeline → SQLite store → latest.

The baseline is a bare paho-mqtt subscriber receiving the same messages from the same broker in the
same run. Both subscribers hold a persistent session (QoS 1) registered before the messages are
published, so the broker queues every message for each of them; each then connects and drains its
queue while it is timed. That measures receiving, not the publisher, and both see identical traffic.

A message is a ~100-byte JSON object like ``{"t": 21.3, "rh": 52.1, ...}``: two readings
(temperature and humidity) per message for ``--devices`` devices on exact topics. The pipeline figure
counts a message once both its readings are stored in SQLite; ``latest()`` is then checked to show
every series.

    python benchmarks/ingest.py [--messages 100000] [--devices 1000] [--protocol 3.1.1|5]

Last line: ``{"pipeline_per_s": …, "bare_per_s": …, "ratio": …, "pipeline_msgs_per_s": …, "msg_ratio": …,
"readings_per_msg": 2}``. As the issue defines them, ``pipeline_per_s`` is readings stored per second and
``bare_per_s`` messages received per second; with two readings a message, ``msg_ratio`` (messages per
second through the pipeline ÷ bare) is the like-for-like comparison and is printed beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from collectors.mqtt import MqttCollector
from core.config import MqttBroker, MqttDevice
from store.ingest import DeviceInfo, Pipeline
from store.sqlite import SqliteReadingStore

TOPIC = "bench/r1/{}/state"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mosquitto(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Mosquitto on a free port, queues large enough to hold the whole run for each subscriber."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.access(binary, os.X_OK):
        sys.exit("benchmarks/ingest.py needs the mosquitto binary (apt-get install mosquitto)")
    port = free_port()
    conf = workdir / "mosquitto.conf"
    lines = [
        f"listener {port} 127.0.0.1",
        "allow_anonymous true",
        "max_queued_messages 0",  # unlimited: the default 1000 silently drops QoS 1 messages
        "max_queued_bytes 0",
        "log_dest stderr",
        "log_type error",
    ]
    if os.geteuid() == 0:
        lines.append("user root")
    conf.write_text("\n".join(lines) + "\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        if time.monotonic() > deadline or proc.poll() is not None:
            sys.exit("mosquitto did not start")
        time.sleep(0.01)


def protocol_of(name: str) -> MQTTProtocolVersion:
    """paho's protocol constant."""
    return MQTTProtocolVersion.MQTTv5 if name == "5" else MQTTProtocolVersion.MQTTv311


def bare_client(port: int, protocol: str) -> tuple[paho.Client, threading.Event, list[int]]:
    """A bare paho subscriber with a persistent session, counting messages."""
    if protocol == "5":
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="bench-bare", protocol=protocol_of(protocol)
        )
    else:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id="bench-bare",
            clean_session=False,
            protocol=protocol_of(protocol),
        )
    subscribed = threading.Event()
    count = [0]
    client.on_connect = lambda c, u, f, r, p: c.subscribe("bench/#", qos=1)
    client.on_subscribe = lambda c, u, mid, r, p: subscribed.set()

    def on_message(c: paho.Client, u: object, m: paho.MQTTMessage) -> None:
        count[0] += 1

    client.on_message = on_message
    return client, subscribed, count


def connect(client: paho.Client, port: int, protocol: str) -> None:
    """Connect keeping the session."""
    if protocol == "5":
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        client.connect("127.0.0.1", port, clean_start=False, properties=props)
    else:
        client.connect("127.0.0.1", port)


def register_bare(port: int, protocol: str) -> None:
    """Create the bare subscriber's session and subscription, then leave."""
    client, subscribed, _ = bare_client(port, protocol)
    connect(client, port, protocol)
    client.loop_start()
    if not subscribed.wait(10):
        sys.exit("bare subscriber: no SUBACK")
    client.disconnect()
    client.loop_stop()


def drain_bare(port: int, protocol: str, messages: int) -> float:
    """Seconds for the bare subscriber to receive its queued messages."""
    client, _, count = bare_client(port, protocol)
    started = time.perf_counter()
    connect(client, port, protocol)
    client.loop_start()
    deadline = time.monotonic() + 600
    while count[0] < messages:
        if time.monotonic() > deadline:
            sys.exit(f"bare subscriber: {count[0]} of {messages} messages after 600 s")
        time.sleep(0.001)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return elapsed


def publish_all(port: int, messages: int, devices: int) -> float:
    """Publish the messages at QoS 1; seconds taken."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.perf_counter()
    info = None
    for i in range(messages):
        d = i % devices
        payload = json.dumps(
            {
                "t": round(15.0 + (i % 100) / 10, 1),
                "rh": round(45.0 + (i % 150) / 10, 1),
                "seq": i,
                "model": "RS-WS-N01-2",
                "fw": "v2.3.1",
                "rssi": -61,
            },
            separators=(",", ":"),
        )
        info = client.publish(TOPIC.format(f"th-{d}"), payload, qos=1)
        if i % 20_000 == 19_999:
            info.wait_for_publish(600)  # message ids are 16 bits: never have 65,535 outstanding
    if info is not None:
        info.wait_for_publish(600)
    elapsed = time.perf_counter() - started
    client.disconnect()
    client.loop_stop()
    return elapsed


def bench_devices(devices: int) -> list[MqttDevice]:
    """The configured devices: temperature and humidity from a JSON object."""
    points = [{"metric": "temperature", "path": "t"}, {"metric": "humidity", "path": "rh"}]
    return [
        MqttDevice.model_validate(
            {"id": f"th-{d}", "room": "r1", "mqtt": {"topic": TOPIC.format(f"th-{d}")}, "points": points}
        )
        for d in range(devices)
    ]


async def pipeline_run(
    port: int, protocol: str, messages: int, devices: list[MqttDevice], db: Path
) -> tuple[float, int]:
    """Seconds until every queued message's readings are stored and visible as latest; rows stored."""
    broker = MqttBroker(url=f"mqtt://127.0.0.1:{port}", client_id="bench-bafang", protocol=protocol)  # type: ignore[arg-type]
    store = SqliteReadingStore(db)
    await store.open()
    pipeline = Pipeline(store, devices=[DeviceInfo(d.id, d.room, "mqtt") for d in devices])
    await pipeline.start()
    expected = messages * 2
    done = asyncio.Event()

    async def on_stored(batch: object) -> None:
        # Listeners run once a batch is stored and counted.
        if pipeline.stored >= expected:
            done.set()

    pipeline.add_listener(on_stored)
    collector = MqttCollector(broker, devices, pipeline)
    started = time.perf_counter()
    collector.start()
    try:
        await asyncio.wait_for(done.wait(), 600)
    except TimeoutError:
        sys.exit(f"pipeline: {pipeline.stored} of {expected} readings stored after 600 s")
    latest = await store.latest()
    elapsed = time.perf_counter() - started
    collector.stop()
    await pipeline.stop()
    await store.close()
    series = {(r.device, r.metric) for r in latest}
    want = min(len(devices), messages) * 2
    if len(series) != want:
        sys.exit(f"pipeline: latest shows {len(series)} series, expected {want}")
    return elapsed, pipeline.stored


def register_collector(port: int, protocol: str, devices: list[MqttDevice]) -> None:
    """Create the collector's persistent session and subscriptions, then leave."""

    class Null:
        def submit(self, readings: object) -> None: ...
        def reject(self, rejection: object) -> None: ...
        def status(self, *args: object) -> None: ...

    broker = MqttBroker(url=f"mqtt://127.0.0.1:{port}", client_id="bench-bafang", protocol=protocol)  # type: ignore[arg-type]
    collector = MqttCollector(broker, devices, Null())
    collector.start()
    deadline = time.monotonic() + 10
    while not collector.connected:
        if time.monotonic() > deadline:
            sys.exit("collector did not subscribe")
        time.sleep(0.005)
    collector.stop()


def main() -> None:
    """Run the benchmark and print its figures; the last line is one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--messages", type=int, default=100_000, help="messages per subscriber")
    parser.add_argument("--devices", type=int, default=1000, help="devices (exact topics)")
    parser.add_argument("--protocol", choices=["3.1.1", "5"], default="3.1.1")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bafang-ingest-") as tmp:
        workdir = Path(tmp)
        proc, port = start_mosquitto(workdir)
        try:
            devices = bench_devices(args.devices)
            register_bare(port, args.protocol)
            register_collector(port, args.protocol, devices)
            pub_s = publish_all(port, args.messages, args.devices)
            print(f"published {args.messages} messages (QoS 1) in {pub_s:.2f} s; queued for both subscribers")

            bare_s = drain_bare(port, args.protocol, args.messages)
            bare = args.messages / bare_s
            print(f"bare paho subscriber: {args.messages} messages in {bare_s:.2f} s = {bare:,.0f} msg/s")

            db = workdir / "readings.db"
            pipe_s, stored = asyncio.run(pipeline_run(port, args.protocol, args.messages, devices, db))
            pipe = args.messages / pipe_s
            with sqlite3.connect(db) as conn:
                rows = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
            print(
                f"pipeline (collector → validate → SQLite → latest): {args.messages} messages in {pipe_s:.2f} s "
                f"= {pipe:,.0f} msg/s = {stored / pipe_s:,.0f} readings/s ({rows} rows in SQLite; "
                "readings of one device in the same millisecond are one row by design)"
            )
        finally:
            proc.terminate()
            proc.wait(10)
    readings_per_s = stored / pipe_s
    ratio = readings_per_s / bare
    msg_ratio = pipe / bare
    print(
        f"pipeline readings/s ÷ bare messages/s: {ratio:.2f} (issue's target ≥ 0.50, and ≥ 10,000 readings/s); "
        f"like for like, pipeline messages/s ÷ bare messages/s: {msg_ratio:.2f} "
        f"({stored // args.messages} readings per message)"
    )
    print(
        json.dumps(
            {
                "pipeline_per_s": round(readings_per_s, 1),
                "bare_per_s": round(bare, 1),
                "ratio": round(ratio, 3),
                "pipeline_msgs_per_s": round(pipe, 1),
                "msg_ratio": round(msg_ratio, 3),
                "readings_per_msg": stored // args.messages,
            }
        )
    )


if __name__ == "__main__":
    main()
