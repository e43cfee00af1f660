"""The eight protections per room, and the room's derived climate."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query
from pydantic import BaseModel

from api.deps import ClockDep, ConfigDep, RulesDep
from api.schemas import iso_or_none
from core.protections import PROTECTIONS
from rules.model import ProtectionState

router = APIRouter(prefix="/api/v1", tags=["protections"])


class ProtectionPublic(BaseModel):
    """One protection of one room."""

    room: str
    protection: str
    name_zh: str
    name_en: str
    state: ProtectionState
    reason: str | None
    since: datetime | None


class Span(BaseModel):
    """Lowest and highest over the rolling 24 h."""

    min: float | None
    max: float | None


class ClimatePublic(BaseModel):
    """A room's derived climate now; null where the inputs are missing."""

    room: str
    time: datetime | None
    temperature: float | None
    humidity: float | None
    dew_point: float | None
    preservation_index: float | None
    pi_rating: str | None
    twpi_30d: float | None
    emc: float | None
    mold_rh_threshold: float | None
    mold_risk: float | None
    temperature_24h: Span
    humidity_24h: Span


@router.get("/protections", response_model=list[ProtectionPublic])
async def list_protections(
    config: ConfigDep, rules: RulesDep, room: str | None = None
) -> list[ProtectionPublic]:
    """Per room, per protection: ok | warning | alarm | unknown, with the reason and since when."""
    if room is not None and room not in {r.id for r in config.rooms}:
        raise HTTPException(404, f"unknown room {room!r}")
    return [
        ProtectionPublic(
            room=p.room,
            protection=p.protection,
            name_zh=PROTECTIONS[p.protection][0],
            name_en=PROTECTIONS[p.protection][1],
            state=p.state,
            reason=p.reason,
            since=iso_or_none(p.since),
        )
        for p in rules.protections(room)
    ]


@router.get("/climate", response_model=ClimatePublic)
async def climate(
    config: ConfigDep, clock: ClockDep, rules: RulesDep, room: Annotated[str, Query(description="room id")]
) -> ClimatePublic:
    """Dew point, Preservation Index, TWPI (30 d), %EMC, mold risk, 24 h min/max of T and RH."""
    if room not in {r.id for r in config.rooms}:
        raise HTTPException(404, f"unknown room {room!r}")
    c = rules.climate(room, clock.now())
    t24, rh24 = c.pop("temperature_24h"), c.pop("humidity_24h")
    return ClimatePublic(
        **{**c, "time": iso_or_none(c["time"])},
        temperature_24h=Span(min=t24[0], max=t24[1]),
        humidity_24h=Span(min=rh24[0], max=rh24[1]),
    )
