"""Payload times: documented vendor formats are read, and a time further ahead than max_clock_skew or
older than the retention is rejected (bad_time) for every point of its message, never stored."""

from __future__ import annotations

import json
import logging
import random
from typing import Any

import pytest

from collectors.mqtt import MqttCollector
from core.clock import ManualClock
from core.config import MqttBroker
from core.types import DeviceStatus, Reason
from tests.collectors.mqtt_support import NOWHERE, RecordingSink, device, message, offline_collector

NOW = 1_767_578_400.0  # 2026-01-05T02:00:00Z, 10:00 in Asia/Shanghai
DAY = 86_400.0
RETENTION = 90 * DAY  # storage.timeseries.retention_days default

# zigbee2mqtt publishes a device's state as one JSON object; with `advanced.last_seen` set it carries
# `last_seen` as ISO_8601 (`new Date(t).toISOString()`: UTC with "Z"), ISO_8601_local (with the
# gateway's offset) or epoch (milliseconds): zigbee2mqtt lib/util/utils.ts formatDate, and
# https://www.zigbee2mqtt.io/guide/configuration/all-settings.html (advanced.last_seen).
Z2M = {
    "id": "z2m-th",
    "mqtt": {"topic": "zigbee2mqtt/th-z", "time_path": "last_seen"},
    "points": [{"metric": "temperature", "path": "temperature"}, {"metric": "humidity", "path": "humidity"}],
}
# Tasmota's tele/<topic>/SENSOR carries "Time" in the device's local time without an offset, e.g.
# {"Time": "2019-01-01T00:00:00", "AM2301": {"Temperature": 24.6, "Humidity": 58.2}, "TempUnit": "C"}
# (https://tasmota.github.io/docs/AM2301/): read in the site's zone.
TASMOTA = {
    "id": "tas-th",
    "mqtt": {"topic": "tele/tas-th/SENSOR", "time_path": "Time"},
    "points": [
        {"metric": "temperature", "path": "AM2301.Temperature"},
        {"metric": "humidity", "path": "AM2301.Humidity"},
    ],
}


def z2m(last_seen: object) -> bytes:
    """A zigbee2mqtt state message of a temperature/humidity sensor (WSDCGQ11LM-like fields)."""
    payload = {"battery": 100, "humidity": 55.1, "linkquality": 120, "temperature": 21.3, "voltage": 3005}
    return _json({**payload, "last_seen": last_seen})


def tasmota(time: str) -> bytes:
    """A Tasmota tele/.../SENSOR message of an AM2301."""
    return _json({"Time": time, "AM2301": {"Temperature": 21.3, "Humidity": 55.1}, "TempUnit": "C"})


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value).encode()


def collector_for(
    spec: dict[str, Any], sink: RecordingSink, *, tz: str = "Asia/Shanghai", **kw: Any
) -> MqttCollector:
    """An offline collector at NOW in the site's zone, with the retention as max_age unless told."""
    kw.setdefault("max_age", RETENTION)
    collector, _ = offline_collector([device(spec)], sink, clock=ManualClock(NOW), timezone=tz, **kw)
    return collector


ACCEPTED = [
    ("z2m ISO_8601", Z2M, z2m("2026-01-05T01:59:58.123Z"), NOW - 1.877),
    ("z2m ISO_8601_local", Z2M, z2m("2026-01-05T09:59:58+08:00"), NOW - 2.0),
    ("z2m epoch ms", Z2M, z2m(1_767_578_398_123), NOW - 1.877),
    ("tasmota site-local", TASMOTA, tasmota("2026-01-05T09:59:58"), NOW - 2.0),
    ("4 min ahead, within the skew", Z2M, z2m("2026-01-05T02:04:00.000Z"), NOW + 240.0),
    ("89 days old, within the retention", Z2M, z2m("2025-10-08T02:00:00.000Z"), NOW - 89 * DAY),
]


@pytest.mark.parametrize(
    ("spec", "payload", "expected"), [c[1:] for c in ACCEPTED], ids=[c[0] for c in ACCEPTED]
)
def test_plausible_vendor_times_are_taken(spec: dict[str, Any], payload: bytes, expected: float) -> None:
    sink = RecordingSink()
    collector_for(spec, sink).handle(message(spec["mqtt"]["topic"], payload))
    assert sink.rejections == []
    assert [r.time for r in sink.readings] == [pytest.approx(expected, abs=1e-6)] * 2


REJECTED = [
    (
        "10 min ahead",
        Z2M,
        z2m("2026-01-05T02:10:00.000Z"),
        {},
        "zigbee2mqtt/th-z: time last_seen 2026-01-05T02:10:00Z is 600 s ahead of the clock "
        "(2026-01-05T02:00:00Z), beyond max_clock_skew 300 s",
    ),
    (
        "epoch ms a year ahead",
        Z2M,
        z2m(1_799_114_400_000),
        {},
        "zigbee2mqtt/th-z: time last_seen 2027-01-05T02:00:00Z is 31536000 s ahead of the clock "
        "(2026-01-05T02:00:00Z), beyond max_clock_skew 300 s",
    ),
    (
        # A Tasmota set to UTC+8 (Timezone 8) on a site configured as UTC: its local 10:00 is 8 h ahead.
        "tasmota zone differs from the site's",
        TASMOTA,
        tasmota("2026-01-05T10:00:00"),
        {"tz": "UTC"},
        "tele/tas-th/SENSOR: time Time 2026-01-05T10:00:00Z is 28800 s ahead of the clock "
        "(2026-01-05T02:00:00Z), beyond max_clock_skew 300 s",
    ),
    (
        "91 days old",
        Z2M,
        z2m("2025-10-06T02:00:00.000Z"),
        {},
        "zigbee2mqtt/th-z: time last_seen 2025-10-06T02:00:00Z is older than the retention of 90 days "
        "(before 2025-10-07T02:00:00Z)",
    ),
    (
        # A clock that lost its battery and restarted at the epoch (site-local 1970-01-01 08:00).
        "a reset clock",
        TASMOTA,
        tasmota("1970-01-01T08:00:42"),
        {},
        "tele/tas-th/SENSOR: time Time 1970-01-01T00:00:42Z is older than the retention of 90 days "
        "(before 2025-10-07T02:00:00Z)",
    ),
    (
        "a tighter skew from the broker's config",
        Z2M,
        z2m("2026-01-05T02:02:00.000Z"),
        {"broker": {"max_clock_skew": 60}},
        "zigbee2mqtt/th-z: time last_seen 2026-01-05T02:02:00Z is 120 s ahead of the clock "
        "(2026-01-05T02:00:00Z), beyond max_clock_skew 60 s",
    ),
]


@pytest.mark.parametrize(
    ("spec", "payload", "options", "detail"), [c[1:] for c in REJECTED], ids=[c[0] for c in REJECTED]
)
def test_implausible_times_reject_every_point_of_the_message(
    spec: dict[str, Any], payload: bytes, options: dict[str, Any], detail: str
) -> None:
    sink = RecordingSink()
    broker = MqttBroker.model_validate({"url": NOWHERE, **options.get("broker", {})})
    collector = MqttCollector(
        broker,
        [device(spec)],
        sink,
        clock=ManualClock(NOW),
        timezone=options.get("tz", "Asia/Shanghai"),
        max_age=RETENTION,
    )
    collector.handle(message(spec["mqtt"]["topic"], payload, qos=1, mid=4))
    assert sink.readings == []
    assert sink.reasons() == [
        (spec["id"], "temperature", Reason.BAD_TIME),
        (spec["id"], "humidity", Reason.BAD_TIME),
    ]
    assert {r.detail for r in sink.rejections} == {detail}
    assert all(r.time == NOW for r in sink.rejections)  # counted when received
    # The device is talking, however wrong its clock: it is online.
    assert sink.statuses == [(spec["id"], DeviceStatus.ONLINE, None)]


def test_without_max_age_old_times_are_taken() -> None:
    """max_age None (not given): only the skew ahead is checked; the runtime passes the retention."""
    sink = RecordingSink()
    collector = collector_for(TASMOTA, sink, max_age=None)
    collector.handle(message("tele/tas-th/SENSOR", tasmota("2000-01-01T08:00:00")))
    collector.handle(message("tele/tas-th/SENSOR", tasmota("2026-01-05T10:06:00")))  # 6 min ahead
    assert [r.time for r in sink.readings] == [946_684_800.0] * 2
    assert [r.reason for r in sink.rejections] == [Reason.BAD_TIME] * 2


def test_jittered_times_near_the_limits() -> None:
    """Sensors' clocks drift both ways and messages take their time: the window is exact, not fuzzy."""
    rng = random.Random(7)
    clock = ManualClock(NOW)
    sink = RecordingSink()
    collector, _ = offline_collector([device(Z2M)], sink, clock=clock, max_age=RETENTION)
    expected_ok = 0
    for _ in range(300):
        clock.advance(rng.uniform(0.5, 3.0))
        offset = rng.choice([rng.uniform(-600, 299.9), rng.uniform(300.1, 900)])
        expected_ok += offset <= 300
        collector.handle(message("zigbee2mqtt/th-z", z2m(int((clock.now() + offset) * 1000))))
    assert len(sink.readings) == 2 * expected_ok
    assert len(sink.rejections) == 2 * (300 - expected_ok)
    assert {r.reason for r in sink.rejections} == {Reason.BAD_TIME}


def test_a_retained_message_older_than_the_retention_is_skipped_not_counted() -> None:
    """Old news the broker kept for a dead sensor is no clock fault: acknowledged, nothing stored."""
    sink = RecordingSink()
    collector, client = offline_collector(
        [device(Z2M)], sink, clock=ManualClock(NOW), timezone="Asia/Shanghai", max_age=RETENTION
    )
    collector.handle(message("zigbee2mqtt/th-z", z2m("2025-06-01T00:00:00Z"), qos=1, mid=3, retain=True))
    assert sink.submits == 0 and client.acks == [3]
    assert sink.statuses == []  # a retained message does not say the device is alive now
    # A retained time from the future is a clock fault all the same.
    collector.handle(message("zigbee2mqtt/th-z", z2m("2026-02-01T00:00:00Z"), qos=1, mid=4, retain=True))
    assert [r.reason for r in sink.rejections] == [Reason.BAD_TIME] * 2
    # A retained message within the window is taken, with its own time.
    collector.handle(message("zigbee2mqtt/th-z", z2m("2026-01-05T01:00:00Z"), qos=1, mid=5, retain=True))
    assert [r.time for r in sink.readings] == [NOW - 3600] * 2
    assert sink.statuses == [("z2m-th", DeviceStatus.ONLINE, None)]


def test_a_bad_time_streak_is_logged_once_for_the_message(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bafang.collectors.mqtt")
    sink = RecordingSink()
    collector = collector_for(Z2M, sink)
    for _ in range(10):
        collector.handle(message("zigbee2mqtt/th-z", z2m("2026-01-05T03:00:00Z")))
    collector.handle(message("zigbee2mqtt/th-z", z2m("2026-01-05T02:00:00Z")))
    assert len(sink.rejections) == 20 and len(sink.readings) == 2
    lines = [r.getMessage() for r in caplog.records if "z2m-th" in r.getMessage()]
    assert lines == [
        "device z2m-th: message rejected (bad_time): zigbee2mqtt/th-z: time last_seen 2026-01-05T03:00:00Z "
        "is 3600 s ahead of the clock (2026-01-05T02:00:00Z), beyond max_clock_skew 300 s",
        "device z2m-th: message valid again after 10 rejected (bad_time)",
    ]
