"""A wildcard entry stands for at most its max_devices device ids: a flood of new ids is refused and
counted (too_many_devices) against the entry, logged once and then with a count, and the collector's
state stays bounded; ids known from before a restart keep their places."""

from __future__ import annotations

import logging
import tracemalloc
from collections.abc import Sequence
from typing import Any

import pytest

from core.clock import ManualClock
from core.types import Ack, Delivery, DeviceStatus, Reading, Reason, Rejection
from tests.collectors.mqtt_support import (
    Publisher,
    RecordingSink,
    Start,
    broker_config,
    device,
    message,
    offline_collector,
    unique,
)
from tests.conftest import MqttTestBroker, wait_until

TH = [{"metric": "temperature", "path": "t"}, {"metric": "humidity", "path": "rh"}]
GOOD = b'{"t": 21.5, "rh": 50.0}'


def entry(max_devices: int, *, base: str = "archive/r3/th") -> dict[str, Any]:
    """A wildcard entry whose topic level 3 names the device, with an availability topic per device."""
    return {
        "id": "r3-th",
        "mqtt": {
            "topic": f"{base}/+",
            "device_id_segment": 3,
            "max_devices": max_devices,
            "availability_topic": f"{base}/+/availability",
        },
        "points": TH,
    }


def test_the_first_max_devices_ids_are_taken_and_further_ids_are_refused() -> None:
    sink = RecordingSink()
    collector, _ = offline_collector([device(entry(3))], sink, clock=ManualClock())
    for i in (1, 2, 3, 4, 5, 1, 4, 3):
        collector.handle(message(f"archive/r3/th/th-{i}", GOOD))
    assert {d for d, _, _ in sink.values()} == {"th-1", "th-2", "th-3"}
    assert len(sink.values()) == 2 * 5  # th-1 twice, th-2 once, th-3 twice
    # Refused messages are counted against the entry itself, one per message, not per unseen id.
    assert sink.reasons() == [("r3-th", None, Reason.TOO_MANY_DEVICES)] * 3
    detail = sink.rejections[0].detail
    assert "archive/r3/th/th-4" in detail and "'th-4'" in detail and "3 devices (max_devices)" in detail
    assert [d for d, s, _ in sink.statuses if s is DeviceStatus.ONLINE] == ["th-1", "th-2", "th-3"]


def test_availability_of_a_further_device_is_refused_like_its_data() -> None:
    sink = RecordingSink()
    collector, client = offline_collector([device(entry(1))], sink, clock=ManualClock())
    collector.handle(message("archive/r3/th/th-1/availability", b"offline", qos=1, mid=1))
    collector.handle(message("archive/r3/th/th-2/availability", b"offline", qos=1, mid=2))
    collector.handle(message("archive/r3/th/@bad/availability", b"offline", qos=1, mid=3))
    assert sink.statuses == [
        ("th-1", DeviceStatus.OFFLINE, "reported offline via archive/r3/th/th-1/availability")
    ]
    assert sink.reasons() == [
        ("r3-th", None, Reason.TOO_MANY_DEVICES),
        ("r3-th", None, Reason.UNKNOWN_DEVICE),
    ]
    # Availability stores nothing: acknowledged at once; a refusal is acknowledged once counted.
    assert client.acks == [1, 2, 3]


def test_the_cap_is_logged_once_then_once_an_hour_with_a_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="bafang.collectors.mqtt")
    clock = ManualClock()
    sink = RecordingSink()
    collector, _ = offline_collector([device(entry(2))], sink, clock=clock)
    for i in range(1, 1003):
        collector.handle(message(f"archive/r3/th/x-{i}", GOOD))
        clock.advance(1.0)  # 1000 refused messages within 17 minutes
    assert len(sink.rejections) == 1000
    lines = [r for r in caplog.records if r.levelno >= logging.INFO and "r3-th" in r.getMessage()]
    assert [r.getMessage() for r in lines] == [
        "mqtt entry r3-th (archive/r3/th/+): 2 devices, the max_devices; further device ids are rejected: 'x-3'"
    ]
    assert lines[0].levelno == logging.WARNING
    clock.advance(3600.0)
    collector.handle(message("archive/r3/th/x-5000", GOOD))
    collector.handle(message("archive/r3/th/x-5001", GOOD))
    texts = [r.getMessage() for r in caplog.records if "r3-th" in r.getMessage()]
    assert len(texts) == 2
    assert "1000 more messages from device ids beyond its 2 devices (max_devices)" in texts[1]
    assert "'x-5000'" in texts[1]


def test_known_devices_keep_their_places_when_a_flood_comes_first() -> None:
    """After a restart the runtime names the ids heard before; a flood cannot displace them."""
    sink = RecordingSink()
    collector, _ = offline_collector(
        [device(entry(2))],
        sink,
        clock=ManualClock(),
        known_devices={"r3-th": ["th-1", "th-2"], "gone": ["a"]},
    )
    for i in range(50):
        collector.handle(message(f"archive/r3/th/flood-{i}", GOOD))
    collector.handle(message("archive/r3/th/th-2", GOOD))
    collector.handle(message("archive/r3/th/th-1", GOOD))
    assert {d for d, _, _ in sink.values()} == {"th-1", "th-2"}
    assert sink.reasons() == [("r3-th", None, Reason.TOO_MANY_DEVICES)] * 50


def test_known_devices_beyond_max_devices_are_cut_with_a_line(caplog: pytest.LogCaptureFixture) -> None:
    sink = RecordingSink()
    known = {"r3-th": ["th-1", "th-2", "th-1", "@bad", "th-3"]}  # duplicates and invalid ids do not count
    collector, _ = offline_collector([device(entry(2))], sink, clock=ManualClock(), known_devices=known)
    assert "3 devices known from before, more than its max_devices 2" in caplog.text
    for i in (3, 2, 1):
        collector.handle(message(f"archive/r3/th/th-{i}", GOOD))
    assert {d for d, _, _ in sink.values()} == {"th-1", "th-2"}


class Counting:
    """A sink that keeps counts only, so that memory measured is the collector's own."""

    def __init__(self) -> None:
        self.readings = 0
        self.rejections = 0
        self.statuses = 0

    def submit(
        self,
        readings: Sequence[Reading],
        rejections: Sequence[Rejection] = (),
        *,
        ack: Ack | None = None,
        delivery: Delivery | None = None,
    ) -> None:
        """Count, then acknowledge."""
        self.readings += len(readings)
        self.rejections += len(rejections)
        if ack is not None:
            ack()

    def status(self, device: str, status: DeviceStatus, error: str | None, time: float) -> None:
        """Count a status edge."""
        self.statuses += 1


def test_a_flood_of_device_ids_does_not_grow_the_collector() -> None:
    sink = Counting()
    collector, _ = offline_collector([device(entry(100))], sink, clock=ManualClock())

    def flood(start: int, n: int) -> None:
        # QoS 0: the PUBACKs an unconnected paho client would queue are not the collector's memory.
        for i in range(start, start + n):
            collector.handle(message(f"archive/r3/th/id-{i}", GOOD))
            collector.handle(message(f"archive/r3/th/id-{i}/availability", b"online"))

    flood(0, 2_000)  # the first 100 ids are taken; caches and the refusal path are warm
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        flood(2_000, 10_000)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Unbounded, each new id would keep a cached topic, an online state and a member: ≥ 2 MB here.
    assert grown < 256 * 1024, f"the collector grew by {grown} bytes for 10,000 refused device ids"
    assert sink.statuses == 100
    assert sink.readings == 2 * 100
    assert sink.rejections == 2 * (12_000 - 100)
    # The entry's own devices still come through.
    collector.handle(message("archive/r3/th/id-7", GOOD))
    assert sink.readings == 2 * 101


def test_the_cap_against_the_broker(
    mosquitto: MqttTestBroker, publish: Publisher, start_collector: Start
) -> None:
    base = unique("archive/r3/th")
    sink = RecordingSink()
    start_collector(broker_config(mosquitto), [device(entry(2, base=base))], sink)
    for name in ("th-1", "th-2", "th-3", "th-1", "th-4"):
        publish(f"{base}/{name}", GOOD)
    wait_until(
        lambda: len(sink.values()) == 6 and len(sink.rejections) == 2, what="3 messages taken, 2 refused"
    )
    assert {d for d, _, _ in sink.values()} == {"th-1", "th-2"}
    assert sink.reasons() == [("r3-th", None, Reason.TOO_MANY_DEVICES)] * 2
