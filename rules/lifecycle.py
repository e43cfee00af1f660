"""The alert lifecycle: conditions over time become alerts that fire once, do not flap and survive restarts.

Alertmanager-like. An alert's identity is ``Condition.fingerprint``; at most one is open per fingerprint::

    (none) ──trigger──► pending ──trigger held for `hold`──► firing ──ack (person)──► acknowledged
                           │                                   │                        │
                           └─trigger false─► cancelled          └──clear held for `clear_hold`, or by hand──► resolved

- ``hold == 0`` (event rules: smoke, leak) opens the alert straight in ``firing``.
- A pending alert whose trigger goes false before its hold elapses is *kept* as a ``cancelled`` record
  (with its events), never notified, and left out of ``alerts()`` unless asked for by state: the record
  explains a flapping sensor.
- While open, repeated triggers update it: the earliest start, the worst value (furthest past the
  threshold in the rule's direction, with that observation's threshold), the latest message, and a
  severity that only rises (a rise while firing/acknowledged is a transition of its own that notifies).
- ``Condition.unknown`` neither fires, nor clears, nor cancels a pending hold (its ``started_at`` stays).
  It does break a clear streak: ``clear_since`` is reset, because resolving must rest on a clear seen
  throughout ``clear_hold`` (a sensor gap is not evidence that the room is safe). A trigger, or a value in
  the hysteresis band (neither trigger nor clear), resets it too.
- ``started_at`` and ``clear_since`` are stored, so after ``kill -9`` a fresh AlertBook over the same
  database fires a hold that was 8 minutes into a 10-minute ``for:`` 2 minutes later, not 10.

Memory first, the database behind it. The book's state lives in memory and is touched by one thread
(the service's event loop; a test's own thread): ``observe`` decides every transition from memory and
returns at once. Each change is handed to the records writer (store/writer.py), which writes it on
its own thread, in order, retrying while the database is locked or away, so a slow or unreachable
records database never stalls ingest or the API, and once it is back every transition is written.
Alert ids are reserved in blocks ahead of time, so an alert has its id the moment it opens.
What the writer reports back (another process changed an alert first, an id merged into another
writer's alert) reaches memory through an inbox read at the start of every call.

- Every state change and severity rise is written as it happens (with its ``alert_events`` row). Pure
  value/message updates are held in memory and written at most every ``value_write_interval`` seconds
  per alert (default 60 s, and on ``flush()``): a crash loses at most that much of the worst-value
  history, never a transition.
- Silences (room / protection / device, any combination, with a window) only decide ``notify``; the
  book keeps them in memory (refreshed from the database every ``silence_refresh`` seconds, so that one
  added by another process applies).

Conditions the engine stops sending leave their alerts as they are: send ``unknown`` conditions instead.
A hand-resolved alert whose condition still triggers opens a new alert (pending again): the room is
still in danger.
"""

from __future__ import annotations

import asyncio
import logging
import queue
from collections import deque
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from core.clock import Clock, SystemClock
from rules.model import Condition, Severity
from store import alerts as repo
from store.alerts import Alert, AlertEvent, NewEvent, Silence
from store.db import SQLITE_BEGIN, make_sessionmaker
from store.writer import RecordsWriter

log = logging.getLogger("bafang.alerts")

T = TypeVar("T")

__all__ = [
    "Alert",
    "AlertBook",
    "AlertEvent",
    "AlertNotFound",
    "AlertState",
    "InvalidTransition",
    "Silence",
    "SilenceNotFound",
    "Transition",
]


class AlertState(StrEnum):
    """Where an alert is in its lifecycle."""

    PENDING = repo.PENDING
    FIRING = repo.FIRING
    ACKNOWLEDGED = repo.ACKNOWLEDGED
    RESOLVED = repo.RESOLVED
    CANCELLED = repo.CANCELLED

    @property
    def open(self) -> bool:
        """Pending, firing or acknowledged ("active" in the API)."""
        return self in _OPEN


_OPEN = frozenset({AlertState.PENDING, AlertState.FIRING, AlertState.ACKNOWLEDGED})
ACTIVE = "active"  # the API's name for the open states

# User-facing reasons (zh-CN) recorded by the lifecycle itself.
REASON_CLEARED = "已恢复正常"
REASON_CANCELLED = "保持时间未到即恢复，未形成告警"

ID_BLOCK = 1000  # alert ids reserved at a time; a new block is asked for when half is used


@dataclass(frozen=True, slots=True)
class Transition:
    """One change made by ``observe``; ``from_state == to_state`` for a severity rise (see ``note``)."""

    alert: Alert
    from_state: AlertState | None  # None when the alert was opened
    to_state: AlertState
    notify: bool  # False while silenced, and always for pending and cancelled
    note: str | None = None


class _NotFound(KeyError):
    """No such thing with that id."""

    what = "item"

    def __init__(self, item_id: int) -> None:
        super().__init__(item_id)
        self.item_id = item_id

    def __str__(self) -> str:
        return f"{self.what} {self.item_id} does not exist"


class AlertNotFound(_NotFound):
    """No alert with that id."""

    what = "alert"


class SilenceNotFound(_NotFound):
    """No silence with that id."""

    what = "silence"


class InvalidTransition(Exception):
    """The alert is not in a state that allows the action (e.g. acknowledging a resolved alert)."""

    def __init__(self, alert_id: int, state: str, action: str, allowed: Sequence[str]) -> None:
        self.alert_id = alert_id
        self.state = state
        self.action = action
        super().__init__(
            f"alert {alert_id} is {state}: cannot {action} it (only a {' or '.join(allowed)} alert can be)"
        )


class _Changed(InvalidTransition):
    """Raised inside a write: another writer changed the alert first; ``current`` is how it is now."""

    def __init__(self, current: Alert, action: str, allowed: Sequence[str]) -> None:
        super().__init__(current.id, current.state, action, allowed)
        self.current = current


def duration_zh(seconds: float) -> str:
    """A duration for people: "12 分钟", "2 小时 5 分钟", "3 天 4 小时"."""
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes} 分钟"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} 小时" + (f" {minutes} 分钟" if minutes else "")
    days, hours = divmod(hours, 24)
    return f"{days} 天" + (f" {hours} 小时" if hours else "")


def compose_message(
    message: str, *, started_at: float, fired_at: float | None, resolved_at: float | None, now: float
) -> str:
    """The rule's sentence plus "，已持续 N 分钟" once fired (omitted under a minute, e.g. smoke at once)."""
    if fired_at is None:
        return message
    lasted = (resolved_at if resolved_at is not None else now) - started_at
    if lasted < 60:
        return message
    return f"{message}，已持续 {duration_zh(lasted)}"


def shown(alert: Alert, now: float) -> Alert:
    """The alert as people see it: its message says how long it has lasted."""
    message = compose_message(
        alert.message,
        started_at=alert.started_at,
        fired_at=alert.fired_at,
        resolved_at=alert.resolved_at,
        now=now,
    )
    return alert if message == alert.message else replace(alert, message=message)


def is_worse(value: float | None, threshold: float | None, worst: float | None) -> bool:
    """Whether ``value`` is further past ``threshold`` than ``worst``, in the rule's direction.

    The direction is read from the triggering value itself (at or above its threshold: an upper limit),
    so the comparison still holds when the threshold changes with the severity (60 → 70 %RH). Without a
    threshold (event rules) the latest value counts. ``store.alerts`` applies the same rule in SQL.
    """
    if value is None:
        return False
    if worst is None or threshold is None:
        return True
    return value > worst if value >= threshold else value < worst


def describe(t: Transition) -> str:
    """One sentence for the log: ``alert 12 damp/humidity_high r1 th-1: pending → firing: 一号库房 …``."""
    a = t.alert
    where = f"{a.room} {a.device}" if a.device else a.room
    change = f"{t.from_state or 'new'} → {t.to_state}"
    if t.from_state == t.to_state:
        change = f"{t.to_state}, {t.note}"
    quiet = "" if t.notify or t.to_state in (AlertState.PENDING, AlertState.CANCELLED) else " (silenced)"
    return f"alert {a.id} {a.protection}/{a.rule} {where}: {change}{quiet}: {a.message}"


# The columns an open alert's memory may change without a state change.
_MERGED = ("severity", "value", "threshold", "message", "clear_since")


@dataclass(slots=True)
class _Entry:
    """An open alert in memory: the truth for this process; the database follows it."""

    alert: Alert
    written_at: float  # when its merged values were last handed to the writer (throttles value writes)
    epoch: int = 0  # bumped at every transition: value writes never coalesce across one
    dirty: bool = False  # value / message merges not yet handed to the writer

    def merge(self, c: Condition) -> Severity | None:
        """Fold a triggering condition in; returns the previous severity when it rose."""
        a = self.alert
        changes: dict[str, Any] = {}
        if is_worse(c.value, c.threshold, a.value):
            changes["value"], changes["threshold"] = c.value, c.threshold
        if c.message != a.message:
            changes["message"] = c.message
        rose: Severity | None = None
        if c.severity.rank > Severity(a.severity).rank:
            rose = Severity(a.severity)
            changes["severity"] = c.severity.value
        if changes:
            self.alert = replace(a, **changes)
            self.dirty = True
        return rose

    def values(self) -> dict[str, Any]:
        a = self.alert
        return {name: getattr(a, name) for name in _MERGED}


class AlertBook:
    """Open alerts in memory, every alert and transition written through the records writer.

    Not thread-safe by design: one thread (the event loop) calls it. ``load`` reads the database
    directly and belongs before the service starts; the ``*_async`` reads run their queries in a
    worker thread and fold memory in on the caller's thread.
    """

    def __init__(
        self,
        engine: Engine,
        writer: RecordsWriter,
        *,
        clock: Clock | None = None,
        value_write_interval: float = 60.0,
        silence_refresh: float = 30.0,
        id_block: int = ID_BLOCK,
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        self._read = make_sessionmaker(engine)
        # load() reserves ids before the writer runs: on SQLite take the write lock at BEGIN.
        self._write = make_sessionmaker(
            engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
            if engine.dialect.name == "sqlite"
            else engine
        )
        self._writer = writer
        self._value_write_interval = value_write_interval
        self._silence_refresh = silence_refresh
        self._id_block = id_block
        self._open: dict[str, _Entry] = {}  # fingerprint → open alert
        self._by_id: dict[int, _Entry] = {}  # the same entries by id
        self._closing: dict[int, Alert] = {}  # closed in memory, the write not yet confirmed
        self._inbox: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._ids: deque[int] = deque()
        self._reserving = False
        self._local_id = 0  # the highest id handed out
        self._silences: list[Silence] = []
        self._silences_at = -float("inf")  # when the silences were last asked for
        self._silences_asked = False
        self._loaded = False

    # -- loading ----------------------------------------------------------------------------------

    def load(self) -> None:
        """Read the open alerts (with their hold and clear timers) and the silences; reserve ids.

        Reads and writes the database directly, on the calling thread: call it before the service runs.
        """
        now = self._clock.now()
        with self._read() as session:
            rows = repo.load_open_alerts(session)
            silences = repo.list_silences(session, ending_after=now)
        with self._write.begin() as session:
            ids = repo.reserve_alert_ids(session, count=self._id_block)
        self._open.clear()
        self._by_id.clear()
        self._closing.clear()
        for row in rows:
            self._install(_Entry(row, row.updated_at))
        self._silences, self._silences_at = silences, now
        self._ids = deque(ids)
        self._local_id = max(self._local_id, ids[-1] if ids else 0, *(r.id for r in rows), 0)
        self._loaded = True
        log.info("alert book: %d open alerts loaded", len(rows))

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.load()
        while True:
            try:
                self._inbox.get_nowait()()
            except queue.Empty:
                return

    # -- observing --------------------------------------------------------------------------------

    def observe(self, conditions: Sequence[Condition], now: float) -> list[Transition]:
        """Fold one evaluation's conditions into the alerts; returns the transitions it made.

        Memory only, and cheap when nothing changes; the writes are queued for the records writer.
        """
        self._ensure_loaded()
        self._refresh_silences(now)
        transitions: list[Transition] = []
        for c in conditions:
            if not c.trigger and not self._open:
                continue  # the common case: nothing open, nothing triggering
            entry = self._open.get(c.fingerprint)
            if entry is None:
                if c.trigger and not c.unknown:
                    self._open_alert(c, now, transitions)
            elif c.unknown:
                if entry.alert.clear_since is not None:
                    self._set(entry, now, clear_since=None)
            elif entry.alert.state == repo.PENDING:
                self._step_pending(c, entry, now, transitions)
            else:
                self._step_active(c, entry, now, transitions)
        for t in transitions:
            self._log(t)
        return transitions

    def flush(self, now: float | None = None) -> None:
        """Hand the writer every value/message update still held back by the throttle (on shutdown)."""
        if not self._loaded:
            return
        self._ensure_loaded()
        at = self._clock.now() if now is None else now
        for entry in list(self._open.values()):
            if entry.dirty:
                self._write_values(entry, at)

    def sync(self, timeout: float | None = 30.0) -> bool:
        """Wait until the writer has written everything queued, and take in what it reported.

        Blocks the calling thread: for tests, tools and shutdown, never on the event loop.
        """
        done = self._writer.drain(timeout)
        self._ensure_loaded()
        return done

    def _open_alert(self, c: Condition, now: float, out: list[Transition]) -> None:
        firing = c.hold <= 0
        state = repo.FIRING if firing else repo.PENDING
        alert = Alert(
            id=self._next_id(),
            fingerprint=c.fingerprint,
            protection=c.protection,
            rule=c.rule,
            room=c.room,
            device=c.device,
            severity=c.severity.value,
            state=state,
            started_at=now,
            fired_at=now if firing else None,
            acknowledged_at=None,
            acknowledged_by=None,
            comment=None,
            resolved_at=None,
            resolved_by=None,
            resolve_reason=None,
            value=c.value,
            threshold=c.threshold,
            message=c.message,
            clear_since=None,
            updated_at=now,
            version=0,
        )
        entry = _Entry(alert, now)
        self._install(entry)

        def write(session: Session) -> tuple[Alert, bool]:
            return repo.upsert_open_alert(session, alert=alert, at=now)

        self._submit(write, f"alert {alert.id} opened", lambda f: self._opened(alert, f))
        notify = firing and not self._silenced(alert, now)
        out.append(Transition(shown(alert, now), None, AlertState(state), notify))

    def _step_pending(self, c: Condition, entry: _Entry, now: float, out: list[Transition]) -> None:
        if not c.trigger:
            alert = self._transition(
                entry,
                now,
                repo.CANCELLED,
                note=REASON_CANCELLED,
                resolved_at=now,
                resolved_by=repo.SYSTEM,
                resolve_reason=REASON_CANCELLED,
            )
            out.append(Transition(shown(alert, now), AlertState.PENDING, AlertState.CANCELLED, False))
            return
        rose = entry.merge(c)
        if now - entry.alert.started_at >= c.hold:
            alert = self._transition(entry, now, repo.FIRING, fired_at=now)
            notify = not self._silenced(alert, now)
            out.append(Transition(shown(alert, now), AlertState.PENDING, AlertState.FIRING, notify))
        elif rose is not None or self._due(entry, now):
            self._write_values(entry, now)

    def _step_active(self, c: Condition, entry: _Entry, now: float, out: list[Transition]) -> None:
        state = AlertState(entry.alert.state)
        clear_since = entry.alert.clear_since
        if c.trigger:
            rose = entry.merge(c)
            if rose is not None:
                note = f"级别升高：{rose.value} → {entry.alert.severity}"
                alert = self._transition(entry, now, state.value, note=note, clear_since=None)
                notify = not self._silenced(alert, now)
                out.append(Transition(shown(alert, now), state, state, notify, note))
            elif clear_since is not None:
                self._set(entry, now, clear_since=None)
            elif self._due(entry, now):
                self._write_values(entry, now)
        elif c.clear:
            since = now if clear_since is None else clear_since
            if now - since >= c.clear_hold:
                alert = self._transition(
                    entry,
                    now,
                    repo.RESOLVED,
                    note=REASON_CLEARED,
                    resolved_at=now,
                    resolved_by=repo.SYSTEM,
                    resolve_reason=REASON_CLEARED,
                    clear_since=since,
                )
                notify = not self._silenced(alert, now)
                out.append(Transition(shown(alert, now), state, AlertState.RESOLVED, notify))
            elif clear_since is None:
                self._set(entry, now, clear_since=now)
        elif clear_since is not None:  # in the hysteresis band: the clear streak is broken
            self._set(entry, now, clear_since=None)

    def _due(self, entry: _Entry, now: float) -> bool:
        return entry.dirty and now - entry.written_at >= self._value_write_interval

    # -- changing memory, and handing the writes on --------------------------------------------------

    def _transition(
        self,
        entry: _Entry,
        now: float,
        to_state: str,
        *,
        actor: str = repo.SYSTEM,
        note: str | None = None,
        **changes: Any,
    ) -> Alert:
        """Change an open alert's state in memory and queue the write (guarded by its current state)."""
        before = entry.alert
        alert = replace(before, state=to_state, updated_at=now, **changes)
        entry.alert, entry.written_at, entry.dirty = alert, now, False
        entry.epoch += 1
        if to_state not in repo.OPEN_STATES:
            self._remove(entry)
            self._closing[alert.id] = alert
        values = {**entry.values(), "state": to_state, **changes}
        event = NewEvent(before.state, to_state, actor, note)
        self._submit_update(alert, values, now, (before.state,), event, "transition")
        return alert

    def _set(self, entry: _Entry, now: float, **changes: Any) -> None:
        """Change an open alert's timers (clear_since) in memory and queue the write."""
        entry.alert = replace(entry.alert, **changes)
        self._write_values(entry, now)

    def _write_values(self, entry: _Entry, now: float) -> None:
        entry.written_at, entry.dirty = now, False
        alert = entry.alert
        key = ("alert-values", alert.id, entry.epoch)
        self._submit_update(alert, entry.values(), now, repo.OPEN_STATES, None, "update", key=key)

    def _submit_update(
        self,
        alert: Alert,
        values: dict[str, Any],
        now: float,
        states: Collection[str],
        event: NewEvent | None,
        action: str,
        key: tuple[Any, ...] | None = None,
    ) -> Future[Alert]:
        alert_id, expected = alert.id, tuple(states)

        def write(session: Session) -> Alert:
            stored = repo.update_alert(
                session, alert_id=alert_id, values=values, at=now, states=expected, event=event
            )
            if stored is None:
                current = repo.get_alert(session, alert_id=alert_id)
                if current is None:
                    raise AlertNotFound(alert_id)
                raise _Changed(current, action, expected)
            return stored

        what = f"alert {alert_id} {event.from_state} → {event.to_state}" if event else f"alert {alert_id}"
        return self._submit(write, what, self._written, key=key)

    def _submit(
        self,
        fn: Callable[[Session], T],
        what: str,
        done: Callable[[Future[T]], None],
        *,
        key: tuple[Any, ...] | None = None,
    ) -> Future[T]:
        future = self._writer.submit(fn, key=key, what=what)
        inbox = self._inbox
        future.add_done_callback(lambda f: inbox.put(lambda: done(f)))
        return future

    # -- what the writer reports back ---------------------------------------------------------------

    def _opened(self, alert: Alert, future: Future[tuple[Alert, bool]]) -> None:
        exc = future.exception()
        if exc is not None:
            log.error("alert %d (%s) could not be stored: %s", alert.id, alert.fingerprint, exc)
            return
        stored, created = future.result()
        if created or stored.id == alert.id:
            return
        # Another writer opened this fingerprint first: ours was merged into theirs; follow theirs.
        log.warning(
            "alert %d (%s) was already open as alert %d in another process; following that one",
            alert.id,
            alert.fingerprint,
            stored.id,
        )
        entry = self._by_id.get(alert.id)
        if entry is not None:
            self._remove(entry)
        self._take(stored)

    def _written(self, future: Future[Alert]) -> None:
        exc = future.exception()
        if exc is None:
            stored = future.result()
            if stored.state not in repo.OPEN_STATES:
                self._closing.pop(stored.id, None)
            return
        if isinstance(exc, _Changed):
            current = exc.current
            log.warning(
                "alert %d (%s) was changed by another writer (now %s); taking that",
                current.id,
                current.fingerprint,
                current.state,
            )
            self._closing.pop(current.id, None)
            entry = self._by_id.get(current.id)
            if entry is not None:
                self._remove(entry)
            self._take(current)
        else:
            log.error("an alert write failed: %s", exc)

    def _take(self, stored: Alert) -> None:
        """Install a row as the database has it (another writer's change)."""
        if stored.state in repo.OPEN_STATES:
            old = self._open.get(stored.fingerprint)
            if old is not None and old.alert.id != stored.id:
                self._remove(old)
            self._install(_Entry(stored, stored.updated_at))

    def _install(self, entry: _Entry) -> None:
        self._open[entry.alert.fingerprint] = entry
        self._by_id[entry.alert.id] = entry

    def _remove(self, entry: _Entry) -> None:
        a = entry.alert
        if self._open.get(a.fingerprint) is entry:
            del self._open[a.fingerprint]
        if self._by_id.get(a.id) is entry:
            del self._by_id[a.id]

    # -- ids --------------------------------------------------------------------------------------

    def _next_id(self) -> int:
        if len(self._ids) < self._id_block // 2 and not self._reserving:
            self._reserve()
        if self._ids:
            alert_id = self._ids.popleft()
        else:
            # The database has been away for a whole block of new alerts: go on past the last id we
            # had; the next block skips what we used (safe for the one process that opens alerts).
            alert_id = self._local_id + 1
            log.warning("alert ids: no reserved id left (records database away); using %d", alert_id)
        self._local_id = max(self._local_id, alert_id)
        return alert_id

    def _reserve(self) -> None:
        self._reserving = True
        count = self._id_block

        def reserve(session: Session) -> range:
            return repo.reserve_alert_ids(session, count=count)

        def done(future: Future[range]) -> None:
            self._reserving = False
            if future.exception() is None:
                self._ids.extend(i for i in future.result() if i > self._local_id)

        self._submit(reserve, "alert ids reserved", done)

    # -- silences ---------------------------------------------------------------------------------

    def _refresh_silences(self, now: float) -> None:
        # Silences added through this book apply at once; those added by another process within
        # silence_refresh seconds (of the observed time).
        if self._silences_asked or abs(now - self._silences_at) < self._silence_refresh:
            return
        self._silences_asked = True

        def read(session: Session) -> list[Silence]:
            return repo.list_silences(session, ending_after=now)

        def done(future: Future[list[Silence]]) -> None:
            self._silences_asked = False
            if future.exception() is None:
                self._silences, self._silences_at = future.result(), now

        self._submit(read, "silences read", done, key=("silences",))

    def _silenced(self, alert: Alert, now: float) -> bool:
        return any(
            s.matches(room=alert.room, protection=alert.protection, device=alert.device, at=now)
            for s in self._silences
        )

    def is_silenced(self, *, room: str, protection: str, device: str | None, at: float | None = None) -> bool:
        """Whether an alert of this room, protection and device is (or was) silenced at ``at`` (default now).

        Reads the database on the calling thread (not on the event loop).
        """
        when = self._clock.now() if at is None else at
        with self._read() as session:
            return any(
                s.matches(room=room, protection=protection, device=device, at=when)
                for s in repo.list_silences(session, active_at=when)
            )

    def add_silence(
        self,
        *,
        room: str | None = None,
        protection: str | None = None,
        device: str | None = None,
        starts_at: float | None = None,
        ends_at: float,
        reason: str,
        created_by: str,
        now: float | None = None,
    ) -> Future[Silence]:
        """Create a silence from ``starts_at`` (default now; later = a maintenance window) to ``ends_at``."""
        self._ensure_loaded()
        at = self._clock.now() if now is None else now

        def write(session: Session) -> Silence:
            return repo.add_silence(
                session,
                room=room,
                protection=protection,
                device=device,
                starts_at=at if starts_at is None else starts_at,
                ends_at=ends_at,
                reason=reason,
                created_by=created_by,
                now=at,
            )

        def done(future: Future[Silence]) -> None:
            if future.exception() is None:
                self._silences = [*self._silences, future.result()]

        return self._submit(write, "silence added", done)

    def delete_silence(self, silence_id: int) -> Future[None]:
        """Delete a silence; its Future fails with SilenceNotFound when there is none with that id."""
        self._ensure_loaded()

        def write(session: Session) -> None:
            if not repo.delete_silence(session, silence_id=silence_id):
                raise SilenceNotFound(silence_id)

        def done(future: Future[None]) -> None:
            if future.exception() is None:
                self._silences = [s for s in self._silences if s.id != silence_id]

        return self._submit(write, "silence deleted", done)

    def list_silences(self, *, active: bool = False, now: float | None = None) -> list[Silence]:
        """Every silence, or only those active now (``active=True``); reads the database (not on the loop)."""
        at = self._clock.now() if now is None else now
        with self._read() as session:
            return repo.list_silences(session, active_at=at if active else None)

    async def list_silences_async(self, *, active: bool = False, now: float | None = None) -> list[Silence]:
        """list_silences, its query on a worker thread."""
        return await asyncio.to_thread(self.list_silences, active=active, now=now)

    # -- people's actions -------------------------------------------------------------------------

    def acknowledge(self, alert_id: int, *, by: str, comment: str, now: float) -> Future[Alert]:
        """A named person takes charge of a firing alert; the Future resolves once it is written."""
        if not by.strip():
            raise ValueError(f"alert {alert_id}: acknowledging needs the person's name (by)")
        changes = {"acknowledged_at": now, "acknowledged_by": by, "comment": comment}
        return self._by_hand(
            alert_id, "acknowledge", (repo.FIRING,), repo.ACKNOWLEDGED, changes, by, comment, now
        )

    def resolve(self, alert_id: int, *, by: str, reason: str, now: float) -> Future[Alert]:
        """A named person resolves a firing or acknowledged alert, with a reason."""
        if not by.strip():
            raise ValueError(f"alert {alert_id}: resolving needs the person's name (by)")
        if not reason.strip():
            raise ValueError(f"alert {alert_id}: resolving by hand needs a reason")
        changes = {"resolved_at": now, "resolved_by": by, "resolve_reason": reason}
        allowed = (repo.FIRING, repo.ACKNOWLEDGED)
        return self._by_hand(alert_id, "resolve", allowed, repo.RESOLVED, changes, by, reason, now)

    def _by_hand(
        self,
        alert_id: int,
        action: str,
        allowed: tuple[str, ...],
        to_state: str,
        changes: dict[str, Any],
        actor: str,
        note: str,
        now: float,
    ) -> Future[Alert]:
        self._ensure_loaded()
        entry = self._by_id.get(alert_id)
        if entry is not None:
            from_state = entry.alert.state
            if from_state not in allowed:
                raise InvalidTransition(alert_id, from_state, action, allowed)
            alert = replace(entry.alert, state=to_state, updated_at=now, **changes)
            entry.alert, entry.written_at, entry.dirty = alert, now, False
            entry.epoch += 1
            if to_state not in repo.OPEN_STATES:
                self._remove(entry)
                self._closing[alert_id] = alert
            values = {**entry.values(), "state": to_state, **changes}
            event = NewEvent(from_state, to_state, actor, note)
            future = self._submit_update(alert, values, now, (from_state,), event, action)
            log.info(
                "%s",
                describe(Transition(shown(alert, now), AlertState(from_state), AlertState(to_state), True)),
            )
            return _mapped(future, lambda a: shown(a, self._clock.now()))

        # Not open here (closed, or opened by another process): the database decides.
        def write(session: Session) -> Alert:
            current = repo.get_alert(session, alert_id=alert_id)
            if current is None:
                raise AlertNotFound(alert_id)
            if current.state not in allowed:
                raise InvalidTransition(alert_id, current.state, action, allowed)
            stored = repo.update_alert(
                session,
                alert_id=alert_id,
                values={"state": to_state, **changes},
                at=now,
                states=(current.state,),
                event=NewEvent(current.state, to_state, actor, note),
            )
            if stored is None:
                latest = repo.get_alert(session, alert_id=alert_id)
                raise InvalidTransition(alert_id, latest.state if latest else "gone", action, allowed)
            return stored

        def done(future: Future[Alert]) -> None:
            if future.exception() is None:
                self._take(future.result())

        future = self._submit(write, f"alert {alert_id} {action}", done)
        return _mapped(future, lambda a: shown(a, self._clock.now()))

    # -- reading ----------------------------------------------------------------------------------

    def open_alerts(self) -> list[Alert]:
        """Every open alert (pending, firing, acknowledged), oldest first, from memory."""
        self._ensure_loaded()
        now = self._clock.now()
        entries = sorted(self._open.values(), key=lambda e: (e.alert.started_at, e.alert.id))
        return [shown(e.alert, now) for e in entries]

    def get(self, alert_id: int) -> Alert:
        """One alert by id (memory first, then the database); AlertNotFound when there is none."""
        self._ensure_loaded()
        found = self._memory(alert_id)
        if found is not None:
            return shown(found, self._clock.now())
        with self._read() as session:
            stored = repo.get_alert(session, alert_id=alert_id)
        if stored is None:
            raise AlertNotFound(alert_id)
        return shown(stored, self._clock.now())

    async def get_async(self, alert_id: int) -> Alert:
        """``get``, a database read on a worker thread."""
        self._ensure_loaded()
        found = self._memory(alert_id)
        if found is not None:
            return shown(found, self._clock.now())

        def read() -> Alert | None:
            with self._read() as session:
                return repo.get_alert(session, alert_id=alert_id)

        stored = await asyncio.to_thread(read)
        if stored is None:
            raise AlertNotFound(alert_id)
        return shown(stored, self._clock.now())

    def _memory(self, alert_id: int) -> Alert | None:
        entry = self._by_id.get(alert_id)
        return entry.alert if entry is not None else self._closing.get(alert_id)

    def alerts(
        self,
        *,
        state: str | None = None,
        room: str | None = None,
        protection: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[Alert]:
        """Alerts newest first, filtered; ``state="active"`` = pending|firing|acknowledged.

        Without ``state``, every alert except the cancelled pending ones (ask ``state="cancelled"``).
        ``since`` keeps the alerts open at some moment at or after it. Reads the database on the calling
        thread (not on the event loop: use ``alerts_async`` there).
        """
        query = _Query.of(state, room, protection, since, limit)
        self._ensure_loaded()
        return self._fold(query, query.fetch(self._read))

    async def alerts_async(
        self,
        *,
        state: str | None = None,
        room: str | None = None,
        protection: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[Alert]:
        """``alerts``, its query on a worker thread and memory folded in on the caller's (the loop)."""
        query = _Query.of(state, room, protection, since, limit)
        rows = await asyncio.to_thread(query.fetch, self._read)
        self._ensure_loaded()
        return self._fold(query, rows)

    def _fold(self, query: _Query, rows: list[Alert]) -> list[Alert]:
        """The database's rows with this process's newer memory of them, and what it has not written yet."""
        now = self._clock.now()
        out: dict[int, Alert] = {}
        for row in rows:
            mine = self._memory(row.id)
            out[row.id] = mine if mine is not None else row
        for alert in (*(e.alert for e in self._open.values()), *self._closing.values()):
            out.setdefault(alert.id, alert)
        chosen = sorted(
            (a for a in out.values() if query.matches(a)), key=lambda a: (a.started_at, a.id), reverse=True
        )
        if query.limit is not None:
            chosen = chosen[: query.limit]
        return [shown(a, now) for a in chosen]

    def history(self, alert_id: int) -> list[AlertEvent]:
        """An alert's recorded transitions, oldest first; AlertNotFound when there is no such alert."""
        with self._read() as session:
            if repo.get_alert(session, alert_id=alert_id) is None:
                raise AlertNotFound(alert_id)
            return repo.alert_events(session, alert_id=alert_id)

    async def history_async(self, alert_id: int) -> list[AlertEvent]:
        """``history``, on a worker thread."""
        return await asyncio.to_thread(self.history, alert_id)

    @staticmethod
    def _log(t: Transition) -> None:
        level = logging.DEBUG if t.to_state in (AlertState.PENDING, AlertState.CANCELLED) else logging.INFO
        log.log(level, "%s", describe(t))


@dataclass(frozen=True, slots=True)
class _Query:
    """A filter of alerts, applied by the database and again to memory."""

    states: tuple[str, ...]
    room: str | None
    protection: str | None
    since: float | None
    limit: int | None

    @classmethod
    def of(
        cls,
        state: str | None,
        room: str | None,
        protection: str | None,
        since: float | None,
        limit: int | None,
    ) -> _Query:
        states: tuple[str, ...]
        if state is None:
            states = (*repo.OPEN_STATES, repo.RESOLVED)
        elif state == ACTIVE:
            states = repo.OPEN_STATES
        elif state in repo.STATES:
            states = (state,)
        else:
            raise ValueError(f"alert state {state!r}: expected active, {', '.join(repo.STATES)}")
        return cls(states, room, protection, since, limit)

    def fetch(self, sessions: Callable[[], Session]) -> list[Alert]:
        # Alerts whose state memory changed but the database does not have yet are folded in after.
        with sessions() as session:
            return repo.find_alerts(
                session,
                states=self.states,
                room=self.room,
                protection=self.protection,
                since=self.since,
                limit=self.limit,
            )

    def matches(self, a: Alert) -> bool:
        return (
            a.state in self.states
            and (self.room is None or a.room == self.room)
            and (self.protection is None or a.protection == self.protection)
            and (self.since is None or a.resolved_at is None or a.resolved_at >= self.since)
        )


def _mapped(future: Future[Alert], fn: Callable[[Alert], Alert]) -> Future[Alert]:
    """A Future of ``fn`` of the result."""
    out: Future[Alert] = Future()

    def copy(done: Future[Alert]) -> None:
        exc = done.exception()
        if exc is not None:
            out.set_exception(exc)
        else:
            out.set_result(fn(done.result()))

    future.add_done_callback(copy)
    return out
