"""The embedded SQLite readings store, on real SQLite files."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core.clock import ManualClock
from core.types import Reading
from store.sqlite import LATEST_SQL, SqliteReadingStore
from store.timeseries import ReadingStore, SeriesPoint, StoreError

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, an hour boundary
HOUR = 3600.0
DAY = 86400.0


def temp(i: int, t: float, device: str = "th-1", value: float | None = None) -> Reading:
    return Reading(device, "r1", "temperature", 20.0 + i if value is None else value, "°C", t)


class TracingStore(SqliteReadingStore):
    """The real store, with SQLite's statement trace recorded."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.statements: list[str] = []
        self._trace_lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection:
        conn = super()._connect()
        conn.set_trace_callback(self._trace)
        return conn

    def _trace(self, statement: str) -> None:
        with self._trace_lock:
            self.statements.append(statement)


def rows(path: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    """Read the file through a second, independent connection."""
    with sqlite3.connect(path) as conn:
        return conn.execute(sql, args).fetchall()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteReadingStore]:
    s = SqliteReadingStore(tmp_path / "data" / "readings.db")
    await s.open()
    yield s
    await s.close()


def test_implements_the_protocol() -> None:
    store: ReadingStore = SqliteReadingStore(":memory:")
    assert store is not None


async def test_batch_write_latest_and_raw_history(store: SqliteReadingStore) -> None:
    batch = [temp(i, T0 + i * 30) for i in range(10)]
    batch += [Reading("th-1", "r1", "humidity", 50.0 + i, "%RH", T0 + i * 30) for i in range(10)]
    batch += [Reading("door-1", "r1", "door", 1.0, "", T0 + 5.123)]
    await store.write(batch)

    assert sorted((r.device, r.metric, r.value, r.time) for r in await store.latest()) == [
        ("door-1", "door", 1.0, T0 + 5.123),
        ("th-1", "humidity", 59.0, T0 + 270),
        ("th-1", "temperature", 29.0, T0 + 270),
    ]
    points = await store.history(device="th-1", metric="temperature", start=T0 + 30, end=T0 + 120)
    assert points == [SeriesPoint(T0 + 30 * i, 20.0 + i, 20.0 + i, 20.0 + i, 1) for i in (1, 2, 3)]
    limited = await store.history(device="th-1", metric="temperature", start=T0, end=T0 + DAY, limit=4)
    assert [p.time for p in limited] == [T0, T0 + 30, T0 + 60, T0 + 90]
    assert await store.history(device="th-9", metric="temperature", start=T0, end=T0 + DAY) == []
    assert await store.history(device="th-1", metric="pm25", start=T0, end=T0 + DAY) == []


async def test_a_redelivered_reading_is_stored_once(store: SqliteReadingStore) -> None:
    batch = [temp(i, T0 + i) for i in range(100)]
    await store.write(batch)
    await store.write(batch[50:])  # MQTT QoS 1 redelivery, or a batch retried after an unclear failure
    await store.write([temp(7, T0 + 7.0004)])  # the same millisecond: the same reading
    assert rows(store.path, "SELECT COUNT(*) FROM readings") == [(100,)]

    await store.maintain(T0 + 2 * HOUR)
    await store.write(batch[:10])  # once more, after the rollup
    await store.maintain(T0 + 3 * HOUR)
    assert rows(store.path, "SELECT hour, count, sum, min, max FROM hourly") == [
        (int(T0), 100, sum(20.0 + i for i in range(100)), 20.0, 119.0)
    ]


async def test_unit_or_room_change_updates_the_series(store: SqliteReadingStore) -> None:
    await store.write([temp(0, T0)])
    await store.write([Reading("th-1", "r2", "temperature", 21.0, "°F", T0 + 1)])
    assert rows(store.path, "SELECT device, metric, unit, room FROM series") == [
        ("th-1", "temperature", "°F", "r2")
    ]
    [latest] = await store.latest()
    assert (latest.room, latest.unit) == ("r2", "°F")


async def test_latest_after_reopen_is_one_index_seek_per_series(tmp_path: Path) -> None:
    path = tmp_path / "readings.db"
    first = SqliteReadingStore(path)
    await first.open()
    for d in range(20):
        await first.write([temp(i, T0 + i * 10, device=f"th-{d}", value=d + i / 10) for i in range(50)])
    # An older reading written last must not become "latest".
    await first.write([temp(0, T0 - DAY, device="th-3", value=-5.0)])
    before = sorted(await first.latest(), key=lambda r: r.device)
    await first.close()

    second = TracingStore(path)
    await second.open()
    try:
        after = sorted(await second.latest(), key=lambda r: r.device)
        assert after == before
        assert {r.device: r.value for r in after}["th-3"] == 3 + 4.9
        seeks = [s for s in second.statements if s.startswith("SELECT ts, value FROM readings")]
        assert len(seeks) == 20
        on_readings = [s for s in second.statements if " readings" in s]
        assert not [s for s in on_readings if "GROUP BY" in s.upper() or "MAX(" in s.upper()]
    finally:
        await second.close()

    with sqlite3.connect(path) as conn:
        plan = " ".join(str(row[-1]) for row in conn.execute("EXPLAIN QUERY PLAN " + LATEST_SQL, (1,)))
    assert "SEARCH readings USING PRIMARY KEY (series_id=?)" in plan, plan
    assert "SCAN" not in plan and "TEMP B-TREE" not in plan, plan


async def test_history_aggregated_per_step(store: SqliteReadingStore) -> None:
    # Every 10 s for 2 h: value = minute of the day, so each minute has 6 equal values.
    await store.write([temp(0, T0 + s, value=float(s // 60)) for s in range(0, 7200, 10)])
    per_minute = await store.history(device="th-1", metric="temperature", start=T0, end=T0 + 300, step=60)
    assert per_minute == [SeriesPoint(T0 + 60 * m, float(m), float(m), float(m), 6) for m in range(5)]

    # Buckets are aligned on multiples of the step, so a range starting mid-bucket is clipped by it.
    clipped = await store.history(device="th-1", metric="temperature", start=T0 + 90, end=T0 + 180, step=60)
    assert clipped == [SeriesPoint(T0 + 60, 1.0, 1.0, 1.0, 3), SeriesPoint(T0 + 120, 2.0, 2.0, 2.0, 6)]

    # Hourly steps before any rollup: all from raw.
    hours = await store.history(device="th-1", metric="temperature", start=T0, end=T0 + 2 * HOUR, step=HOUR)
    assert hours == [
        SeriesPoint(T0, 29.5, 0.0, 59.0, 360),
        SeriesPoint(T0 + HOUR, 89.5, 60.0, 119.0, 360),
    ]
    with pytest.raises(ValueError, match="step"):
        await store.history(device="th-1", metric="temperature", start=T0, end=T0 + 60, step=0.0001)


async def test_hourly_steps_combine_rollup_and_raw_exactly(store: SqliteReadingStore) -> None:
    values = {T0 + s: float((s * 7919) % 1000) / 10 for s in range(0, 5 * 3600, 60)}  # 5 h, 1/min
    await store.write([temp(0, t, value=v) for t, v in values.items()])
    await store.maintain(T0 + 3 * HOUR + 10)  # hours 0, 1, 2 rolled up; 3 and 4 still raw only
    assert rows(store.path, "SELECT hour FROM hourly ORDER BY hour") == [
        (int(T0 + h * HOUR),) for h in range(3)
    ]
    # A late reading into a rolled-up hour: that hour comes from raw again until the next rollup.
    await store.write([temp(0, T0 + HOUR + 1, value=1000.0)])
    values[T0 + HOUR + 1] = 1000.0

    def expected(start: float, end: float, step: float) -> list[SeriesPoint]:
        buckets: dict[float, list[float]] = {}
        for t, v in sorted(values.items()):
            if start <= t < end:
                buckets.setdefault(t // step * step, []).append(v)
        return [SeriesPoint(b, sum(vs) / len(vs), min(vs), max(vs), len(vs)) for b, vs in buckets.items()]

    for start, end, step in [
        (T0, T0 + 5 * HOUR, HOUR),
        (T0 + 1800, T0 + 4 * HOUR + 60, HOUR),  # partial first and last hours come from raw
        (T0, T0 + 5 * HOUR, 2 * HOUR),
        (T0, T0 + 5 * HOUR, 600),
        (T0 + 59, T0 + 61, HOUR),
    ]:
        got = await store.history(device="th-1", metric="temperature", start=start, end=end, step=step)
        want = expected(start, end, step)
        assert [(p.time, p.count, p.min, p.max) for p in got] == [
            (p.time, p.count, p.min, p.max) for p in want
        ]
        assert [p.mean for p in got] == pytest.approx([p.mean for p in want])

    await store.maintain(T0 + 6 * HOUR)
    got = await store.history(device="th-1", metric="temperature", start=T0, end=T0 + 5 * HOUR, step=HOUR)
    assert [p.count for p in got] == [60, 61, 60, 60, 60]
    assert rows(store.path, "SELECT COUNT(*) FROM rollup_pending") == [(0,)]


async def test_rollup_then_retention_keeps_hourly_for_ever(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    path = tmp_path / "readings.db"
    store = SqliteReadingStore(path, retention_days=1, clock=clock)
    await store.open()
    try:
        # Three days of one reading per 5 min for two series, written as they happen.
        for day in range(3):
            batch = [temp(0, T0 + day * DAY + s, value=float(day)) for s in range(0, int(DAY), 300)]
            batch += [
                temp(0, T0 + day * DAY + s, device="th-2", value=10.0 + day) for s in range(0, int(DAY), 300)
            ]
            await store.write(batch)
            clock.advance(DAY)
        assert clock.now() == T0 + 3 * DAY
        await store.maintain(clock.now())

        horizon = int(T0 + 2 * DAY)  # now − 1 day, on an hour boundary
        assert rows(path, "SELECT MIN(ts) FROM readings") == [(horizon * 1000,)]
        assert rows(path, "SELECT COUNT(*), SUM(count) FROM hourly") == [(2 * 72, 2 * 3 * 288)]

        # Raw history over the purged days is answered from hourly points, then raw.
        old = await store.history(device="th-1", metric="temperature", start=T0, end=T0 + 3 * DAY)
        assert len(old) == 48 + 288
        assert old[0] == SeriesPoint(T0, 0.0, 0.0, 0.0, 12)
        assert old[47] == SeriesPoint(T0 + 47 * HOUR, 1.0, 1.0, 1.0, 12)
        assert old[48] == SeriesPoint(T0 + 2 * DAY, 2.0, 2.0, 2.0, 1)
        # Daily means over all three days: two days from hourly, the last from hourly + raw.
        daily = await store.history(device="th-2", metric="temperature", start=T0, end=T0 + 3 * DAY, step=DAY)
        assert daily == [SeriesPoint(T0 + d * DAY, 10.0 + d, 10.0 + d, 10.0 + d, 288) for d in range(3)]
        # A step finer than an hour over the purged part gets hourly resolution there.
        fine = await store.history(device="th-2", metric="temperature", start=T0, end=T0 + 2 * HOUR, step=600)
        assert [(p.time, p.count) for p in fine] == [(T0, 12), (T0 + HOUR, 12)]

        # A reading older than the horizon cannot be rolled up again: it is not stored.
        await store.write([temp(0, T0 + 30, value=99.0)])
        assert rows(path, "SELECT COUNT(*) FROM readings WHERE ts < ?", horizon * 1000) == [(0,)]
        assert rows(path, "SELECT count FROM hourly WHERE hour = ? AND series_id = 1", int(T0)) == [(12,)]

        # Maintenance again is a no-op; and the horizon survives a restart.
        await store.maintain(clock.now())
        assert rows(path, "SELECT COUNT(*), SUM(count), SUM(sum) FROM hourly")[0][:2] == (144, 1728)
        await store.close()
        store = SqliteReadingStore(path, retention_days=1, clock=clock)
        await store.open()
        await store.write([temp(0, T0 + 60, value=99.0)])
        assert rows(path, "SELECT COUNT(*) FROM readings WHERE ts < ?", horizon * 1000) == [(0,)]
    finally:
        await store.close()


async def test_a_failed_write_raises_store_error_and_changes_nothing(store: SqliteReadingStore) -> None:
    await store.write([temp(0, T0)])
    # Another program makes inserts fail inside the batch (as a full disk would, part-way).
    with sqlite3.connect(store.path) as other:
        other.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON readings WHEN NEW.value = 666 "
            "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
    batch = [
        temp(0, T0 + 1, value=21.0),
        temp(0, T0 + 1, device="new-1", value=1.0),
        temp(0, T0 + 2, value=666),
    ]
    with pytest.raises(StoreError, match="write of 3 readings failed: disk full"):
        await store.write(batch)
    assert [(r.device, r.value) for r in await store.latest()] == [("th-1", 20.0)]
    assert rows(store.path, "SELECT COUNT(*) FROM readings") == [(1,)]
    assert rows(store.path, "SELECT device FROM series") == [("th-1",)]

    with sqlite3.connect(store.path) as other:
        other.execute("DROP TRIGGER refuse")
    await store.write(batch)  # the caller retries the same batch
    assert sorted((r.device, r.value) for r in await store.latest()) == [("new-1", 1.0), ("th-1", 666.0)]
    assert rows(store.path, "SELECT COUNT(*) FROM readings") == [(4,)]


async def test_non_finite_values_never_poison_a_batch(store: SqliteReadingStore) -> None:
    await store.write([temp(0, T0, value=float("nan")), temp(0, T0 + 1, value=21.5)])
    assert [(r.value, r.time) for r in await store.latest()] == [(21.5, T0 + 1)]


async def test_close_waits_for_queued_writes(tmp_path: Path) -> None:
    path = tmp_path / "readings.db"
    store = SqliteReadingStore(path)
    await store.open()
    tasks = [
        asyncio.create_task(store.write([temp(i, T0 + i * 1000 + j) for j in range(1000)])) for i in range(20)
    ]
    await asyncio.sleep(0)  # every write is queued on the store thread
    await store.close()
    await asyncio.gather(*tasks)
    assert rows(path, "SELECT COUNT(*) FROM readings") == [(20_000,)]
    with pytest.raises(StoreError, match="not open"):
        await store.write([temp(0, T0)])


async def test_the_event_loop_keeps_running_during_writes(store: SqliteReadingStore) -> None:
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await store.write([temp(0, T0 + i) for i in range(20_000)])
    done.set()
    await task
    assert ticks > 100  # the loop kept running while the batch was written on the store thread


def test_benchmark_smoke_run() -> None:
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "readings_store.py"
    out = subprocess.run(
        [sys.executable, str(script), "--series", "5", "--rows", "40", "--batch", "50"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    figures = json.loads(out.strip().splitlines()[-1])
    assert figures["rows"] == 200 and figures["series"] == 5
    assert figures["write_rows_per_s"] > 0 and figures["bare_rows_per_s"] > 0 and figures["open_ms"] >= 0
