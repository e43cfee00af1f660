"""The ingest pipeline: batching, durability before listeners, retries, health, rejection counting."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from core.clock import ManualClock
from core.types import Delivery, DeviceStatus, Reading, Reason, Rejection
from store.ingest import DeviceInfo, Pipeline
from store.sqlite import SqliteReadingStore
from store.timeseries import Redelivery, StoreError, WriteResult


def reading(
    i: int, device: str = "th-1", metric: str = "temperature", t0: float = 1_767_225_600.0
) -> Reading:
    return Reading(device, "r1", metric, 20.0 + i / 1000, "°C", t0 + i)


class RefusingStore(SqliteReadingStore):
    """A real SQLite store whose first `failures` writes fail, as a full disk or a locked file would."""

    def __init__(self, path: Path, failures: int) -> None:
        super().__init__(path)
        self.failures = failures

    async def write(
        self,
        batch: Sequence[Reading],
        rejections: Sequence[Rejection] = (),
        *,
        delivered: Sequence[Delivery] = (),
        redelivered: Sequence[Redelivery] = (),
    ) -> WriteResult:
        if self.failures > 0:
            self.failures -= 1
            raise StoreError("disk I/O error")
        return await super().write(batch, rejections, delivered=delivered, redelivered=redelivered)


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


async def test_failed_write_keeps_the_batch_and_its_acks_until_it_is_stored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RefusingStore(tmp_path / "r.db", failures=2)
    await store.open()
    pipeline = Pipeline(store, batch_size=10, flush_interval=0.05)
    acked: list[int] = []
    stored_when_acked: list[int] = []

    def ack(n: int) -> Callable[[], None]:
        def done() -> None:
            stored_when_acked.append(pipeline.stored)
            acked.append(n)

        return done

    await pipeline.start()
    for i in range(10):
        pipeline.submit([reading(i)], ack=ack(i))
    await wait_for(lambda: len(acked) == 10, limit=10)
    assert pipeline.write_failures == 2 and pipeline.pending == 0
    assert acked == list(range(10))  # in arrival order
    assert all(n == 10 for n in stored_when_acked)  # never before the commit
    assert "will retry" in caplog.text
    await pipeline.stop()
    assert len(await store.history(device="th-1", metric="temperature", start=0, end=2e9)) == 10
    await store.close()


async def test_a_redelivered_message_is_stored_once_counted_once_and_seen_once(tmp_path: Path) -> None:
    store = SqliteReadingStore(tmp_path / "r.db")
    await store.open()
    pipeline = Pipeline(store, devices=[DeviceInfo("th-1", "r1", "mqtt")])
    seen: list[Reading] = []

    async def listener(batch: Sequence[Reading]) -> None:
        seen.extend(batch)

    pipeline.add_listener(listener)
    bad = Rejection("th-1", "humidity", Reason.OUT_OF_RANGE, "humidity: 120 outside 0…100", 5.0)
    # The same message delivered again after a crash before its ack: a payload without a time, so the
    # redelivery is stamped anew on arrival; recognised by its packet id and digest all the same.
    first = Delivery(17, 0x5EED, redelivered=False)
    pipeline.submit([reading(1)], [bad], ack=lambda: None, delivery=first)
    await pipeline.flush()
    again = replace(first, redelivered=True)
    pipeline.submit([replace(reading(1), time=reading(1).time + 40)], [bad], ack=lambda: None, delivery=again)
    await pipeline.flush()
    assert seen == [reading(1)]
    assert dict(pipeline.devices()[0].rejected) == {"out_of_range": 1}
    # A redelivery of a message never stored (lost on its way before the crash) is stored.
    lost = Delivery(18, 0xF00D, redelivered=True)
    pipeline.submit([reading(2)], [replace(bad, time=9.0)], ack=lambda: None, delivery=lost)
    # Another message under the same packet id (reused after its ack) is another message.
    reused = Delivery(17, 0xBEEF, redelivered=False)
    pipeline.submit([reading(3)], ack=lambda: None, delivery=reused)
    await pipeline.flush()
    assert sorted(seen, key=lambda r: r.time) == [reading(1), reading(2), reading(3)]
    assert dict(pipeline.devices()[0].rejected) == {"out_of_range": 2}
    # A rejection of a poll is counted every time.
    pipeline.reject(
        Rejection("th-1", "humidity", Reason.FAULT_CODE, "humidity: sensor fault code 0x7FFF", 6.0)
    )
    pipeline.reject(
        Rejection("th-1", "humidity", Reason.FAULT_CODE, "humidity: sensor fault code 0x7FFF", 7.0)
    )
    await pipeline.flush()
    assert dict(pipeline.devices()[0].rejected) == {"out_of_range": 2, "fault_code": 2}
    await store.close()

    # The counts and the deliveries are the store's: a new process starts from them.
    again_store = SqliteReadingStore(tmp_path / "r.db")
    await again_store.open()
    restarted = Pipeline(again_store, devices=[DeviceInfo("th-1", "r1", "mqtt")])
    await restarted.load_counts()
    (health,) = restarted.devices()
    assert dict(health.rejected) == {"out_of_range": 2, "fault_code": 2}
    assert health.last_rejection == "humidity: 120 outside 0…100"  # the latest, at t = 9
    restarted.submit([reading(9)], ack=lambda: None, delivery=replace(reused, redelivered=True))
    await restarted.flush()
    assert restarted.stored == 0  # the message stored before the restart, delivered again after it
    await again_store.close()


async def test_distinct_readings_in_one_millisecond_are_never_merged(tmp_path: Path) -> None:
    # 50 sensors behind one gateway, a backlog drained at full speed: readings of one series that share
    # a millisecond. A distinct value is its own reading, stored a millisecond on; the same value at the
    # same time again (a retained copy, a gateway's resend) is the same reading: stored once, counted.
    store = SqliteReadingStore(tmp_path / "r.db")
    await store.open()
    pipeline = Pipeline(store, batch_size=300)
    t = 1_767_225_600.123
    for i in range(1000):
        r = Reading(f"th-{i % 50}", "r1", "temperature", 20.0 + (i % 7) / 10, "°C", t)
        pipeline.submit([r], ack=lambda: None, delivery=Delivery(i + 1, i, redelivered=False))
    while pipeline.pending:
        assert await pipeline.flush()
    # Each sensor sent 20 readings at t with 7 distinct values (50 ≡ 1 mod 7).
    assert pipeline.stored == 50 * 7
    same = Reading("th-0", "r1", "temperature", 20.0, "°C", t)  # th-0's first reading, once more
    pipeline.submit([same], ack=lambda: None, delivery=Delivery(2000, 1, redelivered=False))
    await pipeline.flush()
    assert pipeline.stored == 350
    counts = await store.rejection_counts()
    assert sum(reasons["duplicate"][0] for reasons in counts.values()) == 1000 + 1 - 350
    history = [
        p
        for dev in range(50)
        for p in await store.history(device=f"th-{dev}", metric="temperature", start=t - 1, end=t + 10)
    ]
    assert len(history) == 350
    th0 = await store.history(device="th-0", metric="temperature", start=t - 1, end=t + 10)
    assert [round(p.time - t, 3) for p in th0] == [0.0, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006]
    assert sorted(p.mean for p in th0) == [20.0, 20.1, 20.2, 20.3, 20.4, 20.5, 20.6]
    await store.close()


async def test_rejections_are_counted_per_reason_once_stored(tmp_path: Path) -> None:
    store = SqliteReadingStore(tmp_path / "r.db")
    await store.open()
    pipeline = Pipeline(store, devices=[DeviceInfo("th-1", "r1", "modbus-tcp", 90.0)])
    for i in range(5):
        pipeline.reject(
            Rejection("th-1", "humidity", Reason.OUT_OF_RANGE, f"humidity: {120 + i} outside 0…100", 1.0 + i)
        )
    pipeline.reject(
        Rejection("th-1", "humidity", Reason.FAULT_CODE, "humidity: sensor fault code 0x7FFF", 2.5)
    )
    assert dict(pipeline.devices()[0].rejected) == {}  # counted when durable, not before
    await pipeline.flush()
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
        devices=[DeviceInfo("door-1", "r1", "mqtt", 180.0), DeviceInfo("th-1", "r1", "modbus-tcp", 90.0)],
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
    clock.advance(2)  # three expected reports (60 s apart) missed
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
