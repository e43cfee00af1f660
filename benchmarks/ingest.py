"""Benchmark MQTT ingest end to end: Mosquitto → MqttCollector → Pipeline → SQLite store → latest.

The baseline is a bare paho-mqtt subscriber receiving the same messages from the same broker in the
same run. Both subscribers hold a persistent session (QoS 1) registered before the messages are
published, so the broker queues every message for each of them; each then connects and drains its
queue while it is timed. That measures receiving, not the publisher, and both see identical traffic.

A message is a ~100-byte JSON object like ``{"t": 21.3, "rh": 52.1, ...}``: two readings
(temperature and humidity) per message for ``--devices`` devices on exact topics. The pipeline figure
counts a message once both its readings are stored in SQLite; ``latest()`` is then checked to show
every series.

The drain run then repeats the measurement the way a peer measured Node-RED here (its best batched flow
drained 24,600 rows/s, 61 % of a bare paho subscriber's 40,600 msg/s): ONE reading per message
(``{"t": 21.3, "ts": 1767225600123}``, each with its own time, so every message is one row), the
broker's queue filled first for two fresh persistent sessions, then a bare paho subscriber and the real
pipeline (MqttCollector with manual acks → Pipeline → SqliteReadingStore, synchronous=FULL: each
message acknowledged only after its row is committed) each drain it. Timed until every row is stored.

    python benchmarks/ingest.py [--messages 100000] [--devices 1000] [--protocol 3.1.1|5]
                                [--drain-messages 100000 (0: skip the drain run)]

Last line: ``{"pipeline_per_s": …, "bare_per_s": …, "ratio": …, "pipeline_msgs_per_s": …, "msg_ratio": …,
"readings_per_msg": 2, "drain_per_s": …, "bare_drain_per_s": …, "drain_ratio": …}``. As the issue
defines them, ``pipeline_per_s`` is readings stored per second and ``bare_per_s`` messages received per
second; with two readings a message, ``msg_ratio`` (messages per second through the pipeline ÷ bare) is
the like-for-like comparison and is printed beside it. ``drain_per_s`` is rows (= messages) stored per
second in the drain run, ``bare_drain_per_s`` the bare subscriber's messages per second on the same
queue, ``drain_ratio`` their quotient (target ≥ 0.6).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from benchmarks.crash_ingest import start_mosquitto
from collectors.mqtt import MqttCollector
from core.config import MqttBroker, MqttDevice
from store.ingest import DeviceInfo, Pipeline
from store.sqlite import SqliteReadingStore

TOPIC = "bench/r1/{}/state"
DRAIN_TOPIC = "drain/r1/{}/t"


def protocol_of(name: str) -> MQTTProtocolVersion:
    """paho's protocol constant."""
    return MQTTProtocolVersion.MQTTv5 if name == "5" else MQTTProtocolVersion.MQTTv311


def bare_client(
    port: int, protocol: str, client_id: str = "bench-bare", topic: str = "bench/#"
) -> tuple[paho.Client, threading.Event, list[int]]:
    """A bare paho subscriber with a persistent session, counting messages (acknowledged on arrival)."""
    if protocol == "5":
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol_of(protocol))
    else:
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            clean_session=False,
            protocol=protocol_of(protocol),
        )
    subscribed = threading.Event()
    count = [0]
    client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=1)
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


def register_bare(port: int, protocol: str, client_id: str = "bench-bare", topic: str = "bench/#") -> None:
    """Create the bare subscriber's session and subscription, then leave."""
    client, subscribed, _ = bare_client(port, protocol, client_id, topic)
    connect(client, port, protocol)
    client.loop_start()
    if not subscribed.wait(10):
        sys.exit("bare subscriber: no SUBACK")
    client.disconnect()
    client.loop_stop()


def drain_bare(
    port: int, protocol: str, messages: int, client_id: str = "bench-bare", topic: str = "bench/#"
) -> float:
    """Seconds for the bare subscriber to receive its queued messages."""
    client, _, count = bare_client(port, protocol, client_id, topic)
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


def publish_all(port: int, messages: int, devices: int, *, drain: bool = False) -> float:
    """Publish the messages at QoS 1 (drain: one reading with its own time each); seconds taken."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-pub")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    started = time.perf_counter()
    info = None
    t0_ms = round(time.time() * 1000) - 86_400_000  # a day ago: inside the raw retention
    for i in range(messages):
        d = i % devices
        if drain:
            body = b'{"t":%.1f,"ts":%d}' % (15.0 + (i % 150) / 10, t0_ms + i)  # one ms apart: one row each
            info = client.publish(DRAIN_TOPIC.format(f"th-{d}"), body, qos=1)
            if i % 20_000 == 19_999:
                info.wait_for_publish(600)
            continue
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


def drain_devices(devices: int) -> list[MqttDevice]:
    """The drain run's devices: one temperature reading a message, stamped by the message's `ts`."""
    return [
        MqttDevice.model_validate(
            {
                "id": f"th-{d}",
                "room": "r1",
                "mqtt": {"topic": DRAIN_TOPIC.format(f"th-{d}"), "time_path": "ts"},
                "points": [{"metric": "temperature", "path": "t"}],
            }
        )
        for d in range(devices)
    ]


async def pipeline_run(
    port: int,
    protocol: str,
    messages: int,
    devices: list[MqttDevice],
    db: Path,
    *,
    client_id: str = "bench-bafang",
    readings_per_msg: int = 2,
) -> tuple[float, int]:
    """Seconds until every queued message's readings are stored and visible as latest; rows stored."""
    broker = MqttBroker(url=f"mqtt://127.0.0.1:{port}", client_id=client_id, protocol=protocol)  # type: ignore[arg-type]
    store = SqliteReadingStore(db)
    await store.open()
    pipeline = Pipeline(store, devices=[DeviceInfo(d.id, d.room, "mqtt") for d in devices])
    await pipeline.start()
    expected = messages * readings_per_msg
    done = asyncio.Event()

    async def on_stored(batch: object) -> None:
        # Listeners run once a batch is stored, with the readings it newly stored.
        if pipeline.stored >= expected:
            done.set()

    pipeline.add_listener(on_stored)
    collector = MqttCollector(broker, devices, pipeline)
    started = time.perf_counter()
    last_progress = (0, started)
    collector.start()
    deadline = time.monotonic() + 600
    while not done.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 0.2)
        now = time.perf_counter()
        if pipeline.stored != last_progress[0]:
            last_progress = (pipeline.stored, now)
        elif (
            pipeline.stored
            and collector.inflight == 0
            and pipeline.pending == 0
            and now - last_progress[1] > 2
        ):
            # Everything acknowledged and nothing stored for 2 s: readings of one device stamped on
            # arrival in the same millisecond are one row by design, so fewer rows than readings.
            started += now - last_progress[1]  # time to the last stored batch, not to this check
            break
        if time.monotonic() > deadline:
            sys.exit(f"pipeline: {pipeline.stored} of {expected} readings stored after 600 s")
    latest = await store.latest()
    elapsed = time.perf_counter() - started
    collector.stop()
    await pipeline.stop()
    await store.close()
    series = {(r.device, r.metric) for r in latest}
    want = min(len(devices), messages) * readings_per_msg
    if len(series) != want:
        sys.exit(f"pipeline: latest shows {len(series)} series, expected {want}")
    return elapsed, pipeline.stored


def register_collector(
    port: int, protocol: str, devices: list[MqttDevice], client_id: str = "bench-bafang"
) -> None:
    """Create the collector's persistent session and subscriptions, then leave."""

    class Null:
        def submit(
            self,
            readings: object,
            rejections: object = (),
            *,
            ack: Callable[[], None] | None = None,
            delivery: object = None,
        ) -> None:
            if ack is not None:
                ack()

        def reject(self, rejection: object) -> None: ...
        def status(self, *args: object) -> None: ...

    broker = MqttBroker(url=f"mqtt://127.0.0.1:{port}", client_id=client_id, protocol=protocol)  # type: ignore[arg-type]
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
    parser.add_argument(
        "--drain-messages", type=int, default=None, help="drain run messages (default: --messages; 0: skip)"
    )
    args = parser.parse_args()
    drain_n = args.messages if args.drain_messages is None else args.drain_messages
    drain: dict[str, float] = {}
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory(prefix="bafang-ingest-") as tmp:
        workdir = Path(tmp)
        proc, port = start_mosquitto(workdir, persistence=False)
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
            pipe_s, _ = asyncio.run(pipeline_run(port, args.protocol, args.messages, devices, db))
            # Readings handled: two a message. The rows may be fewer (same device, same millisecond).
            stored = args.messages * 2
            pipe = args.messages / pipe_s
            with sqlite3.connect(db) as conn:
                rows = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
            print(
                f"pipeline (collector → validate → SQLite → latest): {args.messages} messages in {pipe_s:.2f} s "
                f"= {pipe:,.0f} msg/s = {stored / pipe_s:,.0f} readings/s ({rows} rows in SQLite; "
                "readings of one device in the same millisecond are one row by design)"
            )
            if drain_n:
                drain = drain_run(workdir, port, args.protocol, drain_n, args.devices)
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
                **drain,
            }
        )
    )


def drain_run(workdir: Path, port: int, protocol: str, messages: int, devices: int) -> dict[str, float]:
    """One reading a message, queue filled first; bare subscriber and pipeline each drain it."""
    ddevices = drain_devices(devices)
    register_bare(port, protocol, "bench-bare-drain", "drain/#")
    register_collector(port, protocol, ddevices, "bench-bafang-drain")
    pub_s = publish_all(port, messages, devices, drain=True)
    print(f"drain run: published {messages} one-reading messages (QoS 1) in {pub_s:.2f} s; queued for both")
    bare_s = drain_bare(port, protocol, messages, "bench-bare-drain", "drain/#")
    bare = messages / bare_s
    print(f"drain run: bare paho subscriber: {messages} messages in {bare_s:.2f} s = {bare:,.0f} msg/s")
    db = workdir / "drain.db"
    pipe_s, _ = asyncio.run(
        pipeline_run(
            port, protocol, messages, ddevices, db, client_id="bench-bafang-drain", readings_per_msg=1
        )
    )
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    if rows != messages:
        sys.exit(f"drain run: {rows} rows stored for {messages} messages")
    rate = rows / pipe_s
    print(
        f"drain run: pipeline (manual acks, durable commits): {rows} rows in {pipe_s:.2f} s = {rate:,.0f} rows/s "
        f"= {rate / bare:.2f} of bare (target ≥ 0.60; Node-RED here: 24,600 rows/s = 0.61 of 40,600)"
    )
    return {
        "drain_per_s": round(rate, 1),
        "bare_drain_per_s": round(bare, 1),
        "drain_ratio": round(rate / bare, 3),
    }


if __name__ == "__main__":
    main()
