"""Each protection's evaluate, table-driven with hand-built room views and an explicit ``now``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from core.config import Thresholds
from core.protections import PROTECTIONS
from rules.model import Condition, RoomView, SeriesView, Severity
from rules.protections import REGISTRY, evaluate_room, site_rules
from rules.protections import damp as damp_mod

NOW = 1_767_225_600.0  # 2026-01-01 08:00 Asia/Shanghai


def sv(device: str, metric: str, value: float | None, *, stale: bool = False, **kw: Any) -> SeriesView:
    """A series read 10 s ago (or never, when value is None)."""
    return SeriesView(device, metric, value, None if value is None else NOW - 10, stale, **kw)


def room(
    *series: SeriesView, open_now: bool = True, offline: tuple[str, ...] = (), kind: str = "paper"
) -> RoomView:
    by_metric: dict[str, list[SeriesView]] = {}
    for s in series:
        by_metric.setdefault(s.metric, []).append(s)
    return RoomView("r1", "一号库房", kind, open_now, by_metric, frozenset(offline))


def run(protection: str, view: RoomView, overrides: Thresholds | None = None) -> dict[str, Condition]:
    mod = REGISTRY[protection]
    p = mod.params(view.kind, overrides or Thresholds())
    out = mod.evaluate(view, p, NOW)
    assert all(c.protection == protection and c.room == "r1" for c in out)
    by_rule: dict[str, Condition] = {}
    for c in out:
        key = c.rule if c.device is None else f"{c.rule}@{c.device}"
        assert key not in by_rule, f"two conditions for {key}"
        by_rule[key] = c
    return by_rule


@dataclass
class Case:
    """One row: a view, and what some rules should say about it."""

    name: str
    protection: str
    view: RoomView
    expect: dict[str, str]  # "rule@device" → "trigger" | "clear" | "neither" | "unknown" (+ ":critical")
    overrides: Thresholds = field(default_factory=Thresholds)
    message: str | None = None  # expected message of the first expected rule
    hold: float | None = None  # expected hold of the first expected rule


def verdict(c: Condition) -> str:
    if c.unknown:
        v = "unknown"
    elif c.trigger:
        v = "trigger"
    elif c.clear:
        v = "clear"
    else:
        v = "neither"
    if c.severity is Severity.CRITICAL and c.trigger:
        v += ":critical"
    return v


T = Thresholds.model_validate
CASES = [
    # 防潮 damp — JGJ 25-2010 paper 45–60 %RH, hold 10 min, hysteresis 2, critical 70
    Case(
        "rh above max",
        "damp",
        room(sv("th-1", "humidity", 63.2)),
        {"humidity_high@th-1": "trigger", "humidity_low@th-1": "clear"},
        message="一号库房 湿度 63.2%RH 超过上限 60%",
        hold=600.0,
    ),
    Case(
        "rh in hysteresis band", "damp", room(sv("th-1", "humidity", 59.0)), {"humidity_high@th-1": "neither"}
    ),
    Case(
        "rh back below max - 2", "damp", room(sv("th-1", "humidity", 57.9)), {"humidity_high@th-1": "clear"}
    ),
    Case(
        "rh critical at 70",
        "damp",
        room(sv("th-1", "humidity", 70.0)),
        {"humidity_high@th-1": "trigger:critical"},
    ),
    Case(
        "rh below min",
        "damp",
        room(sv("th-1", "humidity", 41.0)),
        {"humidity_low@th-1": "trigger", "humidity_high@th-1": "clear"},
        message="一号库房 湿度 41.0%RH 低于下限 45%",
    ),
    Case(
        "special room is 45–55",
        "damp",
        room(sv("th-1", "humidity", 56.0), kind="special"),
        {"humidity_high@th-1": "trigger"},
    ),
    Case(
        "film master is 35–45",
        "damp",
        room(sv("th-1", "humidity", 42.0), kind="film_master"),
        {"humidity_high@th-1": "clear"},
    ),
    Case(
        "room override max 58 for 15m",
        "damp",
        room(sv("th-1", "humidity", 58.5)),
        {"humidity_high@th-1": "trigger"},
        overrides=T({"humidity": {"max": 58, "for": "15m"}}),
        hold=900.0,
    ),
    Case(
        "24 h swing above 10 %RH",
        "damp",
        room(sv("th-1", "humidity", 52.0, min_24h=44.0, max_24h=56.0)),
        {"humidity_swing@th-1": "trigger", "humidity_low@th-1": "clear"},
        message="一号库房 24小时湿度波动 12.0%RH 超过上限 10%",
    ),
    Case(
        "24 h swing within",
        "damp",
        room(sv("th-1", "humidity", 52.0, min_24h=48.0, max_24h=56.0)),
        {"humidity_swing@th-1": "clear"},
    ),
    Case(
        "stale sensor is unknown",
        "damp",
        room(sv("th-1", "humidity", None, stale=True)),
        {"humidity_high@th-1": "unknown", "no_data": "unknown"},
    ),
    Case(
        "offline device inhibits its thresholds",
        "damp",
        room(sv("th-1", "humidity", 75.0), offline=("th-1",)),
        {"humidity_high@th-1": "unknown", "humidity_low@th-1": "unknown"},
    ),
    Case("no humidity sensor", "damp", room(sv("th-1", "temperature", 20.0)), {"no_data": "unknown"}),
    Case(
        "two sensors judged apart",
        "damp",
        room(sv("th-1", "humidity", 61.0), sv("th-2", "humidity", 50.0, stale=True)),
        {"humidity_high@th-1": "trigger", "humidity_high@th-2": "unknown"},
    ),
    # 防高温 temperature — paper 14–24 °C, 24 h swing ≤ 4 °C
    Case(
        "t above 24",
        "temperature",
        room(sv("th-1", "temperature", 25.3)),
        {"temperature_high@th-1": "trigger"},
        message="一号库房 温度 25.3°C 超过上限 24°C",
    ),
    Case(
        "t in hysteresis",
        "temperature",
        room(sv("th-1", "temperature", 23.5)),
        {"temperature_high@th-1": "neither"},
    ),
    Case(
        "t below 14",
        "temperature",
        room(sv("th-1", "temperature", 12.0)),
        {"temperature_low@th-1": "trigger"},
    ),
    Case(
        "special is 14–20",
        "temperature",
        room(sv("th-1", "temperature", 21.0), kind="special"),
        {"temperature_high@th-1": "trigger"},
    ),
    Case(
        "t swing 5 °C",
        "temperature",
        room(sv("th-1", "temperature", 20.0, min_24h=17.0, max_24h=22.0)),
        {"temperature_swing@th-1": "trigger"},
    ),
    Case(
        "site override critical 30",
        "temperature",
        room(sv("th-1", "temperature", 31.0)),
        {"temperature_high@th-1": "trigger:critical"},
        overrides=T({"temperature": {"critical": 30}}),
    ),
    # 防火 fire
    Case(
        "smoke at once",
        "fire",
        room(sv("sd-1", "smoke", 1.0)),
        {"smoke@sd-1": "trigger:critical"},
        message="一号库房 烟感报警（sd-1）",
        hold=0.0,
    ),
    Case("smoke normal", "fire", room(sv("sd-1", "smoke", 0.0)), {"smoke@sd-1": "clear"}),
    Case(
        "fire panel contact", "fire", room(sv("fp-1", "fire", 1.0)), {"fire_alarm@fp-1": "trigger:critical"}
    ),
    Case(
        "rate of rise 5 °C/min is a pre-alarm",
        "fire",
        room(sv("sd-1", "smoke", 0.0), sv("th-1", "temperature", 30.0, rise_per_min=5.0)),
        {"temperature_rise@th-1": "trigger", "temperature_high@th-1": "clear"},
    ),
    Case(
        "normal drift",
        "fire",
        room(sv("sd-1", "smoke", 0.0), sv("th-1", "temperature", 20.0, rise_per_min=0.01)),
        {"temperature_rise@th-1": "clear"},
    ),
    Case(
        "46 °C is a pre-alarm",
        "fire",
        room(sv("sd-1", "smoke", 0.0), sv("th-1", "temperature", 46.0)),
        {"temperature_high@th-1": "trigger"},
    ),
    Case(
        "no detector: unknown, advisory still judged",
        "fire",
        room(sv("th-1", "temperature", 47.0)),
        {"no_data": "unknown", "temperature_high@th-1": "trigger"},
    ),
    Case(
        "offline smoke detector",
        "fire",
        room(sv("sd-1", "smoke", 1.0), offline=("sd-1",)),
        {"smoke@sd-1": "unknown", "no_data": "unknown"},
    ),
    Case(
        "fire rate override",
        "fire",
        room(sv("sd-1", "smoke", 0.0), sv("th-1", "temperature", 25.0, rise_per_min=2.5)),
        {"temperature_rise@th-1": "trigger"},
        overrides=T({"fire": {"rate": 2}}),
    ),
    # 防盗 theft
    Case(
        "door open after hours",
        "theft",
        room(sv("door-1", "door", 1.0), open_now=False),
        {"door_after_hours@door-1": "trigger:critical", "door_open_long@door-1": "neither"},
        message="一号库房 非开放时间门被打开（door-1）",
    ),
    Case(
        "door open inside hours holds 30 min",
        "theft",
        room(sv("door-1", "door", 1.0)),
        {"door_open_long@door-1": "trigger", "door_after_hours@door-1": "neither"},
        hold=1800.0,
    ),
    Case(
        "door closed",
        "theft",
        room(sv("door-1", "door", 0.0), open_now=False),
        {"door_after_hours@door-1": "clear", "door_open_long@door-1": "clear"},
    ),
    Case(
        "door open_max override",
        "theft",
        room(sv("door-1", "door", 1.0)),
        {"door_open_long@door-1": "trigger"},
        overrides=T({"door": {"open_max": "10m"}}),
        hold=600.0,
    ),
    Case(
        "intrusion after hours",
        "theft",
        room(sv("pir-1", "intrusion", 1.0), open_now=False),
        {"intrusion@pir-1": "trigger:critical"},
    ),
    Case(
        "intrusion inside hours", "theft", room(sv("pir-1", "intrusion", 1.0)), {"intrusion@pir-1": "neither"}
    ),
    Case("no door sensor", "theft", room(), {"no_data": "unknown"}),
    # 防光 light
    Case(
        "light on while closed",
        "light",
        room(sv("lx-1", "light", 150.0), open_now=False),
        {"light_after_hours@lx-1": "trigger"},
        message="一号库房 非开放时间照度 150.0lux 超过上限 10lux",
    ),
    Case(
        "light on while open", "light", room(sv("lx-1", "light", 300.0)), {"light_after_hours@lx-1": "clear"}
    ),
    Case(
        "dark while closed",
        "light",
        room(sv("lx-1", "light", 0.5), open_now=False),
        {"light_after_hours@lx-1": "clear"},
    ),
    Case("uv above 75", "light", room(sv("uv-1", "uv", 80.0)), {"uv_high@uv-1": "trigger"}),
    Case("uv fine", "light", room(sv("uv-1", "uv", 20.0)), {"uv_high@uv-1": "clear"}),
    # 防尘 dust — 24 h means, GB/T 18883 fallback
    Case(
        "pm2.5 mean above 50",
        "dust",
        room(sv("pm-1", "pm25", 20.0, mean_24h=55.0)),
        {"pm25_mean_high@pm-1": "trigger"},
    ),
    Case(
        "pm2.5 spike, mean fine",
        "dust",
        room(sv("pm-1", "pm25", 300.0, mean_24h=30.0)),
        {"pm25_mean_high@pm-1": "clear"},
    ),
    Case(
        "pm10 mean above 100",
        "dust",
        room(sv("pm-1", "pm10", 20.0, mean_24h=120.0)),
        {"pm10_mean_high@pm-1": "trigger"},
    ),
    Case(
        "pm2.5 override",
        "dust",
        room(sv("pm-1", "pm25", 20.0, mean_24h=40.0)),
        {"pm25_mean_high@pm-1": "trigger"},
        overrides=T({"pm25": {"max": 35}}),
    ),
    Case("no mean yet", "dust", room(sv("pm-1", "pm25", 20.0)), {}),
    # 防虫 insects
    Case(
        "pest detected",
        "insects",
        room(sv("trap-1", "pest", 2.0)),
        {"pest_detected@trap-1": "trigger:critical"},
    ),
    Case("no pest", "insects", room(sv("trap-1", "pest", 0.0)), {"pest_detected@trap-1": "clear"}),
    Case(
        "insect-favourable climate",
        "insects",
        room(sv("th-1", "temperature", 26.0), sv("th-1", "humidity", 70.0)),
        {"insect_climate@th-1": "trigger"},
        hold=86400.0,
    ),
    Case(
        "warm but dry",
        "insects",
        room(sv("th-1", "temperature", 26.0), sv("th-1", "humidity", 50.0)),
        {"insect_climate@th-1": "clear"},
    ),
    Case(
        "climate with stale humidity",
        "insects",
        room(sv("th-1", "temperature", 26.0), sv("th-1", "humidity", None, stale=True)),
        {"insect_climate@th-1": "unknown"},
    ),
    # 防鼠 rodents, 防水 water
    Case("rodent", "rodents", room(sv("rd-1", "rodent", 1.0)), {"rodent_detected@rd-1": "trigger:critical"}),
    Case("no rodent sensor", "rodents", room(), {"no_data": "unknown"}),
    Case(
        "leak",
        "water",
        room(sv("leak-1", "water_leak", 1.0)),
        {"leak@leak-1": "trigger:critical"},
        message="一号库房 漏水报警（leak-1）",
    ),
    Case("dry", "water", room(sv("leak-1", "water_leak", 0.0)), {"leak@leak-1": "clear"}),
    # 防霉 mold — risk factor ≥ 1 = germination expected
    Case(
        "mold risk reached", "mold", room(sv("climate", "mold_risk", 1.0)), {"mold_risk@climate": "trigger"}
    ),
    Case("mold risk low", "mold", room(sv("climate", "mold_risk", 0.4)), {"mold_risk@climate": "clear"}),
    Case("mold no input", "mold", room(sv("th-1", "humidity", 50.0)), {"no_data": "unknown"}),
    # 防污染 pollution — GB/T 18883-2022 fallback, mean approximated by a hold
    Case(
        "co2 above 1000 ppm",
        "pollution",
        room(sv("g-1", "co2", 1200.0)),
        {"co2_high@g-1": "trigger"},
        hold=3600.0,
    ),
    Case("hcho fine", "pollution", room(sv("g-1", "hcho", 0.05)), {"hcho_high@g-1": "clear"}),
    Case(
        "tvoc above", "pollution", room(sv("g-1", "tvoc", 0.8)), {"tvoc_high@g-1": "trigger"}, hold=8 * 3600.0
    ),
    Case(
        "site co2 limit",
        "pollution",
        room(sv("g-1", "co2", 900.0)),
        {"co2_high@g-1": "trigger"},
        overrides=T({"pollution": {"co2": {"max": 800, "for": "10m"}}}),
        hold=600.0,
    ),
    # monitoring lost
    Case(
        "stale device alerts",
        "monitoring",
        room(
            sv("th-1", "humidity", None, stale=True),
            sv("th-1", "temperature", None, stale=True),
            sv("door-1", "door", 0.0),
        ),
        {"stale@th-1": "trigger", "stale@door-1": "clear"},
    ),
    Case(
        "offline, not yet stale: fires after a grace",
        "monitoring",
        room(sv("th-1", "humidity", 50.0), offline=("th-1",)),
        {"stale@th-1": "trigger"},
        hold=60.0,
    ),
    Case("offline device never seen", "monitoring", room(offline=("th-9",)), {"stale@th-9": "trigger"}),
    Case(
        "a point that never reported, beside one that reports, is said never to have",
        "monitoring",
        room(sv("th-1", "humidity", None, stale=True), sv("th-1", "temperature", 21.0)),
        {"stale@th-1": "trigger"},
        message="一号库房 设备 th-1 数据中断：湿度 无有效数据，从未收到有效数据",
    ),
    Case(
        "the silent point's last reading, not the device's freshest",
        "monitoring",
        room(
            SeriesView("th-1", "humidity", 55.0, NOW - 3 * 3600 - 600, True),
            sv("th-1", "temperature", 21.0),
        ),
        {"stale@th-1": "trigger"},
        message="一号库房 设备 th-1 数据中断：湿度 无有效数据，最后有效数据在 3 小时前",
    ),
    Case(
        "offline seconds ago",
        "monitoring",
        room(sv("th-1", "humidity", 50.0), offline=("th-1",)),
        {"stale@th-1": "trigger"},
        message="一号库房 设备 th-1 离线：全部测点 无有效数据，最后有效数据在 1 分钟内",
    ),
    Case("room without devices", "monitoring", room(), {"no_devices": "unknown"}),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_protection(case: Case) -> None:
    found = run(case.protection, case.view, case.overrides)
    got = {k: verdict(c) for k, c in found.items() if k in case.expect}
    assert got == case.expect, {k: c.message for k, c in found.items()}
    if case.expect:
        first = found[next(iter(case.expect))]
        if case.message is not None:
            assert first.message == case.message
        if case.hold is not None:
            assert first.hold == case.hold
    for c in found.values():
        assert c.message.startswith("一号库房 ")
        assert not (c.trigger and c.clear), c


def test_every_protection_has_a_module_citing_its_source() -> None:
    assert (Path(__file__).parents[2] / "docs" / "protections.md").is_file()
    assert set(REGISTRY) == set(PROTECTIONS)
    for pid, mod in REGISTRY.items():
        doc = __import__(f"rules.protections.{pid}", fromlist=["x"]).__doc__ or ""
        assert "docs/protections.md" in doc, pid  # the sources, in this repository
        assert mod.INPUTS is not None


def test_defaults_are_frozen() -> None:
    with pytest.raises(TypeError):
        damp_mod.DEFAULTS["paper"] = damp_mod.DEFAULTS["special"]  # type: ignore[index]


def test_merged_override_that_inverts_the_band_is_refused() -> None:
    with pytest.raises(ValueError, match="min 62 must be below max 60"):
        damp_mod.params("paper", T({"humidity": {"min": 62}}))


def test_severity_rises_without_a_new_identity() -> None:
    warn = run("damp", room(sv("th-1", "humidity", 63.0)))["humidity_high@th-1"]
    crit = run("damp", room(sv("th-1", "humidity", 72.0)))["humidity_high@th-1"]
    assert (warn.severity, crit.severity) == (Severity.WARNING, Severity.CRITICAL)
    assert warn.fingerprint == crit.fingerprint == "damp|humidity_high|r1|th-1"


def test_site_rules() -> None:
    from core.config import parse_config

    cfg = parse_config(
        """
rooms: [{id: r1, name: 一号库房}]
devices:
  - {id: ac-1, room: r1, modbus: {host: h, unit: 1}, points: [{metric: power, address: 0}]}
rules:
  - {name: 恒温恒湿机停机, device: ac-1, metric: power, below: 1, for: 5m, protection: temperature}
  - {name: 功率过高, room: r1, metric: power, above: 3000, clear: 2500, severity: critical, protection: fire}
""",
        environ={},
    )
    rules = cfg.rules_of("r1")
    low = site_rules.evaluate(room(sv("ac-1", "power", 0.0)), rules, NOW)
    assert [(c.rule, c.protection, c.trigger, c.hold, c.severity) for c in low] == [
        ("恒温恒湿机停机", "temperature", True, 300.0, Severity.WARNING),
        ("功率过高", "fire", False, 0.0, Severity.CRITICAL),
    ]
    assert low[0].message == "一号库房 恒温恒湿机停机（功率） 0.0W 低于下限 1W"
    high = site_rules.evaluate(room(sv("ac-1", "power", 2800.0)), rules, NOW)
    assert (high[1].trigger, high[1].clear) == (False, False)  # between clear 2500 and trigger 3000
    assert site_rules.evaluate(room(sv("ac-1", "power", 3500.0)), rules, NOW)[1].severity is Severity.CRITICAL
    missing = site_rules.evaluate(room(), rules, NOW)
    assert all(c.unknown for c in missing)
    offline = site_rules.evaluate(room(sv("ac-1", "power", 0.0), offline=("ac-1",)), rules, NOW)
    assert all(c.unknown for c in offline)


def test_evaluate_room_runs_every_protection() -> None:
    view = room(sv("th-1", "humidity", 63.0), sv("th-1", "temperature", 21.0), sv("door-1", "door", 0.0))
    params = {pid: mod.params("paper", Thresholds()) for pid, mod in REGISTRY.items()}
    found = evaluate_room(view, params, NOW)
    assert {c.protection for c in found} == set(PROTECTIONS)
    assert [c.rule for c in found if c.trigger] == ["humidity_high"]
