"""Devices and their health."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import ConfigDep, PipelineDep
from api.schemas import DevicePublic, RoomPublic, SitePublic, iso_or_none

router = APIRouter(prefix="/api/v1", tags=["devices"])


@router.get("/devices", response_model=list[DevicePublic])
async def list_devices(
    config: ConfigDep, pipeline: PipelineDep, room: str | None = None
) -> list[DevicePublic]:
    """Every device: status (online | offline | faulty | unknown), last seen, last error, rejections."""
    names = {d.id: d.name for d in config.devices}
    return [
        DevicePublic(
            id=h.id,
            name=names.get(h.id),
            room=h.room,
            protocol=h.protocol,
            status=h.status,
            status_since=iso_or_none(h.status_since),
            last_seen=iso_or_none(h.last_seen),
            last_error=h.last_error,
            rejected=dict(h.rejected),
            last_rejection=h.last_rejection,
        )
        for h in pipeline.devices()
        if room is None or h.room == room
    ]


@router.get("/site", response_model=SitePublic)
async def site(config: ConfigDep) -> SitePublic:
    """The site: its name (shown on the wall) and its time zone."""
    return SitePublic(name=config.site.name, timezone=config.site.timezone)


@router.get("/rooms", response_model=list[RoomPublic])
async def list_rooms(config: ConfigDep) -> list[RoomPublic]:
    """The archive rooms of the site."""
    return [RoomPublic(id=r.id, name=r.name, kind=r.kind) for r in config.rooms]
