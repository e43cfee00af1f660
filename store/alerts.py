"""Alerts, their transitions and silences: SQLAlchemy 2 models and a repository of keyword-only functions.

The lifecycle itself (when an alert fires, clears, is cancelled) lives in rules/lifecycle.py; this module
only stores it, with plain strings for states and severities (store/ does not import rules/).

An alert's identity is its ``fingerprint`` (protection|rule|room|device). At most one alert per fingerprint
is open (pending, firing or acknowledged): a partial unique index enforces it, and ``upsert_open_alert``
opens or merges atomically with ``INSERT ... ON CONFLICT (fingerprint) WHERE state IN (...) DO UPDATE``,
so two observations racing on two connections (or two processes) never open two alerts.

Every write bumps ``version``; ``update_alert`` can require the version (or the states) it expects, so a
writer that worked from a stale copy is told (it gets ``None``) instead of overwriting a newer change.

Ids are reserved in blocks (``reserve_alert_ids``, the ``id_blocks`` table) before anything is written,
so the lifecycle names an alert from the moment it opens even while the database is unreachable, and
several processes never hand out the same id.

Alerts do not reference rooms or devices by foreign key on purpose: an alert is history and must be
recorded even for a room or a site rule the records tables do not (yet) know.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ColumnElement,
    Float,
    ForeignKey,
    Index,
    Integer,
    RowMapping,
    String,
    Table,
    Text,
    and_,
    case,
    delete,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, Session, mapped_column

from store.records import Base, to_datetime, to_epoch

PENDING, FIRING, ACKNOWLEDGED, RESOLVED, CANCELLED = (
    "pending",
    "firing",
    "acknowledged",
    "resolved",
    "cancelled",
)
OPEN_STATES: tuple[str, ...] = (PENDING, FIRING, ACKNOWLEDGED)
STATES: tuple[str, ...] = (*OPEN_STATES, RESOLVED, CANCELLED)
SEVERITY_RANK: dict[str, int] = {"info": 0, "warning": 1, "critical": 2}
SYSTEM = "system"  # the actor of transitions made by the lifecycle itself

_OPEN_SQL = "state IN ('pending', 'firing', 'acknowledged')"
# Autoincrementing ids: SQLite only autoincrements an INTEGER PRIMARY KEY.
_ID = BigInteger().with_variant(Integer(), "sqlite")


class AlertRecord(Base):
    """One alert: from its first detection to its resolution (or cancellation while still pending)."""

    __tablename__ = "alerts"
    __table_args__ = (
        CheckConstraint(
            "state IN ('pending', 'firing', 'acknowledged', 'resolved', 'cancelled')", name="state"
        ),
        CheckConstraint("severity IN ('info', 'warning', 'critical')", name="severity"),
        # At most one open alert per fingerprint; the upsert's conflict target.
        Index(
            "ux_alerts_open_fingerprint",
            "fingerprint",
            unique=True,
            sqlite_where=text(_OPEN_SQL),
            postgresql_where=text(_OPEN_SQL),
        ),
        Index("ix_alerts_state", "state"),
        Index("ix_alerts_room_started_at", "room", "started_at"),
        Index("ix_alerts_started_at", "started_at"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(512))
    protection: Mapped[str] = mapped_column(String(32))
    rule: Mapped[str] = mapped_column(String(128))
    room: Mapped[str] = mapped_column(String(64))
    device: Mapped[str | None] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    started_at: Mapped[datetime]
    fired_at: Mapped[datetime | None]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(200))
    comment: Mapped[str | None] = mapped_column(Text)
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(200))
    resolve_reason: Mapped[str | None] = mapped_column(Text)
    value: Mapped[float | None] = mapped_column(Float)
    threshold: Mapped[float | None] = mapped_column(Float)
    message: Mapped[str] = mapped_column(Text)  # the rule's sentence; the lifecycle adds the duration
    clear_since: Mapped[datetime | None]  # when the clear condition began to hold (clear_hold timer)
    updated_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(Integer)


class AlertEventRecord(Base):
    """One transition of an alert, with its time and who made it ("system" or a person)."""

    __tablename__ = "alert_events"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(_ID, ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime]
    from_state: Mapped[str | None] = mapped_column(String(16))  # None when the alert was opened
    to_state: Mapped[str] = mapped_column(String(16))  # equal to from_state for a severity change
    actor: Mapped[str] = mapped_column(String(200))
    note: Mapped[str | None] = mapped_column(Text)


class SilenceRecord(Base):
    """A silence or maintenance window: matching alerts are recorded but not notified."""

    __tablename__ = "silences"
    __table_args__ = (
        CheckConstraint("ends_at > starts_at", name="window"),
        CheckConstraint("room IS NOT NULL OR protection IS NOT NULL OR device IS NOT NULL", name="matcher"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    room: Mapped[str | None] = mapped_column(String(64))
    protection: Mapped[str | None] = mapped_column(String(32))
    device: Mapped[str | None] = mapped_column(String(64))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime] = mapped_column(index=True)
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime]


class IdBlockRecord(Base):
    """The next free id of a table whose ids a process reserves in blocks before it writes (alerts)."""

    __tablename__ = "id_blocks"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    next_id: Mapped[int] = mapped_column(BigInteger)


# ---------------------------------------------------------------------------------------------
# Values the repository takes and returns (times are epoch seconds)


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert: the stored row, and the shape every layer uses (the lifecycle and the API).

    Times are epoch seconds. ``message`` is the rule's sentence; the lifecycle adds how long it has
    lasted when it shows an alert. ``id`` is reserved before the alert is written (reserve_alert_ids),
    so an alert has its id from the moment it opens, whether or not the database answers yet.
    """

    id: int
    fingerprint: str
    protection: str
    rule: str
    room: str
    device: str | None
    severity: str
    state: str
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
    message: str
    clear_since: float | None
    updated_at: float
    version: int

    @property
    def is_open(self) -> bool:
        """Pending, firing or acknowledged."""
        return self.state in OPEN_STATES


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A transition to record with an update; ``at`` is the update's time."""

    from_state: str | None
    to_state: str
    actor: str = SYSTEM
    note: str | None = None


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A recorded transition."""

    id: int
    alert_id: int
    at: float
    from_state: str | None
    to_state: str
    actor: str
    note: str | None


@dataclass(frozen=True, slots=True)
class Silence:
    """A silence or maintenance window; every matcher that is set must equal the alert's."""

    id: int
    room: str | None
    protection: str | None
    device: str | None
    starts_at: float
    ends_at: float
    reason: str
    created_by: str
    created_at: float

    def active(self, at: float) -> bool:
        """Whether the window covers ``at`` (start inclusive, end exclusive)."""
        return self.starts_at <= at < self.ends_at

    def matches(self, *, room: str, protection: str, device: str | None, at: float) -> bool:
        """Whether it silences an alert of this room, protection and device at ``at``."""
        return (
            self.active(at)
            and (self.room is None or self.room == room)
            and (self.protection is None or self.protection == protection)
            and (self.device is None or self.device == device)
        )


# ---------------------------------------------------------------------------------------------
# Repository

_TIME_COLUMNS = frozenset(
    {"started_at", "fired_at", "acknowledged_at", "resolved_at", "clear_since", "updated_at"}
)
_UPDATABLE = frozenset(
    {
        "severity",
        "state",
        "fired_at",
        "acknowledged_at",
        "acknowledged_by",
        "comment",
        "resolved_at",
        "resolved_by",
        "resolve_reason",
        "value",
        "threshold",
        "message",
        "clear_since",
    }
)
_TABLE = cast(Table, AlertRecord.__table__)
_A = _TABLE.c


def _epoch(value: datetime) -> float:
    epoch = to_epoch(value)
    assert epoch is not None
    return epoch


def _alert(row: RowMapping) -> Alert:
    return Alert(
        id=row["id"],
        fingerprint=row["fingerprint"],
        protection=row["protection"],
        rule=row["rule"],
        room=row["room"],
        device=row["device"],
        severity=row["severity"],
        state=row["state"],
        started_at=_epoch(row["started_at"]),
        fired_at=to_epoch(row["fired_at"]),
        acknowledged_at=to_epoch(row["acknowledged_at"]),
        acknowledged_by=row["acknowledged_by"],
        comment=row["comment"],
        resolved_at=to_epoch(row["resolved_at"]),
        resolved_by=row["resolved_by"],
        resolve_reason=row["resolve_reason"],
        value=row["value"],
        threshold=row["threshold"],
        message=row["message"],
        clear_since=to_epoch(row["clear_since"]),
        updated_at=_epoch(row["updated_at"]),
        version=row["version"],
    )


def _silence(r: SilenceRecord) -> Silence:
    return Silence(
        id=r.id,
        room=r.room,
        protection=r.protection,
        device=r.device,
        starts_at=_epoch(r.starts_at),
        ends_at=_epoch(r.ends_at),
        reason=r.reason,
        created_by=r.created_by,
        created_at=_epoch(r.created_at),
    )


def _rank(column: ColumnElement[Any]) -> ColumnElement[int]:
    return case(SEVERITY_RANK, value=column, else_=-1)


def _worse(
    new_value: ColumnElement[Any], new_threshold: ColumnElement[Any], old_value: ColumnElement[Any]
) -> ColumnElement[bool]:
    """SQL twin of rules.lifecycle's rule: further past the threshold, in the rule's direction."""
    return or_(
        and_(new_value.is_not(None), old_value.is_(None)),
        and_(new_value.is_not(None), new_threshold.is_(None)),
        and_(new_value >= new_threshold, new_value > old_value),
        and_(new_value < new_threshold, new_value < old_value),
    )


def _add_event(session: Session, *, alert_id: int, at: float, event: NewEvent) -> None:
    session.execute(
        insert(AlertEventRecord),
        [
            {
                "alert_id": alert_id,
                "at": to_datetime(at),
                "from_state": event.from_state,
                "to_state": event.to_state,
                "actor": event.actor,
                "note": event.note,
            }
        ],
    )


def upsert_open_alert(
    session: Session, *, alert: Alert, at: float, actor: str = SYSTEM, note: str | None = None
) -> tuple[Alert, bool]:
    """Open an alert (with its reserved id), or merge into the open one of the same fingerprint.

    Returns the stored alert and True when it was opened. Atomic on both databases (INSERT ... ON
    CONFLICT on the partial unique index). A merge keeps the earliest start, the worst value (with its
    threshold), the higher severity and the open alert's state and id, and takes the latest message.
    Only an opening records an event (None → state).
    """
    if alert.state not in OPEN_STATES:
        raise ValueError(f"alert {alert.fingerprint}: cannot open in state {alert.state!r}")
    row = {
        "id": alert.id,
        "fingerprint": alert.fingerprint,
        "protection": alert.protection,
        "rule": alert.rule,
        "room": alert.room,
        "device": alert.device,
        "severity": alert.severity,
        "state": alert.state,
        "started_at": to_datetime(alert.started_at),
        "fired_at": to_datetime(alert.fired_at),
        "value": alert.value,
        "threshold": alert.threshold,
        "message": alert.message,
        "updated_at": to_datetime(at),
        "version": 0,  # a merge sets version + 1 (≥ 1): the returned 0 tells an insert from a merge
    }
    dialect = session.get_bind().dialect.name
    stmt: postgresql.Insert | sqlite.Insert
    if dialect == "postgresql":
        stmt = postgresql.insert(_TABLE)
    elif dialect == "sqlite":
        stmt = sqlite.insert(_TABLE)
    else:
        raise NotImplementedError(f"alerts: database {dialect!r} is not supported (SQLite or PostgreSQL)")
    ex = stmt.excluded
    worse = _worse(ex["value"], ex["threshold"], _A.value)
    stmt = stmt.on_conflict_do_update(
        index_elements=["fingerprint"],
        # A literal predicate, identical to the index's: PostgreSQL must prove it implies the index's.
        index_where=text(_OPEN_SQL),
        set_={
            "started_at": case((ex["started_at"] < _A.started_at, ex["started_at"]), else_=_A.started_at),
            "value": case((worse, ex["value"]), else_=_A.value),
            "threshold": case((worse, ex["threshold"]), else_=_A.threshold),
            "severity": case((_rank(ex["severity"]) > _rank(_A.severity), ex["severity"]), else_=_A.severity),
            "message": ex["message"],
            "updated_at": ex["updated_at"],
            "version": _A.version + 1,
        },
    )
    result = session.execute(stmt.values(row).returning(*_A)).mappings().one()
    stored = _alert(result)
    created = stored.version == 0
    if created:
        _add_event(session, alert_id=stored.id, at=at, event=NewEvent(None, stored.state, actor, note))
    return stored, created


def update_alert(
    session: Session,
    *,
    alert_id: int,
    values: Mapping[str, Any],
    at: float,
    version: int | None = None,
    states: Collection[str] | None = None,
    event: NewEvent | None = None,
) -> Alert | None:
    """Change an alert (times as epoch seconds) and record ``event``; None when it is not as expected.

    ``version`` and ``states``, when given, must match the stored row, else nothing is written and the
    caller learns that someone else changed the alert first. Only the lifecycle columns may be set.
    """
    unknown = set(values) - _UPDATABLE
    if unknown:
        raise ValueError(f"alert {alert_id}: cannot update {sorted(unknown)}")
    if "state" in values and values["state"] not in STATES:
        raise ValueError(f"alert {alert_id}: unknown state {values['state']!r}")
    changes: dict[str, Any] = {k: (to_datetime(v) if k in _TIME_COLUMNS else v) for k, v in values.items()}
    changes["updated_at"] = to_datetime(at)
    changes["version"] = _A.version + 1
    stmt = update(_TABLE).where(_A.id == alert_id)
    if version is not None:
        stmt = stmt.where(_A.version == version)
    if states is not None:
        stmt = stmt.where(_A.state.in_(list(states)))
    result = session.execute(stmt.values(changes).returning(*_A)).mappings().first()
    if result is None:
        return None
    if event is not None:
        _add_event(session, alert_id=alert_id, at=at, event=event)
    return _alert(result)


def reserve_alert_ids(session: Session, *, count: int) -> range:
    """Reserve ``count`` alert ids for this process (atomic across processes, on SQLite and PostgreSQL)."""
    if count < 1:
        raise ValueError(f"reserve at least one id (got {count})")
    table = cast(Table, IdBlockRecord.__table__)
    stmt = (
        update(table)
        .where(table.c.name == "alerts")
        .values(next_id=table.c.next_id + count)
        .returning(table.c.next_id)
    )
    end = session.execute(stmt).scalar_one()
    return range(end - count, end)


def get_alert(session: Session, *, alert_id: int) -> Alert | None:
    """One alert by id, or None."""
    row = session.execute(select(*_A).where(_A.id == alert_id)).mappings().first()
    return None if row is None else _alert(row)


def get_open_alert(session: Session, *, fingerprint: str) -> Alert | None:
    """The open alert of a fingerprint, or None."""
    query = select(*_A).where(_A.fingerprint == fingerprint, _A.state.in_(OPEN_STATES))
    row = session.execute(query).mappings().first()
    return None if row is None else _alert(row)


def load_open_alerts(session: Session) -> list[Alert]:
    """Every open (pending, firing, acknowledged) alert, oldest first."""
    query = select(*_A).where(_A.state.in_(OPEN_STATES)).order_by(_A.started_at, _A.id)
    return [_alert(r) for r in session.execute(query).mappings()]


def find_alerts(
    session: Session,
    *,
    states: Collection[str] | None = None,
    room: str | None = None,
    protection: str | None = None,
    since: float | None = None,
    limit: int | None = None,
) -> list[Alert]:
    """Alerts, newest start first; ``since`` keeps those open at some moment at or after it."""
    query = select(*_A)
    if states is not None:
        query = query.where(_A.state.in_(list(states)))
    if room is not None:
        query = query.where(_A.room == room)
    if protection is not None:
        query = query.where(_A.protection == protection)
    if since is not None:
        query = query.where(or_(_A.resolved_at.is_(None), _A.resolved_at >= to_datetime(since)))
    query = query.order_by(_A.started_at.desc(), _A.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return [_alert(r) for r in session.execute(query).mappings()]


def alert_events(session: Session, *, alert_id: int) -> list[AlertEvent]:
    """An alert's transitions in the order they happened."""
    query = (
        select(AlertEventRecord)
        .where(AlertEventRecord.alert_id == alert_id)
        .order_by(AlertEventRecord.at, AlertEventRecord.id)
    )
    return [
        AlertEvent(
            id=e.id,
            alert_id=e.alert_id,
            at=_epoch(e.at),
            from_state=e.from_state,
            to_state=e.to_state,
            actor=e.actor,
            note=e.note,
        )
        for e in session.scalars(query)
    ]


def add_silence(
    session: Session,
    *,
    room: str | None = None,
    protection: str | None = None,
    device: str | None = None,
    starts_at: float,
    ends_at: float,
    reason: str,
    created_by: str,
    now: float,
) -> Silence:
    """Create a silence (a maintenance window when it starts later); at least one matcher is required."""
    if room is None and protection is None and device is None:
        raise ValueError(
            "silence: give a room, a protection or a device (a silence of everything is refused)"
        )
    if not ends_at > starts_at:
        raise ValueError(f"silence: ends_at ({ends_at}) must be after starts_at ({starts_at})")
    if not reason.strip():
        raise ValueError("silence: a reason is required")
    if not created_by.strip():
        raise ValueError("silence: created_by is required")
    record = SilenceRecord(
        room=room,
        protection=protection,
        device=device,
        starts_at=to_datetime(starts_at),
        ends_at=to_datetime(ends_at),
        reason=reason,
        created_by=created_by,
        created_at=to_datetime(now),
    )
    session.add(record)
    session.flush()
    return _silence(record)


def list_silences(
    session: Session, *, active_at: float | None = None, ending_after: float | None = None
) -> list[Silence]:
    """Silences by start, then id: all, those active at ``active_at``, or those ending after a time."""
    query = select(SilenceRecord).order_by(SilenceRecord.starts_at, SilenceRecord.id)
    if active_at is not None:
        at = to_datetime(active_at)
        query = query.where(SilenceRecord.starts_at <= at, SilenceRecord.ends_at > at)
    if ending_after is not None:
        query = query.where(SilenceRecord.ends_at > to_datetime(ending_after))
    return [_silence(r) for r in session.scalars(query)]


def delete_silence(session: Session, *, silence_id: int) -> bool:
    """Delete a silence; False when there was none with that id."""
    result = session.execute(
        delete(SilenceRecord).where(SilenceRecord.id == silence_id).returning(SilenceRecord.id)
    )
    return result.first() is not None
