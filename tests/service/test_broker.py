"""The embedded amqtt broker: QoS 1 through it with paho, a busy port, the collector on `url: embedded`."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from collectors.mqtt import MqttCollector
from core.config import MqttBroker, MqttDevice
from core.types import Ack, Delivery, DeviceStatus, Reading, Rejection
from service.broker import EmbeddedBroker


async def eventually(predicate: Callable[[], object], within: float = 5.0, what: str = "condition") -> None:
    """Poll ``predicate`` without blocking the broker's event loop; fail after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.005)


class Sink:
    """Keeps readings; thread-safe."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.readings: list[Reading] = []

    def submit(
        self,
        readings: Sequence[Reading],
        rejections: Sequence[Rejection] = (),
        *,
        ack: Ack | None = None,
        delivery: Delivery | None = None,
    ) -> None:
        with self.lock:
            self.readings.extend(readings)
        assert not rejections, rejections
        if ack is not None:
            ack()  # nothing to store here: acknowledge at once

    def reject(self, rejection: Rejection) -> None:
        raise AssertionError(rejection)

    def status(self, device: str, status: DeviceStatus, error: str | None, time: float) -> None:
        pass


@pytest.fixture
async def broker() -> AsyncIterator[EmbeddedBroker]:
    b = EmbeddedBroker()
    await b.start()
    yield b
    await b.stop()


@pytest.fixture
def clients() -> Iterator[list[paho.Client]]:
    made: list[paho.Client] = []
    yield made
    for c in made:
        c.disconnect()
        c.loop_stop()


def client(made: list[paho.Client], port: int, client_id: str, **kw: object) -> paho.Client:
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, **kw)  # type: ignore[arg-type]
    c.connect("127.0.0.1", port)
    c.loop_start()
    made.append(c)
    return c


async def test_qos1_through_the_embedded_broker(broker: EmbeddedBroker, clients: list[paho.Client]) -> None:
    got: list[tuple[str, bytes, int]] = []
    subscribed = threading.Event()
    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="sub-1")
    sub.on_connect = lambda c, u, f, r, p: c.subscribe("archive/#", qos=1)
    sub.on_subscribe = lambda c, u, mid, r, p: subscribed.set()
    sub.on_message = lambda c, u, m: got.append((m.topic, bytes(m.payload), m.qos))
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    clients.append(sub)
    await eventually(subscribed.is_set, what="SUBACK")
    pub = client(clients, broker.port, "pub-1")
    for i in range(20):
        pub.publish(f"archive/r1/th-{i}", json.dumps({"t": i}), qos=1)
    await eventually(lambda: len(got) >= 20, what="20 messages")
    assert sorted(got) == sorted((f"archive/r1/th-{i}", json.dumps({"t": i}).encode(), 1) for i in range(20))


async def test_busy_port_falls_back_to_a_free_one() -> None:
    with socket.socket() as held:  # stands for another broker on 1883
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        b = EmbeddedBroker()
        port = await b.start("127.0.0.1", busy)
        try:
            assert port != busy and port == b.port
            with socket.create_connection(("127.0.0.1", port), timeout=2):
                pass
        finally:
            await b.stop()


async def test_collector_on_the_embedded_broker_keeps_its_session(
    broker: EmbeddedBroker, clients: list[paho.Client]
) -> None:
    # url: embedded with the default protocol "5": the collector speaks 3.1.1, the only one amqtt knows.
    cfg = MqttBroker(url="embedded", client_id="bafang-embedded")
    dev = MqttDevice.model_validate(
        {
            "id": "th-1",
            "room": "r1",
            "mqtt": {"topic": "archive/r1/th-1"},
            "points": [{"metric": "temperature", "path": "t"}],
        }
    )
    sink = Sink()
    collector = MqttCollector(cfg, [dev], sink, host=broker.host, port=broker.port)
    collector.start()
    try:
        await eventually(lambda: collector.connected, what="the collector to subscribe")
        pub = client(clients, broker.port, "pub-2")
        pub.publish("archive/r1/th-1", b'{"t": 20.5}', qos=1)
        await eventually(lambda: len(sink.readings) == 1, what="a reading")
    finally:
        await collector.aclose()
    # Away: the broker queues QoS 1 messages for our persistent session.
    infos = [pub.publish("archive/r1/th-1", json.dumps({"t": float(i)}), qos=1) for i in range(5)]
    await eventually(lambda: all(i.is_published() for i in infos), what="PUBACKs while we are away")
    again = MqttCollector(cfg, [dev], sink, host=broker.host, port=broker.port)
    again.start()
    try:
        await eventually(lambda: len({r.value for r in sink.readings}) == 6, what="the 5 queued messages")
    finally:
        await again.aclose()
