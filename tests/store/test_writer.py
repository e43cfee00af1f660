"""The records writer on a real SQLite file and a real PostgreSQL: order, coalescing, a database that
locks, refuses and comes back."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from core.clock import ManualClock
from store import records
from store.db import make_engine, migrate
from store.writer import RecordsWriter


@pytest.fixture
def engine(records_url: str) -> Iterator[Engine]:
    eng = make_engine(records_url)
    migrate(eng)
    with eng.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS probe (n INTEGER NOT NULL)"))
        conn.execute(text("DELETE FROM probe"))
    yield eng
    eng.dispose()


@pytest.fixture
def writer(engine: Engine) -> Iterator[RecordsWriter]:
    w = RecordsWriter(engine, clock=ManualClock(), backoff_min=0.01, backoff_max=0.05)
    w.start()
    yield w
    w.close(10)


def put(n: int) -> object:
    def write(session: Session) -> int:
        session.execute(text("INSERT INTO probe (n) VALUES (:n)"), {"n": n})
        return n

    return write


def probe(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT n FROM probe ORDER BY n"))]


def test_writes_run_in_order_each_in_its_transaction(writer: RecordsWriter, engine: Engine) -> None:
    futures = [writer.submit(put(i), what=f"probe {i}") for i in range(50)]  # type: ignore[arg-type]
    assert [f.result(10) for f in futures] == list(range(50))
    assert probe(engine) == list(range(50))

    def refuse(session: Session) -> None:
        session.execute(text("INSERT INTO probe (n) VALUES (999)"))
        raise ValueError("not this one")

    failed = writer.submit(refuse)
    after = writer.submit(put(50))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not this one"):
        failed.result(10)
    assert after.result(10) == 50
    assert 999 not in probe(engine)  # the refused function's transaction was rolled back


def test_a_queued_write_with_the_same_key_is_replaced_by_the_newer_one(
    writer: RecordsWriter, engine: Engine
) -> None:
    gate = threading.Event()

    def hold(session: Session) -> None:
        gate.wait(10)

    writer.submit(hold)
    first = writer.submit(put(1), key="device-states")  # type: ignore[arg-type]
    second = writer.submit(put(2), key="device-states")  # type: ignore[arg-type]
    other = writer.submit(put(3), key="other")  # type: ignore[arg-type]
    gate.set()
    assert (first.result(10), second.result(10), other.result(10)) == (2, 2, 3)
    assert probe(engine) == [2, 3]
    assert writer.stats.replaced == 1


@pytest.mark.parametrize("records_url", ["sqlite"], indirect=True)
def test_a_locked_database_delays_writes_and_loses_none(writer: RecordsWriter, engine: Engine) -> None:
    # A backup (or another program) holds the SQLite file's write lock for a while.
    database = engine.url.database
    assert database is not None
    locker = sqlite3.connect(database, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    futures: list[Future[object]] = [writer.submit(put(i)) for i in range(20)]  # type: ignore[arg-type]
    time.sleep(0.5)  # the situation under test: half a second of a locked file
    assert not any(f.done() for f in futures)
    assert writer.pending == 20
    locker.execute("ROLLBACK")
    locker.close()
    assert [f.result(30) for f in futures] == list(range(20))
    assert probe(engine) == list(range(20))


def test_close_writes_what_is_queued(engine: Engine) -> None:
    w = RecordsWriter(engine)
    w.start()
    for i in range(10):
        w.submit(put(i))  # type: ignore[arg-type]
    assert w.close(10) is True
    assert probe(engine) == list(range(10))
    with pytest.raises(RuntimeError, match="closed"):
        w.submit(put(11))  # type: ignore[arg-type]


def test_device_states_written_through_the_writer_survive(writer: RecordsWriter, engine: Engine) -> None:
    from core.config import Room

    def sync(session: Session) -> None:
        records.sync_config(
            session,
            rooms=[Room(id="r1", name="一号库房")],
            devices=[("th-1", "r1", None, "modbus-tcp")],
            now=1.0,
        )

    writer.submit(sync).result(10)
    state = records.DeviceState("th-1", "r1", "modbus-tcp", status="online", last_seen=5.0)

    def save(session: Session) -> None:
        records.save_device_states(session, states=[state], now=6.0)

    writer.submit(save).result(10)
    with Session(engine) as session:
        (loaded,) = records.load_device_states(session)
    assert (loaded.status, loaded.last_seen) == ("online", 5.0)
