"""The ingest pipeline: batching, durability before listeners, retries, health, rejection counting."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from core.clock import ManualClock
from core.types import DeviceStatus, Reading, Reason, Rejection
from store.ingest import DeviceInfo, Pipeline
from store.sqlite import SqliteReadingStore
from store.timeseries import StoreError


def reading(
    i: int, device: str = "th-1", metric: str = "temperature", t0: float = 1_767_225_600.0
) -> Reading:
    return Reading(device, "r1", metric, 20.0 + i / 1000, "°C", t0 + i)


class RefusingStore(SqliteReadingStore):
    """A real SQLite store whose first `failures` writes fail, as a full disk or a locked file would."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    async def write(self, batch: Sequence[Reading]) -> None:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("disk I/O error")
        await super().write(batch)


async def wait_for(predicate: object, limit: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


async def test_readings_from_another_thread_are_stored_in_batches_then_seen_by_listeners(
    tmp_path: Path,
) -> None:
    store = SqliteReadingStore(tmp_path / "r.db")
    await store.open()
    pipeline = Pipeline(store, batch_size=100, flush_interval=60.0)
    seen: list[int] = []
    durable_when_seen: list[bool] = []

    async def listener(batch: Sequence[Reading]) -> None:
        latest = {(r.device, r.metric): r.time for r in await store.latest()}
        durable_when_seen.append(latest.get(("th-1", "temperature")) == max(r.time for r in batch))
        seen.append(len(batch))

    pipeline.add_listener(listener)
    await pipeline.start()
    producer = threading.Thread(target=lambda: [pipeline.submit([reading(i)]) for i in range(250)])
    producer.start()
    producer.join()
    # 250 readings with a batch size of 100: two full batches go out without waiting for the interval.
    await wait_for(lambda: sum(seen) >= 200)
    assert pipeline.pending <= 50
    await pipeline.stop()  # writes the rest
    assert sum(seen) == 250 and all(durable_when_seen)
    history = await store.history(device="th-1", metric="temperature", start=0, end=2e9)
    assert len(history) == 250
    await store.close()


async def test_failed_write_keeps_the_batch_and_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RefusingStore(tmp_path / "r.db", failures=2)
    await store.open()
    pipeline = Pipeline(store, batch_size=10, flush_interval=0.05)
    await pipeline.start()
    pipeline.submit([reading(i) for i in range(10)])
    await wait_for(lambda: pipeline.stored == 10, limit=10)
    assert pipeline.write_failures == 2 and pipeline.pending == 0
    assert "will retry" in caplog.text
    await pipeline.stop()
    assert len(await store.history(device="th-1", metric="temperature", start=0, end=2e9)) == 10
    await store.close()


async def test_rejections_are_counted_per_reason(tmp_path: Path) -> None:
    store = SqliteReadingStore(tmp_path / "r.db")
    await store.open()
    pipeline = Pipeline(store, devices=[DeviceInfo("th-1", "r1", "modbus-tcp", 30.0)])
    for i in range(5):
        pipeline.reject(
            Rejection("th-1", "humidity", Reason.OUT_OF_RANGE, f"humidity: {120 + i} outside 0…100", 1.0 + i)
        )
    pipeline.reject(
        Rejection("th-1", "humidity", Reason.FAULT_CODE, "humidity: sensor fault code 0x7FFF", 2.5)
    )
    (health,) = pipeline.devices()
    assert dict(health.rejected) == {"out_of_range": 5, "fault_code": 1}
    assert health.last_rejections["out_of_range"] == ("humidity: 124 outside 0…100", 5.0)
    assert health.last_rejection == "humidity: 124 outside 0…100"  # the most recent of any reason
    await store.close()


async def test_device_health_edges_and_silence(tmp_path: Path) -> None:
    clock = ManualClock(1_767_225_600.0)
    store = SqliteReadingStore(tmp_path / "r.db")
    await store.open()
    pipeline = Pipeline(
        store,
        clock=clock,
        devices=[DeviceInfo("door-1", "r1", "mqtt", 60.0), DeviceInfo("th-1", "r1", "modbus-tcp", 30.0)],
    )
    assert {h.id: h.status for h in pipeline.devices()} == {
        "door-1": DeviceStatus.UNKNOWN,
        "th-1": DeviceStatus.UNKNOWN,
    }
    pipeline.submit([Reading("door-1", "r1", "door", 0.0, "", clock.now())])
    pipeline.status(
        "th-1", DeviceStatus.FAULTY, "read holding 0×2: exception 2 illegal data address", clock.now()
    )
    by_id = {h.id: h for h in pipeline.devices()}
    assert by_id["door-1"].status is DeviceStatus.ONLINE and by_id["door-1"].last_seen == clock.now()
    assert by_id["th-1"].status is DeviceStatus.FAULTY and "illegal data address" in (
        by_id["th-1"].last_error or ""
    )
    clock.advance(179)
    assert {h.id: h for h in pipeline.devices()}["door-1"].status is DeviceStatus.ONLINE
    clock.advance(2)  # three expected reports missed
    silent = {h.id: h for h in pipeline.devices()}["door-1"]
    assert silent.status is DeviceStatus.OFFLINE and silent.last_error == "no valid reading for 181 s"
    # A device first heard on a wildcard topic is known from then on, with its room.
    pipeline.submit([Reading("th-77", "r3", "temperature", 19.5, "°C", clock.now())])
    assert {h.id: h.room for h in pipeline.devices()}["th-77"] == "r3"
    assert {h.id for h in pipeline.take_dirty()} == {"door-1", "th-1", "th-77"}
    assert pipeline.take_dirty() == []
    await store.close()


async def test_a_lone_reading_is_written_once_input_goes_quiet_not_after_the_whole_interval(
    tmp_path: Path,
) -> None:
    store = SqliteReadingStore(tmp_path / "r.db")
    await store.open()
    # flush_interval 20 s: quiet after 0.4 s without readings.
    pipeline = Pipeline(store, batch_size=1000, flush_interval=20.0)
    await pipeline.start()
    started = asyncio.get_running_loop().time()
    pipeline.submit([reading(1)])
    await wait_for(lambda: pipeline.stored == 1, limit=10)
    assert asyncio.get_running_loop().time() - started < 10  # well before the 20 s interval
    await pipeline.stop()
    await store.close()
