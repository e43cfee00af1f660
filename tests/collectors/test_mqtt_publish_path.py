"""The default client's short way for a PUBLISH (collectors/mqtt.py ``_Client``) hands ``on_message``
what paho's own way does, and leaves to paho everything it does not handle.

Each test puts a stock paho client and the production client (``default_client_factory``) side by
side on a real broker and compares what their ``on_message`` receives: if paho changes what the short
way relies on (paho-mqtt 2.x internals), these fail, not the field.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collectors.mqtt import _Received, default_client_factory
from tests.collectors.mqtt_support import broker_config, unique
from tests.conftest import MqttTestBroker, wait_until
from tests.service.wire import CONNECT, BrokerEnd

PROTOCOLS = {"5": MQTTProtocolVersion.MQTTv5, "3.1.1": MQTTProtocolVersion.MQTTv311}


class Receiver:
    """A subscribed client on a loop thread, keeping every message its ``on_message`` is given."""

    def __init__(self, client: paho.Client, topic: str, *, qos: int = 2) -> None:
        self.client = client
        self.messages: list[paho.MQTTMessage] = []
        self.subscribed = threading.Event()
        client.on_connect = lambda c, u, f, r, p: c.subscribe(topic, qos=qos)
        client.on_subscribe = lambda c, u, mid, r, p: self.subscribed.set()
        client.on_message = self._on_message

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        self.messages.append(msg)
        if msg.qos and getattr(client, "_manual_ack", False):
            client.ack(msg.mid, msg.qos)  # the production client acknowledges by hand

    def start(self, broker: MqttTestBroker) -> None:
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(5), "no SUBACK"

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def stock(protocol: str) -> paho.Client:
    """paho's own client, as a bare subscriber would use it."""
    return paho.Client(CallbackAPIVersion.VERSION2, client_id=unique("stock"), protocol=PROTOCOLS[protocol])


def ours(broker: MqttTestBroker, protocol: str) -> paho.Client:
    """The client the collector runs."""
    return default_client_factory(
        broker_config(broker, protocol=protocol), protocol=PROTOCOLS[protocol], tls=False
    )


@pytest.fixture
def publisher(mosquitto: MqttTestBroker) -> Iterator[paho.Client]:
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=unique("pub"), protocol=MQTTProtocolVersion.MQTTv5
    )
    client.connect(mosquitto.host, mosquitto.port)
    client.loop_start()
    yield client
    client.disconnect()
    client.loop_stop()


def publish(client: paho.Client, topic: str, payload: bytes, qos: int, **options: Any) -> None:
    info = client.publish(topic, payload, qos=qos, **options)
    info.wait_for_publish(5)
    assert info.is_published()


def user_properties() -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.UserProperty = [("source", "gateway-3")]
    props.ContentType = "application/json"
    return props


def seen(messages: list[paho.MQTTMessage]) -> list[tuple[str, bytes, int, bool, bool]]:
    return sorted((m.topic, bytes(m.payload), m.qos, m.retain, m.dup) for m in messages)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_the_short_way_hands_over_what_pahos_way_does(
    mosquitto: MqttTestBroker, publisher: paho.Client, protocol: str
) -> None:
    base = unique("fast")
    # Retained before anyone subscribes: both receive it with the retain flag.
    publish(publisher, f"{base}/retained", b'{"temperature": 21.5}', 1, retain=True)
    stock_rx, our_rx = (
        Receiver(stock(protocol), f"{base}/#"),
        Receiver(ours(mosquitto, protocol), f"{base}/#"),
    )
    stock_rx.start(mosquitto)
    our_rx.start(mosquitto)
    try:
        cases: list[tuple[str, bytes, int, dict[str, Any]]] = [
            (f"{base}/0x00158d0001a2b3c4", b'{"temperature":22.91,"humidity":54.2,"linkquality":120}', 1, {}),
            (f"{base}/qos0", b'{"t": 21}', 0, {}),
            (f"{base}/empty", b"", 1, {}),
            (f"{base}/档案室/温湿度", '{"温度": 20.1}'.encode(), 1, {}),  # a UTF-8 topic
            (f"{base}/" + "x" * 300, b"ON", 1, {}),  # a topic longer than one length byte
            (f"{base}/big", bytes(range(256)) * 800, 1, {}),  # 204,800 bytes: a 3-byte remaining length
            (f"{base}/binary", b"\x00\xff\x80{", 1, {}),
            (f"{base}/qos2", b'{"smoke": true}', 2, {}),  # paho's way: QoS 2 has its own handshake
            (f"{base}/props", b'{"water_leak": true}', 1, {"properties": user_properties()}),  # paho's way
        ]
        for topic, payload, qos, options in cases:
            publish(publisher, topic, payload, qos, **options)
        expected = len(cases) + 1
        wait_until(lambda: len(stock_rx.messages) >= expected and len(our_rx.messages) >= expected)
        assert seen(our_rx.messages) == seen(stock_rx.messages)
        assert len(our_rx.messages) == expected
    finally:
        our_rx.stop()
        stock_rx.stop()
        publish(publisher, f"{base}/retained", b"", 1, retain=True)

    by_topic = {m.topic: m for m in our_rx.messages}
    # QoS 2 goes paho's way; so do properties, which the broker passes on to MQTT 5 subscribers only.
    paho_way = {f"{base}/qos2", f"{base}/props"} if protocol == "5" else {f"{base}/qos2"}
    for topic, m in by_topic.items():
        assert isinstance(m, _Received) is (topic not in paho_way), topic
        assert (m.mid > 0) is (m.qos > 0) and m.info.mid == m.mid  # the tracker, made when asked for
    if protocol == "5":
        props = by_topic[f"{base}/props"].properties
        assert props is not None and props.UserProperty == [("source", "gateway-3")]
        assert props.ContentType == "application/json"
        assert by_topic[f"{base}/qos0"].properties is None  # the short way: none carried, none made


def test_pahos_debug_log_and_filtered_callbacks_go_pahos_way(
    mosquitto: MqttTestBroker, publisher: paho.Client, caplog: pytest.LogCaptureFixture
) -> None:
    base = unique("slow")
    client = ours(mosquitto, "5")
    rx = Receiver(client, f"{base}/#")
    logger = logging.getLogger("tests.paho")
    client.enable_logger(logger)
    filtered: list[paho.MQTTMessage] = []
    rx.start(mosquitto)
    try:
        with caplog.at_level(logging.DEBUG, logger="tests.paho"):
            publish(publisher, f"{base}/logged", b'{"t": 20}', 1)
            wait_until(lambda: len(rx.messages) == 1)
        assert not isinstance(rx.messages[0], _Received)
        assert any(
            "Received PUBLISH" in r.getMessage() and f"{base}/logged" in r.getMessage()
            for r in caplog.records
        )

        client.disable_logger()
        client.message_callback_add(f"{base}/filtered", lambda c, u, m: filtered.append(m))
        publish(publisher, f"{base}/filtered", b'{"t": 21}', 1)
        wait_until(lambda: len(filtered) == 1)
        assert filtered[0].payload == b'{"t": 21}' and not isinstance(filtered[0], _Received)
    finally:
        rx.stop()


@pytest.mark.parametrize(
    "publish_packet",
    [
        bytes([0x30, 2, 0, 0]),  # QoS 0 with an empty topic: malformed in MQTT 3.1.1 (§3.3.2.1)
        bytes([0x32, 3, 0, 5, ord("a")]),  # the topic says 5 bytes, the packet holds 1
    ],
    ids=["empty-topic", "truncated"],
)
def test_a_malformed_publish_is_refused_as_paho_refuses_it(publish_packet: bytes) -> None:
    # A broker never forwards these: the broker's end of one connection sends them itself.
    results = []
    for make in (
        lambda: paho.Client(
            CallbackAPIVersion.VERSION2, client_id="stock", protocol=MQTTProtocolVersion.MQTTv311
        ),
        lambda: default_client_factory(
            broker_config(_Loopback(), protocol="3.1.1"), protocol=MQTTProtocolVersion.MQTTv311, tls=False
        ),
    ):
        end = BrokerEnd()
        client = make()
        received: list[paho.MQTTMessage] = []
        client.on_message = lambda c, u, m, received=received: received.append(m)
        try:
            client.connect(*end.address)
            end.expect(CONNECT)
            end.connack("3.1.1")
            assert client.loop(timeout=2.0) == paho.MQTT_ERR_SUCCESS  # the CONNACK
            end.send(publish_packet)
            rc = client.loop(timeout=2.0)
            for _ in range(3):  # paho may take a second pass to read the rest
                if rc != paho.MQTT_ERR_SUCCESS:
                    break
                rc = client.loop(timeout=0.2)
            results.append((rc, received))
        finally:
            end.close()
    (stock_rc, stock_received), (our_rc, our_received) = results
    assert stock_rc != paho.MQTT_ERR_SUCCESS and our_rc == stock_rc
    assert stock_received == [] and our_received == []


class _Loopback:
    """Where ``broker_config`` points a client that then connects to a ``BrokerEnd`` itself."""

    kind = "mosquitto"
    host = "127.0.0.1"
    port = 1

    def stop(self) -> None:
        pass
