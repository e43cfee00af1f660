"""Readings: the latest of every series, and history raw or aggregated."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.deps import ClockDep, ConfigDep, PipelineDep, ReadingsDep, site_epoch
from api.schemas import HistoryPublic, PointPublic, ReadingPublic, iso
from core.config import Config, parse_duration
from core.metrics import METRICS

router = APIRouter(prefix="/api/v1/readings", tags=["readings"])

MAX_POINTS = 10_000


@router.get("/latest", response_model=list[ReadingPublic])
async def latest(
    readings: ReadingsDep, room: str | None = None, device: str | None = None, metric: str | None = None
) -> list[ReadingPublic]:
    """The newest reading of every (device, metric), optionally filtered."""
    out = [
        ReadingPublic(
            device=r.device, room=r.room, metric=r.metric, value=r.value, unit=r.unit, time=iso(r.time)
        )
        for r in await readings.latest()
        if (room is None or r.room == room)
        and (device is None or r.device == device)
        and (metric is None or r.metric == metric)
    ]
    out.sort(key=lambda r: (r.room, r.device, r.metric))
    return out


def _unit(config: Config, device: str, metric: str) -> str:
    for d in config.devices:
        if d.id == device:
            for p in d.points:
                if p.metric == metric:
                    return p.resolved_unit
    known = METRICS.get(metric)
    return known.unit if known else ""


@router.get("", response_model=HistoryPublic)
async def history(
    config: ConfigDep,
    clock: ClockDep,
    pipeline: PipelineDep,
    readings: ReadingsDep,
    device: str,
    metric: str,
    start: Annotated[
        datetime | None,
        Query(description="ISO 8601 (without an offset: the site's time); default end − 24 h"),
    ] = None,
    end: Annotated[
        datetime | None, Query(description="ISO 8601 (without an offset: the site's time); default now")
    ] = None,
    step: Annotated[str | None, Query(description="aggregation step (60s, 5m, 1h, 1d); omit for raw")] = None,
) -> HistoryPublic:
    """History of one series, raw or aggregated per step (min / mean / max / count)."""
    known = {d.id for d in config.devices} | {h.id for h in pipeline.devices()}
    if device not in known:
        raise HTTPException(404, f"unknown device {device!r}")
    t_end = site_epoch(end, config) if end is not None else clock.now()
    t_start = site_epoch(start, config) if start is not None else t_end - 86400.0
    if t_start >= t_end:
        raise HTTPException(422, "start must be before end")
    step_s: float | None = None
    if step is not None:
        try:
            step_s = parse_duration(step)
        except ValueError as exc:
            raise HTTPException(422, f"step: {exc}") from None
        if (t_end - t_start) / step_s > MAX_POINTS:
            raise HTTPException(422, f"step too small: more than {MAX_POINTS} points; use a larger step")
    points = await readings.history(
        device=device, metric=metric, start=t_start, end=t_end, step=step_s, limit=MAX_POINTS
    )
    unit = _unit(config, device, metric)
    return HistoryPublic(
        device=device,
        metric=metric,
        unit=unit,
        start=iso(t_start),
        end=iso(t_end),
        step=step_s,
        points=[
            PointPublic(time=iso(p.time), value=p.mean, min=p.min, max=p.max, count=p.count) for p in points
        ],
    )
