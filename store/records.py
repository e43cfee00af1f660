"""Records: rooms, devices and rejection counters as SQLAlchemy 2 models, and their repository.

The schema is created and changed only by the Alembic migrations in ``store/migrations``; these
models mirror it (``alembic revision --autogenerate`` compares against ``Base.metadata``).

Devices that disappear from devices.yaml are not deleted: ``sync_config`` stamps ``removed_at`` on
them (and on rooms no longer configured), so the alerts and history attached to a device keep their
reference. A device that comes back is revived with its counters.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, NamedTuple

from sqlalchemy import (
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    MetaData,
    String,
    Text,
    TypeDecorator,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from core.config import Room


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC (timestamptz on PostgreSQL) and always read back tz-aware in UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: give a timezone-aware time")
        value = value.astimezone(UTC)
        # SQLite has no time zone type: store the UTC wall time, read it back as UTC.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Named constraints, so later migrations (and SQLite batch mode) can refer to them.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base of every record (rooms, devices, rejection counters; alerts, their events and silences)."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime()}


class RoomRecord(Base):
    """An archive room (库房)."""

    __tablename__ = "rooms"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    removed_at: Mapped[datetime | None]


class DeviceRecord(Base):
    """An installed device and what the collectors last knew of it."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    room_id: Mapped[str] = mapped_column(String(64), ForeignKey("rooms.id"), index=True)
    name: Mapped[str | None] = mapped_column(String(200))
    protocol: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="unknown")
    last_seen: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    status_since: Mapped[datetime | None]
    updated_at: Mapped[datetime]
    removed_at: Mapped[datetime | None]


class RejectionRecord(Base):
    """How many values of a device were rejected for one reason, and the last one."""

    __tablename__ = "rejections"

    device_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    reason: Mapped[str] = mapped_column(String(32), primary_key=True)
    count: Mapped[int] = mapped_column(BigInteger)
    last_detail: Mapped[str | None] = mapped_column(Text)
    last_at: Mapped[datetime | None]


# ---------------------------------------------------------------------------------------------
# Values the repository takes and returns


class DeviceSpec(NamedTuple):
    """A configured device as sync_config needs it: (id, room, name, protocol)."""

    id: str
    room: str
    name: str | None
    protocol: str


@dataclass(frozen=True, slots=True)
class LastRejection:
    """The most recent rejected value for one reason."""

    detail: str | None
    time: float | None


@dataclass(slots=True)
class DeviceState:
    """A device's status and rejection counters, as saved and restored across restarts."""

    id: str
    room: str
    protocol: str
    status: str = "unknown"
    last_seen: float | None = None
    last_error: str | None = None
    status_since: float | None = None
    rejected: dict[str, int] = field(default_factory=dict)  # reason → count since the device was added
    last_rejection: dict[str, LastRejection] = field(default_factory=dict)  # reason → the last one


def to_datetime(epoch: float | None) -> datetime | None:
    """Epoch seconds → tz-aware UTC datetime."""
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC)


def to_epoch(value: datetime | None) -> float | None:
    """Tz-aware (or UTC-naive) datetime → epoch seconds."""
    if value is None:
        return None
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()


# ---------------------------------------------------------------------------------------------
# Repository


def _upsert(
    session: Session,
    model: type[Base],
    rows: list[dict[str, Any]],
    keys: Sequence[str],
    columns: Sequence[str],
) -> None:
    """INSERT ... ON CONFLICT (keys) DO UPDATE SET columns = excluded, on SQLite or PostgreSQL."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        pg = postgresql.insert(model)
        session.execute(
            pg.on_conflict_do_update(index_elements=keys, set_={c: pg.excluded[c] for c in columns}), rows
        )
    elif dialect == "sqlite":
        lite = sqlite.insert(model)
        session.execute(
            lite.on_conflict_do_update(index_elements=keys, set_={c: lite.excluded[c] for c in columns}), rows
        )
    else:
        raise NotImplementedError(f"records: database {dialect!r} is not supported (SQLite or PostgreSQL)")


def sync_config(
    session: Session,
    *,
    rooms: Sequence[Room],
    devices: Sequence[tuple[str, str, str | None, str]],
    now: float | None = None,
) -> None:
    """Upsert the configured rooms and devices; stamp removed_at on those no longer configured."""
    at = to_datetime(time.time() if now is None else now)
    _upsert(
        session,
        RoomRecord,
        [{"id": r.id, "name": r.name, "kind": r.kind, "removed_at": None} for r in rooms],
        ["id"],
        ["name", "kind", "removed_at"],
    )
    specs = [DeviceSpec(*d) for d in devices]
    _upsert(
        session,
        DeviceRecord,
        [
            {
                "id": d.id,
                "room_id": d.room,
                "name": d.name,
                "protocol": d.protocol,
                "status": "unknown",
                "updated_at": at,
                "removed_at": None,
            }
            for d in specs
        ],
        ["id"],
        ["room_id", "name", "protocol", "updated_at", "removed_at"],
    )
    device_ids = [d.id for d in specs]
    room_ids = [r.id for r in rooms]
    session.execute(
        update(DeviceRecord)
        .where(DeviceRecord.id.not_in(device_ids), DeviceRecord.removed_at.is_(None))
        .values(removed_at=at, updated_at=at)
    )
    session.execute(
        update(RoomRecord)
        .where(RoomRecord.id.not_in(room_ids), RoomRecord.removed_at.is_(None))
        .values(removed_at=at)
    )
    session.flush()


def save_device_states(session: Session, *, states: Sequence[DeviceState], now: float | None = None) -> None:
    """Upsert each device's status and set its rejection counters to the given totals.

    The device must exist (sync_config first): its room, name and protocol come from the configuration
    and are not changed here. Reasons absent from ``rejected`` keep their stored counts.
    """
    at = to_datetime(time.time() if now is None else now)
    _upsert(
        session,
        DeviceRecord,
        [
            {
                "id": s.id,
                "room_id": s.room,
                "protocol": s.protocol,
                "status": s.status,
                "last_seen": to_datetime(s.last_seen),
                "last_error": s.last_error,
                "status_since": to_datetime(s.status_since),
                "updated_at": at,
                "removed_at": None,
            }
            for s in states
        ],
        ["id"],
        # A device that reports is not removed (one heard on a wildcard topic has no config entry).
        ["status", "last_seen", "last_error", "status_since", "updated_at", "removed_at"],
    )
    rows: list[dict[str, Any]] = []
    for s in states:
        for reason, count in s.rejected.items():
            last = s.last_rejection.get(reason, LastRejection(None, None))
            rows.append(
                {
                    "device_id": s.id,
                    "reason": reason,
                    "count": count,
                    "last_detail": last.detail,
                    "last_at": to_datetime(last.time),
                }
            )
    _upsert(session, RejectionRecord, rows, ["device_id", "reason"], ["count", "last_detail", "last_at"])
    session.flush()


def load_device_states(session: Session, *, include_removed: bool = False) -> list[DeviceState]:
    """Every configured device's saved status and rejection counters, ordered by id."""
    query = select(DeviceRecord).order_by(DeviceRecord.id)
    if not include_removed:
        query = query.where(DeviceRecord.removed_at.is_(None))
    states: dict[str, DeviceState] = {}
    for d in session.scalars(query):
        states[d.id] = DeviceState(
            id=d.id,
            room=d.room_id,
            protocol=d.protocol,
            status=d.status,
            last_seen=to_epoch(d.last_seen),
            last_error=d.last_error,
            status_since=to_epoch(d.status_since),
        )
    if states:
        rejections = select(RejectionRecord).order_by(RejectionRecord.device_id, RejectionRecord.reason)
        for r in session.scalars(rejections):
            state = states.get(r.device_id)
            if state is not None:
                state.rejected[r.reason] = r.count
                state.last_rejection[r.reason] = LastRejection(r.last_detail, to_epoch(r.last_at))
    return list(states.values())
