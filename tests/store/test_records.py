"""Records through SQLAlchemy and Alembic, on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from core.config import Room
from store.db import database_url, make_engine, make_sessionmaker, migrate
from store.records import (
    DeviceRecord,
    DeviceState,
    LastRejection,
    RejectionRecord,
    RoomRecord,
    load_device_states,
    save_device_states,
    sync_config,
)

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
CST = timezone(timedelta(hours=8))  # China Standard Time
TABLES = {
    "alembic_version",
    "rooms",
    "devices",
    "rejections",
    "alerts",
    "alert_events",
    "silences",
    "id_blocks",
}
HEAD = "0003"  # the newest migration

ROOMS = [Room(id="r1", name="一号库房", kind="paper"), Room(id="r2", name="特藏库", kind="special")]
DEVICES = [
    ("th-1", "r1", "温湿度 1", "modbus-tcp"),
    ("door-1", "r1", None, "mqtt"),
    ("th-2", "r2", None, "modbus-rtu"),
]


def test_postgresql_urls_use_psycopg_3() -> None:
    assert database_url("postgresql://u@h/db").drivername == "postgresql+psycopg"
    assert database_url("postgres://u@h/db").drivername == "postgresql+psycopg"
    assert database_url("postgresql+psycopg://u@h/db").drivername == "postgresql+psycopg"
    assert database_url("sqlite:///data/x.db").drivername == "sqlite"


def test_migrate_from_empty_then_again_is_a_no_op(records_url: str) -> None:
    engine = make_engine(records_url)
    try:
        migrate(engine)
        assert set(inspect(engine).get_table_names()) == TABLES
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
        with make_sessionmaker(engine).begin() as session:
            sync_config(session, rooms=ROOMS, devices=DEVICES, now=T0)

        migrate(engine)  # every start runs it

        assert set(inspect(engine).get_table_names()) == TABLES
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
        with make_sessionmaker(engine)() as session:
            assert session.scalars(select(DeviceRecord.id).order_by(DeviceRecord.id)).all() == [
                "door-1",
                "th-1",
                "th-2",
            ]
    finally:
        engine.dispose()


def test_two_processes_migrating_at_once_both_succeed(records_url: str) -> None:
    engines = [make_engine(records_url) for _ in range(3)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(engines))

    def run(engine_index: int) -> None:
        try:
            barrier.wait(timeout=10)
            migrate(engines[engine_index])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(engines))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert errors == []
        assert set(inspect(engines[0]).get_table_names()) == TABLES
        with engines[0].connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
    finally:
        for e in engines:
            e.dispose()


def test_sync_config_upserts_and_marks_devices_no_longer_configured(records_url: str) -> None:
    engine = make_engine(records_url)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    try:
        with sessions.begin() as session:
            sync_config(session, rooms=ROOMS, devices=DEVICES, now=T0)
        with sessions.begin() as session:
            save_device_states(
                session, states=[DeviceState("th-2", "r2", "modbus-rtu", "online", T0, None, T0)], now=T0
            )
        # th-2 leaves the configuration, th-1 moves to r2 and is renamed, pm-1 is new, r1 is renamed.
        changed_rooms = [Room(id="r1", name="一号库房(新)", kind="paper"), ROOMS[1]]
        changed = [
            ("th-1", "r2", "温湿度 A", "modbus-tcp"),
            ("door-1", "r1", None, "mqtt"),
            ("pm-1", "r1", None, "mqtt"),
        ]
        with sessions.begin() as session:
            sync_config(session, rooms=changed_rooms, devices=changed, now=T0 + 60)
        with sessions() as session:
            rows = {d.id: d for d in session.scalars(select(DeviceRecord))}
            assert set(rows) == {"th-1", "door-1", "th-2", "pm-1"}
            assert (rows["th-1"].room_id, rows["th-1"].name) == ("r2", "温湿度 A")
            assert rows["pm-1"].status == "unknown" and rows["pm-1"].removed_at is None
            assert rows["th-2"].removed_at == datetime.fromtimestamp(T0 + 60, UTC)
            assert rows["th-2"].status == "online"  # kept for the record
            r1 = session.get(RoomRecord, "r1")
            assert r1 is not None and r1.name == "一号库房(新)"
            assert [s.id for s in load_device_states(session)] == ["door-1", "pm-1", "th-1"]
            assert "th-2" in [s.id for s in load_device_states(session, include_removed=True)]

        # r2 goes away with its devices; th-2 comes back later and is revived.
        with sessions.begin() as session:
            sync_config(
                session, rooms=changed_rooms[:1], devices=[("door-1", "r1", None, "mqtt")], now=T0 + 120
            )
        with sessions.begin() as session:
            sync_config(session, rooms=ROOMS, devices=DEVICES, now=T0 + 180)
        with sessions() as session:
            r2 = session.get(RoomRecord, "r2")
            assert r2 is not None and r2.removed_at is None
            states = {s.id: s for s in load_device_states(session)}
            assert set(states) == {"th-1", "door-1", "th-2"}
            assert states["th-2"].status == "online" and states["th-2"].last_seen == T0
    finally:
        engine.dispose()


def test_device_states_round_trip_and_counters_are_totals(records_url: str) -> None:
    engine = make_engine(records_url)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    try:
        with sessions.begin() as session:
            sync_config(session, rooms=ROOMS, devices=DEVICES, now=T0)
        saved = [
            DeviceState(
                id="th-1",
                room="r1",
                protocol="modbus-tcp",
                status="faulty",
                last_seen=T0 + 1.25,
                last_error="device th-1 (192.168.10.21:502 unit 1): read holding 0×2 failed: exception 2",
                status_since=T0 + 0.5,
                rejected={"fault_code": 3, "out_of_range": 1},
                last_rejection={
                    "fault_code": LastRejection("temperature: 0x7FFF", T0 + 1.0),
                    "out_of_range": LastRejection("humidity: 104.2 outside 0–100", T0 + 0.75),
                },
            ),
            DeviceState(id="door-1", room="r1", protocol="mqtt", status="online", last_seen=T0 + 2),
        ]
        with sessions.begin() as session:
            save_device_states(session, states=saved, now=T0 + 3)
        with sessions() as session:
            loaded = {s.id: s for s in load_device_states(session)}
        assert loaded["th-1"] == saved[0]
        assert loaded["door-1"] == saved[1]
        assert loaded["th-2"] == DeviceState("th-2", "r2", "modbus-rtu")  # configured, never heard

        # Counters are totals (the pipeline restores them at start and keeps counting): set, not added.
        saved[0].rejected["fault_code"] = 5
        saved[0].last_rejection["fault_code"] = LastRejection("temperature: 0xFFFF", T0 + 9)
        saved[0].status, saved[0].last_error, saved[0].status_since = "online", None, T0 + 9
        with sessions.begin() as session:
            save_device_states(session, states=[saved[0]], now=T0 + 10)
        with sessions() as session:
            loaded = {s.id: s for s in load_device_states(session)}
            assert loaded["th-1"] == saved[0]
            count = session.scalar(
                select(RejectionRecord.count).where(
                    RejectionRecord.device_id == "th-1", RejectionRecord.reason == "fault_code"
                )
            )
            assert count == 5
            device = session.get(DeviceRecord, "th-1")
            assert device is not None
            assert device.updated_at == datetime.fromtimestamp(T0 + 10, UTC)
            assert device.name == "温湿度 1"  # state saves never touch configuration columns
    finally:
        engine.dispose()


def test_timestamps_read_back_tz_aware_utc(records_url: str) -> None:
    engine = make_engine(records_url)
    migrate(engine)
    sessions = make_sessionmaker(engine)
    try:
        with sessions.begin() as session:
            sync_config(session, rooms=ROOMS, devices=DEVICES, now=T0)
            device = session.get(DeviceRecord, "th-1")
            assert device is not None
            # A time given in Beijing time is stored as the same instant.
            device.last_seen = datetime(2026, 1, 1, 16, 0, 1, tzinfo=CST)
        with sessions() as session:
            device = session.get(DeviceRecord, "th-1")
            assert device is not None and device.last_seen is not None
            assert device.last_seen.utcoffset() == timedelta(0)
            assert device.last_seen == datetime(2026, 1, 1, 8, 0, 1, tzinfo=UTC)
            assert device.updated_at.tzinfo is not None and device.updated_at.utcoffset() == timedelta(0)
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgresql_columns_are_timestamptz(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    migrate(engine)
    try:
        with engine.connect() as conn:
            # A session in another time zone still reads UTC through the model.
            conn.execute(text("SET TIME ZONE 'Asia/Shanghai'"))
            types: dict[str, str] = dict(
                conn.execute(
                    text(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_schema = current_schema() AND table_name = 'devices'"
                    )
                ).all()
            )
        for column in ("last_seen", "status_since", "updated_at", "removed_at"):
            assert types[column] == "timestamp with time zone", column
        sessions = make_sessionmaker(engine)
        with sessions.begin() as session:
            sync_config(session, rooms=ROOMS, devices=DEVICES, now=T0)
        with engine.connect() as conn:
            conn.execute(text("SET TIME ZONE 'Asia/Shanghai'"))
            raw = conn.execute(text("SELECT updated_at FROM devices WHERE id = 'th-1'")).scalar_one()
            assert raw.utcoffset() == timedelta(hours=8)  # the driver's view, in the session zone
            assert raw == datetime.fromtimestamp(T0, UTC)  # the same instant
        with sessions() as session:
            device = session.get(DeviceRecord, "th-1")
            assert device is not None and device.updated_at.tzinfo == UTC
    finally:
        engine.dispose()


def test_records_on_sqlite_are_durable_as_readings_are(tmp_path: Path) -> None:
    # synchronous=FULL: an acknowledgement answered 200, a transition written, survive a power cut.
    engine = make_engine(f"sqlite:///{tmp_path / 'bafang.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    engine.dispose()
