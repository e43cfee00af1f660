"""The alert lifecycle: conditions over time become alerts that fire once, do not flap and survive restarts.

Alertmanager-like. An alert's identity is ``Condition.fingerprint``; at most one is open per fingerprint::

    (none) ──trigger──► pending ──trigger held for `hold`──► firing ──ack (person)──► acknowledged
                           │                                   │                        │
                           └─trigger false─► cancelled          └──clear held for `clear_hold`, or by hand──► resolved

- ``hold == 0`` (event rules: smoke, leak) opens the alert straight in ``firing``.
- A pending alert whose trigger goes false before its hold elapses is *kept* as a ``cancelled`` record
  (with its events), never notified, and left out of ``alerts()`` unless asked for by state: the record
  explains a flapping sensor, and deleting rows would lose the transitions the issue asks to persist.
- While open, repeated triggers update it: the earliest start, the worst value (furthest past the
  threshold in the rule's direction, with that observation's threshold), the latest message, and a
  severity that only rises (a rise while firing/acknowledged is a transition of its own that notifies).
- ``Condition.unknown`` neither fires, nor clears, nor cancels a pending hold (its ``started_at`` stays).
  It does break a clear streak: ``clear_since`` is reset, because resolving must rest on a clear seen
  throughout ``clear_hold`` (a sensor gap is not evidence that the room is safe). A trigger, or a value in
  the hysteresis band (neither trigger nor clear), resets it too.
- ``started_at`` and ``clear_since`` are stored, so after ``kill -9`` a fresh AlertBook over the same
  database fires a hold that was 8 minutes into a 10-minute ``for:`` 2 minutes later, not 10.
- Writes: every state change and severity rise at once (one transaction per ``observe`` call, with its
  ``alert_events`` rows). Pure value/message updates are kept in memory and written at most every
  ``value_write_interval`` seconds per alert (default 60 s, and on ``flush()``): a crash loses at most that
  much of the worst-value history, never a transition.
- Silences (room / protection / device, any combination, with a window) only decide ``notify``.

Conditions the engine stops sending leave their alerts as they are: send ``unknown`` conditions instead.
A hand-resolved alert whose condition still triggers opens a new alert (pending again): the room is
still in danger.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.clock import Clock, SystemClock
from rules.model import Condition, Severity
from store import alerts as repo
from store.alerts import AlertEvent, NewAlert, NewEvent, Silence, StoredAlert
from store.db import SQLITE_BEGIN, make_sessionmaker

log = logging.getLogger(__name__)

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


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert as the API shows it (times in epoch seconds)."""

    id: int
    protection: str
    rule: str
    room: str
    device: str | None
    severity: Severity
    state: AlertState
    started_at: float
    fired_at: float | None
    acknowledged_at: float | None
    acknowledged_by: str | None
    comment: str | None
    resolved_at: float | None
    resolved_by: str | None
    resolve_reason: str | None
    value: float | None
    threshold: float | None
    message: str  # the rule's sentence, plus "，已持续 N 分钟" once it has fired

    @property
    def fingerprint(self) -> str:
        """The identity: protection, rule, room, device (as Condition.fingerprint)."""
        return f"{self.protection}|{self.rule}|{self.room}|{self.device or ''}"


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


@dataclass(slots=True)
class _Entry:
    """An open alert in memory: the stored row plus value/message merges not yet written."""

    stored: StoredAlert
    severity: Severity
    value: float | None
    threshold: float | None
    message: str
    written_at: float  # when this entry was last written (throttles value updates)
    dirty: bool = False

    @classmethod
    def of(cls, stored: StoredAlert, written_at: float) -> _Entry:
        return cls(
            stored, Severity(stored.severity), stored.value, stored.threshold, stored.message, written_at
        )

    @property
    def state(self) -> str:
        return self.stored.state

    def merge(self, c: Condition) -> Severity | None:
        """Fold a triggering condition in; returns the previous severity when it rose."""
        if is_worse(c.value, c.threshold, self.value):
            self.value, self.threshold = c.value, c.threshold
            self.dirty = True
        if c.message != self.message:
            self.message = c.message
            self.dirty = True
        if c.severity.rank > self.severity.rank:
            previous, self.severity = self.severity, c.severity
            return previous
        return None

    def merged_values(self) -> dict[str, Any]:
        return {
            "severity": self.severity.value,
            "value": self.value,
            "threshold": self.threshold,
            "message": self.message,
        }

    def alert(self, now: float) -> Alert:
        s = self.stored
        return Alert(
            id=s.id,
            protection=s.protection,
            rule=s.rule,
            room=s.room,
            device=s.device,
            severity=self.severity,
            state=AlertState(s.state),
            started_at=s.started_at,
            fired_at=s.fired_at,
            acknowledged_at=s.acknowledged_at,
            acknowledged_by=s.acknowledged_by,
            comment=s.comment,
            resolved_at=s.resolved_at,
            resolved_by=s.resolved_by,
            resolve_reason=s.resolve_reason,
            value=self.value,
            threshold=self.threshold,
            message=compose_message(
                self.message, started_at=s.started_at, fired_at=s.fired_at, resolved_at=s.resolved_at, now=now
            ),
        )


def _alert(stored: StoredAlert, now: float) -> Alert:
    return _Entry.of(stored, stored.updated_at).alert(now)


class _Tx:
    """The writes of one ``observe`` call: one session, opened on the first write, and undo data."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions
        self._session: Session | None = None
        self.originals: dict[str, _Entry | None] = {}  # fingerprint → entry before this call

    @property
    def session(self) -> Session:
        if self._session is None:
            self._session = self._sessions()
            self._session.begin()
        return self._session

    @property
    def started(self) -> bool:
        return self._session is not None

    def close(self, *, commit: bool) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:
            if commit:
                session.commit()
            else:
                session.rollback()
        finally:
            session.close()


class AlertBook:
    """Open alerts in memory, every alert and transition in the records database; thread-safe."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Clock | None = None,
        value_write_interval: float = 60.0,
        silence_refresh: float = 30.0,
    ) -> None:
        self._clock: Clock = clock or SystemClock()
        self._read = make_sessionmaker(engine)
        # On SQLite take the write lock at BEGIN, so a transaction never has to upgrade a read lock.
        writer = (
            engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"})
            if engine.dialect.name == "sqlite"
            else engine
        )
        self._write = make_sessionmaker(writer)
        self._value_write_interval = value_write_interval
        self._silence_refresh = silence_refresh
        self._lock = threading.RLock()
        self._open: dict[str, _Entry] = {}  # fingerprint → open alert
        self._loaded = False
        self._silences: list[Silence] | None = None  # those not yet ended when loaded
        self._silences_loaded_at = 0.0

    # -- loading and observing -------------------------------------------------------------------

    def load(self) -> None:
        """Read the open alerts (and their hold and clear timers) from the database into memory."""
        with self._lock, self._read() as session:
            rows = repo.load_open_alerts(session)
            self._open = {r.fingerprint: _Entry.of(r, r.updated_at) for r in rows}
            self._silences = None
            self._loaded = True
        log.info("alert book: %d open alerts loaded", len(rows))

    def observe(self, conditions: Sequence[Condition], now: float) -> list[Transition]:
        """Fold one evaluation's conditions into the alerts; returns the transitions it made.

        Cheap when nothing changes (memory only). Writes happen in one transaction; if it fails, memory
        is rolled back to what it was and the error propagates (the next call retries).
        """
        with self._lock:
            if not self._loaded:
                self.load()
            tx = _Tx(self._write)
            transitions: list[Transition] = []
            try:
                for c in conditions:
                    if not c.trigger and not self._open:
                        continue  # the common case: nothing open, nothing triggering
                    fp = c.fingerprint
                    entry = self._open.get(fp)
                    if entry is None:
                        if c.trigger and not c.unknown:
                            self._open_alert(tx, c, fp, now, transitions)
                    elif c.unknown:
                        if entry.stored.clear_since is not None:
                            self._write_entry(tx, fp, entry, now, {"clear_since": None})
                    elif entry.state == repo.PENDING:
                        self._step_pending(tx, c, fp, entry, now, transitions)
                    else:
                        self._step_active(tx, c, fp, entry, now, transitions)
            except BaseException:
                self._undo(tx)
                tx.close(commit=False)
                raise
            try:
                tx.close(commit=True)
            except BaseException:
                self._undo(tx)
                raise
            for t in transitions:
                self._log(t)
            return transitions

    def flush(self, now: float | None = None) -> None:
        """Write every value/message update still held back by the throttle (call on shutdown)."""
        at = self._clock.now() if now is None else now
        with self._lock:
            tx = _Tx(self._write)
            try:
                for fp, entry in list(self._open.items()):
                    if entry.dirty:
                        self._write_entry(tx, fp, entry, at, {})
            except BaseException:
                self._undo(tx)
                tx.close(commit=False)
                raise
            try:
                tx.close(commit=True)
            except BaseException:
                self._undo(tx)
                raise

    def _open_alert(self, tx: _Tx, c: Condition, fp: str, now: float, out: list[Transition]) -> None:
        firing = c.hold <= 0
        state = repo.FIRING if firing else repo.PENDING
        new = NewAlert(
            fingerprint=fp,
            protection=c.protection,
            rule=c.rule,
            room=c.room,
            device=c.device,
            severity=c.severity.value,
            state=state,
            started_at=now,
            fired_at=now if firing else None,
            value=c.value,
            threshold=c.threshold,
            message=c.message,
        )
        stored, created = repo.upsert_open_alert(tx.session, alert=new, at=now)
        tx.originals.setdefault(fp, None)
        entry = self._open[fp] = _Entry.of(stored, now)
        if created:
            notify = firing and not self._silenced(tx, entry, now)
            out.append(Transition(entry.alert(now), None, AlertState(state), notify))
        # else: another writer opened it first; it was merged into theirs and is stepped from now on.

    def _step_pending(
        self, tx: _Tx, c: Condition, fp: str, entry: _Entry, now: float, out: list[Transition]
    ) -> None:
        if not c.trigger:
            values = {
                "state": repo.CANCELLED,
                "resolved_at": now,
                "resolved_by": repo.SYSTEM,
                "resolve_reason": REASON_CANCELLED,
            }
            event = NewEvent(repo.PENDING, repo.CANCELLED, note=REASON_CANCELLED)
            stored = self._write_entry(tx, fp, entry, now, values, event)
            if stored is not None:
                out.append(Transition(_alert(stored, now), AlertState.PENDING, AlertState.CANCELLED, False))
            return
        rose = entry.merge(c)
        if now - entry.stored.started_at >= c.hold:
            event = NewEvent(repo.PENDING, repo.FIRING)
            stored = self._write_entry(tx, fp, entry, now, {"state": repo.FIRING, "fired_at": now}, event)
            if stored is not None:
                new = self._open[fp]
                notify = not self._silenced(tx, new, now)
                out.append(Transition(new.alert(now), AlertState.PENDING, AlertState.FIRING, notify))
        elif rose is not None or self._due(entry, now):
            self._write_entry(tx, fp, entry, now, {})

    def _step_active(
        self, tx: _Tx, c: Condition, fp: str, entry: _Entry, now: float, out: list[Transition]
    ) -> None:
        state = AlertState(entry.state)
        clear_since = entry.stored.clear_since
        if c.trigger:
            rose = entry.merge(c)
            if rose is not None:
                note = f"级别升高：{rose.value} → {entry.severity.value}"
                event = NewEvent(state.value, state.value, note=note)
                stored = self._write_entry(tx, fp, entry, now, {"clear_since": None}, event)
                if stored is not None:
                    new = self._open[fp]
                    notify = not self._silenced(tx, new, now)
                    out.append(Transition(new.alert(now), state, state, notify, note))
            elif clear_since is not None or self._due(entry, now):
                self._write_entry(tx, fp, entry, now, {"clear_since": None})
        elif c.clear:
            since = now if clear_since is None else clear_since
            if now - since >= c.clear_hold:
                values = {
                    "state": repo.RESOLVED,
                    "resolved_at": now,
                    "resolved_by": repo.SYSTEM,
                    "resolve_reason": REASON_CLEARED,
                    "clear_since": since,
                }
                event = NewEvent(state.value, repo.RESOLVED, note=REASON_CLEARED)
                stored = self._write_entry(tx, fp, entry, now, values, event)
                if stored is not None:
                    notify = not self._silenced(tx, entry, now)
                    out.append(Transition(_alert(stored, now), state, AlertState.RESOLVED, notify))
            elif clear_since is None:
                self._write_entry(tx, fp, entry, now, {"clear_since": now})
        elif clear_since is not None:  # in the hysteresis band: the clear streak is broken
            self._write_entry(tx, fp, entry, now, {"clear_since": None})

    def _due(self, entry: _Entry, now: float) -> bool:
        return entry.dirty and now - entry.written_at >= self._value_write_interval

    def _write_entry(
        self,
        tx: _Tx,
        fp: str,
        entry: _Entry,
        now: float,
        values: dict[str, Any],
        event: NewEvent | None = None,
    ) -> StoredAlert | None:
        """Write the entry's merged fields plus ``values``; install the result (None on a conflict)."""
        stored = repo.update_alert(
            tx.session,
            alert_id=entry.stored.id,
            values={**entry.merged_values(), **values},
            at=now,
            version=entry.stored.version,
            event=event,
        )
        tx.originals.setdefault(fp, entry)
        if stored is None:
            # Someone else (another process, the API of another replica) changed it: take theirs.
            current = repo.get_open_alert(tx.session, fingerprint=fp)
            log.warning(
                "alert %d (%s) was changed by another writer; reloaded (now %s)",
                entry.stored.id,
                fp,
                current.state if current else "closed",
            )
            self._install(fp, current, now)
            return None
        self._install(fp, stored, now)
        return stored

    def _install(self, fp: str, stored: StoredAlert | None, now: float) -> None:
        if stored is None or stored.state not in repo.OPEN_STATES:
            self._open.pop(fp, None)
        else:
            self._open[fp] = _Entry.of(stored, now)

    def _undo(self, tx: _Tx) -> None:
        for fp, original in tx.originals.items():
            if original is None:
                self._open.pop(fp, None)
            else:
                self._open[fp] = original

    # -- silences ---------------------------------------------------------------------------------

    def _silenced(self, tx: _Tx, entry: _Entry, now: float) -> bool:
        s = entry.stored
        for silence in self._silences_at(tx.session, now):
            if silence.matches(room=s.room, protection=s.protection, device=s.device, at=now):
                return True
        return False

    def _silences_at(self, session: Session, now: float) -> list[Silence]:
        # Silences added through this book take effect at once; those added by another process within
        # silence_refresh seconds (of the observed time).
        stale = abs(now - self._silences_loaded_at) >= self._silence_refresh
        if self._silences is None or stale:
            self._silences = repo.list_silences(session, ending_after=now)
            self._silences_loaded_at = now
        return self._silences

    def is_silenced(self, *, room: str, protection: str, device: str | None, at: float | None = None) -> bool:
        """Whether an alert of this room, protection and device would be silenced at ``at`` (default now)."""
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
    ) -> Silence:
        """Create a silence from ``starts_at`` (default now; later = a maintenance window) to ``ends_at``."""
        at = self._clock.now() if now is None else now
        with self._lock, self._write.begin() as session:
            silence = repo.add_silence(
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
            self._silences = None
        return silence

    def list_silences(self, *, active: bool = False, now: float | None = None) -> list[Silence]:
        """Every silence, or only those active now (``active=True``)."""
        at = self._clock.now() if now is None else now
        with self._read() as session:
            return repo.list_silences(session, active_at=at if active else None)

    def delete_silence(self, silence_id: int) -> None:
        """Delete a silence; SilenceNotFound when there is none with that id."""
        with self._lock, self._write.begin() as session:
            if not repo.delete_silence(session, silence_id=silence_id):
                raise SilenceNotFound(silence_id)
            self._silences = None

    # -- people's actions -------------------------------------------------------------------------

    def acknowledge(self, alert_id: int, *, by: str, comment: str, now: float) -> Alert:
        """A named person takes charge of a firing alert."""
        if not by.strip():
            raise ValueError(f"alert {alert_id}: acknowledging needs the person's name (by)")
        values = {
            "state": repo.ACKNOWLEDGED,
            "acknowledged_at": now,
            "acknowledged_by": by,
            "comment": comment,
        }
        event = NewEvent(repo.FIRING, repo.ACKNOWLEDGED, actor=by, note=comment)
        return self._by_hand(alert_id, "acknowledge", (repo.FIRING,), values, event, now)

    def resolve(self, alert_id: int, *, by: str, reason: str, now: float) -> Alert:
        """A named person resolves a firing or acknowledged alert, with a reason."""
        if not by.strip():
            raise ValueError(f"alert {alert_id}: resolving needs the person's name (by)")
        if not reason.strip():
            raise ValueError(f"alert {alert_id}: resolving by hand needs a reason")
        values = {"state": repo.RESOLVED, "resolved_at": now, "resolved_by": by, "resolve_reason": reason}
        # from_state is filled in below: firing or acknowledged.
        event = NewEvent(None, repo.RESOLVED, actor=by, note=reason)
        return self._by_hand(alert_id, "resolve", (repo.FIRING, repo.ACKNOWLEDGED), values, event, now)

    def _by_hand(
        self,
        alert_id: int,
        action: str,
        allowed: tuple[str, ...],
        values: dict[str, Any],
        event: NewEvent,
        now: float,
    ) -> Alert:
        with self._lock, self._write.begin() as session:
            current = repo.get_alert(session, alert_id=alert_id)
            if current is None:
                raise AlertNotFound(alert_id)
            if current.state not in allowed:
                raise InvalidTransition(alert_id, current.state, action, allowed)
            entry = self._open.get(current.fingerprint)
            merged = entry.merged_values() if entry is not None and entry.stored.id == alert_id else {}
            stored = repo.update_alert(
                session,
                alert_id=alert_id,
                values={**merged, **values},
                at=now,
                states=allowed,
                event=NewEvent(current.state, event.to_state, event.actor, event.note),
            )
            if stored is None:  # changed between the read and the update (another process)
                latest = repo.get_alert(session, alert_id=alert_id)
                raise InvalidTransition(alert_id, latest.state if latest else "gone", action, allowed)
        # Committed: now memory may follow.
        self._install(stored.fingerprint, stored, now)
        alert = _alert(stored, now)
        log.info(
            "alert %d (%s): %s → %s by %s",
            alert_id,
            stored.fingerprint,
            current.state,
            stored.state,
            event.actor,
        )
        return alert

    # -- reading ----------------------------------------------------------------------------------

    def open_alerts(self) -> list[Alert]:
        """Every open alert (pending, firing, acknowledged), oldest first, from memory."""
        with self._lock:
            if not self._loaded:
                self.load()
            now = self._clock.now()
            entries = sorted(self._open.values(), key=lambda e: (e.stored.started_at, e.stored.id))
            return [e.alert(now) for e in entries]

    def get(self, alert_id: int) -> Alert:
        """One alert by id; AlertNotFound when there is none."""
        with self._read() as session:
            stored = repo.get_alert(session, alert_id=alert_id)
        if stored is None:
            raise AlertNotFound(alert_id)
        return self._fresh(stored, self._clock.now())

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
        ``since`` keeps the alerts open at some moment at or after it.
        """
        states: tuple[str, ...]
        if state is None:
            states = (*repo.OPEN_STATES, repo.RESOLVED)
        elif state == ACTIVE:
            states = repo.OPEN_STATES
        elif state in repo.STATES:
            states = (state,)
        else:
            raise ValueError(f"alert state {state!r}: expected active, {', '.join(repo.STATES)}")
        with self._read() as session:
            rows = repo.find_alerts(
                session, states=states, room=room, protection=protection, since=since, limit=limit
            )
        now = self._clock.now()
        return [self._fresh(r, now) for r in rows]

    def history(self, alert_id: int) -> list[AlertEvent]:
        """An alert's transitions, oldest first; AlertNotFound when there is no such alert."""
        with self._read() as session:
            if repo.get_alert(session, alert_id=alert_id) is None:
                raise AlertNotFound(alert_id)
            return repo.alert_events(session, alert_id=alert_id)

    def _fresh(self, stored: StoredAlert, now: float) -> Alert:
        """The stored alert, or its in-memory version when it is open here (newer value and message)."""
        with self._lock:
            entry = self._open.get(stored.fingerprint)
            if entry is not None and entry.stored.id == stored.id and entry.stored.version >= stored.version:
                return entry.alert(now)
        return _alert(stored, now)

    @staticmethod
    def _log(t: Transition) -> None:
        a = t.alert
        if t.to_state is AlertState.PENDING:
            log.debug("alert %d (%s): opened pending: %s", a.id, a.fingerprint, a.message)
            return
        log.info(
            "alert %d (%s): %s → %s (%s%s): %s",
            a.id,
            a.fingerprint,
            t.from_state or "new",
            t.to_state,
            a.severity,
            "" if t.notify else ", not notified",
            t.note or a.message,
        )
