"""The embedded readings store: one SQLite file in WAL mode, raw readings for N days, hourly for ever.

Layout::

    series(id, device, metric, unit, room)           one row per (device, metric)
    readings(series_id, ts ms, value)                 raw, WITHOUT ROWID, PK (series_id, ts)
    hourly(series_id, hour s, min, max, sum, count)   rolled up from raw, kept for ever
    rollup_pending(series_id, hour s)                 hours written to since their last rollup
    meta(key, value)                                  purged_before: raw older than this is gone
    rejection_counts(device, reason, count, ...)      rejected values, counted in the readings' transaction
    mqtt_delivered(mid, digest, seq)                  the latest stored MQTT message of each packet id

Every call runs on one dedicated thread that owns the one connection, so the event loop never
blocks on disk and SQLite never sees two writers from this process.

Identity (store/timeseries.py): a redelivered MQTT message is found in ``mqtt_delivered`` and skipped
whole; a reading at a millisecond its series already holds is a duplicate when the value is the same
(counted, not stored) and is stored a millisecond later when it is not (distinct readings are never
merged). Rollup is recomputed from raw for each pending hour, so it is idempotent. A pending hour is rolled up once it is fully
in the past; retention then deletes raw readings of whole hours only, after they were rolled up. A
reading older than the purge horizon (``purged_before``) is not stored: its hour can no longer be
recomputed from raw, and adding it to the hourly row could count a redelivery twice.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from core.clock import Clock, SystemClock
from core.types import Delivery, Reading, Reason, Rejection
from store.timeseries import Redelivery, SeriesPoint, StoreError, WriteResult

log = logging.getLogger(__name__)

T = TypeVar("T")

HOUR_MS = 3_600_000
SCHEMA_VERSION = 3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    id     INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    metric TEXT NOT NULL,
    unit   TEXT NOT NULL,
    room   TEXT NOT NULL,
    UNIQUE (device, metric)
);
CREATE TABLE IF NOT EXISTS readings (
    series_id INTEGER NOT NULL,
    ts        INTEGER NOT NULL,
    value     REAL NOT NULL,
    PRIMARY KEY (series_id, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hourly (
    series_id INTEGER NOT NULL,
    hour      INTEGER NOT NULL,
    min       REAL NOT NULL,
    max       REAL NOT NULL,
    sum       REAL NOT NULL,
    count     INTEGER NOT NULL,
    PRIMARY KEY (series_id, hour)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rollup_pending (
    series_id INTEGER NOT NULL,
    hour      INTEGER NOT NULL,
    PRIMARY KEY (series_id, hour)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rejection_counts (
    device      TEXT NOT NULL,
    reason      TEXT NOT NULL,
    count       INTEGER NOT NULL,
    last_detail TEXT,
    last_ms     INTEGER,
    PRIMARY KEY (device, reason)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS mqtt_delivered (
    mid    INTEGER PRIMARY KEY,
    digest INTEGER NOT NULL,
    seq    INTEGER NOT NULL
);
DROP TABLE IF EXISTS rejected_messages;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

# One index seek per series (measured: 6.7 ms for 2,000 series over 10 M rows); never GROUP BY/MAX.
LATEST_SQL = "SELECT ts, value FROM readings WHERE series_id = ? ORDER BY ts DESC LIMIT 1"
_INSERT_SQL = "INSERT OR IGNORE INTO readings (series_id, ts, value) VALUES "
_INSERTED = " RETURNING series_id, ts"  # only the rows really inserted
_PENDING_SQL = "INSERT OR IGNORE INTO rollup_pending (series_id, hour) VALUES "
_DELIVERED_SQL = "INSERT OR REPLACE INTO mqtt_delivered (mid, digest, seq) VALUES "
# Rows per INSERT statement. executemany steps once per row and releases the GIL at every step, so a
# writer thread beside a busy MQTT thread waits for the GIL once per row (measured: 13 µs a row under
# load); one multi-row statement steps once per chunk. 300 × 3 parameters stay under SQLite's 999.
# For the same reason the fast path has no RETURNING (one step per returned row): the changes count
# tells whether every row went in, and only a chunk that met existing rows is redone with RETURNING.
_CHUNK = 300
# A redelivered message is the one we stored under its packet id only if that was recent: packet ids
# are reused after 65,535 messages, and a message the broker resends was among the last ones in flight.
RECENT_DELIVERIES = 32_768
MAX_RETIME = 1000  # at most this many milliseconds later for a distinct reading at a taken millisecond


@functools.cache
def _values_sql(prefix: str, width: int, rows: int) -> str:
    row = "(" + ", ".join("?" * width) + ")"
    return prefix + ", ".join([row] * rows)


def _insert_rows(conn: sqlite3.Connection, prefix: str, width: int, flat: list[Any]) -> None:
    """INSERT flat (row after row, width values each) in multi-row statements."""
    step = _CHUNK * width
    for i in range(0, len(flat), step):
        chunk = flat[i : i + step]
        conn.execute(_values_sql(prefix, width, len(chunk) // width), chunk)


_COUNT_SQL = """
INSERT INTO rejection_counts (device, reason, count, last_detail, last_ms) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (device, reason) DO UPDATE SET
    count = count + excluded.count, last_detail = excluded.last_detail, last_ms = excluded.last_ms
"""


# Recompute every pending hour that is fully in the past from raw. REPLACE makes it idempotent.
_ROLLUP_SQL = """
INSERT OR REPLACE INTO hourly (series_id, hour, min, max, sum, count)
SELECT p.series_id, p.hour, MIN(r.value), MAX(r.value), SUM(r.value), COUNT(*)
FROM rollup_pending AS p
JOIN readings AS r ON r.series_id = p.series_id AND r.ts >= p.hour * 1000 AND r.ts < p.hour * 1000 + 3600000
WHERE p.hour <= :cutoff
GROUP BY p.series_id, p.hour
"""

# Raw points, and hourly rows for the range before the purge horizon (raw is gone there).
_RAW_SQL = """
WITH pend AS (SELECT hour FROM rollup_pending WHERE series_id = :sid)
SELECT t, mean, mn, mx, n FROM (
    SELECT h.hour * 1000 AS t, h.sum / h.count AS mean, h.min AS mn, h.max AS mx, h.count AS n
    FROM hourly AS h
    WHERE h.series_id = :sid AND h.hour >= :h0 AND h.hour < :end_s AND h.hour < :purged
      AND h.hour NOT IN pend
    UNION ALL
    SELECT ts, value, value, value, 1
    FROM readings
    WHERE series_id = :sid AND ts >= :start_ms AND ts < :end_ms
)
ORDER BY t
LIMIT :limit
"""

# Aggregates per step. An hour comes from `hourly` when it is rolled up (not pending) and either its
# raw readings are purged or the step is whole hours and the hour lies fully inside [start, end);
# every other reading comes from raw. The two sets are disjoint, so nothing is counted twice.
_AGG_SQL = """
WITH pend AS (SELECT hour FROM rollup_pending WHERE series_id = :sid)
SELECT b, SUM(sm) / SUM(n), MIN(mn), MAX(mx), SUM(n) FROM (
    SELECT (h.hour * 1000 / :step_ms) * :step_ms AS b, h.min AS mn, h.max AS mx, h.sum AS sm, h.count AS n
    FROM hourly AS h
    WHERE h.series_id = :sid AND h.hour >= :h0 AND h.hour < :end_s AND h.hour NOT IN pend
      AND (h.hour < :purged OR (:use_hourly AND h.hour >= :full0 AND h.hour < :full1))
    UNION ALL
    SELECT (ts / :step_ms) * :step_ms, value, value, value, 1
    FROM readings
    WHERE series_id = :sid AND ts >= :start_ms AND ts < :end_ms
      AND NOT (:use_hourly AND ts >= :full0 * 1000 AND ts < :full1 * 1000
               AND (ts / 3600000) * 3600 NOT IN pend)
)
GROUP BY b
ORDER BY b
LIMIT :limit
"""


def enable_wal(conn: sqlite3.Connection, timeout: float = 10.0) -> None:
    """Switch a connection's database to WAL, retrying while another connection is switching it too.

    Changing the journal mode fails at once with "database is locked" (the busy handler is not used)
    when two connections open a brand-new file at the same moment.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


class SqliteReadingStore:
    """ReadingStore on an embedded SQLite file (WAL, synchronous=FULL)."""

    def __init__(self, path: str | Path, *, retention_days: int = 90, clock: Clock | None = None) -> None:
        if retention_days < 1:
            raise ValueError(f"retention_days must be at least 1 (got {retention_days})")
        self.path = Path(path)
        self.retention_days = retention_days
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        # Owned by the store thread: (device, metric) → (series id, unit, room).
        self._series: dict[tuple[str, str], tuple[int, str, str]] = {}
        self._purged_before = 0  # epoch s, hour-aligned; raw readings before it are deleted
        self._marked: set[tuple[int, int]] = set()  # (series, hour) already in rollup_pending
        self._seq = 0  # deliveries recorded so far (mqtt_delivered.seq of the latest)
        # Written by the store thread after each commit, read by latest() on the loop thread.
        self._latest: dict[tuple[str, str], tuple[int, Reading]] = {}
        self._latest_lock = threading.Lock()
        self._closed = False

    # ------------------------------------------------------------------------------------------
    # Plumbing

    def _connect(self) -> sqlite3.Connection:
        """Open the connection (on the store thread); tests may override it to trace statements."""
        return sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None or self._closed:
            raise StoreError(f"readings store {self.path}: not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"readings store {self.path}: not open")
        return self._conn

    # ------------------------------------------------------------------------------------------
    # ReadingStore

    async def open(self) -> None:
        """Create or open the file, its schema, and load the latest reading of every series."""
        if self._executor is not None:
            return
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bafang-sqlite")
        try:
            await self._run(self._open_sync)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise

    def _open_sync(self) -> None:
        started = self._clock.monotonic()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = self._connect()
            self._conn = conn
            conn.execute("PRAGMA busy_timeout=5000")
            enable_wal(conn)
            # FULL: a commit is on disk before it returns, so what the pipeline then acknowledges to
            # the broker survives a power cut, not only a crash of the process.
            conn.execute("PRAGMA synchronous=FULL")
            # Batches touch one leaf page per series: a larger page cache saves re-reads (16 MiB).
            conn.execute("PRAGMA cache_size=-16384")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"readings store {self.path}: schema version {version} is newer than this "
                    f"program's ({SCHEMA_VERSION}); upgrade Bafang"
                )
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            row = conn.execute("SELECT value FROM meta WHERE key = 'purged_before'").fetchone()
            self._purged_before = int(row[0]) if row else 0
            self._seq = int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM mqtt_delivered").fetchone()[0])
            self._series = {}
            series = conn.execute("SELECT id, device, metric, unit, room FROM series").fetchall()
            latest: dict[tuple[str, str], tuple[int, Reading]] = {}
            for sid, device, metric, unit, room in series:
                self._series[(device, metric)] = (sid, unit, room)
                hit = conn.execute(LATEST_SQL, (sid,)).fetchone()
                if hit is not None:
                    ts, value = hit
                    latest[(device, metric)] = (ts, Reading(device, room, metric, value, unit, ts / 1000.0))
        except sqlite3.Error as exc:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            raise StoreError(f"readings store {self.path}: open failed: {exc}") from exc
        with self._latest_lock:
            self._latest = latest
        log.info(
            "readings store %s: opened, %d series, latest loaded in %.1f ms",
            self.path,
            len(series),
            (self._clock.monotonic() - started) * 1000,
        )

    async def write(
        self,
        batch: Sequence[Reading],
        rejections: Sequence[Rejection] = (),
        *,
        delivered: Sequence[Delivery] = (),
        redelivered: Sequence[Redelivery] = (),
    ) -> WriteResult:
        """Store readings, count rejections and record deliveries in one transaction, or raise StoreError."""
        if not batch and not rejections and not delivered and not redelivered:
            return WriteResult([], [])
        return await self._run(
            self._write_sync, list(batch), list(rejections), list(delivered), list(redelivered)
        )

    def _write_sync(
        self,
        batch: list[Reading],
        rejections: list[Rejection],
        delivered: list[Delivery],
        redelivered: list[Redelivery],
    ) -> WriteResult:
        conn = self._db()
        series = self._series
        purged_ms = self._purged_before * 1000
        new_series: dict[tuple[str, str], tuple[int, str, str]] = {}
        rows: list[Any] = []  # flat: series, ts, value, series, ts, value, ...
        accepted: list[Reading] = []
        taken: set[tuple[int, int]] = set()  # (series, ms) of this batch's bulk insert
        careful: list[tuple[int, int, Reading]] = []  # readings at a millisecond taken in this batch
        found: list[Rejection] = []  # what the store itself rejects: duplicates, readings too old
        marked = self._marked
        pending: set[tuple[int, int]] = set()
        seq = self._seq
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                marks: list[Any] = []
                for d in delivered:
                    seq += 1
                    marks += (d.mid, d.digest, seq)
                _insert_rows(conn, _DELIVERED_SQL, 3, marks)
                for again in redelivered:
                    if self._known(conn, again.delivery, seq):
                        continue  # stored when it first came: the same message, once
                    seq += 1
                    conn.execute(
                        _values_sql(_DELIVERED_SQL, 3, 1), (again.delivery.mid, again.delivery.digest, seq)
                    )
                    batch.extend(again.readings)
                    rejections.extend(again.rejections)
                for r in batch:
                    if not math.isfinite(r.value):
                        continue  # the collectors reject these; never let one poison a batch
                    ts = round(r.time * 1000)
                    if ts < purged_ms:
                        found.append(_too_old(r, self._purged_before))
                        continue
                    key = (r.device, r.metric)
                    entry = new_series.get(key) or series.get(key)
                    if entry is None or entry[1] != r.unit or entry[2] != r.room:
                        entry = self._series_row(conn, r, entry)
                        new_series[key] = entry
                    sid = entry[0]
                    if (sid, ts) in taken:
                        # The millisecond is taken in this batch: settled one by one after the bulk
                        # insert, against everything stored (the same value = the same reading).
                        careful.append((sid, ts, r))
                        continue
                    taken.add((sid, ts))
                    rows += (sid, ts, r.value)
                    accepted.append(r)
                    mark = (sid, ts // HOUR_MS * 3600)
                    if mark not in marked:
                        pending.add(mark)
                stored = self._insert_readings(conn, rows, accepted, found, pending)
                for sid, ts, r in careful:
                    self._place(conn, sid, ts, r, stored, found, pending)
                _insert_rows(conn, _PENDING_SQL, 2, [v for mark in pending for v in mark])
                counted = self._count_sync(conn, [*rejections, *found])
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(
                f"readings store {self.path}: write of {len(batch)} readings failed: {exc}"
            ) from exc
        # Only now, after the commit, do the caches change.
        self._seq = seq
        series.update(new_series)
        marked |= pending
        newest: dict[tuple[str, str], Reading] = {}
        for r in stored:
            key = (r.device, r.metric)
            seen = newest.get(key)
            if seen is None or r.time > seen.time:
                newest[key] = r
        with self._latest_lock:
            for key, r in newest.items():
                ts = round(r.time * 1000)
                cur = self._latest.get(key)
                if cur is None or ts > cur[0]:
                    self._latest[key] = (ts, r)
        return WriteResult(stored, counted, found)

    def _known(self, conn: sqlite3.Connection, delivery: Delivery, seq: int) -> bool:
        """Whether a redelivered message is the one recently stored under its packet id."""
        row = conn.execute("SELECT digest, seq FROM mqtt_delivered WHERE mid = ?", (delivery.mid,)).fetchone()
        return row is not None and row[0] == delivery.digest and seq - row[1] < RECENT_DELIVERIES

    def _insert_readings(
        self,
        conn: sqlite3.Connection,
        rows: list[Any],
        accepted: list[Reading],
        found: list[Rejection],
        pending: set[tuple[int, int]],
    ) -> list[Reading]:
        """Insert the rows; those meeting a stored reading are duplicates (same value) or go a ms later."""
        step = _CHUNK * 3
        stored: list[Reading] = []
        for i in range(0, len(rows), step):
            chunk = rows[i : i + step]
            n = len(chunk) // 3
            readings = accepted[i // 3 : i // 3 + n]
            sql = _values_sql(_INSERT_SQL, 3, n)
            conn.execute("SAVEPOINT chunk")
            before = conn.total_changes
            conn.execute(sql, chunk)
            if conn.total_changes - before == n:
                conn.execute("RELEASE chunk")
                stored += readings
                continue
            # Some of these millisecond slots were taken before this batch (rare): redo the chunk,
            # learning which rows went in, and settle the others one by one.
            conn.execute("ROLLBACK TO chunk")
            conn.execute("RELEASE chunk")
            inserted = set(map(tuple, conn.execute(sql + _INSERTED, chunk).fetchall()))
            for j, r in enumerate(readings):
                sid, ts = chunk[3 * j], chunk[3 * j + 1]
                if (sid, ts) in inserted:
                    stored.append(r)
                    continue
                self._place(conn, sid, ts, r, stored, found, pending)
        return stored

    @staticmethod
    def _place(
        conn: sqlite3.Connection,
        sid: int,
        ts: int,
        r: Reading,
        stored: list[Reading],
        found: list[Rejection],
        pending: set[tuple[int, int]],
    ) -> None:
        """Store a reading whose millisecond is taken, a millisecond on (into ``stored``, its hour into
        ``pending``), or count it a duplicate (into ``found``) when the same value is there."""
        for k in range(MAX_RETIME + 1):
            row = conn.execute(
                "SELECT value FROM readings WHERE series_id = ? AND ts = ?", (sid, ts + k)
            ).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO readings (series_id, ts, value) VALUES (?, ?, ?)", (sid, ts + k, r.value)
                )
                stored.append(r if k == 0 else replace(r, time=(ts + k) / 1000.0))
                pending.add((sid, (ts + k) // HOUR_MS * 3600))
                return
            if row[0] == r.value:
                break
        found.append(_duplicate(r))

    def _count_sync(self, conn: sqlite3.Connection, rejections: list[Rejection]) -> list[Rejection]:
        """Count rejections per device and reason (each carries how many values it stands for)."""
        totals: dict[tuple[str, str], list[Any]] = {}
        for rj in rejections:
            ms = round(rj.time * 1000)
            total = totals.setdefault((rj.device, rj.reason.value), [0, None, None])
            total[0] += rj.count
            if total[2] is None or ms >= total[2]:
                total[1], total[2] = rj.detail, ms
        conn.executemany(_COUNT_SQL, [(d, r, n, detail, ms) for (d, r), (n, detail, ms) in totals.items()])
        return rejections

    async def rejection_counts(self) -> dict[str, dict[str, tuple[int, str | None, float | None]]]:
        """Rejected values counted so far: device → reason → (count, last detail, last time)."""
        return await self._run(self._rejection_counts_sync)

    def _rejection_counts_sync(self) -> dict[str, dict[str, tuple[int, str | None, float | None]]]:
        out: dict[str, dict[str, tuple[int, str | None, float | None]]] = {}
        rows = self._db().execute("SELECT device, reason, count, last_detail, last_ms FROM rejection_counts")
        for device, reason, count, detail, ms in rows:
            out.setdefault(device, {})[reason] = (count, detail, None if ms is None else ms / 1000.0)
        return out

    def _series_row(
        self, conn: sqlite3.Connection, r: Reading, entry: tuple[int, str, str] | None
    ) -> tuple[int, str, str]:
        """Create the series, or update its unit and room after a configuration change."""
        if entry is None:
            cur = conn.execute(
                "INSERT INTO series (device, metric, unit, room) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (device, metric) DO UPDATE SET unit = excluded.unit, room = excluded.room "
                "RETURNING id",
                (r.device, r.metric, r.unit, r.room),
            )
            return (int(cur.fetchone()[0]), r.unit, r.room)
        conn.execute("UPDATE series SET unit = ?, room = ? WHERE id = ?", (r.unit, r.room, entry[0]))
        return (entry[0], r.unit, r.room)

    async def latest(self) -> list[Reading]:
        """The newest reading of every series (device, metric), from memory."""
        with self._latest_lock:
            return [r for _, r in self._latest.values()]

    async def history(
        self,
        *,
        device: str,
        metric: str,
        start: float,
        end: float,
        step: float | None = None,
        limit: int = 10_000,
    ) -> list[SeriesPoint]:
        """Readings in [start, end): raw when step is None, else aggregated per step seconds.

        Before the raw retention horizon only hourly aggregates exist: there raw history returns one
        point per hour (its count says how many readings it stands for) and steps are whole hours.
        """
        step_ms: int | None = None
        if step is not None:
            step_ms = round(step * 1000)
            if step_ms < 1:
                raise ValueError(f"step must be at least 1 ms (got {step})")
        if limit < 1 or end <= start:
            return []
        return await self._run(self._history_sync, device, metric, start, end, step_ms, limit)

    def _history_sync(
        self, device: str, metric: str, start: float, end: float, step_ms: int | None, limit: int
    ) -> list[SeriesPoint]:
        conn = self._db()
        entry = self._series.get((device, metric))
        if entry is None:
            return []
        start_ms, end_ms = math.ceil(start * 1000), math.ceil(end * 1000)
        full0 = -(-start_ms // HOUR_MS) * 3600  # first whole hour inside the range
        full1 = end_ms // HOUR_MS * 3600  # end of the last whole hour inside the range
        params: dict[str, Any] = {
            "sid": entry[0],
            "start_ms": start_ms,
            "end_ms": end_ms,
            "h0": start_ms // HOUR_MS * 3600,
            "end_s": end,
            "purged": self._purged_before,
            "limit": limit,
        }
        try:
            if step_ms is None:
                rows = conn.execute(_RAW_SQL, params).fetchall()
            else:
                params.update(
                    step_ms=step_ms, use_hourly=step_ms % HOUR_MS == 0, full0=full0, full1=max(full0, full1)
                )
                rows = conn.execute(_AGG_SQL, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreError(
                f"readings store {self.path}: history of {device}/{metric} failed: {exc}"
            ) from exc
        return [SeriesPoint(t / 1000.0, mean, mn, mx, n) for t, mean, mn, mx, n in rows]

    async def maintain(self, now: float) -> None:
        """Roll raw readings up into hourly min/mean/max and drop raw readings past retention."""
        await self._run(self._maintain_sync, now)

    def _maintain_sync(self, now: float) -> None:
        conn = self._db()
        started = self._clock.monotonic()
        cutoff = math.floor(now) - 3600  # pending hours starting at or before this are complete
        horizon = math.floor(now - self.retention_days * 86400) // 3600 * 3600
        horizon = max(horizon, self._purged_before)
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                rolled = conn.execute(_ROLLUP_SQL, {"cutoff": cutoff}).rowcount
                conn.execute("DELETE FROM rollup_pending WHERE hour <= ?", (cutoff,))
                self._marked = {m for m in self._marked if m[1] > cutoff}
                # Recorded before deleting so that writes between here and the delete stay correct.
                conn.execute(
                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('purged_before', ?)", (str(horizon),)
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self._purged_before = horizon
            # Raw deletes per series: each is a primary-key range and a short transaction.
            deleted = 0
            for sid, _, _ in list(self._series.values()):
                deleted += conn.execute(
                    "DELETE FROM readings WHERE series_id = ? AND ts < ?", (sid, horizon * 1000)
                ).rowcount
        except sqlite3.Error as exc:
            raise StoreError(f"readings store {self.path}: maintenance failed: {exc}") from exc
        log.info(
            "readings store %s: rolled up %d series-hours, deleted %d raw readings before %d in %.1f ms",
            self.path,
            rolled,
            deleted,
            horizon,
            (self._clock.monotonic() - started) * 1000,
        )

    async def close(self) -> None:
        """Wait for pending work, then close the connection and the store thread."""
        if self._executor is None:
            return
        executor = self._executor
        self._closed = True  # refuse new work; what is queued still runs, in order
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_sync)
        finally:
            self._executor = None
            executor.shutdown(wait=True)

    def _close_sync(self) -> None:
        if self._conn is not None:
            try:
                self._conn.execute("PRAGMA optimize")
            except sqlite3.Error as exc:
                log.warning("readings store %s: optimize on close failed: %s", self.path, exc)
            self._conn.close()
            self._conn = None


def _duplicate(r: Reading) -> Rejection:
    return Rejection(
        r.device,
        r.metric,
        Reason.DUPLICATE,
        f"{r.metric}: {r.value:g} at {_utc(r.time)} again (from another message): stored once",
        r.time,
    )


def _too_old(r: Reading, purged_before: int) -> Rejection:
    return Rejection(
        r.device,
        r.metric,
        Reason.BAD_TIME,
        f"{r.metric}: time {_utc(r.time)} is before the raw retention horizon {_utc(purged_before)}",
        r.time,
    )


def _utc(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
