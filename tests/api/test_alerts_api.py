"""Protections, alerts, silences and climate over HTTP, with the real engine, book and stores."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from core.clock import ManualClock
from core.types import Reading
from rules.engine import RulesEngine
from store.ingest import Pipeline
from tests.rules.test_engine import CONFIG, MONDAY_10H
from tests.support import build, opened


@dataclass
class Stack:
    http: httpx.AsyncClient
    pipeline: Pipeline
    rules: RulesEngine
    clock: ManualClock


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    clock = ManualClock(MONDAY_10H)
    async with opened(build(CONFIG, tmp_path, clock=clock)) as services:
        app = create_app(services)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://bafang"
        ) as http:
            yield Stack(http, services.pipeline, services.rules, clock)


async def test_smoke_alert_through_the_pipeline_ack_and_resolve(stack: Stack) -> None:
    http, clock = stack.http, stack.clock
    stack.pipeline.submit([Reading("di-1", "r1", "smoke", 1.0, "", clock.now())])
    await stack.pipeline.flush()  # the rules see it once stored
    states = {
        p["protection"]: p for p in (await http.get("/api/v1/protections", params={"room": "r1"})).json()
    }
    assert states["fire"]["state"] == "alarm" and states["fire"]["name_zh"] == "防火"
    assert "烟" in states["fire"]["reason"]
    (alert,) = (await http.get("/api/v1/alerts", params={"state": "active", "protection": "fire"})).json()
    assert (alert["severity"], alert["state"], alert["room"], alert["device"]) == (
        "critical",
        "firing",
        "r1",
        "di-1",
    )

    clock.advance(60)
    acked = await http.post(f"/api/v1/alerts/{alert['id']}/ack", json={"by": "张三", "comment": "已到现场"})
    assert acked.status_code == 200
    assert acked.json()["acknowledged_by"] == "张三" and acked.json()["state"] == "acknowledged"
    again = await http.post(f"/api/v1/alerts/{alert['id']}/ack", json={"by": "李四"})
    assert again.status_code == 409 and "acknowledged" in again.json()["detail"]

    resolved = await http.post(
        f"/api/v1/alerts/{alert['id']}/resolve", json={"by": "张三", "reason": "误报，探头积尘"}
    )
    assert resolved.status_code == 200 and resolved.json()["resolve_reason"] == "误报，探头积尘"
    assert (await http.post("/api/v1/alerts/999/ack", json={"by": "x"})).status_code == 404
    assert (await http.post(f"/api/v1/alerts/{alert['id']}/resolve", json={"by": "x"})).status_code == 422


async def test_silences_crud(stack: Stack) -> None:
    http = stack.http
    made = await http.post(
        "/api/v1/silences",
        json={
            "room": "r1",
            "protection": "damp",
            "ends_at": "2026-01-05T04:00:00Z",
            "reason": "除湿机检修",
            "created_by": "王工",
        },
    )
    assert made.status_code == 201, made.text
    silence = made.json()
    assert silence["starts_at"] == "2026-01-05T02:00:00Z"
    assert [s["id"] for s in (await http.get("/api/v1/silences", params={"active": True})).json()] == [
        silence["id"]
    ]
    bad = await http.post(
        "/api/v1/silences", json={"ends_at": "2026-01-05T04:00:00Z", "reason": "x", "created_by": "y"}
    )
    assert bad.status_code == 422
    assert (await http.delete(f"/api/v1/silences/{silence['id']}")).status_code == 204
    assert (await http.delete(f"/api/v1/silences/{silence['id']}")).status_code == 404
    assert (await http.get("/api/v1/silences")).json() == []


async def test_climate(stack: Stack) -> None:
    http, clock = stack.http, stack.clock
    stack.pipeline.submit(
        [
            Reading("th-1", "r1", "humidity", 50.0, "%RH", clock.now()),
            Reading("th-1", "r1", "temperature", 20.0, "°C", clock.now()),
        ]
    )
    await stack.pipeline.flush()
    body = (await http.get("/api/v1/climate", params={"room": "r1"})).json()
    assert body["dew_point"] == pytest.approx(9.26, abs=0.01)
    assert round(body["preservation_index"]) == 44 and body["pi_rating"] == "risk"
    assert body["emc"] == pytest.approx(9.27, abs=0.01)
    assert body["temperature_24h"] == {"min": 20.0, "max": 20.0}
    assert (await http.get("/api/v1/climate", params={"room": "nope"})).status_code == 404
