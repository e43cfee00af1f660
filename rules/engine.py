"""The rules engine: readings in (once durable), room views built, protections evaluated, alerts kept.

For every (device, metric) the engine keeps the latest valid value and the rolling windows the rules
need (24 h min/max for temperature and humidity, 24 h mean for dust, the rate of rise for the fire
pre-alarm); per room the derived climate (dew point, Preservation Index, TWPI, %EMC, mold risk). On
each stored batch it evaluates the rooms the batch touched; a periodic ``tick`` evaluates every room,
so that holds elapse, schedules change (the room closes at 17:30) and silence is noticed without new
readings. Time always comes from the caller (``now``) or the injected clock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.clock import Clock, SystemClock
from core.config import Config, MqttDevice
from core.metrics import METRICS
from core.types import Reading
from rules.climate import (
    MoldRiskAccumulator,
    TwpiAccumulator,
    dew_point,
    emc,
    lim0_rh_crit,
    pi_rating,
    preservation_index,
)
from rules.lifecycle import Alert, AlertBook, Transition
from rules.model import Condition, ProtectionState, RoomView, SeriesView, Severity
from rules.windows import RateOfRise, RollingMean, RollingMinMax

log = logging.getLogger("bafang.rules")

DAY = 86400.0
# Metrics whose 24 h swing the rules judge (JGJ 25-2010 §5.2.3), whose 24 h mean (dust), and whose rise.
SWING_METRICS = frozenset({"temperature", "humidity"})
MEAN_METRICS = frozenset({"pm25", "pm10", "co2", "hcho", "tvoc", "so2", "no2", "o3"})
RISE_METRICS = frozenset({"temperature"})
MOLD_RISK = "mold_risk"  # the derived per-room series the mold protection reads
# Contacts (smoke, leak, door, intrusion, …): a change of state is an event that may complete an alert
# at once, so the room it happens in is evaluated without waiting for its share (see on_readings).
BINARY_METRICS = frozenset(m.name for m in METRICS.values() if m.binary)
# At most this share of the time goes to evaluating batches under load: the MQTT client, the pipeline
# and the rules share the event loop's thread, so what evaluation takes, ingest loses. Idle or lightly
# loaded, a batch is evaluated at once; under a drained backlog a room is evaluated every 20× its cost
# (a 250-sensor room costs a few ms), and the 5 s tick evaluates every room regardless.
EVAL_SHARE = 0.05
SITE_RULES = "site"  # the evaluator of a room's site rules: their conditions name their own protection


Evaluator = Callable[[RoomView, float], list[Condition]]


@dataclass(slots=True)
class _Series:
    device: str
    metric: str
    room: str
    stale_after: float | None
    since: float  # when the engine began to expect it: a series never heard is stale only after a grace
    value: float | None = None
    time: float | None = None
    minmax: RollingMinMax | None = None
    mean: RollingMean | None = None
    rise: RateOfRise | None = None

    def add(self, time: float, value: float) -> None:
        if self.time is None or time >= self.time:
            self.value, self.time = value, time
        if self.minmax is not None:
            self.minmax.add(time, value)
        if self.mean is not None:
            self.mean.add(time, value)
        if self.rise is not None:
            self.rise.add(time, value)

    def view(self, now: float) -> SeriesView:
        # Stale once silent for stale_after since its last reading *and* since it was first expected
        # (the service's start, or when a wildcard device was first heard): a restart or a reload gives
        # every device its full interval again, however old the stored readings it warmed up from.
        last = self.since if self.time is None or self.time < self.since else self.time
        stale = self.stale_after is not None and now - last > self.stale_after
        return SeriesView(
            device=self.device,
            metric=self.metric,
            value=None if stale else self.value,
            time=self.time,
            stale=stale,
            min_24h=self.minmax.min(now) if self.minmax is not None else None,
            max_24h=self.minmax.max(now) if self.minmax is not None else None,
            mean_24h=self.mean.mean(now) if self.mean is not None else None,
            rise_per_min=self.rise.rise_per_min(now) if self.rise is not None else None,
        )


@dataclass(slots=True)
class _Climate:
    """Derived climate of one room, from its first device that reports both T and RH."""

    t: float | None = None
    rh: float | None = None
    time: float | None = None
    twpi: TwpiAccumulator = field(default_factory=TwpiAccumulator)
    mold: MoldRiskAccumulator = field(default_factory=MoldRiskAccumulator)


@dataclass(frozen=True, slots=True)
class ProtectionStatus:
    """One protection of one room, as the wall dashboard shows it."""

    room: str
    protection: str
    state: ProtectionState
    reason: str | None
    since: float | None


@dataclass(frozen=True, slots=True)
class StaleWindows:
    """How long each series and device may stay silent before monitoring is lost.

    A point's ``stale_after``, else the room's ``thresholds.monitoring.missed_intervals`` (default 3,
    rules/protections/monitoring.py) times the device's ``poll``; None for a device that reports only on
    change (no poll, no stale_after). Devices heard on a wildcard topic take their entry's points.
    """

    by_series: dict[tuple[str, str], float | None]
    by_device: dict[str, float | None]
    templates: dict[str, MqttDevice]  # room → its wildcard entry
    missed: dict[str, int]  # room → missed intervals

    def series(self, device: str, metric: str, room: str) -> float | None:
        """The window of one (device, metric)."""
        key = (device, metric)
        if key in self.by_series:
            return self.by_series[key]
        tpl = self.templates.get(room)
        if tpl is None:
            return None
        point = next((p for p in tpl.points if p.metric == metric), None)
        if point is not None and point.stale_after is not None:
            return point.stale_after
        return self.missed.get(room, DEFAULT_MISSED) * tpl.poll if tpl.poll else None

    def device(self, device: str) -> float | None:
        """The window of a device as a whole (its collector health shows offline past it)."""
        return self.by_device.get(device)


DEFAULT_MISSED = 3


def stale_windows(config: Config) -> StaleWindows:
    """The silence allowed per series and per device by this configuration."""
    from rules.protections import room_params

    missed: dict[str, int] = {}
    for room in config.rooms:
        mon = room_params(config, room.id).get("monitoring")
        missed[room.id] = int(getattr(mon, "missed_intervals", DEFAULT_MISSED))
    by_series: dict[tuple[str, str], float | None] = {}
    by_device: dict[str, float | None] = {}
    templates: dict[str, MqttDevice] = {}
    for d in config.devices:
        if isinstance(d, MqttDevice) and d.mqtt.device_id_segment is not None:
            templates[d.room] = d
            continue
        n = missed.get(d.room, DEFAULT_MISSED)
        by_device[d.id] = n * d.poll if d.poll is not None else None
        for p in d.points:
            if p.stale_after is not None:
                by_series[(d.id, p.metric)] = p.stale_after
            elif d.poll is not None:
                by_series[(d.id, p.metric)] = n * d.poll
            else:
                by_series[(d.id, p.metric)] = None  # reports only on change: never stale by silence
    return StaleWindows(by_series, by_device, templates, missed)


class RulesEngine:
    """Keeps what the rules need to know and evaluates the protections of every room."""

    def __init__(
        self,
        config: Config,
        book: AlertBook,
        evaluators: dict[str, list[tuple[str, Evaluator]]],
        *,
        clock: Clock | None = None,
        offline: Callable[[], Mapping[str, frozenset[str]]] | None = None,
        eval_share: float = EVAL_SHARE,
    ) -> None:
        self._config = config
        self._book = book
        self._evaluators = evaluators  # room → [(protection, evaluate bound to its thresholds)]
        self._clock = clock or SystemClock()
        self._offline_of = offline  # per room, devices their collector reports offline or faulty
        self._rooms = {r.id: r for r in config.rooms}
        # The fire pre-alarm's rate-of-rise window per room (rules/protections/fire.py, overridable).
        self._rise_window = {
            room: float(getattr(fire, "window", 300.0))
            for room in self._rooms
            if (fire := _params_of(evaluators, room, "fire")) is not None
        }
        self._stale = stale_windows(config)
        self._climate_source: dict[str, str] = self.climate_sources()
        self._started = self._clock.now()  # see begin(): nothing is stale before its interval from here
        self._series: dict[tuple[str, str], _Series] = {}
        self._by_room: dict[str, list[_Series]] = {r: [] for r in self._rooms}
        self._climate: dict[str, _Climate] = {}
        for r in self._rooms:
            mold = _params_of(evaluators, r, "mold")
            days = getattr(mold, "days_to_germination", None)
            self._climate[r] = _Climate(mold=MoldRiskAccumulator(days) if days else MoldRiskAccumulator())
        self._unknown: dict[tuple[str, str], float] = {}  # (room, protection) → unknown since
        self._protections: dict[tuple[str, str], ProtectionStatus] = {}
        self.evaluations = 0
        self._eval_share = eval_share
        self._due: set[str] = set()  # rooms touched since the last evaluation
        self._urgent: set[str] = set()  # rooms where a contact changed state since the last evaluation
        self._later: asyncio.Task[None] | None = None
        self._last_eval = 0.0  # clock's monotonic end of the last batch evaluation, and what it cost
        self._last_cost = 0.0
        for d in config.devices:
            if isinstance(d, MqttDevice) and d.mqtt.device_id_segment is not None:
                continue
            for p in d.points:
                self._series_for(d.id, p.metric, d.room)

    # -- readings --------------------------------------------------------------------------------

    def _series_for(self, device: str, metric: str, room: str) -> _Series:
        key = (device, metric)
        s = self._series.get(key)
        if s is None:
            s = _Series(
                device,
                metric,
                room,
                self._stale.series(device, metric, room),
                max(self._clock.now(), self._started),
                minmax=RollingMinMax() if metric in SWING_METRICS else None,
                mean=RollingMean() if metric in MEAN_METRICS else None,
                rise=self._rise(room) if metric in RISE_METRICS else None,
            )
            self._series[key] = s
            self._by_room.setdefault(room, []).append(s)
        return s

    def begin(self, now: float) -> None:
        """The service starts (or reloads) now: every series gets its whole interval from here before
        it counts as silent, whatever the time of the last stored reading it warms up from."""
        self._started = now
        for s in self._series.values():
            s.since = max(s.since, now)

    def _rise(self, room: str) -> RateOfRise:
        window = self._rise_window.get(room, 300.0)
        # Spans of at least a minute keep sensor noise out (a 0.5 °C step reads ≤ 0.5 °C/min), unless
        # the window itself is shorter. RateOfRise interpolates between readings, so jittered stamps and
        # irregular reports still give a span of exactly min_span (rules/windows.py).
        return RateOfRise(window=window, min_span=min(60.0, window))

    def window_series(self) -> list[tuple[str, str, str]]:
        """(device, metric, room) of every series with rolling windows (to warm them up at start)."""
        return [
            (s.device, s.metric, s.room)
            for s in self._series.values()
            if s.minmax is not None or s.mean is not None or s.rise is not None
        ]

    def ingest(self, batch: Sequence[Reading]) -> set[str]:
        """Take stored readings into the windows; the rooms they touched."""
        touched: set[str] = set()
        series, rooms, sources = self._series, self._rooms, self._climate_source
        for r in batch:
            room = r.room
            if room not in rooms:
                continue
            s = series.get((r.device, r.metric))
            if s is None:
                s = self._series_for(r.device, r.metric, room)
            if (
                r.metric in BINARY_METRICS
                and r.value != (s.value or 0.0)
                and (s.time is None or r.time >= s.time)
            ):
                self._urgent.add(room)
            s.add(r.time, r.value)
            touched.add(room)
            if r.metric in SWING_METRICS and sources.get(room, r.device) == r.device:
                self._climate_from(r)
        return touched

    def climate_sources(self) -> dict[str, str]:
        """Per room, the first configured device that measures both temperature and humidity."""
        out: dict[str, str] = {}
        for d in self._config.devices:
            template = isinstance(d, MqttDevice) and d.mqtt.device_id_segment is not None
            if not template and {p.metric for p in d.points} >= SWING_METRICS:
                out.setdefault(d.room, d.id)
        return out

    def seed_climate(self, room: str, samples: Iterable[tuple[float, float, float]]) -> None:
        """Refill a room's TWPI and mold-risk accumulators from (time, °C, %RH), oldest first."""
        c = self._climate[room]
        for at, t, rh in samples:
            self._climate_add(c, at, t, rh)

    def _climate_add(self, c: _Climate, time: float, t: float, rh: float) -> None:
        if c.time is not None and time <= c.time:
            return
        c.t, c.rh, c.time = t, rh, time
        if rh > 0:
            c.twpi.add(time, preservation_index(t, rh))
        c.mold.add(time, t, rh)

    def _climate_from(self, r: Reading) -> None:
        c = self._climate[r.room]
        other = "humidity" if r.metric == "temperature" else "temperature"
        partner = self._series.get((r.device, other))
        if partner is None or partner.value is None or partner.time is None:
            return
        if abs(partner.time - r.time) > 300:  # a pair read together, not an old value
            return
        # The room's climate comes from one device: its first configured T/H device, else the first
        # heard on a wildcard topic with both (the climate does not jump between sensors).
        self._climate_source.setdefault(r.room, r.device)
        t, rh = (r.value, partner.value) if r.metric == "temperature" else (partner.value, r.value)
        self._climate_add(c, r.time, t, rh)

    async def on_readings(self, batch: Sequence[Reading]) -> None:
        """Pipeline listener: called with each stored batch.

        The touched rooms are evaluated at once, unless the last evaluation was so recent that
        evaluating again would take more than EVAL_SHARE of the event loop: then once, a little later,
        for every room touched meanwhile. Idle or lightly loaded, an alert fires on the reading that
        completes it; under a flood of batches, the rules cannot starve ingest. A room where a contact
        (smoke, leak, door, …) changed state is evaluated at once even then: a leak or a smoke alarm
        fires on its own message, not up to twenty evaluations' cost later. That costs at most one
        evaluation of those rooms per stored batch.
        """
        touched = self.ingest(batch)
        if not touched:
            return
        urgent, self._urgent = self._urgent, set()
        self._due.update(touched)
        if self._later is None:
            until = self._last_eval + self._last_cost * (1 / self._eval_share - 1)
            if until <= self._clock.monotonic():
                self._evaluate_due()
                return
            self._later = asyncio.create_task(self._evaluate_later(until), name="bafang-rules-deferred")
        if urgent:
            self._due -= urgent  # the others wait for the deferred evaluation
            self._evaluate_rooms(urgent)

    async def _evaluate_later(self, until: float) -> None:
        await self._clock.sleep(until - self._clock.monotonic())
        self._later = None
        if self._due:  # empty when a contact's change evaluated every room waiting meanwhile
            self._evaluate_due()

    def evaluate_due(self) -> None:
        """Evaluate now the rooms whose batches wait for a deferred evaluation (at shutdown)."""
        if self._later is not None:
            self._later.cancel()
            self._later = None
        if self._due:
            self._evaluate_due()

    def _evaluate_due(self) -> None:
        rooms, self._due = self._due, set()
        started = self._clock.monotonic()
        self._evaluate_rooms(rooms)
        self._last_eval = self._clock.monotonic()
        self._last_cost = self._last_eval - started

    def _evaluate_rooms(self, rooms: set[str]) -> None:
        try:
            self.evaluate(self._clock.now(), rooms)
        except Exception:
            log.exception("rules evaluation failed")

    # -- evaluation ------------------------------------------------------------------------------

    def view(self, room_id: str, now: float, offline: frozenset[str] = frozenset()) -> RoomView:
        """What the protections see of one room now."""
        room = self._rooms[room_id]
        series: dict[str, list[SeriesView]] = {}
        for s in self._by_room.get(room_id, ()):
            series.setdefault(s.metric, []).append(s.view(now))
        c = self._climate[room_id]
        if c.time is not None:
            # The derived series is only as current as the T and RH it comes from: with every one of
            # them stale, mold is unknown (no value), never judged on the last pair. Not marked stale:
            # "climate" is no device, and the monitoring alert belongs to the silent transmitter.
            fresh = any(not v.stale for m in SWING_METRICS for v in series.get(m, ()))
            risk = c.mold.risk_factor(now) if fresh else None
            series[MOLD_RISK] = [SeriesView("climate", MOLD_RISK, risk, c.time, stale=False)]
        return RoomView(
            room=room.id,
            name=room.name,
            kind=room.kind,
            open_now=self.open_now(room_id, now),
            series=series,
            offline=offline,
        )

    def open_now(self, room_id: str, now: float) -> bool:
        """Whether the room is inside its access hours."""
        room = self._rooms[room_id]
        schedule = getattr(room, "access_schedule", None)
        if schedule is None:
            return True
        return bool(schedule.open_at(now, self._config.site.timezone))

    def evaluate(self, now: float, rooms: Iterable[str] | None = None) -> list[Transition]:
        """Evaluate the protections of the given rooms (default all); the alert transitions."""
        offline = self._offline_of() if self._offline_of is not None else {}
        conditions: list[Condition] = []
        for room_id in self._rooms if rooms is None else rooms:
            view = self.view(room_id, now, offline.get(room_id, frozenset()))
            for protection, evaluate in self._evaluators.get(room_id, ()):
                found = evaluate(view, now)
                self.evaluations += 1
                conditions.extend(found)
                self._note_unknown(room_id, protection, found, now)
        return self._book.observe(conditions, now)

    def tick(self) -> list[Transition]:
        """Evaluate every room now (holds elapse, rooms close, silent sensors are noticed)."""
        return self.evaluate(self._clock.now())

    def _note_unknown(self, room: str, protection: str, found: list[Condition], now: float) -> None:
        key = (room, protection)
        # Unknown when nothing can be judged, or when the protection says its own inputs are missing
        # (fire without a working detector: the advisory temperature conditions do not make it "ok").
        if found and (all(c.unknown for c in found) or any(c.unknown and c.rule == "no_data" for c in found)):
            self._unknown.setdefault(key, now)
        else:
            self._unknown.pop(key, None)

    # -- what the API shows ----------------------------------------------------------------------

    def protections(self, room: str | None = None) -> list[ProtectionStatus]:
        """Per room, per protection: ok | warning | alarm | unknown, with the reason and since when."""
        worst: dict[tuple[str, str], Alert] = {}
        for a in self._book.open_alerts():
            if a.state == "pending":
                continue
            key = (a.room, a.protection)
            cur = worst.get(key)
            if cur is None or Severity(a.severity).rank > Severity(cur.severity).rank:
                worst[key] = a
        out: list[ProtectionStatus] = []
        for room_id in self._rooms:
            if room is not None and room_id != room:
                continue
            for protection, _ in self._evaluators.get(room_id, ()):
                if protection == SITE_RULES:
                    continue
                key = (room_id, protection)
                alert = worst.get(key)
                if alert is not None:
                    state = (
                        ProtectionState.ALARM
                        if alert.severity == Severity.CRITICAL.value
                        else ProtectionState.WARNING
                    )
                    out.append(ProtectionStatus(room_id, protection, state, alert.message, alert.started_at))
                elif key in self._unknown:
                    out.append(
                        ProtectionStatus(
                            room_id, protection, ProtectionState.UNKNOWN, "监测数据缺失", self._unknown[key]
                        )
                    )
                else:
                    out.append(ProtectionStatus(room_id, protection, ProtectionState.OK, None, None))
        return out

    def climate(self, room_id: str, now: float) -> dict[str, Any]:
        """The room's derived climate now (None where inputs are missing)."""
        c = self._climate[room_id]
        fresh = c.time is not None and now - c.time <= 3600
        t, rh = (c.t, c.rh) if fresh else (None, None)
        temps = [s for s in self._by_room.get(room_id, ()) if s.metric == "temperature" and s.minmax]
        hums = [s for s in self._by_room.get(room_id, ()) if s.metric == "humidity" and s.minmax]

        def span(series: list[_Series]) -> tuple[float | None, float | None]:
            lows = [v for s in series if s.minmax and (v := s.minmax.min(now)) is not None]
            highs = [v for s in series if s.minmax and (v := s.minmax.max(now)) is not None]
            return (min(lows) if lows else None, max(highs) if highs else None)

        pi = preservation_index(t, rh) if t is not None and rh is not None and rh > 0 else None
        return {
            "room": room_id,
            "time": c.time,
            "temperature": t,
            "humidity": rh,
            "dew_point": dew_point(t, rh) if t is not None and rh is not None and rh > 0 else None,
            "preservation_index": pi,
            "pi_rating": pi_rating(pi) if pi is not None else None,
            "twpi_30d": c.twpi.value(now),
            "emc": emc(t, rh) if t is not None and rh is not None else None,
            "mold_rh_threshold": lim0_rh_crit(t) if t is not None else None,
            "mold_risk": c.mold.risk_factor(now) if c.time is not None else None,
            "temperature_24h": span(temps),
            "humidity_24h": span(hums),
        }


def _params_of(evaluators: dict[str, list[tuple[str, Evaluator]]], room: str, protection: str) -> Any:
    """The thresholds an evaluator of a room was bound to (None when the room does not show it)."""
    for pid, evaluate in evaluators.get(room, ()):
        if pid == protection:
            return getattr(evaluate, "params", None)
    return None


def bind_evaluators(config: Config) -> dict[str, list[tuple[str, Evaluator]]]:
    """Per room, each shown protection's evaluate bound to the room's thresholds; site rules last."""
    from rules.protections import REGISTRY, room_params, site_rules

    out: dict[str, list[tuple[str, Evaluator]]] = {}
    for room in config.rooms:
        bound: list[tuple[str, Evaluator]] = []
        for pid, params in room_params(config, room.id).items():
            module = REGISTRY[pid]

            def evaluate(view: RoomView, now: float, m: Any = module, p: Any = params) -> list[Condition]:
                return m.evaluate(view, p, now)  # type: ignore[no-any-return]

            evaluate.params = params  # type: ignore[attr-defined]  # read by the engine (_params_of)
            bound.append((pid, evaluate))
        own = config.rules_of(room.id)
        if own:

            def evaluate_site(view: RoomView, now: float, rules: Any = own) -> list[Condition]:
                return site_rules.evaluate(view, rules, now)

            bound.append((SITE_RULES, evaluate_site))
        out[room.id] = bound
    return out
