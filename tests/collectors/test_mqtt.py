"""The MQTT collector against a real Mosquitto: decoding, rejections, wildcards, availability, sessions,
acknowledgement only once stored, and the in-flight window."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

from collectors.mqtt import MqttCollector, default_client_factory, parse_time
from core.clock import ManualClock
from core.config import MqttBroker
from core.types import DeviceStatus, Reason
from tests.collectors.mqtt_support import (
    ClientFactory,
    Publisher,
    RecordingSink,
    RefusingSink,
    Start,
    broker_config,
    deliver,
    device,
    message,
    offline_collector,
    unique,
)
from tests.conftest import Mosquitto, MqttTestBroker, wait_until

# ---------------------------------------------------------------------------------------------
# Readings arrive


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_readings_arrive(
    mosquitto: MqttTestBroker, publish: Publisher, start_collector: Start, protocol: str
) -> None:
    base = unique("archive")
    devices = [
        device({"id": "th-1", "mqtt": {"topic": f"{base}/th-1"},
                "points": [{"metric": "temperature", "path": "t"}, {"metric": "humidity", "path": "rh"}]}),
        device({"id": "th-2", "mqtt": {"topic": f"{base}/th-2"},
                "points": [{"metric": "temperature", "path": "sensor.t"}]}),
        device({"id": "th-3", "mqtt": {"topic": f"{base}/th-3"}, "points": [{"metric": "temperature"}]}),
        device({"id": "door-1", "mqtt": {"topic": f"{base}/door-1"},
                "points": [{"metric": "door", "path": "contact", "map": {"open": 1, "closed": 0}}]}),
        device({"id": "door-2", "mqtt": {"topic": f"{base}/door-2"},
                "points": [{"metric": "door", "map": {"open": 1, "closed": 0}}]}),
        device({"id": "leak-1", "mqtt": {"topic": f"{base}/leak-1"}, "points": [{"metric": "water_leak"}]}),
        device({"id": "smoke-1", "mqtt": {"topic": f"{base}/smoke-1"}, "points": [{"metric": "smoke", "path": "s"}]}),
    ]  # fmt: skip
    sink = RecordingSink()
    start_collector(broker_config(mosquitto, protocol=protocol), devices, sink)
    publish(f"{base}/th-1", {"t": 21.3, "rh": 52.1})
    publish(f"{base}/th-2", {"sensor": {"t": -5.5, "id": 7}})
    publish(f"{base}/th-3", b"23.5")
    publish(f"{base}/door-1", {"contact": "open"})
    publish(f"{base}/door-1", {"contact": "closed"})
    publish(f"{base}/door-2", b'"open"')
    publish(f"{base}/door-2", b"closed")  # a bare word, not JSON: the map decides
    publish(f"{base}/leak-1", b"true")
    publish(f"{base}/leak-1", b"0")
    publish(f"{base}/smoke-1", {"s": False})
    wait_until(lambda: len(sink.values()) >= 11, what="11 readings")
    assert sorted(sink.values()) == sorted(
        [
            ("th-1", "temperature", 21.3),
            ("th-1", "humidity", 52.1),
            ("th-2", "temperature", -5.5),
            ("th-3", "temperature", 23.5),
            ("door-1", "door", 1.0),
            ("door-1", "door", 0.0),
            ("door-2", "door", 1.0),
            ("door-2", "door", 0.0),
            ("leak-1", "water_leak", 1.0),
            ("leak-1", "water_leak", 0.0),
            ("smoke-1", "smoke", 0.0),
        ]
    )
    assert sink.rejections == []
    assert sink.submits == 10  # one submit per message
    reading = sink.readings[0]
    assert (reading.room, reading.unit) == ("r1", "°C")
    # Readings imply online: each device reported once, on its first message.
    assert sorted(d for d, s, _ in sink.statuses if s is DeviceStatus.ONLINE) == sorted(d.id for d in devices)


# ---------------------------------------------------------------------------------------------
# Bad input: not submitted, rejected with the reason, collector alive

TH = [{"metric": "temperature", "path": "t"}, {"metric": "humidity", "path": "rh"}]
DOOR = [{"metric": "door", "path": "contact", "map": {"open": 1, "closed": 0}}]
BAD_CASES: list[tuple[str, list[dict[str, Any]], bytes, list[tuple[str | None, Reason]]]] = [
    ("malformed JSON", TH, b'{"t": 21.', [(None, Reason.MALFORMED)]),
    ("not JSON at all", TH, b"\xff\xfe garbage", [(None, Reason.MALFORMED)]),
    ("array instead of object", TH, b"[21.5, 50]", [("temperature", Reason.MALFORMED), ("humidity", Reason.MALFORMED)]),
    ("wrong type string", TH, b'{"t": "hot", "rh": 50}', [("temperature", Reason.WRONG_TYPE)]),
    ("wrong type object", TH, b'{"t": {"v": 1}, "rh": 50}', [("temperature", Reason.WRONG_TYPE)]),
    ("NaN", TH, b'{"t": NaN, "rh": 50}', [("temperature", Reason.NAN)]),
    ("Infinity", TH, b'{"t": 20, "rh": -Infinity}', [("humidity", Reason.NAN)]),
    ("humidity 120", TH, b'{"t": 20, "rh": 120}', [("humidity", Reason.OUT_OF_RANGE)]),
    ("temperature -60", TH, b'{"t": -60, "rh": 50}', [("temperature", Reason.OUT_OF_RANGE)]),
    ("fault 32767", TH, b'{"t": 32767, "rh": 50}', [("temperature", Reason.FAULT_CODE)]),
    ("fault 65535", TH, b'{"t": 20, "rh": 65535}', [("humidity", Reason.FAULT_CODE)]),
    ("fault -999", TH, b'{"t": -999, "rh": 50}', [("temperature", Reason.FAULT_CODE)]),
    ("missing field", TH, b'{"t": 20}', [("humidity", Reason.MISSING)]),
    ("missing nested field", [{"metric": "temperature", "path": "a.b"}], b'{"a": {"c": 1}}',
     [("temperature", Reason.MISSING)]),
    ("unmapped text", DOOR, b'{"contact": "ajar"}', [("door", Reason.UNMAPPED)]),
    ("unmapped bare word", [{"metric": "door", "map": {"open": 1, "closed": 0}}], b"ajar",
     [("door", Reason.UNMAPPED)]),
    ("bare payload wrong type", [{"metric": "water_leak"}], b'{"leak": 1}', [("water_leak", Reason.WRONG_TYPE)]),
]  # fmt: skip
GOOD = {"t": 21.0, "rh": 50.0, "contact": "closed", "a": {"b": 22.0}}


def good_payload(points: list[dict[str, Any]]) -> bytes:
    """A valid message for these points."""
    if points[0].get("path") is None:
        return b"0"
    return json.dumps(GOOD).encode()


@pytest.mark.parametrize(
    ("points", "payload", "expected"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
def test_bad_input_rejected_and_collector_alive(
    mosquitto: MqttTestBroker,
    publish: Publisher,
    start_collector: Start,
    points: list[dict[str, Any]],
    payload: bytes,
    expected: list[tuple[str | None, Reason]],
) -> None:
    topic = unique("archive/r1/dev")
    sink = RecordingSink()
    start_collector(
        broker_config(mosquitto), [device({"id": "dev-1", "mqtt": {"topic": topic}, "points": points})], sink
    )
    bad_metrics = {m for m, _ in expected}
    survivors = [] if None in bad_metrics else [p["metric"] for p in points if p["metric"] not in bad_metrics]
    good = [p["metric"] for p in points]
    publish(topic, payload)
    publish(topic, good_payload(points))
    wait_until(lambda: len(sink.values()) >= len(survivors + good), what="the good message")
    # QoS 1 from one publisher arrives in order: the bad message was handled before the good one.
    assert sink.reasons() == [("dev-1", metric, reason) for metric, reason in expected]
    assert [m for _, m, _ in sink.values()] == survivors + good
    assert all(r.detail for r in sink.rejections)


def test_valid_field_stored_when_another_is_not(
    mosquitto: MqttTestBroker, publish: Publisher, start_collector: Start
) -> None:
    topic = unique("archive/r1/th")
    sink = RecordingSink()
    start_collector(
        broker_config(mosquitto), [device({"id": "th-9", "mqtt": {"topic": topic}, "points": TH})], sink
    )
    publish(topic, b'{"t": 22.5, "rh": 120}')
    wait_until(lambda: sink.values(), what="the valid temperature")
    assert sink.values() == [("th-9", "temperature", 22.5)]
    assert sink.reasons() == [("th-9", "humidity", Reason.OUT_OF_RANGE)]


# ---------------------------------------------------------------------------------------------
# Wildcards and availability


def test_wildcard_topic_with_device_id_segment(
    mosquitto: MqttTestBroker, publish: Publisher, start_collector: Start
) -> None:
    base = unique("gw")
    template = device(
        {"id": "th-any", "mqtt": {"topic": f"{base}/+/state", "device_id_segment": 1}, "points": TH}
    )
    catch_all = device(
        {"id": "leak-any", "mqtt": {"topic": f"{base}/leak/#"}, "points": [{"metric": "water_leak"}]}
    )
    sink = RecordingSink()
    start_collector(broker_config(mosquitto), [template, catch_all], sink)
    publish(f"{base}/th-7/state", {"t": 20.0, "rh": 40.0})
    publish(f"{base}/th-8/state", {"t": 21.0, "rh": 41.0})
    publish(f"{base}/th-7/state", {"t": 20.5, "rh": 40.5})
    publish(f"{base}/@bad/state", {"t": 20.5, "rh": 40.5})
    publish(f"{base}/th-7/other", {"t": 99})  # matches nothing
    publish(f"{base}/leak/a/b", b"1")
    wait_until(lambda: len(sink.values()) >= 7, what="7 readings")
    assert sink.values() == [
        ("th-7", "temperature", 20.0),
        ("th-7", "humidity", 40.0),
        ("th-8", "temperature", 21.0),
        ("th-8", "humidity", 41.0),
        ("th-7", "temperature", 20.5),
        ("th-7", "humidity", 40.5),
        ("leak-any", "water_leak", 1.0),
    ]
    assert all(r.room == "r1" for r in sink.readings)
    # Devices stood for by the template are announced once, the first time they are heard.
    assert sink.statuses == [
        ("th-7", DeviceStatus.ONLINE, None),
        ("th-8", DeviceStatus.ONLINE, None),
        ("leak-any", DeviceStatus.ONLINE, None),
    ]
    assert sink.reasons() == [("th-any", None, Reason.UNKNOWN_DEVICE)]


def test_availability_topic(mosquitto: MqttTestBroker, publish: Publisher, start_collector: Start) -> None:
    base = unique("archive/r1")
    dev = device(
        {
            "id": "door-5",
            "mqtt": {"topic": f"{base}/door-5", "availability_topic": f"{base}/door-5/status"},
            "points": DOOR,
        }
    )
    sink = RecordingSink()
    publish(f"{base}/door-5/status", b"offline", retain=True)  # a last will, retained before we start
    start_collector(broker_config(mosquitto), [dev], sink)
    wait_until(lambda: sink.statuses, what="the retained availability")
    publish(f"{base}/door-5/status", b"offline")  # no edge: not reported again
    publish(f"{base}/door-5/status", b"online")
    publish(f"{base}/door-5/status", b"offline")
    publish(f"{base}/door-5", {"contact": "open"})  # a reading implies online again
    wait_until(lambda: sink.values(), what="the door reading")
    expected_offline = ("door-5", DeviceStatus.OFFLINE, f"reported offline via {base}/door-5/status")
    assert sink.statuses == [
        expected_offline,
        ("door-5", DeviceStatus.ONLINE, None),
        expected_offline,
        ("door-5", DeviceStatus.ONLINE, None),
    ]
    publish(f"{base}/door-5/status", b"", retain=True)  # clear the retained message


def test_wildcard_availability_carries_the_device_id(
    mosquitto: MqttTestBroker, publish: Publisher, start_collector: Start
) -> None:
    base = unique("z2m")
    dev = device(
        {
            "id": "leak-tpl",
            "mqtt": {
                "topic": f"{base}/+",
                "device_id_segment": 1,
                "availability_topic": f"{base}/+/availability",
            },
            "points": [{"metric": "water_leak", "path": "water_leak"}],
        }
    )
    sink = RecordingSink()
    start_collector(broker_config(mosquitto), [dev], sink)
    publish(f"{base}/leak-3/availability", b"offline")
    publish(f"{base}/leak-3", {"water_leak": False})
    wait_until(lambda: sink.values(), what="a reading")
    assert sink.statuses == [
        ("leak-3", DeviceStatus.OFFLINE, f"reported offline via {base}/leak-3/availability"),
        ("leak-3", DeviceStatus.ONLINE, None),
    ]


def test_shared_subscription(mosquitto: MqttTestBroker, publish: Publisher, start_collector: Start) -> None:
    topic = unique("archive/shared")
    sink = RecordingSink()
    dev = device({"id": "th-s", "mqtt": {"topic": topic}, "points": TH})
    start_collector(broker_config(mosquitto, shared_group="bafang", protocol="5"), [dev], sink)
    publish(topic, {"t": 20.0, "rh": 40.0})
    wait_until(lambda: len(sink.values()) == 2, what="2 readings")


# ---------------------------------------------------------------------------------------------
# Sessions, restarts, credentials, TLS


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_persistent_session_keeps_messages_while_we_are_away(
    mosquitto: MqttTestBroker, publish: Publisher, start_collector: Start, protocol: str
) -> None:
    if mosquitto.kind == "amqtt":
        pytest.skip("needs Mosquitto's session handling")
    topic = unique("archive/r1/persist")
    cfg = broker_config(mosquitto, protocol=protocol)
    dev = device({"id": "th-p", "mqtt": {"topic": topic}, "points": TH})
    first = RecordingSink()
    start_collector(cfg, [dev], first).stop()
    for i in range(50):
        publish(topic, {"t": 20.0 + i / 10, "rh": 50.0})
    second = RecordingSink()
    start_collector(cfg, [dev], second)  # same client_id: the broker hands over what it queued
    wait_until(lambda: len(second.values()) == 100, what="the 50 queued messages")
    assert [v for _, m, v in second.values() if m == "temperature"] == [20.0 + i / 10 for i in range(50)]


def test_broker_restart_reconnects_and_resubscribes(
    mosquitto_factory: Callable[..., Mosquitto], start_collector: Start
) -> None:
    broker = mosquitto_factory()  # no persistence: the broker forgets our subscription
    topic = "archive/r1/restart"
    sink = RecordingSink()
    collector = start_collector(
        broker_config(broker), [device({"id": "th-r", "mqtt": {"topic": topic}, "points": TH})], sink
    )
    broker.stop()
    wait_until(lambda: not collector.connected, what="the collector to notice")
    broker.start()
    wait_until(lambda: collector.connected, 15.0, "the collector to reconnect and resubscribe")
    pub = Publisher(broker)
    try:
        pub(topic, {"t": 19.0, "rh": 45.0})
        wait_until(lambda: len(sink.values()) == 2, what="a reading after the restart")
    finally:
        pub.close()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_persistent_broker_restart_loses_nothing(
    mosquitto_factory: Callable[..., Mosquitto], start_collector: Start, protocol: str
) -> None:
    broker = mosquitto_factory(persistence=True)
    topic = "archive/r1/durable"
    cfg = broker_config(broker, protocol=protocol)
    dev = device({"id": "th-d", "mqtt": {"topic": topic}, "points": TH})
    start_collector(cfg, [dev], RecordingSink()).stop()
    pub = Publisher(broker)
    for i in range(20):
        pub(topic, {"t": float(i), "rh": 50.0})
    pub.close()
    broker.restart()  # the queued QoS 1 messages survive in mosquitto.db
    sink = RecordingSink()
    start_collector(cfg, [dev], sink)
    wait_until(lambda: len(sink.values()) == 40, 10.0, "the 20 messages queued before the restart")


def test_credentials(
    mosquitto_factory: Callable[..., Mosquitto], start_collector: Start, caplog: pytest.LogCaptureFixture
) -> None:
    broker = mosquitto_factory(users={"bafang": "s3cret-密码"})
    topic = "archive/r1/auth"
    dev = device({"id": "th-a", "mqtt": {"topic": topic}, "points": TH})
    sink = RecordingSink()
    start_collector(broker_config(broker, username="bafang", password="s3cret-密码"), [dev], sink)
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="pub-auth")
    pub.username_pw_set("bafang", "s3cret-密码")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        pub.publish(topic, json.dumps({"t": 18.0, "rh": 48.0}), qos=1).wait_for_publish(5)
        wait_until(lambda: len(sink.values()) == 2, what="readings through an authenticated session")
    finally:
        pub.disconnect()
        pub.loop_stop()

    caplog.set_level(logging.WARNING, logger="bafang.collectors.mqtt")
    wrong = MqttCollector(broker_config(broker, username="bafang", password="wrong"), [dev], RecordingSink())
    wrong.start()
    try:
        wait_until(lambda: "refused" in caplog.text, what="the refusal to be logged")
        assert not wrong.connected
        assert "wrong" not in caplog.text  # the password is never logged
    finally:
        wrong.stop()


def test_tls(
    mosquitto_factory: Callable[..., Mosquitto], start_collector: Start, tls_cert: tuple[Path, Path]
) -> None:
    cert, key = tls_cert
    broker = mosquitto_factory(tls=(cert, key))
    topic = "archive/r1/tls"
    dev = device({"id": "th-t", "mqtt": {"topic": topic}, "points": TH})
    sink = RecordingSink()
    start_collector(broker_config(broker, tls={"ca_file": str(cert)}), [dev], sink)
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="pub-tls")
    pub.tls_set(ca_certs=str(cert))
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    try:
        pub.publish(topic, json.dumps({"t": 17.0, "rh": 47.0}), qos=1).wait_for_publish(5)
        wait_until(lambda: len(sink.values()) == 2, what="readings over TLS")
    finally:
        pub.disconnect()
        pub.loop_stop()


# ---------------------------------------------------------------------------------------------
# The client factory


@pytest.mark.parametrize(
    ("protocol", "url", "expected"),
    [
        ("3.1.1", "mqtt://broker.example:1883", MQTTProtocolVersion.MQTTv311),
        ("5", "mqtt://broker.example:1883", MQTTProtocolVersion.MQTTv5),
        ("5", "embedded", MQTTProtocolVersion.MQTTv311),  # amqtt speaks 3.1.1 only
    ],
)
def test_the_factory_is_asked_for_the_protocol_and_the_collector_wires_its_client(
    protocol: str, url: str, expected: MQTTProtocolVersion
) -> None:
    factory = ClientFactory()
    cfg = MqttBroker.model_validate({"url": url, "protocol": protocol, "client_id": "bafang-f"})
    host = "127.0.0.1" if url == "embedded" else None  # the embedded broker's address is given
    MqttCollector(cfg, [], RecordingSink(), client_factory=factory, host=host, port=1 if host else None)
    assert factory.calls == [("bafang-f", expected, False)]
    client = factory.client
    assert (
        client.on_message is not None and client.on_connect is not None and client.on_disconnect is not None
    )


def test_an_mqtts_url_asks_the_factory_for_tls() -> None:
    factory = ClientFactory()
    MqttCollector(MqttBroker(url="mqtts://broker.example"), [], RecordingSink(), client_factory=factory)
    assert [tls for _, _, tls in factory.calls] == [True]


def test_default_client_factory_sets_protocol_and_credentials() -> None:
    cfg = MqttBroker.model_validate(
        {"url": "mqtt://broker.example", "username": "bafang", "password": "s3cret", "client_id": "bafang-d"}
    )
    v311 = default_client_factory(cfg, protocol=MQTTProtocolVersion.MQTTv311, tls=False)
    assert (v311.protocol, v311.username, v311.password) == (MQTTProtocolVersion.MQTTv311, "bafang", "s3cret")
    v5 = default_client_factory(cfg, protocol=MQTTProtocolVersion.MQTTv5, tls=False)
    assert v5.protocol == MQTTProtocolVersion.MQTTv5


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_acks_wait_for_storage_whatever_client_the_factory_built(
    mosquitto: MqttTestBroker, publish: Publisher, start_collector: Start, protocol: str
) -> None:
    """A factory that forgets manual_ack must not make paho acknowledge what was never stored."""
    if mosquitto.kind == "amqtt":
        pytest.skip("needs Mosquitto's session handling")
    built: list[tuple[MQTTProtocolVersion, bool]] = []

    def careless(broker: MqttBroker, *, protocol: MQTTProtocolVersion, tls: bool) -> paho.Client:
        built.append((protocol, tls))
        client = default_client_factory(broker, protocol=protocol, tls=tls)
        client.manual_ack_set(False)  # paho would then ack every message as soon as on_message returns
        return client

    topic = unique("archive/r1/factory")
    cfg = broker_config(mosquitto, protocol=protocol)
    dev = device({"id": "th-f", "mqtt": {"topic": topic}, "points": TH})
    held = RecordingSink(hold=True)
    collector = start_collector(cfg, [dev], held, client_factory=careless)
    publish(topic, {"t": 20.0, "rh": 50.0})
    wait_until(lambda: held.submits == 1, what="the message")
    collector.stop()  # never stored, so never acknowledged
    assert [p for p, _ in built] == [
        MQTTProtocolVersion.MQTTv5 if protocol == "5" else MQTTProtocolVersion.MQTTv311
    ]

    again = RecordingSink()
    start_collector(cfg, [dev], again, client_factory=careless)
    wait_until(lambda: again.submits == 1, what="the unacknowledged message delivered again")
    assert again.values() == [("th-f", "temperature", 20.0), ("th-f", "humidity", 50.0)]


# ---------------------------------------------------------------------------------------------
# The handler alone, with real paho messages


def test_time_path_and_bad_time() -> None:
    clock = ManualClock(1_767_225_600.0)
    dev = device({"id": "th-x", "mqtt": {"topic": "a/th-x", "time_path": "ts"}, "points": TH})
    sink = RecordingSink()
    collector, _ = offline_collector([dev], sink, clock=clock)
    collector.handle(message("a/th-x", b'{"t": 20, "rh": 50, "ts": "2026-01-01T08:00:00+08:00"}'))
    collector.handle(message("a/th-x", b'{"t": 20, "rh": 50, "ts": 1767225600123}'))
    collector.handle(message("a/th-x", b'{"t": 20, "rh": 50, "ts": "yesterday"}'))
    collector.handle(message("a/th-x", b'{"t": 20, "rh": 50}'))
    assert [r.time for r in sink.readings] == [1_767_225_600.0] * 2 + [1_767_225_600.123] * 2
    assert (
        sink.reasons()
        == [("th-x", "temperature", Reason.BAD_TIME), ("th-x", "humidity", Reason.BAD_TIME)] * 2
    )


def test_receive_time_comes_from_the_clock() -> None:
    clock = ManualClock(1_800_000_000.0)
    dev = device({"id": "th-c", "mqtt": {"topic": "a/th-c"}, "points": TH})
    sink = RecordingSink()
    collector, _ = offline_collector([dev], sink, clock=clock)
    collector.handle(message("a/th-c", b'{"t": 20, "rh": 50}'))
    clock.advance(30)
    collector.handle(message("a/th-c", b'{"t": 20, "rh": 50}'))
    assert [r.time for r in sink.readings] == [1_800_000_000.0] * 2 + [1_800_000_030.0] * 2


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-01-01T00:00:00Z", 1_767_225_600.0),
        ("2026-01-01T08:00:00+08:00", 1_767_225_600.0),
        ("2026-01-01 08:00:00", 1_767_225_600.0),  # naive: read in the site's zone (Asia/Shanghai here)
        (1_767_225_600, 1_767_225_600.0),
        (1_767_225_600.5, 1_767_225_600.5),
        (1_767_225_600_500, 1_767_225_600.5),
        ("1767225600", 1_767_225_600.0),
        ("soon", None),
        (True, None),
        (None, None),
        ({"s": 1}, None),
        (-5, None),
        (float("nan"), None),
        ("2026-13-01T00:00:00Z", None),
    ],
)
def test_parse_time(value: object, expected: float | None) -> None:
    from zoneinfo import ZoneInfo

    assert parse_time(value, ZoneInfo("Asia/Shanghai")) == expected


def test_a_failing_sink_does_not_escape_the_callback(caplog: pytest.LogCaptureFixture) -> None:
    dev = device({"id": "th-b", "mqtt": {"topic": "a/th-b"}, "points": TH})
    collector, client = offline_collector([dev], RefusingSink("sink down"))
    deliver(client, message("a/th-b", b'{"t": 20, "rh": 50}'))
    assert "sink down" in caplog.text
    # A QoS 1 message the sink did not take: its window slot is freed, but it is not acknowledged,
    # so the broker delivers it again on the next connection.
    deliver(client, message("a/th-b", b'{"t": 20, "rh": 50}', qos=1, mid=9))
    assert collector.inflight == 0
    assert client.acks == []


def test_rejections_logged_once_per_streak(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bafang.collectors.mqtt")
    dev = device({"id": "th-l", "mqtt": {"topic": "a/th-l"}, "points": TH})
    sink = RecordingSink()
    collector, _ = offline_collector([dev], sink)
    for _ in range(5):
        collector.handle(message("a/th-l", b'{"t": 20, "rh": 120}'))
    collector.handle(message("a/th-l", b'{"t": 20, "rh": 50}'))
    assert len(sink.rejections) == 5
    lines = [r.getMessage() for r in caplog.records if "th-l" in r.getMessage()]
    assert len(lines) == 2, lines
    assert "out_of_range" in lines[0]
    assert "valid again after 5" in lines[1]


def test_embedded_url_needs_host_and_port() -> None:
    with pytest.raises(ValueError, match="embedded"):
        MqttCollector(MqttBroker(url="embedded"), [], RecordingSink())


def test_ingest_benchmark_smoke(mosquitto: MqttTestBroker) -> None:
    """benchmarks/ingest.py runs end to end on a small size and ends with its JSON line."""
    import subprocess
    import sys

    if mosquitto.kind != "mosquitto":
        pytest.skip("the benchmark starts its own Mosquitto")
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "ingest.py"
    out = subprocess.run(
        [sys.executable, str(script), "--messages", "300", "--devices", "20"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"pipeline_per_s", "bare_per_s", "ratio", "msg_ratio"} <= set(figures)
    assert figures["pipeline_per_s"] > 0 and figures["bare_per_s"] > 0


def test_retained_measurements_are_not_taken_as_current() -> None:
    sink = RecordingSink()
    devices = [
        device({"id": "th-old", "mqtt": {"topic": "a/th-old"}, "points": TH}),
        device({"id": "door-old", "mqtt": {"topic": "a/door-old"}, "points": DOOR}),
        device({"id": "th-ts", "mqtt": {"topic": "a/th-ts", "time_path": "ts"}, "points": TH}),
    ]
    collector, _ = offline_collector(devices, sink)
    for topic, payload in [
        ("a/th-old", b'{"t": 20, "rh": 50}'),  # a dead sensor's last value: skipped
        ("a/door-old", b'{"contact": "open"}'),  # a contact's state still holds: kept
        ("a/th-ts", b'{"t": 20, "rh": 50, "ts": 1767225600}'),  # carries its own time: kept
    ]:
        msg = message(topic, payload)
        msg.retain = True
        collector.handle(msg)
    assert sink.values() == [
        ("door-old", "door", 1.0),
        ("th-ts", "temperature", 20.0),
        ("th-ts", "humidity", 50.0),
    ]
    assert [d for d, _, _ in sink.statuses] == ["door-old", "th-ts"]


# ---------------------------------------------------------------------------------------------
# Acknowledged only once stored: the handler alone


def test_qos1_message_is_acked_when_the_sink_acks_and_only_once() -> None:
    dev = device({"id": "th-k", "mqtt": {"topic": "a/th-k"}, "points": TH})
    sink = RecordingSink(hold=True)
    collector, client = offline_collector([dev], sink)
    collector.handle(message("a/th-k", b'{"t": 20, "rh": 50}', qos=1, mid=17))
    assert sink.values() == [("th-k", "temperature", 20.0), ("th-k", "humidity", 50.0)]
    assert collector.inflight == 1
    assert client.acks == []  # not before the sink says it is stored
    ack = sink.acks[0]
    assert ack is not None
    ack()
    ack()  # a second call changes nothing
    assert client.acks == [17]
    assert collector.inflight == 0


def test_qos0_message_has_no_ack() -> None:
    dev = device({"id": "th-z", "mqtt": {"topic": "a/th-z"}, "points": TH})
    sink = RecordingSink(hold=True)
    collector, _ = offline_collector([dev], sink)
    collector.handle(message("a/th-z", b'{"t": 20, "rh": 50}'))
    collector.handle(message("a/th-z", b"{"))
    assert sink.acks == [None, None]
    assert sink.deliveries == [None, None]  # never redelivered: nothing to recognise
    assert collector.inflight == 0


def test_rejections_travel_with_their_message_and_its_delivery() -> None:
    dev = device({"id": "th-j", "mqtt": {"topic": "a/th-j"}, "points": TH})
    sink = RecordingSink(hold=True)
    collector, client = offline_collector([dev], sink)
    collector.handle(message("a/th-j", b'{"t": 21, "rh": 120}', qos=1, mid=3))  # a reading and a rejection
    collector.handle(message("a/th-j", b'{"t": 21.', qos=1, mid=4))  # only a rejection
    collector.handle(message("a/th-j", b'{"t": 21.', qos=1, mid=5))  # the same payload, another message
    collector.handle(message("a/th-j", b'{"t": 21.', qos=1, mid=4))  # mid 4 delivered again
    assert sink.values() == [("th-j", "temperature", 21.0)]
    assert (
        sink.reasons() == [("th-j", "humidity", Reason.OUT_OF_RANGE)] + [("th-j", None, Reason.MALFORMED)] * 3
    )
    keys = [(d.mid, d.digest) for d in sink.deliveries if d is not None]
    assert [mid for mid, _ in keys] == [3, 4, 5, 4]
    assert keys[1] == keys[3] and len({keys[0], keys[1], keys[2]}) == 3
    assert keys[1][1] == keys[2][1]  # the same topic and payload: told apart by the packet id
    assert all(a is not None for a in sink.acks) and len(sink.acks) == 4
    assert collector.inflight == 4
    assert sink.release() == 4
    assert sorted(client.acks) == [3, 4, 4, 5]


def test_a_payload_that_breaks_the_decoder_is_rejected_with_its_ack() -> None:
    dev = device({"id": "th-e", "mqtt": {"topic": "a/th-e"}, "points": TH})
    sink = RecordingSink(hold=True)
    collector, client = offline_collector([dev], sink)
    deep = b"[" * 100_000 + b"]" * 100_000  # valid JSON; the decoder gives up with RecursionError
    collector.handle(message("a/th-e", deep, qos=1, mid=8))
    assert sink.reasons() == [("th-e", None, Reason.MALFORMED)]
    (delivery,) = sink.deliveries
    assert delivery is not None and delivery.mid == 8
    assert sink.release() == 1
    assert client.acks == [8]


def test_an_integer_beyond_any_float_is_out_of_range_and_the_other_field_kept() -> None:
    dev = device({"id": "th-h", "mqtt": {"topic": "a/th-h"}, "points": TH})
    sink = RecordingSink(hold=True)
    collector, _ = offline_collector([dev], sink)
    huge = b'{"t": 1' + b"0" * 400 + b', "rh": 50}'
    collector.handle(message("a/th-h", huge, qos=1, mid=9))
    assert [r.reason for r in sink.rejections] == [Reason.OUT_OF_RANGE]
    assert [(r.metric, r.value) for r in sink.readings] == [("humidity", 50.0)]


def test_messages_with_nothing_to_store_are_acked_at_once() -> None:
    devices = [
        device({"id": "th-n", "mqtt": {"topic": "a/th-n", "availability_topic": "a/th-n/status"}, "points": TH}),
        device({"id": "z-any", "mqtt": {"topic": "z/+", "device_id_segment": 1,
                                        "availability_topic": "z/+/availability"}, "points": TH}),
    ]  # fmt: skip
    sink = RecordingSink(hold=True)
    collector, client = offline_collector(devices, sink)
    collector.handle(message("a/th-n/status", b"offline", qos=1, mid=1))  # availability
    collector.handle(message("z/th-9/availability", b"online", qos=1, mid=2))  # wildcard availability
    collector.handle(message("old/topic", b'{"t": 20}', qos=1, mid=3))  # no device (an old subscription)
    collector.handle(message("a/th-n", b'{"t": 20, "rh": 50}', qos=1, mid=4, retain=True))  # stale value
    collector.handle(message(b"a/\xff", b"1", qos=1, mid=5))  # a topic that is not UTF-8
    assert sink.submits == 0 and collector.inflight == 0
    assert client.acks == [1, 2, 3, 4, 5]
    assert [s for _, s, _ in sink.statuses] == [DeviceStatus.OFFLINE, DeviceStatus.ONLINE]


def test_an_ack_from_before_a_reconnect_is_not_sent() -> None:
    """The broker delivers the message again on the new connection, with the same id and its own ack."""
    dev = device({"id": "th-g", "mqtt": {"topic": "a/th-g"}, "points": TH})
    sink = RecordingSink(hold=True)
    collector, client = offline_collector([dev], sink)
    collector.handle(message("a/th-g", b'{"t": 20, "rh": 50}', qos=1, mid=6))
    lost = ReasonCode(PacketTypes.DISCONNECT, identifier=0x80)
    # What paho's network thread calls when the connection drops (the callback the collector set).
    on_disconnect = cast(paho.CallbackOnDisconnect_v2, client.on_disconnect)
    on_disconnect(client, None, paho.DisconnectFlags(False), lost, None)
    collector.handle(message("a/th-g", b'{"t": 20, "rh": 50}', qos=1, mid=6))  # the redelivery
    assert collector.inflight == 2
    stale, fresh = sink.acks
    assert stale is not None and fresh is not None
    stale()
    assert client.acks == [] and collector.inflight == 1
    fresh()
    assert client.acks == [6] and collector.inflight == 0


# ---------------------------------------------------------------------------------------------
# Acknowledged only once stored: against the broker


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_unacked_messages_are_redelivered_acked_ones_are_not(
    mosquitto: MqttTestBroker, publish: Publisher, start_collector: Start, protocol: str
) -> None:
    if mosquitto.kind == "amqtt":
        pytest.skip("needs Mosquitto's session handling")
    topic = unique("archive/r1/ack")
    cfg = broker_config(mosquitto, protocol=protocol)
    dev = device({"id": "th-q", "mqtt": {"topic": topic}, "points": TH})

    first = RecordingSink(hold=True)
    collector = start_collector(cfg, [dev], first)
    publish(topic, {"t": 20.0, "rh": 50.0})
    publish(topic, b"{broken")
    publish(topic, b"{broken")  # the same bytes again: another message, another key
    wait_until(lambda: first.submits == 3, what="3 messages")
    collector.stop()  # as if we crashed: nothing was stored, nothing acknowledged
    first.release()  # acks arriving after the end go nowhere

    second = RecordingSink(hold=True)
    collector = start_collector(cfg, [dev], second)  # same client id: the broker delivers all three again
    wait_until(lambda: second.submits == 3, what="the 3 unacknowledged messages again")
    assert second.values() == first.values() == [("th-q", "temperature", 20.0), ("th-q", "humidity", 50.0)]
    keys = [(d.mid, d.digest) for d in first.deliveries if d is not None]
    assert len(set(keys)) == 3 and len({digest for _, digest in keys}) == 2
    # The broker sends the same messages again with their packet ids and DUP set: recognisable.
    assert [(d.mid, d.digest) for d in second.deliveries if d is not None] == keys
    assert not any(d.redelivered for d in first.deliveries if d is not None)
    assert all(d.redelivered for d in second.deliveries if d is not None)
    assert second.release() == 3  # now stored: acknowledged
    assert collector.inflight == 0
    collector.stop()  # PUBACKs queued before DISCONNECT are written before it

    third = RecordingSink(hold=True)
    start_collector(cfg, [dev], third)
    publish(topic, {"t": 22.0, "rh": 52.0})  # the broker sends what it still holds first: nothing
    wait_until(lambda: third.submits >= 1, what="the new message")
    assert third.values() == [("th-q", "temperature", 22.0), ("th-q", "humidity", 52.0)]
    assert third.rejections == []


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_inflight_window_is_bounded(
    mosquitto: MqttTestBroker, publish: Publisher, start_collector: Start, protocol: str
) -> None:
    window = 5
    topic = unique("archive/r1/window")
    cfg = broker_config(mosquitto, protocol=protocol, receive_maximum=window)
    sink = RecordingSink(hold=True)
    collector = start_collector(cfg, [device({"id": "th-w", "mqtt": {"topic": topic}, "points": TH})], sink)
    for i in range(3 * window):
        publish(topic, {"t": float(i), "rh": 50.0})
    # The network thread stops reading once `window` messages wait for their ack ...
    wait_until(lambda: collector.throttled, what="the collector to stop reading")
    assert sink.submits == window and collector.inflight == window
    # ... and reads on once they are stored.
    wait_until(lambda: (sink.release(), sink.submits == 3 * window)[1], what="the rest to flow")
    sink.release()
    assert collector.inflight == 0
    assert [v for _, m, v in sink.values() if m == "temperature"] == [float(i) for i in range(3 * window)]


def test_messages_for_nothing_stored_are_acked_by_the_collector(
    mosquitto: MqttTestBroker, publish: Publisher, start_collector: Start
) -> None:
    """Availability and a subscription an older configuration left in the session: acked at once."""
    if mosquitto.kind == "amqtt":
        pytest.skip("needs Mosquitto's session handling")
    base = unique("archive/r1")
    cfg = broker_config(mosquitto)
    old = device({"id": "th-old", "mqtt": {"topic": f"{base}/th-old"}, "points": TH})
    door = device(
        {"id": "door-9", "mqtt": {"topic": f"{base}/door-9", "availability_topic": f"{base}/door-9/status"},
         "points": DOOR}
    )  # fmt: skip
    start_collector(cfg, [old, door], RecordingSink()).stop()

    sink = RecordingSink(hold=True)
    collector = start_collector(cfg, [door], sink)  # th-old is gone from the configuration
    publish(f"{base}/th-old", {"t": 20.0, "rh": 50.0})  # still subscribed in the broker's session
    publish(f"{base}/door-9/status", b"offline")
    publish(f"{base}/door-9", {"contact": "open"})
    wait_until(lambda: sink.values(), what="the door reading")
    assert sink.submits == 1 and collector.inflight == 1  # only the reading waits for storage
    sink.release()
    wait_until(lambda: collector.inflight == 0, what="the ack")
    collector.stop()

    again = RecordingSink()
    start_collector(cfg, [door], again)
    publish(f"{base}/door-9", {"contact": "closed"})
    wait_until(lambda: again.values(), what="the new door reading")
    assert again.values() == [("door-9", "door", 0.0)]
    assert again.statuses == [("door-9", DeviceStatus.ONLINE, None)]  # no offline delivered again


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_after_pause_a_throttled_collectors_acks_still_go_out(
    mosquitto: MqttTestBroker, publish: Publisher, start_collector: Start, protocol: str
) -> None:
    """The shutdown order: pause, let the last batch be stored and acknowledged, then stop."""
    if mosquitto.kind == "amqtt":
        pytest.skip("needs Mosquitto's session handling")
    topic = unique("archive/r1/pause")
    cfg = broker_config(mosquitto, protocol=protocol, receive_maximum=3)
    dev = device({"id": "th-u", "mqtt": {"topic": topic}, "points": TH})
    sink = RecordingSink(hold=True)
    collector = start_collector(cfg, [dev], sink)
    for i in range(6):
        publish(topic, {"t": float(i), "rh": 50.0})
    wait_until(lambda: collector.throttled, what="the collector to stop reading")
    collector.pause()  # what it reads from now on is left to the broker
    assert sink.release() == 3  # the last batch stored: its acks go out all the same
    wait_until(lambda: collector.inflight == 0, what="the acks")
    collector.stop()
    assert sink.submits == 3

    again = RecordingSink()
    start_collector(cfg, [dev], again)
    publish(topic, {"t": 9.0, "rh": 50.0})
    wait_until(lambda: len(again.values()) == 8, what="the 3 unacknowledged messages and a new one")
    assert [v for _, m, v in again.values() if m == "temperature"] == [3.0, 4.0, 5.0, 9.0]


def test_messages_without_a_time_are_never_stamped_in_the_same_millisecond_twice() -> None:
    # A backlog drained at full speed: 50 messages of one sensor within one millisecond of the clock.
    clock = ManualClock(1_767_225_600.0004)
    dev = device({"id": "th-s", "mqtt": {"topic": "a/th-s"}, "points": TH})
    sink = RecordingSink()
    collector, _ = offline_collector([dev], sink, clock=clock)
    for i in range(50):
        collector.handle(message("a/th-s", b'{"t": 20.%d, "rh": 50}' % (i % 10), qos=1, mid=i + 1))
    stamps = sorted({r.time for r in sink.readings})
    assert len(stamps) == 50 and stamps[0] == 1_767_225_600.0
    assert all(round((b - a) * 1000) == 1 for a, b in itertools.pairwise(stamps))
    # After a restart the stamps go on after the newest stored reading, even one ahead of the clock.
    restarted, _ = offline_collector([dev], sink := RecordingSink(), clock=clock)
    restarted.continue_stamps({"th-s": stamps[-1]})
    restarted.handle(message("a/th-s", b'{"t": 21, "rh": 50}', qos=1, mid=99))
    assert {r.time for r in sink.readings} == {round(stamps[-1] + 0.001, 3)}


def test_the_default_client_reads_its_tcp_socket_through_a_buffer(mosquitto: MqttTestBroker) -> None:
    # paho reads a packet in three recv calls; the default client serves them from a 64 KiB buffer,
    # through paho's own socket factory (paho-mqtt 2.x): if paho renames it, this fails, not the field.
    client = default_client_factory(
        broker_config(mosquitto, protocol="3.1.1"), protocol=MQTTProtocolVersion.MQTTv311, tls=False
    )
    client.connect(mosquitto.host, mosquitto.port)
    try:
        sock = client.socket()
        assert sock is not None and sock.pending() == 0  # type: ignore[union-attr]
        assert client.loop(timeout=2.0) == paho.MQTT_ERR_SUCCESS  # reads CONNACK through the buffer
        assert client.is_connected()
    finally:
        client.disconnect()
