"""The alerts repository on SQLite and on a real PostgreSQL: atomic upserts, versions, silences."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, insert, inspect
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from store import alerts as repo
from store.alerts import Alert, AlertRecord, NewEvent
from store.db import alembic_config, make_engine, make_sessionmaker, migrate
from store.records import Base, to_datetime

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
FP = "damp|humidity_high|r1|th-1"
ALERT_TABLES = {"alerts", "alert_events", "silences", "id_blocks"}
_IDS = itertools.count(1)


def new(
    *,
    alert_id: int | None = None,
    started_at: float = T0,
    value: float | None = 63.0,
    threshold: float | None = 60.0,
    severity: str = "warning",
    state: str = "pending",
    message: str = "一号库房 湿度 63.0%RH 超过上限 60%",
    fingerprint: str = FP,
) -> Alert:
    """An observation of the humidity rule, with an id of its own (as the lifecycle reserves them)."""
    protection, rule, room, device = fingerprint.split("|")
    return Alert(
        id=next(_IDS) if alert_id is None else alert_id,
        fingerprint=fingerprint,
        protection=protection,
        rule=rule,
        room=room,
        device=device or None,
        severity=severity,
        state=state,
        started_at=started_at,
        fired_at=started_at if state == "firing" else None,
        acknowledged_at=None,
        acknowledged_by=None,
        comment=None,
        resolved_at=None,
        resolved_by=None,
        resolve_reason=None,
        value=value,
        threshold=threshold,
        message=message,
        clear_since=None,
        updated_at=started_at,
        version=0,
    )


@pytest.fixture
def engine(records_url: str) -> Iterator[Engine]:
    """A migrated records database (SQLite file or PostgreSQL schema)."""
    eng = make_engine(records_url)
    migrate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """Sessions on it."""
    return make_sessionmaker(engine)


def test_the_migration_creates_what_the_models_describe_and_downgrades(engine: Engine) -> None:
    assert set(inspect(engine).get_table_names()) >= ALERT_TABLES
    indexes = {i["name"]: i for i in inspect(engine).get_indexes("alerts")}
    assert indexes["ux_alerts_open_fingerprint"]["unique"]
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0001")
    assert not ALERT_TABLES & set(inspect(engine).get_table_names())
    migrate(engine)
    assert set(inspect(engine).get_table_names()) >= ALERT_TABLES


def test_the_database_itself_refuses_a_second_open_alert(sessions: sessionmaker[Session]) -> None:
    row = {
        "fingerprint": FP,
        "protection": "damp",
        "rule": "humidity_high",
        "room": "r1",
        "severity": "warning",
        "started_at": to_datetime(T0),
        "message": "m",
        "updated_at": to_datetime(T0),
        "version": 0,
    }
    with sessions.begin() as session:
        session.execute(insert(AlertRecord), [{**row, "state": "resolved"}, {**row, "state": "cancelled"}])
        session.execute(insert(AlertRecord), [{**row, "state": "firing"}])  # closed ones do not count
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.execute(insert(AlertRecord), [{**row, "state": "pending"}])
    with pytest.raises(IntegrityError), sessions.begin() as session:
        session.execute(insert(AlertRecord), [{**row, "state": "open"}])  # not a state


def test_upsert_opens_then_merges_earliest_start_worst_value_higher_severity_latest_message(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        first, created = repo.upsert_open_alert(session, alert=new(started_at=T0 + 60), at=T0 + 60)
    assert created and (first.state, first.version, first.value) == ("pending", 0, 63.0)

    observations = [
        (new(started_at=T0, value=61.0, message="m2"), 61.0, 63.0, "warning"),  # earlier start, not worse
        (new(started_at=T0 + 120, value=66.0, message="m3"), 66.0, 66.0, "warning"),  # worse
        (new(value=72.0, threshold=70.0, severity="critical", message="m4"), 72.0, 72.0, "critical"),
        (new(value=65.0, severity="warning", message="m5"), 65.0, 72.0, "critical"),  # never falls
        (new(value=None, threshold=None, message="m6"), None, 72.0, "critical"),
    ]
    for i, (obs, _, worst, severity) in enumerate(observations, start=1):
        with sessions.begin() as session:
            merged, created = repo.upsert_open_alert(session, alert=obs, at=T0 + 200 + i)
        assert not created
        assert merged.id == first.id and merged.version == i
        assert (merged.started_at, merged.value, merged.severity, merged.message) == (
            T0,
            worst,
            severity,
            obs.message,
        )
        assert merged.state == "pending"  # a merge never changes the state
    assert merged.threshold == 70.0  # the threshold that goes with the worst value
    with sessions() as session:
        assert [(e.from_state, e.to_state) for e in repo.alert_events(session, alert_id=first.id)] == [
            (None, "pending")
        ]


def test_update_checks_version_and_state_and_records_the_event(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        alert, _ = repo.upsert_open_alert(session, alert=new(), at=T0)
    with sessions.begin() as session:
        fired = repo.update_alert(
            session,
            alert_id=alert.id,
            values={"state": "firing", "fired_at": T0 + 600},
            at=T0 + 600,
            version=alert.version,
            event=NewEvent("pending", "firing"),
        )
    assert fired is not None and (fired.state, fired.fired_at, fired.version) == ("firing", T0 + 600, 1)
    with sessions.begin() as session:  # a stale copy is told, and writes nothing
        assert repo.update_alert(session, alert_id=alert.id, values={"value": 99.0}, at=T0, version=0) is None
        assert (
            repo.update_alert(
                session, alert_id=alert.id, values={"state": "resolved"}, at=T0, states=["pending"]
            )
            is None
        )
        assert repo.update_alert(session, alert_id=12345, values={}, at=T0) is None
    with sessions.begin() as session:
        acked = repo.update_alert(
            session,
            alert_id=alert.id,
            values={
                "state": "acknowledged",
                "acknowledged_at": T0 + 700,
                "acknowledged_by": "张工",
                "comment": "处理中",
            },
            at=T0 + 700,
            states=["firing"],
            event=NewEvent("firing", "acknowledged", "张工", "处理中"),
        )
    assert acked is not None and (acked.acknowledged_by, acked.value, acked.version) == ("张工", 63.0, 2)
    with sessions() as session:
        got = [
            (e.at, e.from_state, e.to_state, e.actor, e.note)
            for e in repo.alert_events(session, alert_id=alert.id)
        ]
    assert got == [
        (T0, None, "pending", "system", None),
        (T0 + 600, "pending", "firing", "system", None),
        (T0 + 700, "firing", "acknowledged", "张工", "处理中"),
    ]
    with sessions.begin() as session, pytest.raises(ValueError, match="cannot update"):
        repo.update_alert(session, alert_id=alert.id, values={"fingerprint": "x"}, at=T0)
    with sessions.begin() as session, pytest.raises(ValueError, match="unknown state"):
        repo.update_alert(session, alert_id=alert.id, values={"state": "open"}, at=T0)


def test_after_resolution_the_same_fingerprint_opens_a_new_alert(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        first, _ = repo.upsert_open_alert(session, alert=new(state="firing"), at=T0)
        repo.update_alert(
            session, alert_id=first.id, values={"state": "resolved", "resolved_at": T0 + 60}, at=T0 + 60
        )
    with sessions.begin() as session:
        second, created = repo.upsert_open_alert(session, alert=new(started_at=T0 + 120), at=T0 + 120)
        assert created and second.id != first.id
        assert repo.get_open_alert(session, fingerprint=FP) == second
        assert [a.id for a in repo.load_open_alerts(session)] == [second.id]


@pytest.mark.parametrize("threads", [8])
def test_concurrent_upserts_on_separate_connections_open_one_alert(engine: Engine, threads: int) -> None:
    sessions = make_sessionmaker(engine)
    barrier = threading.Barrier(threads)
    results: list[tuple[Alert, bool]] = []
    errors: list[BaseException] = []

    def observe(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            with sessions.begin() as session:
                results.append(
                    repo.upsert_open_alert(session, alert=new(value=60.0 + i, started_at=T0 + i), at=T0 + i)
                )
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=observe, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert errors == []
    assert len(results) == threads
    assert sum(created for _, created in results) == 1
    assert len({alert.id for alert, _ in results}) == 1
    with sessions() as session:
        [alert] = repo.find_alerts(session)
        assert (alert.started_at, alert.value, alert.version) == (T0, 60.0 + threads - 1, threads - 1)
        assert len(repo.alert_events(session, alert_id=alert.id)) == 1


def test_alert_ids_are_reserved_in_blocks_that_never_overlap(engine: Engine) -> None:
    sessions = make_sessionmaker(engine)
    # Alerts stored before the id counter existed: the migration starts the counter past them.
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0002")
    with sessions.begin() as session:
        repo.upsert_open_alert(session, alert=new(alert_id=41), at=T0)
    migrate(engine)
    blocks: list[range] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def reserve() -> None:
        try:
            barrier.wait(timeout=10)
            with sessions.begin() as session:
                blocks.append(repo.reserve_alert_ids(session, count=50))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=reserve) for _ in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert errors == [] and len(blocks) == 6
    ids = [i for b in blocks for i in b]
    assert len(ids) == len(set(ids)) == 300  # concurrent reservations never overlap
    assert min(ids) == 42
    with sessions.begin() as session:
        assert min(repo.reserve_alert_ids(session, count=1)) > max(ids)
        with pytest.raises(ValueError, match="at least one"):
            repo.reserve_alert_ids(session, count=0)


def test_find_alerts_filters_and_orders_newest_first(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        a, _ = repo.upsert_open_alert(session, alert=new(state="firing"), at=T0)
        b, _ = repo.upsert_open_alert(
            session, alert=new(fingerprint="fire|smoke|r2|smoke-1", started_at=T0 + 60), at=T0 + 60
        )
        c, _ = repo.upsert_open_alert(
            session, alert=new(fingerprint="damp|humidity_high|r2|", started_at=T0 + 120), at=T0 + 120
        )
        repo.update_alert(
            session, alert_id=a.id, values={"state": "resolved", "resolved_at": T0 + 300}, at=T0 + 300
        )
    with sessions() as session:

        def ids(**filters: Any) -> list[int]:
            return [x.id for x in repo.find_alerts(session, **filters)]

        assert ids() == [c.id, b.id, a.id]
        assert ids(states=repo.OPEN_STATES) == [c.id, b.id]
        assert ids(room="r2", protection="damp") == [c.id]
        assert ids(since=T0 + 300) == [c.id, b.id, a.id]
        assert ids(since=T0 + 301) == [c.id, b.id]
        assert ids(limit=1) == [c.id]
        room_alert = repo.get_alert(session, alert_id=c.id)
        assert room_alert is not None and room_alert.device is None


def test_silences_crud(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        now_ = repo.add_silence(
            session, room="r1", starts_at=T0, ends_at=T0 + 3600, reason="检修", created_by="张工", now=T0
        )
        later = repo.add_silence(
            session, protection="fire", device="smoke-1", starts_at=T0 + 7200, ends_at=T0 + 9000,
            reason="烟感更换（维护窗口）", created_by="李主任", now=T0,
        )  # fmt: skip
    assert (now_.room, now_.protection, now_.starts_at, now_.ends_at, now_.created_by) == (
        "r1",
        None,
        T0,
        T0 + 3600,
        "张工",
    )
    with sessions() as session:
        assert repo.list_silences(session) == [now_, later]
        assert repo.list_silences(session, active_at=T0 + 10) == [now_]
        assert repo.list_silences(session, active_at=T0 + 3600) == []  # the end is exclusive
        assert repo.list_silences(session, active_at=T0 + 8000) == [later]
        assert repo.list_silences(session, ending_after=T0 + 3600) == [later]
    assert later.matches(room="r5", protection="fire", device="smoke-1", at=T0 + 8000)
    assert not later.matches(room="r5", protection="fire", device="smoke-2", at=T0 + 8000)
    assert not later.matches(room="r5", protection="fire", device="smoke-1", at=T0 + 100)
    with sessions.begin() as session:
        assert repo.delete_silence(session, silence_id=now_.id) is True
        assert repo.delete_silence(session, silence_id=now_.id) is False
    with sessions() as session:
        assert repo.list_silences(session) == [later]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({}, "a silence of everything is refused"),
        ({"room": "r1", "ends_at": T0}, "must be after starts_at"),
        ({"room": "r1", "reason": ""}, "a reason is required"),
        ({"room": "r1", "created_by": " "}, "created_by is required"),
    ],
)
def test_silences_are_validated(
    sessions: sessionmaker[Session], kwargs: dict[str, object], error: str
) -> None:
    args: dict[str, object] = {
        "starts_at": T0,
        "ends_at": T0 + 60,
        "reason": "检修",
        "created_by": "张工",
        "now": T0,
    }
    args.update(kwargs)
    with sessions.begin() as session, pytest.raises(ValueError, match=error):
        repo.add_silence(session, **args)  # type: ignore[arg-type]
