"""The rules engine over real protections and a real alert book (SQLite), time from a ManualClock.

The graph is built as the service builds it (service/services.py build_services, tests/support.py) and
opened without collectors: the tests hand the engine readings and move the clock themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.clock import ManualClock
from core.config import parse_config
from core.types import Reading
from rules.climate import preservation_index
from rules.engine import RulesEngine, bind_evaluators
from rules.lifecycle import AlertBook
from rules.model import ProtectionState
from tests.support import build, opened

MONDAY_10H = 1_767_578_400.0  # 2026-01-05T02:00Z = Monday 10:00 in Asia/Shanghai

CONFIG = """
site: {timezone: Asia/Shanghai}
rooms:
  - {id: r1, name: 一号库房, kind: paper, access_hours: "Mon-Fri 08:30-17:30"}
devices:
  - id: th-1
    room: r1
    modbus: {host: 127.0.0.1, unit: 1}
    poll: 30s
    points:
      - {metric: humidity, address: 0, scale: 0.1}
      - {metric: temperature, address: 1, type: int16, scale: 0.1}
  - id: di-1
    room: r1
    modbus: {host: 127.0.0.1, unit: 2}
    poll: 5s
    points:
      - {metric: smoke, address: 0, table: discrete}
  - id: door-1
    room: r1
    mqtt: {topic: a/door-1}
    points:
      - {metric: door, path: contact, map: {open: 1, closed: 0}}
"""


@contextlib.asynccontextmanager
async def start(
    tmp_path: Path, clock: ManualClock, config: str = CONFIG
) -> AsyncIterator[tuple[RulesEngine, AlertBook]]:
    """The service graph over the test's folder, opened (a new process each time), collectors off."""
    async with opened(build(config, tmp_path, clock=clock)) as s:
        yield s.rules, s.book


def climate(t: float, rh: float, at: float) -> list[Reading]:
    """One poll of the T/H transmitter, and of the smoke detector (quiet)."""
    return [
        Reading("th-1", "r1", "humidity", rh, "%RH", at),
        Reading("th-1", "r1", "temperature", t, "°C", at),
        Reading("di-1", "r1", "smoke", 0.0, "", at),
    ]


def state_of(rules: RulesEngine, protection: str) -> ProtectionState:
    return next(p.state for p in rules.protections("r1") if p.protection == protection)


def run(rules: RulesEngine, clock: ManualClock, minutes: float, t: float, rh: float) -> list[tuple[str, str]]:
    """Readings every 30 s for `minutes`; the (rule, to_state) transitions on the way."""
    seen = []
    for _ in range(round(minutes * 2)):
        rules.ingest(climate(t, rh, clock.now()))
        seen += [(x.alert.rule, str(x.to_state)) for x in rules.evaluate(clock.now())]
        clock.advance(30)
    return seen


async def test_damp_fires_after_its_hold_rises_to_critical_and_resolves_with_hysteresis(
    tmp_path: Path,
) -> None:
    clock = ManualClock(MONDAY_10H)
    async with start(tmp_path, clock) as (rules, book):
        assert run(rules, clock, 9.5, 20.0, 63.2) == [("humidity_high", "pending")]
        assert state_of(rules, "damp") is ProtectionState.OK  # pending is not yet an alert on the wall
        assert run(rules, clock, 1, 20.0, 63.2) == [("humidity_high", "firing")]
        assert state_of(rules, "damp") is ProtectionState.WARNING
        (alert,) = book.alerts(state="active")
        assert alert.message.startswith("一号库房 湿度 63.2%RH 超过上限 60%，已持续 10 分钟")
        # Worse: critical at 70 %RH, the same alert.
        assert run(rules, clock, 1, 20.0, 71.0) == [("humidity_high", "firing")]
        assert state_of(rules, "damp") is ProtectionState.ALARM
        assert [a.id for a in book.alerts(state="active")] == [alert.id]
        # Between max - 2 and max: the alert neither fires again nor clears (but 71 → 59 %RH within a day
        # is a swing of 12 %RH, beyond the ±5 %RH of JGJ 25-2010 §5.2.3: an alert of its own).
        assert run(rules, clock, 10, 20.0, 59.0) == [("humidity_swing", "firing")]
        assert [a.rule for a in book.alerts(state="active")] == ["humidity_swing", "humidity_high"]
        # Clear below 58 %RH for 5 min: resolved.
        assert ("humidity_high", "resolved") in run(rules, clock, 6, 20.0, 55.0)
        assert [a.rule for a in book.alerts(state="active")] == ["humidity_swing"]


async def test_a_hold_survives_a_restart(tmp_path: Path) -> None:
    clock = ManualClock(MONDAY_10H)
    async with start(tmp_path, clock) as (rules, _):
        run(rules, clock, 8, 20.0, 63.0)  # 8 minutes into the 10-minute hold
    async with start(tmp_path, clock) as (rules, book):  # a new process over the same records
        assert run(rules, clock, 1.5, 20.0, 63.0) == []
        assert run(rules, clock, 1, 20.0, 63.0) == [("humidity_high", "firing")]
        (alert,) = book.alerts(state="active")
        assert alert.started_at == MONDAY_10H


async def test_smoke_is_critical_at_once_and_a_door_open_at_night_is_theft(tmp_path: Path) -> None:
    clock = ManualClock(MONDAY_10H)
    async with start(tmp_path, clock) as (rules, book):
        rules.ingest([Reading("di-1", "r1", "smoke", 1.0, "", clock.now())])
        assert [(x.alert.protection, str(x.to_state)) for x in rules.evaluate(clock.now())] == [
            ("fire", "firing")
        ]
        assert state_of(rules, "fire") is ProtectionState.ALARM
        # The door opens inside access hours: only a hold on "open too long" starts; at 02:00 it is closed.
        rules.ingest([Reading("door-1", "r1", "door", 1.0, "", clock.now())])
        opened = [x for x in rules.evaluate(clock.now()) if x.alert.protection == "theft"]
        assert [(x.alert.rule, str(x.to_state)) for x in opened] == [("door_open_long", "pending")]
        clock.advance(16 * 3600)  # Tuesday 02:00 local
        rules.ingest([Reading("door-1", "r1", "door", 1.0, "", clock.now())])
        theft = [x for x in rules.evaluate(clock.now()) if x.alert.protection == "theft"]
        assert ("door_after_hours", "firing") in [(x.alert.rule, str(x.to_state)) for x in theft]
        assert {a.protection for a in book.alerts(state="active")} >= {"fire", "theft"}


async def test_a_silent_sensor_raises_monitoring_and_its_protections_show_unknown(tmp_path: Path) -> None:
    clock = ManualClock(MONDAY_10H)
    async with start(tmp_path, clock) as (rules, book):
        run(rules, clock, 2, 20.0, 52.0)
        assert state_of(rules, "damp") is ProtectionState.OK
        clock.advance(120)  # no reading for more than 3 poll intervals (90 s)
        transitions = rules.tick()
        assert ("monitoring", "firing") in [(x.alert.protection, str(x.to_state)) for x in transitions]
        assert state_of(rules, "damp") is ProtectionState.UNKNOWN  # never the last value as current
        assert any(a.protection == "monitoring" and a.device == "th-1" for a in book.alerts(state="active"))


async def test_derived_climate(tmp_path: Path) -> None:
    clock = ManualClock(MONDAY_10H)
    async with start(tmp_path, clock) as (rules, _):
        run(rules, clock, 1, 20.0, 50.0)
        run(rules, clock, 1, 22.0, 56.0)
        c = rules.climate("r1", clock.now())
        assert c["temperature"] == 22.0 and c["humidity"] == 56.0
        assert c["dew_point"] == pytest.approx(12.84, abs=0.05)
        assert c["temperature_24h"] == (20.0, 22.0) and c["humidity_24h"] == (50.0, 56.0)
        assert c["pi_rating"] == "risk" and c["mold_risk"] == 0.0
        assert c["twpi_30d"] is not None


async def test_climate_accumulators_are_refilled_from_hourly_history(tmp_path: Path) -> None:
    clock = ManualClock(MONDAY_10H)
    async with start(tmp_path, clock) as (rules, _):
        assert rules.climate_sources() == {"r1": "th-1"}
        # Ten days of a damp room (20 °C, 80 %RH: above the 75.6 %RH germination isopleth), hour by hour.
        hours = [(MONDAY_10H - 10 * 86400 + 3600 * i, 20.0, 80.0) for i in range(240)]
        rules.seed_climate("r1", hours)
        c = rules.climate("r1", MONDAY_10H)
        assert c["twpi_30d"] == pytest.approx(preservation_index(20.0, 80.0), rel=1e-6)
        assert c["mold_risk"] is not None and c["mold_risk"] >= 1.0  # 10 days above the isopleth


async def test_batches_are_evaluated_at_once_when_idle_and_coalesced_under_load(tmp_path: Path) -> None:
    clock = ManualClock(MONDAY_10H)
    cfg = parse_config(CONFIG, environ={})

    def slow(evaluate: Any) -> Any:
        def timed(view: Any, now: float) -> Any:
            clock.advance(0.001)  # each evaluation costs a millisecond of the clock
            return evaluate(view, now)

        return timed

    async with start(tmp_path, clock) as (_, book):
        evaluators = {room: [(p, slow(e)) for p, e in ev] for room, ev in bind_evaluators(cfg).items()}
        # A small share: after one evaluation the next batch must wait ~100x its cost.
        rules = RulesEngine(cfg, book, evaluators, clock=clock, eval_share=0.01)
        await rules.on_readings([Reading("di-1", "r1", "smoke", 1.0, "", clock.now())])
        assert [a.protection for a in book.alerts(state="active")] == ["fire"]  # idle: at once
        done = rules.evaluations
        cost = len(evaluators["r1"]) * 0.001
        await rules.on_readings(climate(20.0, 52.0, clock.now())[:2])
        await rules.on_readings(climate(20.1, 52.0, clock.now())[:2])
        assert rules.evaluations == done  # both deferred into one later evaluation
        clock.advance(cost * 98)
        await asyncio.sleep(0.01)
        assert rules.evaluations == done  # not before 99 times the cost has passed
        clock.advance(cost * 2)
        for _ in range(100):
            if rules.evaluations > done:
                break
            await asyncio.sleep(0.01)
        assert rules.evaluations == done + len(evaluators["r1"])  # r1 once, for both batches


TWO_ROOMS = """
site: {timezone: Asia/Shanghai}
rooms:
  - {id: r1, name: 一号库房}
  - {id: r2, name: 二号库房}
devices:
""" + "".join(
    f"""  - id: th-{r}
    room: {r}
    mqtt: {{topic: a/th-{r}}}
    points:
      - {{metric: temperature, path: t}}
      - {{metric: humidity, path: rh}}
  - id: leak-{r}
    room: {r}
    mqtt: {{topic: a/leak-{r}}}
    points:
      - {{metric: water_leak, path: water_leak}}
"""
    for r in ("r1", "r2")
)


async def test_a_contact_changing_state_is_evaluated_at_once_even_while_evaluations_are_deferred(
    tmp_path: Path,
) -> None:
    clock = ManualClock(MONDAY_10H)
    cfg = parse_config(TWO_ROOMS, environ={})

    def slow(evaluate: Any) -> Any:
        def timed(view: Any, now: float) -> Any:
            clock.advance(0.001)
            return evaluate(view, now)

        return timed

    def th(room: str, t: float) -> list[Reading]:
        at = clock.now()
        return [
            Reading(f"th-{room}", room, "temperature", t, "°C", at),
            Reading(f"th-{room}", room, "humidity", 50.0, "%RH", at),
        ]

    def leak(room: str, value: float) -> list[Reading]:
        return [Reading(f"leak-{room}", room, "water_leak", value, "", clock.now())]

    async with start(tmp_path, clock, TWO_ROOMS) as (_, book):
        evaluators = {room: [(p, slow(e)) for p, e in ev] for room, ev in bind_evaluators(cfg).items()}
        per_room = len(evaluators["r1"])
        rules = RulesEngine(cfg, book, evaluators, clock=clock, eval_share=0.01)
        await rules.on_readings(th("r1", 20.0) + th("r2", 20.0) + leak("r1", 0.0) + leak("r2", 0.0))
        done = rules.evaluations
        assert done == 2 * per_room  # idle: at once
        await rules.on_readings(th("r1", 20.1) + th("r2", 20.1))
        assert rules.evaluations == done  # under load: deferred
        await rules.on_readings(leak("r2", 0.0))
        assert rules.evaluations == done  # the same state again is no event: deferred too
        await rules.on_readings(leak("r2", 1.0) + th("r2", 20.2))
        # The leak fires on its own batch; only its room is evaluated, r1 still waits for its turn.
        assert rules.evaluations == done + per_room
        assert [(a.protection, a.room, a.state) for a in book.alerts(state="active")] == [
            ("water", "r2", "firing")
        ]
        clock.advance(10.0)
        for _ in range(100):
            if rules.evaluations > done + per_room:
                break
            await asyncio.sleep(0.01)
        assert rules.evaluations == done + 2 * per_room  # r1 once; r2 was taken with the leak
        await rules.on_readings(leak("r2", 1.0) + leak("r2", 1.0))
        clock.advance(10.0)
        await rules.on_readings(leak("r2", 0.0))  # dry again: a change too, evaluated at once
        assert rules.evaluations == done + 3 * per_room


async def test_a_restart_gives_every_device_its_missed_intervals_before_monitoring_is_lost(
    tmp_path: Path,
) -> None:
    clock = ManualClock(MONDAY_10H)
    async with opened(build(CONFIG, tmp_path, clock=clock)) as s:
        s.pipeline.submit(climate(20.0, 52.0, clock.now()))
        assert await s.pipeline.flush()
        assert [t.alert.protection for t in s.rules.tick()] == []
    clock.advance(3600)  # the service was down for an hour: the stored readings are an hour old
    async with opened(build(CONFIG, tmp_path, clock=clock)) as s:
        # Warm-up evaluated the old readings: no "monitoring lost" for a restart.
        assert s.book.open_alerts() == []
        clock.advance(85)  # th-1 polls every 30 s: three intervals are 90 s since the start
        assert [t.alert.device for t in s.rules.tick() if t.alert.protection == "monitoring"] == ["di-1"]
        clock.advance(10)
        lost = [(t.alert.protection, t.alert.device) for t in s.rules.tick()]
        assert ("monitoring", "th-1") in lost  # silent since the start for three intervals


MISSED = CONFIG.replace(
    "site: {timezone: Asia/Shanghai}",
    "site: {timezone: Asia/Shanghai}\nthresholds: {monitoring: {missed_intervals: 5}}",
)


async def test_missed_intervals_decides_when_monitoring_is_lost(tmp_path: Path) -> None:
    clock = ManualClock(MONDAY_10H)
    async with opened(build(MISSED, tmp_path, clock=clock)) as s:
        s.rules.ingest(climate(20.0, 52.0, clock.now()))
        clock.advance(140)  # more than 3 × 30 s, less than 5 × 30 s
        silent = [t.alert.device for t in s.rules.tick() if t.alert.protection == "monitoring"]
        assert silent == ["di-1"]  # the smoke DI polls every 5 s: 5 intervals are 25 s
        clock.advance(20)
        silent = [t.alert.device for t in s.rules.tick() if t.alert.protection == "monitoring"]
        assert silent == ["th-1"]
