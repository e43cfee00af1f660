"""The records database blocked for 20 s under a running service: nothing stalls, no transition is lost.

A real `bafang run`, a real pymodbus server (T/H transmitter, smoke contact), the session's Mosquitto
(leak sensor). While the service runs, the test takes the records database's write lock for 20 s, as a
backup or a maintenance script does on SQLite (``BEGIN EXCLUSIVE``), or locks its tables on PostgreSQL
(``LOCK TABLE … ACCESS EXCLUSIVE``, what a schema change or a stuck session does). Meanwhile the room
catches fire and floods. The API must answer within 100 ms throughout, readings must go on being stored,
the wall must show the alarms, and once the lock is gone every transition must be in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import MqttTestBroker
from tests.e2e.test_alerts import DI_UNIT, epoch, leak, publisher, running, start_simulator, write_config
from tests.e2e.test_service import eventually

OUTAGE = 20.0  # seconds the records database is blocked
LIMIT = 0.1  # seconds the API may take to answer meanwhile


@contextlib.contextmanager
def blocked(url: str) -> Iterator[None]:
    """Hold the records database's write lock (SQLite) or its tables' locks (PostgreSQL)."""
    if url.startswith("sqlite:///"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
        conn.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            conn.execute("ROLLBACK")
            conn.close()
        return
    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as pg:
        pg.execute("LOCK TABLE alerts, alert_events, id_blocks, devices, rejections IN ACCESS EXCLUSIVE MODE")
        yield
        pg.rollback()


def recorded(url: str) -> list[tuple[str, str | None, str]]:
    """(rule, from, to) of every recorded transition, in order."""
    sql = (
        "SELECT a.rule, e.from_state, e.to_state FROM alert_events e JOIN alerts a ON a.id = e.alert_id "
        "ORDER BY e.at, e.id"
    )
    if url.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as conn:
            return [tuple(r) for r in conn.execute(sql)]  # type: ignore[misc]
    with psycopg.connect(url) as pg:
        return [tuple(r) for r in pg.execute(sql)]  # type: ignore[misc]


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def test_a_blocked_records_database_stalls_nothing_and_loses_no_transition(
    tmp_path: Path, mosquitto: MqttTestBroker, backend: str, request: pytest.FixtureRequest
) -> None:
    sim, port = await start_simulator(rh=50.0, t=20.0, smoke=False)
    tag = uuid.uuid4().hex[:8]
    config = write_config(tmp_path, mosquitto, port, tag)
    url = f"sqlite:///{tmp_path}/bafang.db"
    if backend == "postgresql":
        url = request.getfixturevalue("postgres_url")
        text = config.read_text(encoding="utf-8").replace(f'"sqlite:///{tmp_path}/bafang.db"', f'"{url}"')
        config.write_text(text, encoding="utf-8")
    try:
        with publisher(mosquitto, tag) as sensor:
            async with running(config) as app:

                async def quiet() -> bool:
                    states = {p["protection"]: p["state"] for p in await app.get("/api/v1/protections")}
                    return states["fire"] == states["water"] == states["damp"] == "ok"

                leak(sensor, tag, "dry")
                await eventually(quiet, 20, "a quiet room, polled")

                latencies: dict[str, list[float]] = {"/healthz": [], "/api/v1/readings/latest": []}
                seen_alarm: dict[str, bool] = {"fire": False, "water": False}
                newest: list[float] = []
                with blocked(url):
                    started = time.monotonic()
                    events = [(2.0, "smoke on"), (4.0, "leak"), (9.0, "smoke off")]
                    while (elapsed := time.monotonic() - started) < OUTAGE:
                        while events and elapsed >= events[0][0]:
                            what = events.pop(0)[1]
                            if what == "leak":
                                await asyncio.to_thread(leak, sensor, tag, "leak")
                            else:
                                await sim.set_bits(DI_UNIT, "discrete", 0, [what == "smoke on"])
                        for path, took in latencies.items():
                            t0 = time.perf_counter()
                            body: Any = await app.get(path)
                            took.append(time.perf_counter() - t0)
                            if path.endswith("latest"):
                                newest.append(max(epoch(r["time"]) for r in body if r["device"] == "th-1"))
                        health = await app.get("/healthz")
                        states = {p["protection"]: p["state"] for p in await app.get("/api/v1/protections")}
                        for protection in seen_alarm:
                            seen_alarm[protection] |= states[protection] == "alarm"
                        await asyncio.sleep(0.1)
                    assert health["records_pending"] > 0 and health["records_waiting"] > 5, health
                    # Still locked: nothing of the outage's alerts is in the database yet.
                    assert not [r for r in recorded_or_empty(url) if r[0] in ("smoke", "leak")]

                for path, took in latencies.items():
                    assert max(took) < LIMIT, (
                        f"{path}: {max(took) * 1000:.0f} ms (the slowest of {len(took)})"
                    )
                assert seen_alarm == {"fire": True, "water": True}, "the wall did not show the alarms"
                # Readings kept being stored: th-1's latest reading moved on throughout the outage.
                assert newest[-1] - newest[0] > OUTAGE - 3

                async def written() -> list[tuple[str, str | None, str]]:
                    rows = [r for r in await asyncio.to_thread(recorded, url) if r[0] in ("smoke", "leak")]
                    return rows if len(rows) == 3 else []

                rows = await eventually(written, 30, "the outage's transitions written")
                assert rows == [
                    ("smoke", None, "firing"),
                    ("leak", None, "firing"),
                    ("smoke", "firing", "resolved"),
                ]
                (water,) = await app.alerts(state="firing", protection="water")
                assert water["rule"] == "leak"
                assert await app.stop() == 0, app.output
                # Said once when it began and once when it ended, not on every attempt.
                if backend == "sqlite":  # SQLite refuses (database is locked) and is retried
                    assert app.output.count("writes wait and are retried") == 1, app.output
                    assert app.output.count("writing again after") == 1, app.output
                else:  # PostgreSQL makes the write wait on the lock
                    assert app.output.count("a write has waited") == 1, app.output
                    assert app.output.count("the database answered after") == 1, app.output
    finally:
        with publisher(mosquitto, tag) as sensor:
            sensor.publish(f"e2e/{tag}/leak-1", b"", qos=1, retain=True).wait_for_publish(5)
        await sim.stop()


def recorded_or_empty(url: str) -> list[tuple[str, str | None, str]]:
    """recorded(), or nothing when the database cannot be read right now (PostgreSQL, tables locked)."""
    if url.startswith("sqlite:///"):
        return recorded(url)  # WAL: readers are not blocked by the writer's lock
    return []
