"""Golden alert scenarios: one runner for every folder under tests/scenarios/.

Each folder is named after the incident it guards and holds ``devices.yaml`` (the site),
``timeline.yaml`` (readings, collector status, ticks and people's actions at local times) and
``expected.yaml`` (every alert transition in order, and optionally the protections' states and the
open alerts at given moments). The format is described in tests/scenarios/README.md.

The runner drives the real RulesEngine (bind_evaluators over the scenario's config) and a real AlertBook
on SQLite in tmp_path, with a ManualClock moved to each instant of the timeline. At every instant it
does what the service does: the readings of that instant are one stored batch, evaluated for the rooms
they touch (``RulesEngine.on_readings``); a ``tick`` evaluates every room (the runtime's periodic tick).
Readings pass through ``core.validate`` first, as the pipeline would: a rejected value never reaches the
rules. Readings may carry field timing (``jitter:``, ``every: 7s..13s``, seeded per folder and entry), and
expected instants are then matched to the second or ``within:`` a tolerance. Finally every alert's
recorded history must match the transitions the engine reported.
"""

from __future__ import annotations

import datetime as dt
import random
import zoneinfo
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import yaml

from core.clock import ManualClock
from core.config import Config, ModbusPoint, MqttPoint, load_config, parse_duration
from core.types import DeviceStatus, Reading
from core.validate import check_mqtt
from rules.lifecycle import AlertBook, Transition
from tests.support import build, opened

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = sorted(p for p in (ROOT / "tests" / "scenarios").iterdir() if (p / "expected.yaml").exists())

# Keys every expected transition states, and those compared only when an expected entry gives them.
REQUIRED = ("at", "protection", "rule", "device", "to_state", "severity")
OPTIONAL = ("room", "from_state", "message", "value")
# Keys of a timeline entry that are not metrics.
ENTRY_KEYS = frozenset(
    {
        "at",
        "until",
        "every",
        "jitter",
        "device",
        "status",
        "tick",
        "ack",
        "resolve",
        "by",
        "comment",
        "reason",
        "room",
    }
)


class ScenarioError(Exception):
    """A scenario file is malformed (names the file and the entry)."""


# -- time -----------------------------------------------------------------------------------------


def parse_at(value: Any, tz: zoneinfo.ZoneInfo, where: str) -> float:
    """A local time of the site ("2026-01-05 10:00[:30]") as epoch seconds."""
    if isinstance(value, dt.datetime):  # YAML reads an unquoted "2026-01-05 10:00:30" as a naive datetime
        local = value if value.tzinfo is not None else value.replace(tzinfo=tz)
        return local.timestamp()
    if not isinstance(value, str):
        raise ScenarioError(f"{where}: at: expected a local time such as '2026-01-05 10:00' (got {value!r})")
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M"):
        try:
            return dt.datetime.strptime(value.strip(), fmt).replace(tzinfo=tz).timestamp()
        except ValueError:
            continue
    raise ScenarioError(
        f"{where}: at: {value!r} is not a local time such as '2026-01-05 10:00' or '… 10:00:30'"
    )


def show_at(epoch: float, tz: zoneinfo.ZoneInfo) -> str:
    """Epoch seconds as the scenario files write them (seconds only when not zero)."""
    local = dt.datetime.fromtimestamp(epoch, tz)
    return local.strftime(
        "%Y-%m-%d %H:%M" if local.second == 0 and not local.microsecond else "%Y-%m-%d %H:%M:%S"
    )


# -- the timeline ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Instant:
    """Everything that happens at one moment: readings (one batch), status changes, a tick, actions."""

    readings: list[Reading] = field(default_factory=list)
    status: dict[str, DeviceStatus] = field(default_factory=dict)
    tick: bool = False
    actions: list[dict[str, Any]] = field(default_factory=list)


def _duration(value: Any, where: str, key: str) -> float:
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ScenarioError(f"{where}: {key}: {exc}") from None


def _every(value: Any, where: str) -> tuple[float, float]:
    """``every:`` as (shortest, longest) interval: ``30s`` is (30, 30), ``7s..13s`` a range."""
    if isinstance(value, str) and ".." in value:
        lo, _, hi = value.partition("..")
        shortest, longest = _duration(lo.strip(), where, "every"), _duration(hi.strip(), where, "every")
        if shortest > longest:
            raise ScenarioError(f"{where}: every: {value!r}: the shortest interval comes first")
        return shortest, longest
    every = _duration(value, where, "every")
    return every, every


def _times(
    entry: dict[str, Any],
    tz: zoneinfo.ZoneInfo,
    where: str,
    seed: str,
    timers: dict[str, tuple[float, float]],
) -> list[tuple[float, float]]:
    """The entry's instants as (nominal, actual): actual = nominal moved by ``jitter:`` (if any).

    An interval range (``every: 7s..13s``) draws each gap uniformly; ``jitter: 50ms`` moves each
    instant by a uniform offset in ±50 ms. Both are whole milliseconds, drawn from a generator seeded
    with ``seed`` (folder and entry index), so a scenario replays the same times on every run.
    ``timers`` holds, per device, (until, next instant) of its last entry with a range: an entry that
    starts at that ``until`` continues the device's timer, so chained entries keep their gaps in range.
    """
    start = parse_at(entry.get("at"), tz, where)
    rng = random.Random(seed)
    jitter = _duration(entry["jitter"], where, "jitter") if "jitter" in entry else 0.0
    if "until" not in entry and "every" not in entry:
        nominal = [start]
    elif "until" not in entry or "every" not in entry:
        raise ScenarioError(f"{where}: a repeated entry needs both every: and until:")
    else:
        shortest, longest = _every(entry["every"], where)
        if jitter and 2 * jitter >= shortest:
            raise ScenarioError(
                f"{where}: jitter: must be under half the interval, so instants keep their order"
            )
        until = parse_at(entry["until"], tz, where)
        if until <= start:
            raise ScenarioError(f"{where}: until: must be after at:")
        nominal = []
        if shortest == longest:  # n × every, not a running sum: no rounding drift over a long entry
            n = 0
            while start + n * shortest < until - 1e-9:  # until is exclusive: repeated entries chain
                nominal.append(start + n * shortest)
                n += 1
        else:
            device = str(entry.get("device"))
            last_until, t = timers.get(device, (None, start))
            if last_until != start:
                t = start
            while t < until - 1e-9:
                nominal.append(t)
                t = round(t + max(0.001, round(rng.uniform(shortest, longest), 3)), 3)
            timers[device] = (until, t)
    if not jitter:
        return [(t, t) for t in nominal]
    return [(t, round(t + round(rng.uniform(-jitter, jitter), 3), 3)) for t in nominal]


def _value(raw: Any, t: float, start: float, until: float | None, where: str) -> Any:
    """A metric's value at ``t``: a constant, or {from: a, to: b} ramping linearly over [at, until)."""
    if not isinstance(raw, dict):
        return raw
    if set(raw) != {"from", "to"} or until is None:
        raise ScenarioError(f"{where}: a ramp is written {{from: a, to: b}} on a repeated entry")
    a, b = float(raw["from"]), float(raw["to"])
    return round(a + (b - a) * (t - start) / (until - start), 3)


def _stored(point: ModbusPoint | MqttPoint, value: Any) -> float | None:
    """What the pipeline would store for this value (None when it would reject it).

    MQTT values are payload values (``door: open`` goes through the point's map); Modbus values are
    already engineering values (after scale and offset), checked against the plausible range.
    """
    if isinstance(point, MqttPoint):
        verdict = check_mqtt(point, value)
        return verdict if isinstance(verdict, float) else None
    number = float(value)
    low, high = point.resolved_range
    return number if low <= number <= high else None


def load_timeline(folder: Path, cfg: Config, tz: zoneinfo.ZoneInfo) -> dict[float, Instant]:
    """timeline.yaml as instants in time order (jittered and drawn times seeded from the folder's name)."""
    path = folder / "timeline.yaml"
    entries = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(entries, list) or not entries:
        raise ScenarioError(f"{path}: expected a list of entries")
    devices = {d.id: d for d in cfg.devices}
    instants: dict[float, Instant] = {}
    timers: dict[str, tuple[float, float]] = {}  # device → (until, next instant) of its last range entry
    for i, entry in enumerate(entries):
        where = f"{path.name}[{i}]"
        if not isinstance(entry, dict):
            raise ScenarioError(
                f"{where}: expected a mapping such as {{at: ..., device: ..., humidity: ...}}"
            )
        pairs = _times(entry, tz, where, f"{folder.name}:{i}", timers)
        times = [actual for _, actual in pairs]
        until = parse_at(entry["until"], tz, where) if "until" in entry else None
        drawn = "jitter" in entry or (isinstance(entry.get("every"), str) and ".." in entry["every"])
        kinds = [k for k in ("tick", "status", "ack", "resolve") if k in entry]
        if len(kinds) > 1:
            raise ScenarioError(f"{where}: one of tick:, status:, ack:, resolve: per entry (got {kinds})")
        if drawn and kinds:
            raise ScenarioError(
                f"{where}: jitter: and every: a..b are for readings; {kinds[0]}: keeps exact times"
                " (a tick is the service's own timer)"
            )
        if kinds and kinds[0] in ("ack", "resolve"):
            allowed = {"at", kinds[0], "by", "comment" if kinds[0] == "ack" else "reason", "room"}
            if set(entry) - allowed:
                raise ScenarioError(f"{where}: unknown keys {sorted(set(entry) - allowed)}")
            if len(times) != 1:
                raise ScenarioError(f"{where}: a person's action happens once (no every:/until:)")
            instants.setdefault(times[0], Instant()).actions.append(entry)
            continue
        if kinds == ["tick"]:
            if set(entry) - {"at", "until", "every", "tick"} or entry["tick"] is not True:
                raise ScenarioError(
                    f"{where}: a tick entry is {{at:, tick: true}} with optional every:/until:"
                )
            for t in times:
                instants.setdefault(t, Instant()).tick = True
            continue
        name = entry.get("device")
        if name not in devices:
            raise ScenarioError(f"{where}: device {name!r} is not in devices.yaml ({', '.join(devices)})")
        device = devices[name]
        if kinds == ["status"]:
            if set(entry) - {"at", "device", "status"}:
                raise ScenarioError(f"{where}: a status entry is {{at:, device:, status: offline}}")
            try:
                status = DeviceStatus(entry["status"])
            except ValueError:
                choices = ", ".join(s.value for s in DeviceStatus)
                raise ScenarioError(f"{where}: status: {entry['status']!r} is not one of {choices}") from None
            for t in times:
                instants.setdefault(t, Instant()).status[device.id] = status
            continue
        unknown = set(entry) - ENTRY_KEYS - {p.metric for p in device.points}
        if unknown:
            points = ", ".join(p.metric for p in device.points)
            raise ScenarioError(f"{where}: {sorted(unknown)} not points of {device.id} ({points})")
        metrics = [p for p in device.points if p.metric in entry]
        if not metrics:
            raise ScenarioError(f"{where}: no metric of {device.id} given")
        start = parse_at(entry["at"], tz, where)
        for nominal, t in pairs:  # the device's readings of one instant stay one batch
            batch = instants.setdefault(t, Instant()).readings
            for p in metrics:
                # A ramp's value is the one read at the nominal instant; jitter moves only its stamp.
                value = _stored(p, _value(entry[p.metric], nominal, start, until, where))
                if value is not None:
                    batch.append(Reading(device.id, device.room, p.metric, value, p.resolved_unit, t))
    return dict(sorted(instants.items()))


# -- expectations ---------------------------------------------------------------------------------


def _row(t: Transition, tz: zoneinfo.ZoneInfo, at: float) -> dict[str, Any]:
    a = t.alert
    return {
        "at": show_at(round(at), tz),  # to the second: a jittered instant is written as its nominal second
        "instant": at,
        "protection": a.protection,
        "rule": a.rule,
        "device": a.device,
        "to_state": str(t.to_state),
        "severity": str(a.severity),
        "room": a.room,
        "from_state": None if t.from_state is None else str(t.from_state),
        "message": a.message,
        "value": a.value,
    }


def _project(
    actual: dict[str, Any], expected: dict[str, Any] | None, tz: zoneinfo.ZoneInfo
) -> dict[str, Any]:
    """The actual transition reduced to the keys the expected one compares (message: a substring).

    ``at`` is the actual instant rounded to the second; with ``within: 10s`` the expected ``at`` matches
    any actual instant at most that far from it.
    """
    out = {k: actual[k] for k in REQUIRED}
    if expected is not None and "within" in expected:
        tolerance = parse_duration(expected["within"])
        if abs(actual["instant"] - parse_at(expected["at"], tz, "expected.yaml")) <= tolerance:
            out["at"] = expected["at"]
        out["within"] = expected["within"]
    for k in OPTIONAL:
        if expected is not None and k in expected:
            out[k] = actual[k]
            if k == "message" and isinstance(expected[k], str) and expected[k] in actual[k]:
                out[k] = expected[k]
    return out


def _normalise(expected: dict[str, Any], tz: zoneinfo.ZoneInfo, where: str) -> dict[str, Any]:
    missing = [k for k in REQUIRED if k not in expected]
    unknown = set(expected) - set(REQUIRED) - set(OPTIONAL) - {"within"}
    if missing or unknown:
        raise ScenarioError(f"{where}: missing {missing} / unknown {sorted(unknown)}")
    if "within" in expected:
        _duration(expected["within"], where, "within")
    return {**expected, "at": show_at(parse_at(expected["at"], tz, where), tz)}


def _dump(rows: list[dict[str, Any]]) -> str:
    """Rows as expected.yaml writes them, to paste after checking them by hand."""
    return "\n".join(
        "  - {" + ", ".join(f"{k}: {v!r}" if k == "at" else f"{k}: {v}" for k, v in r.items()) + "}"
        for r in rows
    )


# -- the runner -----------------------------------------------------------------------------------


def _case(folder: Path) -> Any:
    """A scenario; one with a ``known-bug.txt`` is expected to fail its assertions until the bug is fixed
    (strictly: it turns red once it passes, so that the file is removed; a malformed file still errors)."""
    bug = folder / "known-bug.txt"
    if not bug.exists():
        return pytest.param(folder, id=folder.name)
    reason = bug.read_text(encoding="utf-8").strip().splitlines()[0]
    return pytest.param(
        folder, id=folder.name, marks=pytest.mark.xfail(strict=True, raises=AssertionError, reason=reason)
    )


@pytest.mark.parametrize("folder", [_case(s) for s in SCENARIOS])
async def test_scenario(folder: Path, tmp_path: Path) -> None:
    cfg = load_config(folder / "devices.yaml", environ={})
    tz = zoneinfo.ZoneInfo(cfg.site.timezone)
    timeline = load_timeline(folder, cfg, tz)
    expected_doc = yaml.safe_load((folder / "expected.yaml").read_text(encoding="utf-8")) or {}
    unknown = set(expected_doc) - {"transitions", "protections", "active"}
    if unknown:
        raise ScenarioError(f"{folder.name}/expected.yaml: unknown keys {sorted(unknown)}")
    expected = [
        _normalise(e, tz, f"expected.yaml transitions[{i}]")
        for i, e in enumerate(expected_doc.get("transitions") or [])
    ]
    # A snapshot names an instant to the second; it is taken after the last instant of that second
    # (a jittered reading at 10:00:00.031 and an exact tick at 10:00 are both "10:00").
    last_of_second = {round(at): at for at in timeline}
    snapshots: dict[float, dict[str, Any]] = {}
    for snap in expected_doc.get("protections") or []:
        second = (
            round(max(timeline))
            if snap["at"] == "end"
            else parse_at(snap["at"], tz, "expected.yaml protections")
        )
        if second not in last_of_second:
            raise ScenarioError(
                f"expected.yaml protections: {show_at(second, tz)} is not an instant of the timeline"
            )
        snapshots[last_of_second[second]] = snap

    clock = ManualClock(min(timeline))
    async with opened(build(cfg, tmp_path, clock=clock)) as services:
        book, rules, pipeline = services.book, services.rules, services.pipeline
        actual: list[dict[str, Any]] = []
        seen: dict[int, list[tuple[float, str | None, str]]] = {}  # alert id → (at, from, to) as reported
        got_states: list[dict[str, Any]] = []
        want_states: list[dict[str, Any]] = []
        for at, instant in timeline.items():
            clock.advance(at - clock.now())
            for device_id, status in instant.status.items():
                pipeline.status(device_id, status, None, at)  # what the collector tells the pipeline
            touched = rules.ingest(instant.readings)
            if instant.tick:
                transitions = rules.evaluate(at)
            elif touched:  # in config order, so that transitions of several rooms come in a stable order
                transitions = rules.evaluate(at, [r.id for r in cfg.rooms if r.id in touched])
            else:
                transitions = []
            for action in instant.actions:
                transitions.append(_act(book, cfg, action, at))
            for t in transitions:
                actual.append(_row(t, tz, at))
                from_state = None if t.from_state is None else str(t.from_state)
                seen.setdefault(t.alert.id, []).append((at, from_state, str(t.to_state)))
            if at in snapshots:
                want = {k: v for k, v in snapshots[at].items() if k != "at"}
                got = {
                    room: {
                        p.protection: str(p.state) for p in rules.protections(room) if p.protection in states
                    }
                    for room, states in want.items()
                }
                got_states.append({"at": show_at(round(at), tz), **got})
                want_states.append({"at": show_at(round(at), tz), **want})
        check(folder, expected_doc, expected, actual, got_states, want_states, seen, book, tz)


def check(
    folder: Path,
    expected_doc: dict[str, Any],
    expected: list[dict[str, Any]],
    actual: list[dict[str, Any]],
    got_states: list[dict[str, Any]],
    want_states: list[dict[str, Any]],
    seen: dict[int, list[tuple[float, str | None, str]]],
    book: AlertBook,
    tz: zoneinfo.ZoneInfo,
) -> None:
    """The scenario's transitions, protection states, open alerts and recorded history are as expected."""
    projected = [_project(a, expected[i] if i < len(expected) else None, tz) for i, a in enumerate(actual)]
    assert projected == expected, f"{folder.name}: transitions differ; actual:\n{_dump(projected)}"
    assert got_states == want_states, f"{folder.name}: protection states differ"
    if "active" in expected_doc:
        open_now = [
            {
                "protection": a.protection,
                "rule": a.rule,
                "device": a.device,
                "state": str(a.state),
                "severity": str(a.severity),
            }
            for a in book.open_alerts()
        ]
        assert open_now == (expected_doc["active"] or []), f"{folder.name}: open alerts at the end differ"
    # Every transition reported was recorded, with its time, and nothing else was.
    book.sync()
    for alert_id, reported in seen.items():
        recorded = [(e.at, e.from_state, e.to_state) for e in book.history(alert_id)]
        assert recorded == reported, f"{folder.name}: alert {alert_id} history differs from its transitions"


def _act(book: AlertBook, cfg: Config, action: dict[str, Any], at: float) -> Transition:
    """A person acknowledges or resolves an open alert named ``protection/rule/device``."""
    verb = "ack" if "ack" in action else "resolve"
    protection, _, rest = str(action[verb]).partition("/")
    rule, _, device = rest.partition("/")
    room = action.get("room") or (cfg.device(device).room if device else None)
    match = [
        a
        for a in book.open_alerts()
        if (a.protection, a.rule, a.device or "") == (protection, rule, device) and room in (None, a.room)
    ]
    if len(match) != 1:
        raise ScenarioError(f"timeline: {verb}: {action[verb]!r} matches {len(match)} open alerts, not 1")
    before = match[0]
    if verb == "ack":
        after = book.acknowledge(
            before.id, by=action["by"], comment=action.get("comment", ""), now=at
        ).result(10)
    else:
        after = book.resolve(before.id, by=action["by"], reason=action.get("reason", ""), now=at).result(10)
    return Transition(after, before.state, after.state, notify=False)


# -- the format itself ----------------------------------------------------------------------------

FORMAT_CONFIG = """
site: {timezone: Asia/Shanghai}
rooms: [{id: r1, name: 一号库房}]
devices:
  - {id: th-1, room: r1, modbus: {host: 10.0.0.1, unit: 1}, poll: 30s,
     points: [{metric: humidity, address: 0, scale: 0.1}, {metric: temperature, address: 1, scale: 0.1}]}
  - {id: door-1, room: r1, mqtt: {topic: a/door}, points: [{metric: door, map: {open: 1, closed: 0}}]}
"""


def _timeline(tmp_path: Path, text: str) -> dict[float, Instant]:
    from core.config import parse_config

    (tmp_path / "timeline.yaml").write_text(text, encoding="utf-8")
    cfg = parse_config(FORMAT_CONFIG, environ={})
    return load_timeline(tmp_path, cfg, zoneinfo.ZoneInfo("Asia/Shanghai"))


def test_repeats_end_before_until_ramps_and_maps(tmp_path: Path) -> None:
    timeline = _timeline(
        tmp_path,
        """
- {at: "2026-01-05 10:00", until: "2026-01-05 10:02", every: 30s, device: th-1, humidity: {from: 50, to: 54}}
- {at: "2026-01-05 10:01", device: door-1, door: open}
- {at: 2026-01-05 10:01:30, device: th-1, humidity: 6553.5}
- {at: "2026-01-05 10:01", tick: true}
""",
    )
    start = dt.datetime(2026, 1, 5, 10, 0, tzinfo=zoneinfo.ZoneInfo("Asia/Shanghai")).timestamp()
    assert list(timeline) == [start, start + 30, start + 60, start + 90]  # 10:02 itself not included
    assert [r.value for i in timeline.values() for r in i.readings if r.metric == "humidity"] == [
        50.0,
        51.0,
        52.0,
        53.0,  # the out-of-range 6553.5 at 10:01:30 is rejected, as the pipeline would
    ]
    assert [(r.metric, r.value) for r in timeline[start + 60].readings] == [("humidity", 52.0), ("door", 1.0)]
    assert timeline[start + 60].tick and not timeline[start].tick


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('- {at: "2026-01-05 10:00", device: th-9, humidity: 50}', "device 'th-9' is not in devices.yaml"),
        ('- {at: "2026-01-05 10:00", device: th-1, humidty: 50}', "['humidty'] not points of th-1"),
        ('- {at: "10:00", device: th-1, humidity: 50}', "'10:00' is not a local time"),
        (
            '- {at: "2026-01-05 10:00", every: 30s, device: th-1, humidity: 50}',
            "needs both every: and until:",
        ),
        ('- {at: "2026-01-05 10:00", device: th-1, status: asleep}', "'asleep' is not one of"),
        (
            '- {at: "2026-01-05 10:00", until: "2026-01-05 11:00", every: 1m, jitter: 50ms, tick: true}',
            "tick: keeps exact times",
        ),
        (
            '- {at: "2026-01-05 10:00", until: "2026-01-05 11:00", every: 50s..70s, tick: true}',
            "tick: keeps exact times",
        ),
        (
            '- {at: "2026-01-05 10:00", until: "2026-01-05 11:00", every: 10s, jitter: 5s, device: th-1,'
            " humidity: 50}",
            "jitter: must be under half the interval",
        ),
        (
            '- {at: "2026-01-05 10:00", until: "2026-01-05 11:00", every: 13s..7s, device: th-1, humidity: 50}',
            "the shortest interval comes first",
        ),
        ('- {at: "2026-01-05 10:00", jitter: soon, device: th-1, humidity: 50}', "jitter: 'soon' is not"),
    ],
)
def test_a_malformed_timeline_names_the_entry(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ScenarioError, match=r"timeline\.yaml\[0\]") as caught:
        _timeline(tmp_path, text)
    assert error in str(caught.value)


TZ = zoneinfo.ZoneInfo("Asia/Shanghai")
TEN = dt.datetime(2026, 1, 5, 10, 0, tzinfo=TZ).timestamp()


def test_jitter_moves_each_instant_but_keeps_its_batch_and_the_ticks_exact(tmp_path: Path) -> None:
    text = """
- {at: "2026-01-05 10:00", until: "2026-01-05 11:00", every: 10s, jitter: 50ms, device: th-1,
   humidity: 50, temperature: {from: 20, to: 25}}
- {at: "2026-01-05 10:00", until: "2026-01-05 11:00", every: 1m, tick: true}
"""
    timeline = _timeline(tmp_path, text)
    polled = [(t, i) for t, i in timeline.items() if i.readings]
    assert len(polled) == 360
    offsets = []
    for k, (t, instant) in enumerate(polled):
        offset = t - (TEN + 10 * k)
        assert abs(offset) <= 0.05 + 1e-9
        assert round(offset, 3) == pytest.approx(offset, abs=1e-6)  # whole milliseconds
        offsets.append(round(offset, 3))
        # One batch per poll; the ramp is read at the poll's nominal instant (jitter moves its stamp).
        assert [(r.metric, r.time) for r in instant.readings] == [("humidity", t), ("temperature", t)]
        assert instant.readings[1].value == round(20 + 5 * 10 * k / 3600, 3)
    assert len(set(offsets)) > 50 and min(offsets) < -0.04 and max(offsets) > 0.04
    assert [t for t, i in timeline.items() if i.tick] == [TEN + 60 * k for k in range(60)]
    assert _timeline(tmp_path, text) == timeline  # seeded: the same times on every run


def test_an_interval_range_draws_every_gap_and_a_chained_entry_continues_the_timer(tmp_path: Path) -> None:
    text = """
- {at: "2026-01-05 10:00", until: "2026-01-05 10:30", every: 7s..13s, device: th-1, humidity: 50}
- {at: "2026-01-05 10:30", until: "2026-01-05 11:00", every: 7s..13s, device: th-1, humidity: {from: 50, to: 53}}
- {at: "2026-01-05 10:00", until: "2026-01-05 11:00", every: 7s..13s, device: door-1, door: closed}
"""
    timeline = _timeline(tmp_path, text)
    seen = {
        device: [(t, r.value) for t, i in timeline.items() for r in i.readings if r.device == device]
        for device in ("th-1", "door-1")
    }
    for device, readings in seen.items():
        times = [t for t, _ in readings]
        gaps = [b - a for a, b in pairwise(times)]
        assert times[0] == TEN and times[-1] < TEN + 3600, device
        # th-1's second entry starts where its first ended: the gap across 10:30 is drawn too.
        assert all(7 - 1e-6 <= g <= 13 + 1e-6 for g in gaps), device
        assert min(gaps) < 8 and max(gaps) > 12 and 9.5 < sum(gaps) / len(gaps) < 10.5, device
    # The ramp runs from its entry's at (10:30), whenever the first report after it comes.
    ramp = [(t, v) for t, v in seen["th-1"] if t >= TEN + 1800]
    assert ramp[0][0] > TEN + 1800
    assert all(v == round(50 + 3 * (t - TEN - 1800) / 1800, 3) for t, v in ramp)
    # Seeded per entry: another entry draws other gaps.
    assert [t for t, _ in seen["th-1"]][:5] != [t for t, _ in seen["door-1"]][:5]


def _actual(at: float) -> dict[str, Any]:
    return {
        "at": show_at(round(at), TZ),
        "instant": at,
        "protection": "fire",
        "rule": "temperature_rise",
        "device": "th-1",
        "to_state": "firing",
        "severity": "warning",
    }


@pytest.mark.parametrize(
    ("at", "within", "matches"),
    [
        ("2026-01-05 10:00:50", None, True),  # the jittered instant, rounded to the second
        ("2026-01-05 10:00:51", None, False),
        ("2026-01-05 10:00:45", "10s", True),
        ("2026-01-05 10:01:00", "10s", True),
        ("2026-01-05 10:00:40", "10s", False),  # 10.031 s off
    ],
)
def test_an_expected_at_matches_to_the_second_or_within(at: str, within: str | None, matches: bool) -> None:
    actual = _actual(TEN + 50.031)
    expected = {k: v for k, v in _actual(0).items() if k not in ("at", "instant")}
    expected["at"] = at
    if within is not None:
        expected["within"] = within
    expected = _normalise(expected, TZ, "expected.yaml transitions[0]")
    assert (_project(actual, expected, TZ) == expected) is matches
