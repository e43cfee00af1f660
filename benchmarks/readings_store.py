"""Benchmark the SQLite readings store: write() rows/s in 1,000-row batches, and latest() load at open.

The baseline is a bare sqlite3 ``executemany`` of the same batches into the same schema (WAL,
synchronous=FULL, as the store), in the same process, so the ratio says what the store's own work costs.

    python benchmarks/readings_store.py [--series 2000] [--rows 1000] [--batch 1000]

Last line: ``{"write_rows_per_s": …, "bare_rows_per_s": …, "ratio": …, "open_ms": …, ...}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.types import Reading
from store.sqlite import SqliteReadingStore

T0 = 1_767_225_600.0


def readings(series: int, rows: int) -> list[Reading]:
    """Every series reports once per 30 s, as a poller would deliver them: time-major order."""
    return [
        Reading(f"dev-{s}", "r1", "temperature", 20.0 + (s * 31 + i) % 100 / 10, "°C", T0 + i * 30.0)
        for i in range(rows)
        for s in range(series)
    ]


def bare_rate(path: Path, data: list[Reading], batch: int) -> float:
    """Rows/s of a bare executemany into the readings table, one transaction per batch."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE readings (series_id INTEGER NOT NULL, ts INTEGER NOT NULL, value REAL NOT NULL, "
        "PRIMARY KEY (series_id, ts)) WITHOUT ROWID"
    )
    ids: dict[str, int] = {}
    rows = [(ids.setdefault(r.device, len(ids) + 1), round(r.time * 1000), r.value) for r in data]
    started = time.perf_counter()
    for i in range(0, len(rows), batch):
        conn.execute("BEGIN")
        conn.executemany("INSERT OR IGNORE INTO readings VALUES (?, ?, ?)", rows[i : i + batch])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return len(rows) / elapsed


async def store_figures(path: Path, data: list[Reading], batch: int) -> dict[str, float]:
    """write() rate, then open() time (latest loaded by one seek per series) and latest() time."""
    store = SqliteReadingStore(path)
    await store.open()
    started = time.perf_counter()
    for i in range(0, len(data), batch):
        await store.write(data[i : i + batch])
    write_s = time.perf_counter() - started
    await store.close()

    store = SqliteReadingStore(path)
    started = time.perf_counter()
    await store.open()
    open_s = time.perf_counter() - started
    started = time.perf_counter()
    latest = await store.latest()
    latest_s = time.perf_counter() - started
    await store.close()
    return {
        "write_rows_per_s": len(data) / write_s,
        "open_ms": open_s * 1000,
        "latest_ms": latest_s * 1000,
        "latest_series": float(len(latest)),
    }


def main() -> None:
    """Run the benchmark and print its figures; the last line is one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=2000)
    parser.add_argument("--rows", type=int, default=1000, help="readings per series")
    parser.add_argument("--batch", type=int, default=1000, help="readings per write() call")
    args = parser.parse_args()

    data = readings(args.series, args.rows)
    with tempfile.TemporaryDirectory(prefix="bafang-bench-") as tmp:
        bare = bare_rate(Path(tmp) / "bare.db", data, args.batch)
        figures = asyncio.run(store_figures(Path(tmp) / "store.db", data, args.batch))

    total = len(data)
    print(f"{total:,} readings ({args.series:,} series × {args.rows:,}), batches of {args.batch:,}")
    print(f"bare executemany:       {bare:12,.0f} rows/s")
    print(f"SqliteReadingStore:     {figures['write_rows_per_s']:12,.0f} rows/s")
    print(f"ratio:                  {figures['write_rows_per_s'] / bare:12.2f}")
    print(f"open (latest of {int(figures['latest_series']):,} series): {figures['open_ms']:8.1f} ms")
    print(f"latest() from memory:   {figures['latest_ms']:12.3f} ms")
    print(
        json.dumps(
            {
                "rows": total,
                "series": args.series,
                "write_rows_per_s": round(figures["write_rows_per_s"]),
                "bare_rows_per_s": round(bare),
                "ratio": round(figures["write_rows_per_s"] / bare, 3),
                "open_ms": round(figures["open_ms"], 1),
                "latest_ms": round(figures["latest_ms"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
