"""What rules see and what they say: room views in, conditions out. No I/O here.

The engine (rules/engine.py) keeps rolling windows of the readings and builds a ``RoomView`` per room;
each protection module's pure ``evaluate(view, thresholds, now)`` turns it into ``Condition``s; the
alert lifecycle (rules/lifecycle.py) turns conditions over time into alerts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Severity(StrEnum):
    """How bad an alert is; it may rise while the alert is active."""

    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0, 1, 2: for comparing severities."""
        return _RANK[self]


_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


class ProtectionState(StrEnum):
    """What the wall dashboard shows for one protection of one room."""

    OK = "ok"
    WARNING = "warning"
    ALARM = "alarm"
    UNKNOWN = "unknown"


# Condition and SeriesView are values made afresh on every evaluation (a hundred rooms make a few
# thousand a pass) and never changed once made. They are not frozen=True: a frozen dataclass's
# __init__ sets each field through object.__setattr__, which cost 40 % of an evaluation pass
# (benchmarks/rules.py, 2026-12-01: 27 → 16 ms a pass over 100 rooms).
@dataclass(slots=True)
class Condition:
    """What one rule says about one thing (a room, or one device in it) at one moment.

    ``trigger`` and ``clear`` are separate so that hysteresis lives in the rule: RH above 60 triggers,
    RH below 58 clears, in between neither. ``hold`` is how long ``trigger`` must last before the alert
    fires (the rule's ``for:``); ``clear_hold`` how long ``clear`` must last before it resolves.
    ``unknown`` (inputs missing or stale) neither fires nor clears anything.
    """

    protection: str
    rule: str  # stable id within the protection, e.g. "humidity_high"; site rules use their name
    room: str
    device: str | None
    trigger: bool
    clear: bool
    severity: Severity
    value: float | None
    threshold: float | None
    message: str  # zh-CN sentence, e.g. "一号库房 湿度 63.2%RH 超过上限 60%"
    hold: float = 0.0
    clear_hold: float = 0.0
    unknown: bool = False

    @property
    def fingerprint(self) -> str:
        """The alert identity: protection, rule, room, device."""
        return f"{self.protection}|{self.rule}|{self.room}|{self.device or ''}"


@dataclass(slots=True)
class SeriesView:
    """One (device, metric) of a room as the rules see it now."""

    device: str
    metric: str
    value: float | None  # the latest valid value; None when stale or never seen
    time: float | None  # when it was read
    stale: bool  # no valid reading for 3 poll intervals (or the point's stale_after)
    min_24h: float | None = None  # over the rolling 24 h
    max_24h: float | None = None
    mean_24h: float | None = None
    rise_per_min: float | None = None  # steepest rise over the rate-of-rise window (°C/min for temperature)


@dataclass(frozen=True, slots=True)
class RoomView:
    """Everything the protections need to know about one room at one moment."""

    room: str
    name: str
    kind: str  # JGJ 25-2010 room kind: paper, special, magnetic, film_copy, film_master
    open_now: bool  # inside access_hours
    series: dict[str, list[SeriesView]] = field(default_factory=dict)  # metric → one per device
    offline: frozenset[str] = frozenset()  # devices whose collector reports them offline or faulty

    def of(self, metric: str) -> list[SeriesView]:
        """The series of a metric in this room (empty when the room has no such sensor)."""
        return self.series.get(metric, [])
