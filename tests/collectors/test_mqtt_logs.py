"""Logs a person on duty can read: rejections on the edges of a streak with a count, an isolated bad
value at most one line at INFO, and no kind of message that writes a line per message."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

from core.clock import ManualClock
from core.types import Reason
from tests.collectors.mqtt_support import (
    RecordingSink,
    RefusingSink,
    deliver,
    device,
    message,
    offline_collector,
)

LOGGER = "bafang.collectors.mqtt"
TH = [{"metric": "temperature", "path": "t"}, {"metric": "humidity", "path": "rh"}]
NOW = 1_767_225_600.0


def info_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The collector's lines at INFO and above (the default level)."""
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno >= logging.INFO]


def test_isolated_bad_values_cost_one_line_each_and_every_count_reaches_the_sink(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = ManualClock(NOW)
    devices = [
        device({"id": "th-any", "mqtt": {"topic": "archive/r1/+", "device_id_segment": 2}, "points": TH}),
        device({"id": "th-fixed", "mqtt": {"topic": "archive/r2/th-fixed"}, "points": TH}),
    ]
    sink = RecordingSink()
    collector, _ = offline_collector(devices, sink, clock=clock)
    bad_payloads = [
        b'{"t": 21.0, "rh": 120}',
        b'{"t": 32767, "rh": 50}',
        b'{"t": 21.0}',
        b'{"t": "x", "rh": 50}',
    ]
    messages, bad = 10_000, 0
    for i in range(messages):
        clock.advance(0.25)
        topic = "archive/r2/th-fixed" if i % 7 == 0 else f"archive/r1/th-{i % 20}"
        if i % 50 == 49:
            payload, bad = bad_payloads[bad % len(bad_payloads)], bad + 1
        else:
            payload = b'{"t": 21.5, "rh": 50.5}'
        collector.handle(message(topic, payload, qos=1, mid=i % 65535 + 1))
    assert bad == 200
    lines = info_lines(caplog)
    assert len(lines) <= bad + 3, lines[:10]
    assert all(line.startswith("device th-") for line in lines)
    # Logging less counts nothing less: every rejected value and every reading reached the sink.
    assert len(sink.rejections) == bad
    assert len(sink.readings) == 2 * messages - bad
    assert {r.reason for r in sink.rejections} == {
        Reason.OUT_OF_RANGE,
        Reason.FAULT_CODE,
        Reason.MISSING,
        Reason.WRONG_TYPE,
    }


def test_a_streak_logs_its_start_and_its_end_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    sink = RecordingSink()
    collector, _ = offline_collector(
        [device({"id": "th-9", "mqtt": {"topic": "a/th-9"}, "points": TH})], sink, clock=ManualClock()
    )
    for _ in range(12):
        collector.handle(message("a/th-9", b'{"t": 20, "rh": 120}'))
    collector.handle(message("a/th-9", b'{"t": 20, "rh": 50}'))
    collector.handle(message("a/th-9", b'{"t": 20, "rh": 120}'))  # an isolated one
    collector.handle(message("a/th-9", b'{"t": 20, "rh": 50}'))
    records = [(r.levelname, r.getMessage()) for r in caplog.records if "th-9" in r.getMessage()]
    assert records == [
        ("WARNING", "device th-9: humidity rejected (out_of_range): a/th-9: humidity: 120 outside 0…100"),
        ("INFO", "device th-9: humidity valid again after 12 rejected (out_of_range)"),
        ("WARNING", "device th-9: humidity rejected (out_of_range): a/th-9: humidity: 120 outside 0…100"),
        ("DEBUG", "device th-9: humidity valid again after 1 rejected (out_of_range)"),
    ]


def test_a_new_reason_within_a_streak_says_what_it_follows(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    sink = RecordingSink()
    collector, _ = offline_collector(
        [device({"id": "th-8", "mqtt": {"topic": "a/th-8"}, "points": TH})], sink, clock=ManualClock()
    )
    for payload in [b'{"t": 20, "rh": 120}'] * 3 + [b'{"t": 20, "rh": 65535}'] * 2 + [b'{"t": 20, "rh": 50}']:
        collector.handle(message("a/th-8", payload))
    assert info_lines(caplog) == [
        "device th-8: humidity rejected (out_of_range): a/th-8: humidity: 120 outside 0…100",
        "device th-8: humidity rejected (fault_code) after 3 rejected (out_of_range): "
        + sink.rejections[3].detail,
        "device th-8: humidity valid again after 2 rejected (fault_code)",
    ]


ENTRY: dict[str, Any] = {
    "id": "r3-th",
    "mqtt": {
        "topic": "archive/r3/+",
        "device_id_segment": 2,
        "max_devices": 5,
        "availability_topic": "archive/r3/+/availability",
        "time_path": "ts",
    },
    "points": TH,
}
TH_FIXED = {"id": "th-x", "mqtt": {"topic": "archive/r2/th-x"}, "points": TH}  # no time: retained is stale
DOOR = {
    "id": "door-1",
    "mqtt": {"topic": "archive/r1/door-1", "availability_topic": "archive/r1/door-1/status"},
    "points": [{"metric": "door", "path": "contact", "map": {"open": 1, "closed": 0}}],
}
Flood = Callable[[int], "tuple[str | bytes, bytes, bool]"]  # message number → topic, payload, retain
FLOODS: list[tuple[str, Flood]] = [
    ("valid readings", lambda i: (f"archive/r3/th-{i % 5}", b'{"t": 21, "rh": 50, "ts": %d}' % NOW, False)),
    ("the same online, again and again", lambda i: ("archive/r1/door-1/status", b"online", False)),
    ("the same offline, again and again", lambda i: ("archive/r1/door-1/status", b"offline", False)),
    ("availability that is neither", lambda i: ("archive/r1/door-1/status", b"rebooting", False)),
    ("topics no device owns", lambda i: (f"archive/r3/th-{i % 5}/config/{i}", b"{}", False)),
    ("retained values skipped", lambda i: ("archive/r2/th-x", b'{"t": 21, "rh": 50}', True)),
    ("retained contact states", lambda i: ("archive/r1/door-1", b'{"contact": "open"}', True)),
    ("malformed payloads", lambda i: ("archive/r3/th-1", b"{%d" % i, False)),
    ("device ids that are not ids", lambda i: (f"archive/r3/@{i}", b"{}", False)),
    ("too many devices", lambda i: (f"archive/r3/x-{i}", b'{"t": 21, "rh": 50, "ts": %d}' % NOW, False)),
    ("too many devices' availability", lambda i: (f"archive/r3/x-{i}/availability", b"online", False)),
    ("times from the future", lambda i: ("archive/r3/th-1", b'{"t": 21, "rh": 50, "ts": %d}' % (NOW + 3600 + i), False)),
    ("topics that are not UTF-8", lambda i: (b"archive/r3/\xff%d" % i, b"{}", False)),
]  # fmt: skip


@pytest.mark.parametrize("make", [f[1] for f in FLOODS], ids=[f[0] for f in FLOODS])
def test_no_kind_of_message_writes_a_line_per_message(caplog: pytest.LogCaptureFixture, make: Flood) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    sink = RecordingSink()
    devices = [device(ENTRY), device(DOOR), device(TH_FIXED)]
    collector, _ = offline_collector(devices, sink, clock=ManualClock(NOW))
    collector.handle(message("archive/r3/th-0", b'{"t": 21, "rh": 50, "ts": %d}' % NOW))  # a first device
    for i in range(1_000):
        topic, payload, retain = make(i)
        collector.handle(message(topic, payload, qos=1, mid=i + 1, retain=retain))
    assert len(info_lines(caplog)) <= 2, info_lines(caplog)[:5]


def test_a_failing_sink_logs_its_traceback_once_a_minute_with_a_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    clock = ManualClock(NOW)
    dev = device({"id": "th-b", "mqtt": {"topic": "a/th-b"}, "points": TH})
    collector, client = offline_collector([dev], RefusingSink("pipeline closed"), clock=clock)
    for i in range(1_000):
        deliver(client, message("a/th-b", b'{"t": 20, "rh": 50}', qos=1, mid=i + 1))
        clock.advance(0.01)
    lines = [r for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1 and lines[0].exc_info is not None
    assert "pipeline closed" in caplog.text
    clock.advance(60)
    deliver(client, message("a/th-b", b'{"t": 20, "rh": 50}', qos=1, mid=7))
    texts = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert texts[1].endswith("message on 'a/th-b' not handled (999 more failures since the last report)")
    # Nothing was taken, so nothing was acknowledged: the broker delivers it all again.
    assert client.acks == [] and collector.inflight == 0


def test_the_collector_is_quiet_about_devices_heard_for_the_first_time(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Hundreds of devices announced on a wildcard topic: statuses for the sink, no line each."""
    caplog.set_level(logging.INFO, logger=LOGGER)
    sink = RecordingSink()
    entry = {**ENTRY, "mqtt": {**ENTRY["mqtt"], "max_devices": 1000}}
    collector, _ = offline_collector([device(entry)], sink, clock=ManualClock(NOW))
    for i in range(500):
        collector.handle(message(f"archive/r3/th-{i}", b'{"t": 21, "rh": 50, "ts": %d}' % NOW))
    assert len(sink.statuses) == 500
    assert info_lines(caplog) == []
