"""The HTTP contract, over the service graph as the service builds it (real pipeline, SQLite stores)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from core.clock import ManualClock
from core.types import DeviceStatus, Reading, Reason, Rejection
from store.ingest import Pipeline
from tests.support import build, opened

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z

CONFIG = """
rooms:
  - {id: r1, name: 一号库房}
devices:
  - id: th-1
    room: r1
    name: 一号库房温湿度
    modbus: {host: 127.0.0.1, unit: 1}
    points:
      - {metric: humidity, address: 0, scale: 0.1}
      - {metric: temperature, address: 1, type: int16, scale: 0.1}
  - id: door-1
    room: r1
    mqtt: {topic: archive/r1/door-1}
    points:
      - {metric: door, path: contact, map: {open: 1, closed: 0}}
"""


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Pipeline, ManualClock]]:
    clock = ManualClock(T0 + 3 * 3600)
    async with opened(build(CONFIG, tmp_path, clock=clock)) as services:
        app = create_app(services)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bafang") as c:
            yield c, services.pipeline, clock


async def test_healthz_and_openapi(client: tuple[httpx.AsyncClient, Pipeline, ManualClock]) -> None:
    c, _, _ = client
    assert (await c.get("/healthz")).status_code == 200
    spec = (await c.get("/openapi.json")).json()
    assert {"/api/v1/devices", "/api/v1/readings/latest", "/api/v1/readings", "/healthz"} <= set(
        spec["paths"]
    )
    assert (await c.get("/docs")).status_code == 200
    page = await c.get("/wall/")
    assert page.status_code == 200 and "档案库房八防监测" in page.text
    assert (await c.get("/api/v1/site")).json() == {"name": "档案室", "timezone": "Asia/Shanghai"}


async def test_devices_report_status_and_rejections(
    client: tuple[httpx.AsyncClient, Pipeline, ManualClock],
) -> None:
    c, pipeline, clock = client
    pipeline.status(
        "th-1", DeviceStatus.FAULTY, "read holding 0×2: exception 2 illegal data address", clock.now()
    )
    pipeline.reject(Rejection("door-1", None, Reason.MALFORMED, "not JSON", clock.now()))
    pipeline.reject(
        Rejection("door-1", "door", Reason.UNMAPPED, "door: 'ajar' is not one of open, closed", clock.now())
    )
    await pipeline.flush()
    body = (await c.get("/api/v1/devices")).json()
    by_id = {d["id"]: d for d in body}
    assert by_id["th-1"] == {
        "id": "th-1",
        "name": "一号库房温湿度",
        "room": "r1",
        "protocol": "modbus-tcp",
        "status": "faulty",
        "status_since": "2026-01-01T03:00:00Z",
        "last_seen": None,
        "last_error": "read holding 0×2: exception 2 illegal data address",
        "rejected": {},
        "last_rejection": None,
    }
    assert by_id["door-1"]["status"] == "unknown"
    assert by_id["door-1"]["rejected"] == {"malformed": 1, "unmapped": 1}


async def test_latest_and_history(client: tuple[httpx.AsyncClient, Pipeline, ManualClock]) -> None:
    c, pipeline, _ = client
    # Three hours of one reading a minute: T rises 0.01 °C per minute.
    pipeline.submit(
        [Reading("th-1", "r1", "temperature", 20.0 + i * 0.01, "°C", T0 + 60 * i) for i in range(180)]
        + [Reading("door-1", "r1", "door", 1.0, "", T0 + 100.0)]
    )
    await pipeline.flush()
    latest = (await c.get("/api/v1/readings/latest")).json()
    assert latest == [
        {
            "device": "door-1",
            "room": "r1",
            "metric": "door",
            "value": 1.0,
            "unit": "",
            "time": "2026-01-01T00:01:40Z",
        },
        {
            "device": "th-1",
            "room": "r1",
            "metric": "temperature",
            "value": pytest.approx(21.79),
            "unit": "°C",
            "time": "2026-01-01T02:59:00Z",
        },
    ]
    assert (await c.get("/api/v1/readings/latest", params={"metric": "door"})).json()[0]["device"] == "door-1"

    raw = (
        await c.get(
            "/api/v1/readings",
            params={
                "device": "th-1",
                "metric": "temperature",
                "start": "2026-01-01T00:00:00Z",
                "end": "2026-01-01T00:05:00Z",
            },
        )
    ).json()
    assert raw["unit"] == "°C" and raw["step"] is None
    assert [p["count"] for p in raw["points"]] == [1, 1, 1, 1, 1]
    # A time without an offset is the site's local time (Asia/Shanghai here), as in MQTT payloads.
    local = (
        await c.get(
            "/api/v1/readings",
            params={
                "device": "th-1",
                "metric": "temperature",
                "start": "2026-01-01T08:00:00",
                "end": "2026-01-01T08:05:00",
            },
        )
    ).json()
    assert local["points"] == raw["points"] and local["start"] == "2026-01-01T00:00:00Z"
    assert raw["points"][2]["time"] == "2026-01-01T00:02:00Z" and raw["points"][2]["value"] == pytest.approx(
        20.02
    )

    hourly = (
        await c.get(
            "/api/v1/readings",
            params={
                "device": "th-1",
                "metric": "temperature",
                "start": "2026-01-01T00:00:00Z",
                "end": "2026-01-01T03:00:00Z",
                "step": "1h",
            },
        )
    ).json()
    assert [p["count"] for p in hourly["points"]] == [60, 60, 60]
    first = hourly["points"][0]
    assert (first["min"], first["max"]) == (pytest.approx(20.0), pytest.approx(20.59))
    assert first["value"] == pytest.approx(20.295)
    assert datetime.fromisoformat(hourly["end"]).timestamp() == T0 + 3 * 3600

    # Default window: the last 24 h up to now.
    default = (
        await c.get("/api/v1/readings", params={"device": "th-1", "metric": "temperature", "step": "30m"})
    ).json()
    assert sum(p["count"] for p in default["points"]) == 180


@pytest.mark.parametrize(
    ("params", "status", "detail"),
    [
        ({"device": "nope", "metric": "temperature"}, 404, "unknown device 'nope'"),
        ({"device": "th-1", "metric": "temperature", "step": "soon"}, 422, "step: 'soon' is not a duration"),
        (
            {"device": "th-1", "metric": "temperature", "step": "1s", "start": "2025-01-01T00:00:00Z"},
            422,
            "step too small",
        ),
        (
            {
                "device": "th-1",
                "metric": "temperature",
                "start": "2026-01-02T00:00:00Z",
                "end": "2026-01-01T00:00:00Z",
            },
            422,
            "start must be before end",
        ),
    ],
)
async def test_history_errors_are_clear(
    client: tuple[httpx.AsyncClient, Pipeline, ManualClock], params: dict[str, str], status: int, detail: str
) -> None:
    c, _, _ = client
    response = await c.get("/api/v1/readings", params=params)
    assert response.status_code == status
    assert detail in response.json()["detail"]
