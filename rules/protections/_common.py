"""Building blocks shared by the protection modules: usable inputs, threshold and event conditions.

Every helper returns one ``Condition`` for one series, whether it triggers or not: the lifecycle needs
the "clear" answers as much as the "trigger" ones, and ``unknown`` when the input cannot be trusted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from core.metrics import METRICS
from core.protections import PROTECTIONS
from rules.model import Condition, RoomView, SeriesView, Severity

# How long a threshold condition must stay clear before its alert resolves, unless configured
# (docs/protections.md, "Bafang's own defaults"). Event contacts clear as soon as they return to normal.
DEFAULT_CLEAR_FOR = 300.0

# Short zh-CN names used in messages (the vocabulary's are longer, e.g. 相对湿度).
_LABELS = {"humidity": "湿度", "temperature": "温度", "light": "照度", "mold_risk": "霉变风险"}
# How a threshold's unit reads after a number: "超过上限 60%", as people write it.
_SHORT_UNIT = {"%RH": "%"}


def label(metric: str) -> str:
    """The zh-CN name of a metric in messages."""
    known = _LABELS.get(metric)
    if known is not None:
        return known
    m = METRICS.get(metric)
    return m.zh if m is not None and m.zh else metric


def unit(metric: str) -> str:
    """The unit of a metric, as written after a value."""
    m = METRICS.get(metric)
    return m.unit if m is not None else ""


def usable(view: RoomView, s: SeriesView) -> bool:
    """A series whose latest value can be trusted now: not stale, seen, its device not offline."""
    return s.value is not None and not s.stale and s.device not in view.offline


def any_usable(view: RoomView, metrics: Iterable[str]) -> bool:
    """Whether at least one series of these metrics is usable in this room."""
    return any(usable(view, s) for m in metrics for s in view.series.get(m, ()))


def why_unusable(view: RoomView, s: SeriesView) -> str:
    """zh-CN reason a series is not used."""
    if s.device in view.offline:
        return "设备离线"
    return "数据中断" if s.value is not None or s.time is not None else "无数据"


def no_data(view: RoomView, protection: str, rule: str = "no_data") -> Condition:
    """The protection cannot be judged: none of its inputs is usable (or the room has no such sensor)."""
    name = PROTECTIONS[protection][0]
    return Condition(
        protection,
        rule,
        view.room,
        None,
        trigger=False,
        clear=False,
        severity=Severity.WARNING,
        value=None,
        threshold=None,
        message=f"{view.name} {name} 无可用监测数据，状态未知",
        unknown=True,
    )


def unknown(view: RoomView, protection: str, rule: str, s: SeriesView, threshold: float | None) -> Condition:
    """This series cannot be judged now: its alerts neither fire nor clear."""
    return Condition(
        protection,
        rule,
        view.room,
        s.device,
        trigger=False,
        clear=False,
        severity=Severity.WARNING,
        value=None,
        threshold=threshold,
        message=f"{view.name} {label(s.metric)}（{s.device}）{why_unusable(view, s)}，状态未知",
        unknown=True,
    )


@dataclass(frozen=True, slots=True)
class Level:
    """One threshold of a rule on a value: where it triggers, where it clears, how long each must hold."""

    limit: float
    clear: float  # the level back past which the condition is clear (hysteresis)
    hold: float = 0.0
    clear_hold: float = DEFAULT_CLEAR_FOR
    critical: float | None = None  # at or past this: critical
    severity: Severity = Severity.WARNING
    inclusive: bool = False  # trigger at the limit itself (≥ / ≤), not only past it


def above(
    view: RoomView,
    protection: str,
    rule: str,
    s: SeriesView,
    level: Level,
    value: float | None = None,
    what: str | None = None,
    unit_text: str | None = None,
    note: str = "",
) -> Condition:
    """``value`` (default: the series' latest) above ``level.limit``; clear at or below ``level.clear``."""
    return _threshold(view, protection, rule, s, level, value, what, unit_text, note, high=True)


def below(
    view: RoomView,
    protection: str,
    rule: str,
    s: SeriesView,
    level: Level,
    value: float | None = None,
    what: str | None = None,
    unit_text: str | None = None,
    note: str = "",
) -> Condition:
    """``value`` (default: the series' latest) below ``level.limit``; clear at or above ``level.clear``."""
    return _threshold(view, protection, rule, s, level, value, what, unit_text, note, high=False)


def _threshold(
    view: RoomView,
    protection: str,
    rule: str,
    s: SeriesView,
    level: Level,
    value: float | None,
    what: str | None,
    unit_text: str | None,
    note: str,
    high: bool,
) -> Condition:
    if not usable(view, s):
        return unknown(view, protection, rule, s, level.limit)
    v = s.value if value is None else value
    assert v is not None
    limit, crit = level.limit, level.critical
    if high:
        trigger = v >= limit if level.inclusive else v > limit
        clear = v < level.clear if level.inclusive else v <= level.clear
        critical = crit is not None and v >= crit
    else:
        trigger = v <= limit if level.inclusive else v < limit
        clear = v > level.clear if level.inclusive else v >= level.clear
        critical = crit is not None and v <= crit
    if trigger:
        u = unit(s.metric) if unit_text is None else unit_text
        lu = _SHORT_UNIT.get(u, u)
        verb = (
            ("达到上限" if level.inclusive else "超过上限")
            if high
            else ("达到下限" if level.inclusive else "低于下限")
        )
        msg = f"{view.name} {what or label(s.metric)} {v:.1f}{u} {verb} {limit:g}{lu}"
        if critical and crit is not None:
            msg += f"（严重：{'≥' if high else '≤'} {crit:g}{lu}）"
        if note:
            msg += f"（{note}）"
    else:
        # Only a triggering condition's sentence reaches an alert; this one is evaluated for every
        # series on every evaluation, so it stays short.
        msg = f"{view.name} {what or label(s.metric)} {'未超过上限' if high else '未低于下限'}"
    return Condition(
        protection,
        rule,
        view.room,
        s.device,
        trigger=trigger,
        clear=clear,
        severity=Severity.CRITICAL if critical else level.severity,
        value=v,
        threshold=limit,
        message=msg,
        hold=level.hold,
        clear_hold=level.clear_hold,
    )


def event(
    view: RoomView,
    protection: str,
    rule: str,
    s: SeriesView,
    active_text: str,
    normal_text: str,
    armed: bool = True,
    severity: Severity = Severity.CRITICAL,
    idle_text: str | None = None,
) -> Condition:
    """A contact or detection (value > 0) alerting at once; ``armed=False`` ignores it (``idle_text``).

    It clears only when the contact is back to normal: a door open since 02:00 is not "resolved" by the
    room opening at 08:30, and while disarmed an active contact neither fires nor clears.
    """
    if not usable(view, s):
        return unknown(view, protection, rule, s, None)
    v = s.value
    assert v is not None
    active = v > 0
    trigger = armed and active
    text = active_text if trigger else (idle_text or normal_text) if active else normal_text
    return Condition(
        protection,
        rule,
        view.room,
        s.device,
        trigger=trigger,
        clear=not active,
        severity=severity,
        value=v,
        threshold=None,
        message=f"{view.name} {text}（{s.device}）",
        clear_hold=0.0,
    )


def set_or(value: float | None, default: float) -> float:
    """An override when given, else the default."""
    return default if value is None else value
