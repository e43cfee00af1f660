"""Alerts (list, acknowledge, resolve by hand) and silences / maintenance windows.

The public shapes are read straight off the one alert shape (store/alerts.py ``Alert``) and ``Silence``
(``from_attributes``; epoch seconds become ISO 8601 times): no hand-written mapping to drift.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from api.deps import BookDep, ClockDep, ConfigDep, site_epoch
from rules.lifecycle import AlertNotFound, InvalidTransition, SilenceNotFound

router = APIRouter(prefix="/api/v1", tags=["alerts"])

StateFilter = Literal["active", "pending", "firing", "acknowledged", "resolved", "cancelled"]


class AlertPublic(BaseModel):
    """One alert."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    protection: str
    rule: str
    room: str
    device: str | None
    severity: str
    state: str
    started_at: datetime
    fired_at: datetime | None
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    comment: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    resolve_reason: str | None
    value: float | None
    threshold: float | None
    message: str = Field(description="e.g. 一号库房 湿度 63.2%RH 超过上限 60%，已持续 12 分钟")


class Acknowledge(BaseModel):
    """Who acknowledges, and what they say."""

    by: Annotated[str, Field(min_length=1, max_length=64)]
    comment: Annotated[str, Field(max_length=1000)] = ""


class Resolve(BaseModel):
    """Who resolves by hand, and why."""

    by: Annotated[str, Field(min_length=1, max_length=64)]
    reason: Annotated[str, Field(min_length=1, max_length=1000)]


class SilenceCreate(BaseModel):
    """A silence (from now) or a maintenance window (starting later); at least one matcher."""

    room: str | None = None
    protection: str | None = None
    device: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime
    reason: Annotated[str, Field(min_length=1, max_length=1000)]
    created_by: Annotated[str, Field(min_length=1, max_length=64)]


class SilencePublic(BaseModel):
    """A silence or maintenance window."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    room: str | None
    protection: str | None
    device: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime


@router.get("/alerts", response_model=list[AlertPublic])
async def list_alerts(
    book: BookDep,
    config: ConfigDep,
    state: Annotated[
        StateFilter | None, Query(description="active = pending, firing or acknowledged")
    ] = None,
    room: str | None = None,
    protection: str | None = None,
    since: Annotated[
        datetime | None, Query(description="ISO 8601 (without an offset: the site's time)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[AlertPublic]:
    """Alerts, newest first."""
    found = await book.alerts_async(
        state=state,
        room=room,
        protection=protection,
        since=site_epoch(since, config) if since else None,
        limit=limit,
    )
    return [AlertPublic.model_validate(a) for a in found]


@router.post("/alerts/{alert_id}/ack", response_model=AlertPublic)
async def acknowledge(book: BookDep, clock: ClockDep, alert_id: int, body: Acknowledge) -> AlertPublic:
    """A named person acknowledges a firing alert, with a comment (answered once it is recorded)."""
    try:
        done = book.acknowledge(alert_id, by=body.by, comment=body.comment, now=clock.now())
        alert = await asyncio.wrap_future(done)
    except AlertNotFound:
        raise HTTPException(404, f"no alert {alert_id}") from None
    except InvalidTransition as exc:
        raise HTTPException(409, str(exc)) from None
    return AlertPublic.model_validate(alert)


@router.post("/alerts/{alert_id}/resolve", response_model=AlertPublic)
async def resolve(book: BookDep, clock: ClockDep, alert_id: int, body: Resolve) -> AlertPublic:
    """A named person resolves a firing or acknowledged alert by hand, with the reason."""
    try:
        done = book.resolve(alert_id, by=body.by, reason=body.reason, now=clock.now())
        alert = await asyncio.wrap_future(done)
    except AlertNotFound:
        raise HTTPException(404, f"no alert {alert_id}") from None
    except InvalidTransition as exc:
        raise HTTPException(409, str(exc)) from None
    return AlertPublic.model_validate(alert)


@router.get("/silences", response_model=list[SilencePublic])
async def list_silences(book: BookDep, clock: ClockDep, active: bool = False) -> list[SilencePublic]:
    """Silences and maintenance windows (only those in force now with active=true)."""
    found = await book.list_silences_async(active=active, now=clock.now())
    return [SilencePublic.model_validate(s) for s in found]


@router.post("/silences", response_model=SilencePublic, status_code=201)
async def create_silence(
    book: BookDep, clock: ClockDep, config: ConfigDep, body: SilenceCreate
) -> SilencePublic:
    """Silence a room, a protection or a device until a time (alerts are still recorded)."""
    if body.room is None and body.protection is None and body.device is None:
        raise HTTPException(422, "a silence needs at least one of room, protection, device")
    now = clock.now()
    starts = site_epoch(body.starts_at, config) if body.starts_at else now
    ends = site_epoch(body.ends_at, config)
    if ends <= starts:
        raise HTTPException(422, "ends_at must be after starts_at (or after now)")
    done = book.add_silence(
        room=body.room,
        protection=body.protection,
        device=body.device,
        starts_at=starts,
        ends_at=ends,
        reason=body.reason,
        created_by=body.created_by,
        now=now,
    )
    try:
        silence = await asyncio.wrap_future(done)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    return SilencePublic.model_validate(silence)


@router.delete("/silences/{silence_id}", status_code=204)
async def delete_silence(book: BookDep, silence_id: int) -> Response:
    """Lift a silence."""
    try:
        await asyncio.wrap_future(book.delete_silence(silence_id))
    except SilenceNotFound:
        raise HTTPException(404, f"no silence {silence_id}") from None
    return Response(status_code=204)
