"""The alert lifecycle on a real SQLite records database, with time from a ManualClock.

The rule used throughout is the paper-room humidity limit of JGJ 25-2010 Table 5.2.1 (45–60 %RH for a
paper archive room) with a 2 %RH hysteresis: at or above 60 triggers (warning), at or above 70 is
critical (threshold 70), below 58 clears, 58–60 is the band where neither holds.

The book decides in memory and its records writer (a thread) writes behind it: a test reads the
database only after ``writer.drain()`` (the ``Db`` helpers do it), and people's actions return a Future.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine

from core.clock import ManualClock
from rules.lifecycle import (
    Alert,
    AlertBook,
    AlertNotFound,
    AlertState,
    InvalidTransition,
    SilenceNotFound,
    Transition,
    compose_message,
    duration_zh,
    is_worse,
)
from rules.model import Condition, Severity
from store import alerts as repo
from store.db import make_engine, make_sessionmaker, migrate
from store.writer import RecordsWriter

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
MIN = 60.0
FP = "damp|humidity_high|r1|th-1"


def humidity(
    value: float | None,
    *,
    hold: float = 10 * MIN,
    clear_hold: float = 5 * MIN,
    room: str = "r1",
    device: str | None = "th-1",
    protection: str = "damp",
) -> Condition:
    """The humidity rule's condition for one reading (None: the sensor is stale)."""
    if value is None:
        return Condition(
            protection, "humidity_high", room, device, False, False, Severity.WARNING, None, 60.0,
            "一号库房 湿度 无有效读数", hold, clear_hold, unknown=True,
        )  # fmt: skip
    critical = value >= 70
    threshold = 70.0 if critical else 60.0
    return Condition(
        protection=protection,
        rule="humidity_high",
        room=room,
        device=device,
        trigger=value >= 60,
        clear=value < 58,
        severity=Severity.CRITICAL if critical else Severity.WARNING,
        value=value,
        threshold=threshold,
        message=f"一号库房 湿度 {value:.1f}%RH 超过上限 {threshold:g}%",
        hold=hold,
        clear_hold=clear_hold,
    )


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def migrated_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated empty SQLite file, copied by each test (migrating once keeps the tests fast)."""
    path = tmp_path_factory.mktemp("alerts-template") / "bafang.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()  # the last connection checkpoints the WAL into the file
    return path


@pytest.fixture
def engine(migrated_template: Path, tmp_path: Path) -> Iterator[Engine]:
    """A records database of its own for each test."""
    path = tmp_path / "bafang.db"
    shutil.copy(migrated_template, path)
    eng = make_engine(f"sqlite:///{path}")
    yield eng
    eng.dispose()


@pytest.fixture
def clock() -> ManualClock:
    """Time starts at T0 and moves only when a test says so."""
    return ManualClock(T0)


@pytest.fixture
def writers(engine: Engine) -> Iterator[list[RecordsWriter]]:
    """The records writers the test started (one per book: each book stands for a process)."""
    started: list[RecordsWriter] = []
    yield started
    for w in started:
        w.close(10)


@pytest.fixture
def new_book(engine: Engine, clock: ManualClock, writers: list[RecordsWriter]) -> Callable[[], AlertBook]:
    """A fresh AlertBook over the test's database (a restarted process) with its own writer, loaded."""

    def make() -> AlertBook:
        writer = RecordsWriter(engine, clock=clock, backoff_min=0.01, backoff_max=0.05)
        writer.start()
        writers.append(writer)
        book = AlertBook(engine, writer, clock=clock)
        book.load()
        return book

    return make


@pytest.fixture
def book(new_book: Callable[[], AlertBook]) -> AlertBook:
    """The AlertBook of the test."""
    return new_book()


@dataclass
class Db:
    """The database as the writers leave it: every read waits for what they still hold."""

    engine: Engine
    writers: list[RecordsWriter]

    def drain(self) -> None:
        for w in self.writers:
            assert w.drain(10), "the records writer did not finish"

    def stored(self, alert_id: int) -> repo.Alert:
        """The alert as the database has it."""
        self.drain()
        with make_sessionmaker(self.engine)() as session:
            row = repo.get_alert(session, alert_id=alert_id)
        assert row is not None
        return row

    def events(self, alert_id: int) -> list[tuple[str | None, str, str, str | None]]:
        """(from, to, actor, note) of an alert's recorded transitions."""
        self.drain()
        with make_sessionmaker(self.engine)() as session:
            return [
                (e.from_state, e.to_state, e.actor, e.note)
                for e in repo.alert_events(session, alert_id=alert_id)
            ]


@pytest.fixture
def db(engine: Engine, writers: list[RecordsWriter]) -> Db:
    """Reads of the test's database after its writers are done."""
    return Db(engine, writers)


def short(t: Transition) -> str:
    """'pending>firing!' — '!' when it notifies; 'new' when the alert was opened."""
    return f"{t.from_state or 'new'}>{t.to_state}{'!' if t.notify else ''}"


# -- the lifecycle as tables of (minute, humidity, expected transitions) ---------------------------

Step = tuple[float, float | None, list[str]]


@dataclass(frozen=True)
class Scenario:
    """A timeline of readings and what each step must do, then the alerts it must leave behind."""

    steps: list[Step]
    open_state: str | None  # the state of the open alert at the end, None when none is open
    hold: float = 10 * MIN
    clear_hold: float = 5 * MIN


SCENARIOS: dict[str, Scenario] = {
    "fires only once the hold has elapsed": Scenario(
        [(0, 63, ["new>pending"]), (5, 64, []), (9.9, 63, []), (10, 63, ["pending>firing!"]), (11, 64, [])],
        "firing",
    ),
    "a pending alert whose trigger goes false is cancelled, never notified": Scenario(
        [(0, 63, ["new>pending"]), (4, 59, ["pending>cancelled"]), (5, 63, ["new>pending"]), (14, 63, [])],
        "pending",
    ),
    "hysteresis: the band between clear and trigger resolves nothing": Scenario(
        [(0, 65, ["new>pending"]), (10, 65, ["pending>firing!"]), (11, 59, []), (30, 58.5, []), (31, 61, [])],
        "firing",
    ),
    "resolves after the clear has held for clear_hold": Scenario(
        [
            (0, 65, ["new>pending"]),
            (10, 65, ["pending>firing!"]),
            (12, 57, []),
            (16.9, 56, []),
            (17, 57, ["firing>resolved!"]),
            (18, 57, []),
        ],
        None,
    ),
    "a trigger or the band during the clear hold restarts it": Scenario(
        [
            (0, 65, ["new>pending"]),
            (10, 65, ["pending>firing!"]),
            (12, 57, []),
            (14, 59, []),
            (15, 57, []),
            (19, 57, []),
            (19.5, 61, []),
            (20, 57, []),
            (25, 57, ["firing>resolved!"]),
        ],
        None,
    ),
    "severity rises while firing, without a second alert": Scenario(
        [
            (0, 65, ["new>pending"]),
            (10, 65, ["pending>firing!"]),
            (11, 72, ["firing>firing!"]),
            (12, 65, []),
            (13, 75, []),
        ],
        "firing",
    ),
    "severity rising while pending is no transition": Scenario(
        [(0, 65, ["new>pending"]), (3, 72, []), (10, 65, ["pending>firing!"])], "firing"
    ),
    "unknown neither fires, nor clears, nor cancels a pending hold": Scenario(
        [
            (0, 63, ["new>pending"]),
            (5, None, []),
            (10, None, []),
            (11, 63, ["pending>firing!"]),
            (12, None, []),
            (13, 57, []),
            (14, None, []),
            (20, 57, []),
            (24.9, 57, []),
            (25, 57, ["firing>resolved!"]),
        ],
        None,
    ),
    "an event rule (no hold) fires at once": Scenario(
        [(0, 63, ["new>firing!"]), (1, 64, []), (2, 57, []), (3, 57, [])], "firing", hold=0
    ),
    "no clear hold resolves at the first clear": Scenario(
        [(0, 63, ["new>firing!"]), (1, 57, ["firing>resolved!"]), (2, 57, []), (3, 63, ["new>firing!"])],
        "firing",
        hold=0,
        clear_hold=0,
    ),
    "readings below the trigger never open anything": Scenario(
        [(0, 50, []), (5, 59.9, []), (10, None, [])], None
    ),
}


@pytest.mark.parametrize("scenario", SCENARIOS.values(), ids=SCENARIOS.keys())
def test_lifecycle_scenarios(scenario: Scenario, book: AlertBook, db: Db) -> None:
    seen: list[Transition] = []
    for minute, value, expected in scenario.steps:
        now = T0 + minute * MIN
        got = book.observe([humidity(value, hold=scenario.hold, clear_hold=scenario.clear_hold)], now)
        assert [short(t) for t in got] == expected, f"at minute {minute} (RH {value})"
        seen += got
    open_ = book.open_alerts()
    assert [a.state for a in open_] == ([] if scenario.open_state is None else [scenario.open_state])
    # Memory and database agree on every alert the scenario made.
    for alert_id in {t.alert.id for t in seen}:
        row = db.stored(alert_id)
        last = [t for t in seen if t.alert.id == alert_id][-1]
        assert row.state == last.to_state
        assert [(f, t) for f, t, _, _ in db.events(alert_id) if f != t] == [
            (t.from_state, t.to_state) for t in seen if t.alert.id == alert_id and t.from_state != t.to_state
        ]


def test_repeated_triggers_keep_the_earliest_start_the_worst_value_and_the_latest_message(
    book: AlertBook, db: Db
) -> None:
    for minute, value in [(0, 63), (5, 66.5), (10, 64), (12, 72), (13, 71)]:
        book.observe([humidity(value)], T0 + minute * MIN)
    [alert] = book.open_alerts()
    assert alert.started_at == T0
    assert alert.fired_at == T0 + 10 * MIN
    assert (alert.value, alert.threshold, alert.severity) == (72, 70, Severity.CRITICAL)
    assert alert.message.startswith("一号库房 湿度 71.0%RH 超过上限 70%")
    # Back under the critical line: the severity does not fall and the worst value stays.
    book.observe([humidity(65)], T0 + 14 * MIN)
    [alert] = book.open_alerts()
    assert (alert.value, alert.threshold, alert.severity) == (72, 70, Severity.CRITICAL)
    # The severity rise was written at once, with its event.
    row = db.stored(alert.id)
    assert (row.severity, row.value) == ("critical", 72)
    assert ("firing", "firing", "system", "级别升高：warning → critical") in db.events(alert.id)


@pytest.mark.parametrize(
    ("value", "threshold", "worst", "expected"),
    [
        (66, 60, 63, True),  # upper limit: higher is worse
        (62, 60, 63, False),
        (72, 70, 66, True),  # the threshold rose with the severity; the direction did not change
        (12, 14, 13, True),  # lower limit (value under its threshold): lower is worse
        (13.5, 14, 13, False),
        (1, None, 1, True),  # event rules have no threshold: the latest counts
        (None, 60, 63, False),
        (61, 60, None, True),
    ],
)
def test_worst_value_is_furthest_past_the_threshold_in_the_rules_direction(
    value: float | None, threshold: float | None, worst: float | None, expected: bool
) -> None:
    assert is_worse(value, threshold, worst) is expected


def test_the_message_says_how_long_it_has_lasted_once_fired(book: AlertBook, clock: ManualClock) -> None:
    book.observe([humidity(63)], T0)
    [pending] = book.open_alerts()
    assert pending.message == "一号库房 湿度 63.0%RH 超过上限 60%"  # not fired: no duration
    [t] = book.observe([humidity(63.2)], T0 + 10 * MIN)
    assert t.alert.message == "一号库房 湿度 63.2%RH 超过上限 60%，已持续 10 分钟"
    clock.advance(12 * MIN)
    [alert] = book.alerts(state="active")
    assert alert.message == "一号库房 湿度 63.2%RH 超过上限 60%，已持续 12 分钟"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0 分钟"), (59, "0 分钟"), (12 * MIN + 30, "12 分钟"), (60 * MIN, "1 小时"),
     (125 * MIN, "2 小时 5 分钟"), (26 * 60 * MIN, "1 天 2 小时"), (48 * 60 * MIN + 5 * MIN, "2 天")],
)  # fmt: skip
def test_durations_read_naturally(seconds: float, text: str) -> None:
    assert duration_zh(seconds) == text


def test_an_alert_that_fired_at_once_gets_no_duration_under_a_minute() -> None:
    msg = "一号库房 烟感报警"
    assert compose_message(msg, started_at=T0, fired_at=T0, resolved_at=None, now=T0 + 30) == msg
    assert compose_message(msg, started_at=T0, fired_at=T0, resolved_at=T0 + 3 * MIN, now=T0 + 9 * MIN) == (
        "一号库房 烟感报警，已持续 3 分钟"
    )


# -- people: acknowledge and resolve --------------------------------------------------------------


def firing(book: AlertBook, value: float = 65, at: float = T0) -> Alert:
    """Drive the humidity rule to a firing alert starting at ``at``."""
    book.observe([humidity(value)], at)
    [t] = book.observe([humidity(value)], at + 10 * MIN)
    assert t.to_state is AlertState.FIRING
    return t.alert


def test_acknowledge_then_resolve_by_hand_records_who_and_why(book: AlertBook, db: Db) -> None:
    alert = firing(book)
    acked = book.acknowledge(alert.id, by="张工", comment="已开启除湿机", now=T0 + 12 * MIN).result(5)
    assert (acked.state, acked.acknowledged_by, acked.comment) == ("acknowledged", "张工", "已开启除湿机")
    assert acked.acknowledged_at == T0 + 12 * MIN
    # Still triggering: it stays acknowledged, and the worst value keeps being tracked.
    assert book.observe([humidity(67)], T0 + 13 * MIN) == []
    [open_] = book.open_alerts()
    assert (open_.state, open_.value) == ("acknowledged", 67)

    done = book.resolve(alert.id, by="李主任", reason="除湿机检修完毕", now=T0 + 14 * MIN).result(5)
    assert (done.state, done.resolved_by, done.resolve_reason, done.resolved_at) == (
        "resolved", "李主任", "除湿机检修完毕", T0 + 14 * MIN,
    )  # fmt: skip
    assert done.value == 67  # the in-memory worst value was written with the resolution
    assert book.open_alerts() == []
    assert db.events(alert.id) == [
        (None, "pending", "system", None),
        ("pending", "firing", "system", None),
        ("firing", "acknowledged", "张工", "已开启除湿机"),
        ("acknowledged", "resolved", "李主任", "除湿机检修完毕"),
    ]
    assert [e.at for e in book.history(alert.id)] == [T0, T0 + 10 * MIN, T0 + 12 * MIN, T0 + 14 * MIN]


def test_an_acknowledged_alert_resolves_itself_when_the_room_is_safe_again(book: AlertBook) -> None:
    alert = firing(book)
    book.acknowledge(alert.id, by="张工", comment="处理中", now=T0 + 11 * MIN).result(5)
    book.observe([humidity(57)], T0 + 12 * MIN)
    [t] = book.observe([humidity(57)], T0 + 17 * MIN)
    assert short(t) == "acknowledged>resolved!"
    assert (t.alert.resolved_by, t.alert.resolve_reason) == ("system", "已恢复正常")


def test_a_hand_resolved_alert_whose_condition_still_holds_opens_a_new_one(book: AlertBook) -> None:
    alert = firing(book)
    book.resolve(alert.id, by="张工", reason="误报", now=T0 + 11 * MIN).result(5)
    [t] = book.observe([humidity(65)], T0 + 12 * MIN)
    assert short(t) == "new>pending" and t.alert.id != alert.id
    [t] = book.observe([humidity(65)], T0 + 22 * MIN)
    assert short(t) == "pending>firing!"


@pytest.mark.parametrize(
    ("setup", "action", "error"),
    [
        ("pending", "acknowledge", "alert {id} is pending: cannot acknowledge it (only a firing alert can be)"),
        ("pending", "resolve", "alert {id} is pending: cannot resolve it (only a firing or acknowledged alert can be)"),
        ("acknowledged", "acknowledge", "alert {id} is acknowledged: cannot acknowledge it"),
        ("resolved", "acknowledge", "alert {id} is resolved: cannot acknowledge it"),
        ("resolved", "resolve", "alert {id} is resolved: cannot resolve it"),
        ("cancelled", "resolve", "alert {id} is cancelled: cannot resolve it"),
    ],
)  # fmt: skip
def test_invalid_transitions_name_the_state(book: AlertBook, setup: str, action: str, error: str) -> None:
    [t] = book.observe([humidity(65)], T0)
    alert_id = t.alert.id
    if setup == "cancelled":
        book.observe([humidity(50)], T0 + MIN)
    elif setup != "pending":
        book.observe([humidity(65)], T0 + 10 * MIN)
        if setup == "acknowledged":
            book.acknowledge(alert_id, by="张工", comment="", now=T0 + 11 * MIN).result(5)
        elif setup == "resolved":
            book.resolve(alert_id, by="张工", reason="检修", now=T0 + 11 * MIN).result(5)
    with pytest.raises(
        InvalidTransition, match=error.format(id=alert_id).replace("(", r"\(").replace(")", r"\)")
    ) as info:
        if action == "acknowledge":
            book.acknowledge(alert_id, by="王五", comment="收到", now=T0 + 12 * MIN).result(5)
        else:
            book.resolve(alert_id, by="王五", reason="已处理", now=T0 + 12 * MIN).result(5)
    assert info.value.state == setup


def test_unknown_ids_and_missing_names_are_clear_errors(book: AlertBook) -> None:
    with pytest.raises(AlertNotFound, match="alert 999 does not exist"):
        book.acknowledge(999, by="张工", comment="", now=T0).result(5)
    with pytest.raises(AlertNotFound):
        book.resolve(999, by="张工", reason="x", now=T0).result(5)
    with pytest.raises(KeyError):  # AlertNotFound is a KeyError, for the API's 404
        book.get(999)
    with pytest.raises(AlertNotFound):
        book.history(999)
    alert = firing(book)
    with pytest.raises(ValueError, match="person's name"):
        book.acknowledge(alert.id, by=" ", comment="", now=T0 + 11 * MIN).result(5)
    with pytest.raises(ValueError, match="needs a reason"):
        book.resolve(alert.id, by="张工", reason="", now=T0 + 11 * MIN).result(5)
    with pytest.raises(SilenceNotFound, match="silence 5 does not exist"):
        book.delete_silence(5).result(5)


# -- silences and maintenance windows ------------------------------------------------------------


@pytest.mark.parametrize(
    ("matchers", "silenced"),
    [
        ({"room": "r1"}, True),
        ({"room": "r2"}, False),
        ({"protection": "damp"}, True),
        ({"protection": "fire"}, False),
        ({"device": "th-1"}, True),
        ({"device": "th-2"}, False),
        ({"room": "r1", "protection": "damp", "device": "th-1"}, True),
        ({"room": "r1", "protection": "fire"}, False),  # every matcher given must match
    ],
)
def test_silences_suppress_notification_but_the_alert_is_recorded(
    book: AlertBook, db: Db, matchers: dict[str, str], silenced: bool
) -> None:
    book.add_silence(
        room=matchers.get("room"),
        protection=matchers.get("protection"),
        device=matchers.get("device"),
        ends_at=T0 + 2 * 3600,
        reason="更换传感器",
        created_by="张工",
        now=T0,
    ).result(5)
    book.observe([humidity(65)], T0)
    [fired] = book.observe([humidity(65)], T0 + 10 * MIN)
    [rose] = book.observe([humidity(72)], T0 + 11 * MIN)
    book.observe([humidity(57)], T0 + 12 * MIN)
    [resolved] = book.observe([humidity(57)], T0 + 17 * MIN)
    assert [t.notify for t in (fired, rose, resolved)] == [not silenced] * 3
    assert db.stored(fired.alert.id).state == "resolved"  # recorded all the same
    assert [to for _, to, _, _ in db.events(fired.alert.id)] == [
        "pending", "firing", "firing", "resolved",
    ]  # fmt: skip


def test_a_maintenance_window_silences_only_while_it_lasts(book: AlertBook) -> None:
    window = book.add_silence(
        room="r1", starts_at=T0 + 3600, ends_at=T0 + 7200, reason="空调检修", created_by="李主任", now=T0
    ).result(5)
    assert book.list_silences(active=True, now=T0) == []
    assert book.list_silences(active=True, now=T0 + 3600) == [window]
    assert book.list_silences() == [window]

    def fire_at(start: float) -> bool:
        book.observe([humidity(65)], start)
        [t] = book.observe([humidity(65)], start + 10 * MIN)
        book.resolve(t.alert.id, by="张工", reason="测试", now=start + 11 * MIN).result(5)
        return t.notify

    assert fire_at(T0) is True  # before the window
    assert fire_at(T0 + 3600) is False  # fires at +70 min, inside the window
    assert fire_at(T0 + 7200) is True  # fires at +130 min, after it
    assert book.is_silenced(room="r1", protection="damp", device="th-1", at=T0 + 3700)
    book.delete_silence(window.id).result(5)
    assert book.list_silences() == []
    assert not book.is_silenced(room="r1", protection="damp", device="th-1", at=T0 + 3700)


def test_a_silence_added_by_another_process_applies_after_the_refresh(
    engine: Engine, new_book: Callable[[], AlertBook]
) -> None:
    ours, theirs = new_book(), new_book()
    ours.observe([humidity(65, room="r9")], T0)  # loaded the (empty) silences at T0
    theirs.add_silence(room="r1", ends_at=T0 + 3600, reason="检修", created_by="张工", now=T0).result(5)
    ours.observe([humidity(65)], T0 + 10)  # within silence_refresh: not yet re-read
    ours.observe([humidity(65)], T0 + 40)  # > 30 s later: the writer re-reads them (a tick does this)
    ours.sync()
    [t] = ours.observe([humidity(65)], T0 + 10 * MIN + 10)
    assert t.notify is False


def test_a_silence_needs_a_matcher_a_window_and_a_reason(book: AlertBook) -> None:
    with pytest.raises(ValueError, match="a silence of everything is refused"):
        book.add_silence(ends_at=T0 + 60, reason="x", created_by="张工", now=T0).result(5)
    with pytest.raises(ValueError, match="must be after starts_at"):
        book.add_silence(room="r1", starts_at=T0, ends_at=T0, reason="x", created_by="张工", now=T0).result(5)
    with pytest.raises(ValueError, match="a reason is required"):
        book.add_silence(room="r1", ends_at=T0 + 60, reason=" ", created_by="张工", now=T0).result(5)


# -- restarts ----------------------------------------------------------------------------------------


def test_a_hold_8_minutes_into_10_fires_2_minutes_after_a_restart(
    new_book: Callable[[], AlertBook], db: Db
) -> None:
    first = new_book()
    [opened] = first.observe([humidity(63)], T0)
    assert first.observe([humidity(64)], T0 + 8 * MIN) == []
    db.drain()  # the writer keeps up within milliseconds
    del first  # kill -9: nothing is flushed

    second = new_book()
    assert [a.id for a in second.open_alerts()] == [opened.alert.id]
    assert second.observe([humidity(63)], T0 + 8 * MIN + 30) == []  # the first reading after the restart
    assert second.observe([humidity(63)], T0 + 9 * MIN + 59) == []
    [t] = second.observe([humidity(63)], T0 + 10 * MIN)
    assert short(t) == "pending>firing!" and t.alert.id == opened.alert.id
    assert t.alert.started_at == T0


def test_a_clear_hold_survives_a_restart_and_nothing_is_duplicated(
    new_book: Callable[[], AlertBook], db: Db
) -> None:
    first = new_book()
    alert = firing(first)
    first.observe([humidity(57)], T0 + 12 * MIN)  # clear_since = 12 min
    db.drain()
    del first

    second = new_book()
    assert second.observe([humidity(57)], T0 + 16 * MIN) == []
    [t] = second.observe([humidity(57)], T0 + 17 * MIN)
    assert short(t) == "firing>resolved!" and t.alert.id == alert.id
    assert second.alerts() == [t.alert]


def test_a_restart_without_load_still_never_opens_a_second_alert(
    engine: Engine, clock: ManualClock, writers: list[RecordsWriter], db: Db
) -> None:
    writer = RecordsWriter(engine, clock=clock)
    writer.start()
    writers.append(writer)
    first = AlertBook(engine, writer, clock=clock)
    firing(first)
    db.drain()
    second = AlertBook(engine, writer, clock=clock)  # load() is implicit on the first observe
    assert second.observe([humidity(66)], T0 + 11 * MIN) == []
    assert len(second.alerts(state="active")) == 1


def test_value_updates_are_written_at_most_once_a_minute_and_on_flush(book: AlertBook, db: Db) -> None:
    alert = firing(book, 63)
    written = db.stored(alert.id).version
    book.observe([humidity(66)], T0 + 10 * MIN + 30)
    assert (db.stored(alert.id).value, db.stored(alert.id).version) == (63, written)
    assert book.open_alerts()[0].value == 66  # memory has it; the API reads memory for open alerts
    assert book.alerts(state="firing")[0].value == 66
    book.observe([humidity(64)], T0 + 11 * MIN)  # a minute after the last write
    assert db.stored(alert.id).value == 66
    book.observe([humidity(67)], T0 + 11 * MIN + 1)
    assert db.stored(alert.id).value == 66
    book.flush(T0 + 11 * MIN + 2)
    assert db.stored(alert.id).value == 67
    assert db.stored(alert.id).version == written + 2  # two value writes in all


def test_nothing_is_written_when_nothing_changes(book: AlertBook, db: Db) -> None:
    alert = firing(book, 63)
    version = db.stored(alert.id).version
    for second in range(1, 600, 5):  # the same reading again and again for ten minutes
        book.observe([humidity(63), humidity(40, device="th-2")], T0 + 10 * MIN + second)
    assert db.stored(alert.id).version == version


def test_a_change_by_another_process_is_taken_not_overwritten(
    new_book: Callable[[], AlertBook], db: Db
) -> None:
    engine_book, api_book = new_book(), new_book()
    alert = firing(engine_book)
    db.drain()
    api_book.resolve(alert.id, by="张工", reason="现场确认正常", now=T0 + 11 * MIN).result(5)
    # The engine's copy is stale: its next write (a severity rise) meets the resolved row, writes
    # nothing, and the book takes the database's version.
    [rose] = engine_book.observe([humidity(72)], T0 + 12 * MIN)
    assert short(rose) == "firing>firing!"
    engine_book.sync()
    assert db.stored(alert.id).resolved_by == "张工"
    assert [e[1] for e in db.events(alert.id)] == ["pending", "firing", "resolved"]
    assert [a.id for a in engine_book.open_alerts()] == []


def test_two_books_observing_at_once_open_one_alert(new_book: Callable[[], AlertBook]) -> None:
    books = [new_book() for _ in range(4)]
    barrier = threading.Barrier(len(books))
    results: list[list[Transition]] = []
    errors: list[BaseException] = []

    def run(b: AlertBook) -> None:
        try:
            barrier.wait(timeout=10)
            results.append(b.observe([humidity(65, hold=0)], T0))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(b,)) for b in books]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    # Each decided from its own memory; the database keeps one alert, opened once, and every book
    # follows that one once its writer has reported back.
    assert [len(r) for r in results] == [1, 1, 1, 1]
    for b in books:
        b.sync()
    [alert] = books[0].alerts()
    assert {b.open_alerts()[0].id for b in books} == {alert.id}
    assert len(books[0].history(alert.id)) == 1


# -- listing ---------------------------------------------------------------------------------------


def test_alerts_filter_by_state_room_protection_and_since(book: AlertBook, clock: ManualClock) -> None:
    a = firing(book)  # r1 damp, firing from 10 min
    book.observe([humidity(65, room="r2", device="th-9")], T0)  # r2 damp, pending
    book.observe([humidity(65, protection="mold")], T0)
    book.observe([humidity(50, protection="mold")], T0 + MIN)  # cancelled
    assert book.observe([humidity(66)], T0 + 20 * MIN) == []  # same fingerprint: merged into a
    book.resolve(a.id, by="张工", reason="检修", now=T0 + 40 * MIN).result(5)
    clock.advance(3600)

    assert [x.room for x in book.alerts(state="active")] == ["r2"]
    assert [x.id for x in book.alerts(state="resolved")] == [a.id]
    assert [x.protection for x in book.alerts(state="cancelled")] == ["mold"]
    assert {x.room for x in book.alerts()} == {"r1", "r2"}  # cancelled ones only on request
    assert [x.room for x in book.alerts(room="r1")] == ["r1"]
    assert book.alerts(protection="fire") == []
    assert [x.room for x in book.alerts(since=T0 + 41 * MIN)] == ["r2"]  # a was resolved before
    assert len(book.alerts(since=T0 + 39 * MIN)) == 2
    assert book.get(a.id).state == "resolved"
    with pytest.raises(ValueError, match="expected active"):
        book.alerts(state="open")


def test_a_write_the_database_refuses_waits_and_is_written_once_it_can_be(
    book: AlertBook, db: Db, engine: Engine
) -> None:
    [opened] = book.observe([humidity(63)], T0)
    db.drain()
    # Break the database for real: the transition's event row cannot be written.
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE alert_events RENAME TO alert_events_away")
    # Memory decides at once; the writer keeps the write and retries it.
    [t] = book.observe([humidity(63)], T0 + 10 * MIN)
    assert short(t) == "pending>firing!"
    assert [a.state for a in book.open_alerts()] == ["firing"]
    assert book.alerts(state="firing")[0].id == opened.alert.id  # the API shows memory's state
    writer = db.writers[0]
    deadline = __import__("time").monotonic() + 10
    while writer.stats.retries < 2:
        assert __import__("time").monotonic() < deadline, "the write was not retried"
        __import__("time").sleep(0.01)
    assert writer.failing and "alert_events" in (writer.stats.last_error or "")
    with make_sessionmaker(engine)() as session:
        row = repo.get_alert(session, alert_id=opened.alert.id)
    assert row is not None and row.state == "pending"  # the whole transaction was rolled back

    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE alert_events_away RENAME TO alert_events")
    assert db.stored(opened.alert.id).state == "firing"
    assert [e[1] for e in db.events(opened.alert.id)] == ["pending", "firing"]
    assert not writer.failing


def test_each_transition_is_logged_as_one_sentence(book: AlertBook, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("INFO", logger="bafang.alerts")
    firing(book, 63.2)
    book.observe([humidity(72)], T0 + 11 * MIN)
    lines = [
        r.getMessage() for r in caplog.records if r.name == "bafang.alerts" and "loaded" not in r.getMessage()
    ]
    assert lines == [
        "alert 1 damp/humidity_high r1 th-1: pending → firing: 一号库房 湿度 63.2%RH 超过上限 60%，已持续 10 分钟",
        "alert 1 damp/humidity_high r1 th-1: firing, 级别升高：warning → critical: "
        "一号库房 湿度 72.0%RH 超过上限 70%，已持续 11 分钟",
    ]
