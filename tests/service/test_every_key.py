"""Every key of the shipped devices.yaml changes what the service does or shows.

The danger guarded against: a key that pydantic validates, that even reaches a params object, but that
no running component uses (issue defect 4, "Settings that do nothing"). So each key has a probe: a
different valid value at one concrete place of the shipped file, and an observation of the real service
graph (tests/service/key_observations.py) that must differ between the shipped file and the changed one.
The observations look at behaviour and output (alert transitions, packets on the wire, stored readings,
files, API answers), never at the configuration itself.

Adding a key to devices.yaml without a probe here fails ``test_every_shipped_key_has_a_probe``, naming
the key.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.config import Config, ConfigError, parse_config
from tests.service import key_observations as obs
from tests.service.key_observations import Observation

SHIPPED = Path(__file__).resolve().parents[2] / "devices.yaml"
# The shipped file reads its broker password from the environment; the probe of mqtt.password points it
# at another variable.
ENVIRON = {"MQTT_PASSWORD": "s3cret-of-the-site", "BAFANG_MQTT_SECRET": "another-secret"}

Loc = tuple[str | int, ...]
# A point's `map:` is the device's own words (text → number): its keys are data, not keys of the schema.
OPAQUE = frozenset({"devices[].points[].map"})


def normalise(loc: Loc) -> str:
    """('devices', 3, 'points', 0, 'scale') → devices[].points[].scale"""
    out = ""
    for seg in loc:
        out += "[]" if isinstance(seg, int) else (f".{seg}" if out else seg)
    return out


def leaf_paths(data: Any, loc: Loc = ()) -> Iterator[Loc]:
    """Every leaf of the YAML data, as its location."""
    if isinstance(data, dict) and normalise(loc) not in OPAQUE:
        for key, value in data.items():
            yield from leaf_paths(value, (*loc, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from leaf_paths(value, (*loc, i))
    else:
        yield loc


def shipped_data() -> dict[str, Any]:
    """The shipped devices.yaml as plain data (a fresh copy each time)."""
    data = yaml.safe_load(SHIPPED.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def config_of(data: dict[str, Any]) -> Config:
    """Validate data as the service validates devices.yaml (the loader, with its checks across entries)."""
    return parse_config(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), "devices.yaml", ENVIRON)


_DATA = shipped_data()
DEVICE = {d["id"]: ("devices", i) for i, d in enumerate(_DATA["devices"])}
ROOM = {r["id"]: ("rooms", i) for i, r in enumerate(_DATA["rooms"])}
RULE0: Loc = ("rules", 0)


def point(device: str, metric: str) -> Loc:
    """The location of a device's point for a metric."""
    points = _DATA["devices"][DEVICE[device][1]]["points"]
    return (*DEVICE[device], "points", next(i for i, p in enumerate(points) if p["metric"] == metric))


class _Delete:
    def __repr__(self) -> str:
        return "(removed: its default)"


DELETE = _Delete()  # as a probe's value: remove the key (its default applies)
Edits = tuple[tuple[Loc, Any], ...]


def edited(data: dict[str, Any], edits: Edits) -> dict[str, Any]:
    """A copy of the data with values set (removed, for DELETE; appended, one past a list's end)."""
    out = copy.deepcopy(data)
    for loc, value in edits:
        parent: Any = out
        for seg in loc[:-1]:
            parent = parent[seg]
        if value is DELETE:
            del parent[loc[-1]]
        elif isinstance(parent, list) and loc[-1] == len(parent):
            parent.append(value)  # one past the end: a new entry
        else:
            parent[loc[-1]] = value
    return out


@dataclass(frozen=True)
class Probe:
    """A different valid value at ``loc`` and the observation that must see it.

    ``follow``: what must change with it to stay valid (a renamed room's devices). ``setup``: what the
    file needs for the change to be valid, applied to both sides, so that the difference observed is the
    key's alone. ``observe`` None: the key has no other valid value (see the refusal test).
    """

    loc: Loc
    value: Any
    observe: Observation | None
    follow: Edits = field(default=())
    setup: Edits = field(default=())
    why: str = ""

    def before(self, data: dict[str, Any]) -> dict[str, Any]:
        """The side without the change: the shipped data (with the setup)."""
        return edited(data, self.setup)

    def after(self, data: dict[str, Any]) -> dict[str, Any]:
        """The side with the change."""
        return edited(data, (*self.setup, (self.loc, self.value), *self.follow))


TH1, AC1, TH2, DOOR1, R3TH = (DEVICE[d] for d in ("th-1", "ac-1", "th-2", "door-1", "r3-th"))
R1 = ROOM["r1"]
# A second power meter on ac-1's gateway, and a voltage point for ac-1 (the probes of rules[]).
AC2 = {
    **copy.deepcopy(_DATA["devices"][AC1[1]]),
    "id": "ac-2",
    "modbus": {"host": "192.168.10.24", "unit": 6},
}
AC1_VOLTAGE = {"metric": "voltage", "address": 1, "table": "input", "type": "uint16", "scale": 0.1}
RULES, MQTT, MODBUS, SILENT = obs.rules_timeline, obs.mqtt_session, obs.modbus_poll, obs.modbus_silent_unit
API = obs.api_answers

PROBES: dict[str, Probe] = {
    # The site
    "site.name": Probe(("site", "name"), "国网某县供电公司档案馆", API),
    "site.timezone": Probe(("site", "timezone"), "UTC", RULES, why="10:00 in Shanghai is 02:00 UTC: closed"),
    # The broker: the CONNECT and SUBSCRIBE the production client sends, where it connects
    "mqtt.url": Probe(("mqtt", "url"), "mqtt://192.168.10.5:1884", MQTT),
    "mqtt.username": Probe(("mqtt", "username"), "bafang-2", MQTT),
    "mqtt.password": Probe(("mqtt", "password"), "${BAFANG_MQTT_SECRET}", MQTT),
    "mqtt.client_id": Probe(("mqtt", "client_id"), "bafang-replica-2", MQTT),
    "mqtt.protocol": Probe(("mqtt", "protocol"), "3.1.1", MQTT),
    "mqtt.qos": Probe(("mqtt", "qos"), 0, MQTT),
    "mqtt.keepalive": Probe(("mqtt", "keepalive"), 60, MQTT),
    "mqtt.session_expiry": Probe(("mqtt", "session_expiry"), "1d", MQTT),
    "mqtt.receive_maximum": Probe(("mqtt", "receive_maximum"), 100, MQTT),
    "mqtt.max_clock_skew": Probe(("mqtt", "max_clock_skew"), "1m", MQTT, why="th-33's clock is 2 min ahead"),
    # Storage
    "storage.database": Probe(("storage", "database"), "sqlite:///archive/records.db", obs.storage_files),
    # One valid value today (sqlite): the probe is the refusal of any other
    # (test_a_key_with_one_valid_value_refuses_any_other_naming_its_line).
    "storage.timeseries.backend": Probe(("storage", "timeseries", "backend"), "influxdb", None),
    "storage.timeseries.retention_days": Probe(
        ("storage", "timeseries", "retention_days"), 30, obs.retention
    ),
    "storage.timeseries.flush_interval": Probe(
        ("storage", "timeseries", "flush_interval"), "5s", obs.lingering
    ),
    "storage.timeseries.batch_size": Probe(("storage", "timeseries", "batch_size"), 10, obs.batching),
    "storage.timeseries.max_pending": Probe(
        ("storage", "timeseries", "max_pending"), 1000, obs.pending_bound
    ),
    # Site thresholds (r1 overrides humidity max and for; r2 and r3 take the site's)
    "thresholds.humidity.for": Probe(("thresholds", "humidity", "for"), "20m", RULES),
    "thresholds.humidity.clear": Probe(("thresholds", "humidity", "clear"), 4, RULES),
    "thresholds.humidity.clear_for": Probe(("thresholds", "humidity", "clear_for"), "15m", RULES),
    "thresholds.humidity.critical": Probe(("thresholds", "humidity", "critical"), 75, RULES),
    "thresholds.door.open_max": Probe(("thresholds", "door", "open_max"), "20m", RULES),
    # Rooms
    "rooms[].id": Probe(
        (*ROOM["r2"], "id"), "r2b", RULES, follow=(((*TH2, "room"), "r2b"),), why="its device follows it"
    ),
    "rooms[].name": Probe((*R1, "name"), "一号库房（东）", RULES),
    "rooms[].kind": Probe((*R1, "kind"), "special", RULES, why="special: 14–20 °C, 22 °C is too warm"),
    "rooms[].access_hours": Probe((*R1, "access_hours"), "Mon-Fri 08:30-17:30", RULES, why="no lunch break"),
    "rooms[].thresholds.humidity.max": Probe((*R1, "thresholds", "humidity", "max"), 57, RULES),
    "rooms[].thresholds.humidity.for": Probe((*R1, "thresholds", "humidity", "for"), "25m", RULES),
    # The site rule
    "rules[].name": Probe((*RULE0, "name"), "空调停机", RULES),
    # The rule's device measures one metric and no other device measures it: the setup gives r1 a second
    # power meter (ac-2) and ac-1 a voltage point, so that device and metric can each change alone.
    "rules[].device": Probe((*RULE0, "device"), "ac-2", RULES, setup=((("devices", len(DEVICE)), AC2),)),
    "rules[].metric": Probe(
        (*RULE0, "metric"), "voltage", RULES, setup=(((*AC1, "points", 1), AC1_VOLTAGE),)
    ),
    "rules[].below": Probe((*RULE0, "below"), 0.3, RULES),
    "rules[].for": Probe((*RULE0, "for"), "7m", RULES),
    "rules[].severity": Probe((*RULE0, "severity"), "critical", RULES),
    "rules[].protection": Probe((*RULE0, "protection"), "fire", RULES),
    # Devices
    "devices[].id": Probe((*TH1, "id"), "th-1a", MODBUS),
    "devices[].room": Probe((*TH1, "room"), "r2", MODBUS, why="the collector tags its readings"),
    "devices[].name": Probe((*TH1, "name"), "一号库房温湿度变送器", API),
    "devices[].poll": Probe((*TH1, "poll"), "2m", RULES, why="4 min of silence < 3 × 2 min"),
    "devices[].modbus.host": Probe((*TH1, "modbus", "host"), "192.168.10.31", MODBUS),
    "devices[].modbus.port": Probe((*TH1, "modbus", "port"), 1502, MODBUS),
    "devices[].modbus.unit": Probe((*TH1, "modbus", "unit"), 6, MODBUS),
    "devices[].modbus.timeout": Probe((*TH1, "modbus", "timeout"), "250ms", SILENT),
    "devices[].modbus.retries": Probe((*TH1, "modbus", "retries"), 0, SILENT),
    "devices[].modbus.serial": Probe((*TH2, "modbus", "serial"), "/dev/ttyUSB1", MODBUS),
    "devices[].modbus.baudrate": Probe((*TH2, "modbus", "baudrate"), 19200, MODBUS),
    "devices[].modbus.parity": Probe((*TH2, "modbus", "parity"), "E", MODBUS),
    "devices[].modbus.stopbits": Probe((*TH2, "modbus", "stopbits"), 2, MODBUS),
    "devices[].points[].metric": Probe((*point("th-1", "humidity"), "metric"), "dew_point", MODBUS),
    "devices[].points[].address": Probe((*point("th-1", "humidity"), "address"), 2, MODBUS),
    "devices[].points[].table": Probe((*point("th-1", "humidity"), "table"), "input", MODBUS),
    "devices[].points[].type": Probe((*point("pm-1", "pm25"), "type"), "uint32", MODBUS),
    "devices[].points[].scale": Probe((*point("th-1", "humidity"), "scale"), 0.01, MODBUS),
    "devices[].points[].byte_order": Probe((*point("pm-1", "pm25"), "byte_order"), "ABCD", MODBUS),
    "devices[].mqtt.topic": Probe((*DOOR1, "mqtt", "topic"), "archive/r1/door-9", MQTT),
    "devices[].mqtt.availability_topic": Probe(
        (*DOOR1, "mqtt", "availability_topic"), "archive/r1/door-1/lwt", MQTT
    ),
    "devices[].mqtt.device_id_segment": Probe(
        (*R3TH, "mqtt", "device_id_segment"), DELETE, MQTT, why="its only other valid value: none"
    ),
    "devices[].mqtt.time_path": Probe((*R3TH, "mqtt", "time_path"), DELETE, MQTT, why="none: arrival time"),
    "devices[].points[].path": Probe((*point("door-1", "door"), "path"), "state", MQTT),
    "devices[].points[].map": Probe((*point("door-1", "door"), "map"), {"open": 0, "closed": 1}, MQTT),
}

_BASELINES: dict[str, Any] = {}


async def baseline(observe: Observation, folder: Path) -> Any:
    """The observation of the shipped file (computed once per observation)."""
    name = observe.__name__
    if name not in _BASELINES:
        _BASELINES[name] = await observe(config_of(shipped_data()), folder)
    return _BASELINES[name]


def test_every_shipped_key_has_a_probe() -> None:
    shipped = {normalise(loc) for loc in leaf_paths(shipped_data())}
    missing, stale = sorted(shipped - set(PROBES)), sorted(set(PROBES) - shipped)
    assert not missing, f"devices.yaml has keys without a probe in {Path(__file__).name}: {missing}"
    assert not stale, f"probes for keys that devices.yaml no longer has: {stale}"
    for key, probe in PROBES.items():
        assert normalise(probe.loc) == key, f"the probe of {key} changes {normalise(probe.loc)}"


OBSERVATIONS = sorted({p.observe for p in PROBES.values() if p.observe is not None}, key=lambda o: o.__name__)


@pytest.mark.parametrize("observe", OBSERVATIONS, ids=lambda o: o.__name__)
async def test_observations_of_the_shipped_file_are_repeatable(observe: Observation, tmp_path: Path) -> None:
    """A difference must come from the key, not from timing, ports or folders."""
    first = await baseline(observe, tmp_path / "first")
    assert await observe(config_of(shipped_data()), tmp_path / "again") == first


@pytest.mark.parametrize("key", sorted(k for k, p in PROBES.items() if p.observe is not None))
async def test_every_key_changes_behaviour_or_output(key: str, tmp_path: Path) -> None:
    probe = PROBES[key]
    assert probe.observe is not None
    shipped = shipped_data()
    cfg = config_of(probe.after(shipped))  # the changed file is valid
    assert cfg != config_of(probe.before(shipped)), f"{key}: {probe.value!r} is what the file says already"
    if probe.setup:
        before = await probe.observe(config_of(probe.before(shipped)), tmp_path / "before")
    else:
        before = await baseline(probe.observe, tmp_path / "shipped")
    after = await probe.observe(cfg, tmp_path / "changed")
    assert after != before, (
        f"{key} = {probe.value!r} changed nothing that {probe.observe.__name__} sees: the key does nothing"
        + (f" ({probe.why})" if probe.why else "")
    )


def test_a_key_with_one_valid_value_refuses_any_other_naming_its_line() -> None:
    """storage.timeseries.backend has one valid value today (sqlite): its output is the refusal of any
    other, at the line of the file where it is written."""
    probe = PROBES["storage.timeseries.backend"]
    assert probe.observe is None
    text = SHIPPED.read_text(encoding="utf-8")
    line = next(n for n, s in enumerate(text.splitlines(), 1) if s.strip() == "backend: sqlite")
    changed = text.replace("backend: sqlite", f"backend: {probe.value}", 1)
    with pytest.raises(ConfigError) as caught:
        parse_config(changed, "devices.yaml", ENVIRON)
    assert [str(i) for i in caught.value.issues] == [
        f"devices.yaml:{line}: storage.timeseries.backend: {probe.value!r} is not one of sqlite"
    ]
