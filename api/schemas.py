"""Public shapes of the API."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, Field

from core.types import DeviceStatus


def iso(t: float) -> datetime:
    """Epoch seconds → aware UTC datetime (serialised as ISO 8601)."""
    return datetime.fromtimestamp(t, UTC)


def iso_or_none(t: float | None) -> datetime | None:
    """Like iso, passing None through."""
    return None if t is None else iso(t)


class Health(BaseModel):
    """GET /healthz."""

    status: str = "ok"
    readings_pending: int
    readings_stored: int
    records_pending: int = Field(description="records (alert transitions, device health) not yet written")
    records_waiting: float | None = Field(description="seconds the records database has kept a write waiting")


class DevicePublic(BaseModel):
    """A device and what Bafang knows of its health."""

    id: str
    name: str | None = None
    room: str
    protocol: str
    status: DeviceStatus
    status_since: datetime | None = None
    last_seen: datetime | None = None
    last_error: str | None = None
    rejected: dict[str, int] = Field(default_factory=dict, description="rejected values by reason")
    last_rejection: str | None = None


class SitePublic(BaseModel):
    """The archive this installation guards."""

    name: str
    timezone: str = Field(description="IANA time zone: access hours, and times given without an offset")


class RoomPublic(BaseModel):
    """An archive room."""

    id: str
    name: str
    kind: str


class ReadingPublic(BaseModel):
    """One reading."""

    device: str
    room: str
    metric: str
    value: float
    unit: str
    time: datetime


class PointPublic(BaseModel):
    """One point of a history: raw (count 1) or aggregated over a step starting at time."""

    time: datetime
    value: float
    min: float
    max: float
    count: int


class HistoryPublic(BaseModel):
    """GET /api/v1/readings."""

    device: str
    metric: str
    unit: str
    start: datetime
    end: datetime
    step: float | None = Field(description="seconds per point; null = raw readings")
    points: list[PointPublic]
