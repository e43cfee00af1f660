"""devices.yaml keys of the protections: access hours, threshold overrides, protection sets, site rules."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from core.config import (
    CLASSIC_EIGHT,
    DEFAULT_ACCESS_HOURS,
    PROTECTION_IDS,
    ConfigError,
    Thresholds,
    default_protections,
    load_config,
    parse_access_hours,
    parse_config,
)
from core.protections import PROTECTIONS
from rules.protections import REGISTRY, check_config, room_params
from rules.protections.damp import DEFAULTS as DAMP_DEFAULTS

ROOT = Path(__file__).resolve().parents[2]
SHANGHAI = "Asia/Shanghai"


def at(text: str, tz: str = SHANGHAI) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=ZoneInfo(tz)).timestamp()


def test_every_protection_id_has_names_and_a_module() -> None:
    assert tuple(PROTECTIONS) == PROTECTION_IDS
    assert set(REGISTRY) == set(PROTECTION_IDS)
    assert CLASSIC_EIGHT == ("fire", "theft", "damp", "temperature", "light", "dust", "insects", "rodents")


SPLIT = "Mon-Fri 08:30-12:00,13:30-17:30; Sat 09:00-12:00"


@pytest.mark.parametrize(
    ("hours", "when", "is_open"),
    [
        (DEFAULT_ACCESS_HOURS, "2026-11-30 08:29", False),  # a Monday
        (DEFAULT_ACCESS_HOURS, "2026-11-30 08:30", True),
        (DEFAULT_ACCESS_HOURS, "2026-11-30 17:29", True),
        (DEFAULT_ACCESS_HOURS, "2026-11-30 17:30", False),
        (DEFAULT_ACCESS_HOURS, "2026-12-05 10:00", False),  # Saturday
        (SPLIT, "2026-11-30 12:30", False),  # lunch
        (SPLIT, "2026-11-30 13:30", True),
        (SPLIT, "2026-12-05 10:00", True),
        (SPLIT, "2026-12-06 10:00", False),  # Sunday
        ("Fri-Mon 22:00-24:00", "2026-12-06 23:59", True),  # wraps over the weekend
        ("Fri-Mon 22:00-24:00", "2026-12-02 23:00", False),  # Wednesday
        ("always", "2026-12-06 03:00", True),
        ("never", "2026-11-30 10:00", False),
        ("monday,Wed 8:00-9:00", "2026-12-02 08:15", True),
    ],
)
def test_access_hours(hours: str, when: str, is_open: bool) -> None:
    assert parse_access_hours(hours).open_at(at(when), SHANGHAI) is is_open


def test_access_hours_follow_the_site_time_zone() -> None:
    schedule = parse_access_hours(DEFAULT_ACCESS_HOURS)
    instant = at("2026-11-30 09:00")  # 09:00 in Shanghai is 01:00 UTC: closed there
    assert schedule.open_at(instant, SHANGHAI) and not schedule.open_at(instant, "UTC")


@pytest.mark.parametrize(
    ("hours", "error"),
    [
        ("Mon-Fri", "expected days then times"),
        ("Mon-Fri 08:30-17:30, Sat 09:00-12:00", "groups separated by ';'"),
        ("Mox 08:00-09:00", "'Mox' is not a day"),
        ("Mon 09:00-08:00", "ends before it starts"),
        ("Mon 08:60-09:00", "not a time of day"),
        ("Mon 8h-9h", "not a span of time"),
    ],
)
def test_bad_access_hours(hours: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        parse_access_hours(hours)


@pytest.mark.parametrize(
    ("metrics", "extra"),
    [
        ({"temperature"}, ()),
        ({"temperature", "humidity"}, ("mold",)),
        ({"water_leak", "door"}, ("water",)),
        ({"co2"}, ("pollution",)),
        ({"temperature", "humidity", "water_leak", "hcho"}, ("water", "mold", "pollution")),
    ],
)
def test_default_protections(metrics: set[str], extra: tuple[str, ...]) -> None:
    assert default_protections(metrics) == (*CLASSIC_EIGHT, *extra, "monitoring")


CONFIG = """
site: {timezone: Asia/Shanghai}
thresholds:
  humidity: {max: 62, clear: 3, critical: 75}
  door: {open_max: 20m}
  pollution: {co2: {max: 900}}
rooms:
  - id: r1
    name: 一号库房
    access_hours: "Mon-Fri 08:30-12:00,13:30-17:30; Sat 09:00-12:00"
    thresholds: {humidity: {max: 58, for: 15m}, pollution: {co2: {for: 2h}}}
  - id: r2
    name: 二号库房
    kind: special
    protections: [fire, damp, water]
  - {id: r3, name: 三号库房, thresholds: {humidity: {min: 63}}}
devices:
  - id: th-1
    room: r1
    modbus: {host: 10.0.0.5, unit: 1}
    points: [{metric: humidity, address: 0}, {metric: temperature, address: 1}, {metric: co2, address: 2}]
  - {id: ac-1, room: r2, modbus: {host: 10.0.0.5, unit: 2}, points: [{metric: power, address: 0}]}
rules:
  - {name: 恒温恒湿机停机, device: ac-1, metric: power, below: 1, for: 5m, protection: temperature}
  - {name: 霉变风险提示, room: r1, metric: mold_risk, above: 0.5, severity: info, protection: mold}
"""


def test_room_overrides_win_over_site_overrides_key_by_key() -> None:
    cfg = parse_config(CONFIG, environ={})
    th = cfg.thresholds_of("r1")
    assert th.humidity is not None and th.pollution is not None and th.pollution.co2 is not None
    assert (th.humidity.max, th.humidity.for_, th.humidity.clear, th.humidity.critical) == (58, 900, 3, 75)
    assert (th.pollution.co2.max, th.pollution.co2.for_) == (900, 7200)
    p = room_params(cfg, "r1")
    damp = p["damp"]
    assert (damp.min, damp.max, damp.hold, damp.clear, damp.critical) == (45, 58, 900, 3, 75)
    assert p["theft"].door_open_max == 1200
    assert p["pollution"].limits["co2"].hold == 7200 and p["pollution"].limits["hcho"].limit == 0.08
    assert list(p) == [*CLASSIC_EIGHT, "mold", "pollution", "monitoring"]
    # r2 uses the site's overrides over the special-room defaults, and its own protection list
    p2 = room_params(cfg, "r2")
    assert list(p2) == ["fire", "damp", "water", "monitoring"]
    assert (p2["damp"].min, p2["damp"].max) == (45, 62)
    assert DAMP_DEFAULTS["special"].max == 55  # the defaults are untouched


def test_contradiction_with_the_defaults_is_reported_per_room() -> None:
    cfg = parse_config(CONFIG, environ={})
    assert check_config(cfg) == [
        "room r3 (三号库房): thresholds of damp: min 63 must be below max 62 once merged with the defaults"
    ]


def test_rooms_default_to_office_hours_and_no_overrides() -> None:
    cfg = parse_config("rooms: [{id: r1, name: 一号库房}]", environ={})
    r1 = cfg.room_of("r1")
    assert r1.access_hours == DEFAULT_ACCESS_HOURS and r1.thresholds == Thresholds()
    assert r1.access_schedule.open_at(at("2026-11-30 10:00"), SHANGHAI)
    assert cfg.protections_of("r1") == (*CLASSIC_EIGHT, "monitoring")


def test_site_rules_are_attached_to_their_rooms() -> None:
    cfg = parse_config(CONFIG, environ={})
    assert [r.name for r in cfg.rules_of("r1")] == ["霉变风险提示"]
    assert [r.name for r in cfg.rules_of("r2")] == ["恒温恒湿机停机"]
    assert cfg.rules[0].for_ == 300 and cfg.rules[0].severity == "warning"


def test_shipped_example_has_the_protection_keys() -> None:
    cfg = load_config(ROOT / "devices.yaml", environ={"MQTT_PASSWORD": "x"})
    assert check_config(cfg) == []
    assert cfg.rules and cfg.thresholds.humidity is not None
    for room in cfg.rooms:
        assert room_params(cfg, room.id)


def test_a_threshold_typo_is_an_error_with_its_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config("rooms:\n  - id: r1\n    name: a\n    thresholds: {humidty: {max: 58}}\n", environ={})
    assert [str(i) for i in info.value.issues] == ["devices.yaml:4: rooms[0].thresholds.humidty: unknown key"]
