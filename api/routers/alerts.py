"""Alerts (list, acknowledge, resolve by hand) and silences / maintenance windows."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, Response
from pydantic import BaseModel, Field

from api.deps import ContextDep
from api.schemas import iso, iso_or_none
from rules.lifecycle import Alert, AlertBook, AlertNotFound, InvalidTransition, SilenceNotFound
from store.alerts import Silence

router = APIRouter(prefix="/api/v1", tags=["alerts"])

StateFilter = Literal["active", "pending", "firing", "acknowledged", "resolved", "cancelled"]


class AlertPublic(BaseModel):
    """One alert."""

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
    message: str


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

    id: int
    room: str | None
    protection: str | None
    device: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime


def _book(book: AlertBook | None) -> AlertBook:
    if book is None:
        raise HTTPException(503, "the alert lifecycle is not running")
    return book


def _public(a: Alert) -> AlertPublic:
    return AlertPublic(
        id=a.id,
        protection=a.protection,
        rule=a.rule,
        room=a.room,
        device=a.device,
        severity=str(a.severity),
        state=str(a.state),
        started_at=iso(a.started_at),
        fired_at=iso_or_none(a.fired_at),
        acknowledged_at=iso_or_none(a.acknowledged_at),
        acknowledged_by=a.acknowledged_by,
        comment=a.comment,
        resolved_at=iso_or_none(a.resolved_at),
        resolved_by=a.resolved_by,
        resolve_reason=a.resolve_reason,
        value=a.value,
        threshold=a.threshold,
        message=a.message,
    )


def _silence(s: Silence) -> SilencePublic:
    return SilencePublic(
        id=s.id,
        room=s.room,
        protection=s.protection,
        device=s.device,
        starts_at=iso(s.starts_at),
        ends_at=iso(s.ends_at),
        reason=s.reason,
        created_by=s.created_by,
        created_at=iso(s.created_at),
    )


def _epoch(value: datetime) -> float:
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


@router.get("/alerts", response_model=list[AlertPublic])
async def list_alerts(
    ctx: ContextDep,
    state: Annotated[
        StateFilter | None, Query(description="active = pending, firing or acknowledged")
    ] = None,
    room: str | None = None,
    protection: str | None = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[AlertPublic]:
    """Alerts, newest first."""
    book = _book(ctx.alerts)
    found = await asyncio.to_thread(
        book.alerts,
        state=state,
        room=room,
        protection=protection,
        since=_epoch(since) if since else None,
        limit=limit,
    )
    return [_public(a) for a in found]


@router.post("/alerts/{alert_id}/ack", response_model=AlertPublic)
async def acknowledge(ctx: ContextDep, alert_id: int, body: Acknowledge) -> AlertPublic:
    """A named person acknowledges a firing alert, with a comment."""
    book = _book(ctx.alerts)
    try:
        alert = await asyncio.to_thread(
            book.acknowledge, alert_id, by=body.by, comment=body.comment, now=ctx.clock.now()
        )
    except AlertNotFound:
        raise HTTPException(404, f"no alert {alert_id}") from None
    except InvalidTransition as exc:
        raise HTTPException(409, str(exc)) from None
    return _public(alert)


@router.post("/alerts/{alert_id}/resolve", response_model=AlertPublic)
async def resolve(ctx: ContextDep, alert_id: int, body: Resolve) -> AlertPublic:
    """A named person resolves a firing or acknowledged alert by hand, with the reason."""
    book = _book(ctx.alerts)
    try:
        alert = await asyncio.to_thread(
            book.resolve, alert_id, by=body.by, reason=body.reason, now=ctx.clock.now()
        )
    except AlertNotFound:
        raise HTTPException(404, f"no alert {alert_id}") from None
    except InvalidTransition as exc:
        raise HTTPException(409, str(exc)) from None
    return _public(alert)


@router.get("/silences", response_model=list[SilencePublic])
async def list_silences(ctx: ContextDep, active: bool = False) -> list[SilencePublic]:
    """Silences and maintenance windows (only those in force now with active=true)."""
    book = _book(ctx.alerts)
    found = await asyncio.to_thread(book.list_silences, active=active, now=ctx.clock.now())
    return [_silence(s) for s in found]


@router.post("/silences", response_model=SilencePublic, status_code=201)
async def create_silence(ctx: ContextDep, body: SilenceCreate) -> SilencePublic:
    """Silence a room, a protection or a device until a time (alerts are still recorded)."""
    book = _book(ctx.alerts)
    if body.room is None and body.protection is None and body.device is None:
        raise HTTPException(422, "a silence needs at least one of room, protection, device")
    now = ctx.clock.now()
    starts = _epoch(body.starts_at) if body.starts_at else now
    ends = _epoch(body.ends_at)
    if ends <= starts:
        raise HTTPException(422, "ends_at must be after starts_at (or after now)")
    silence = await asyncio.to_thread(
        book.add_silence,
        room=body.room,
        protection=body.protection,
        device=body.device,
        starts_at=starts,
        ends_at=ends,
        reason=body.reason,
        created_by=body.created_by,
        now=now,
    )
    return _silence(silence)


@router.delete("/silences/{silence_id}", status_code=204)
async def delete_silence(ctx: ContextDep, silence_id: int) -> Response:
    """Lift a silence."""
    book = _book(ctx.alerts)
    try:
        await asyncio.to_thread(book.delete_silence, silence_id)
    except SilenceNotFound:
        raise HTTPException(404, f"no silence {silence_id}") from None
    return Response(status_code=204)
