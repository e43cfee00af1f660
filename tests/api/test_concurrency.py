"""The API never touches the rules engine's state off the event loop, however hard it is asked.

A collector thread floods the pipeline with readings while requests for the protections and the
climate (which read the engine's rolling windows) come as fast as they can. The engine's windows are
its own: every batch reaches them (no listener error), every request is answered, and at the end the
windows hold exactly what a quiet engine fed the same readings holds.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from core.clock import ManualClock
from core.types import Reading
from rules.windows import RollingMinMax
from service.services import Services
from tests.rules.test_engine import CONFIG, MONDAY_10H
from tests.support import build, opened

READINGS = 20_000


async def flood(s: Services, readings: list[Reading]) -> tuple[list[int], dict[str, Any]]:
    """Submit the readings from a thread while requesting protections and climate; the statuses and
    the climate at the end."""
    app = create_app(s)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bafang") as http:

        def collect() -> None:
            for i in range(0, len(readings), 2):
                s.pipeline.submit(readings[i : i + 2])

        feeder = threading.Thread(target=collect, name="flood")
        feeder.start()
        statuses: list[int] = []
        while feeder.is_alive() or s.pipeline.pending >= 50:
            for path in ("/api/v1/protections", "/api/v1/climate?room=r1"):
                statuses.append((await http.get(path)).status_code)
            await asyncio.sleep(0)
        feeder.join()
        for _ in range(500):  # the flush task may still be writing the last batch it took
            if s.pipeline.stored == len(readings):
                break
            assert await s.pipeline.flush()
            await asyncio.sleep(0.01)
        climate: dict[str, Any] = (await http.get("/api/v1/climate", params={"room": "r1"})).json()
    return statuses, climate


async def test_requests_during_a_flood_of_readings_leave_the_windows_intact(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock(MONDAY_10H)
    # Jittered polls of the T/H transmitter over the last 30 hours, humidity wandering 45–60 %RH: the
    # 24 h windows keep losing their oldest entries while readings come in, and requests read them.
    start = MONDAY_10H - 30 * 3600
    step = 30 * 3600 / (READINGS // 2)
    readings = [
        Reading("th-1", "r1", metric, value, unit, start + i * step + (i % 7) * 0.003)
        for i in range(READINGS // 2)
        for metric, value, unit in (
            ("humidity", 45.0 + (i * 37 % 150) / 10, "%RH"),
            ("temperature", 18.0 + (i * 11 % 50) / 10, "°C"),
        )
    ]
    # Switch threads as often as the interpreter can, so that any code running off the loop thread
    # interleaves with the loop's inserts (the default 5 ms would hide a race for a long while).
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        async with opened(build(CONFIG, tmp_path, clock=clock, batch_size=50)) as s:
            statuses, climate = await flood(s, readings)
            stored = s.pipeline.stored
    finally:
        sys.setswitchinterval(interval)
    assert len(statuses) > 50, "the requests did not overlap the flood"
    assert set(statuses) == {200}
    assert "listener failed" not in caplog.text
    assert stored == READINGS
    # What a quiet engine's windows hold after the same readings.
    quiet = {"humidity": RollingMinMax(), "temperature": RollingMinMax()}
    for r in readings:
        quiet[r.metric].add(r.time, r.value)
    now = clock.now()
    for metric, window in quiet.items():
        assert climate[f"{metric}_24h"] == {"min": window.min(now), "max": window.max(now)}, metric


def test_every_route_and_dependency_runs_on_the_event_loop(tmp_path: Path) -> None:
    # FastAPI runs a plain function (route or dependency) in its threadpool, off the loop thread that
    # owns the rules engine's and the alert book's state: every one must be a coroutine.
    from fastapi.routing import APIRoute

    from api.routers import alerts, devices, protections, readings

    app = create_app(build(CONFIG, tmp_path, clock=ManualClock(MONDAY_10H)))
    routers = (alerts, devices, protections, readings)
    routes = [r for r in app.routes if isinstance(r, APIRoute)]
    routes += [r for m in routers for r in m.router.routes if isinstance(r, APIRoute)]
    assert len(routes) >= 12
    for route in routes:
        assert asyncio.iscoroutinefunction(route.endpoint), (
            f"{route.path}: {route.endpoint.__name__} is not async"
        )
        for dep in route.dependant.dependencies:
            assert dep.call is not None and asyncio.iscoroutinefunction(dep.call), (
                f"{route.path}: dependency {getattr(dep.call, '__name__', dep.call)} is not async"
            )
