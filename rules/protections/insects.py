"""防虫 Insects: any pest detection alerts at once; an insect-favourable climate that persists warns.

Sources (docs/protections.md, 防虫 row): "any detection; also warn when T > 25 °C
and RH > 65 % persist (insect-favourable)". Detections are events, critical, as for rodents.
- "Persist" has no duration in the sources: Bafang's default hold is 24 h, the same rolling day the
  other climate rules use; set `insects: {for: …}` per site.
- A pest detector reports the count of its latest interval: a count above 0 is a detection.
- The climate rule pairs temperature and humidity of the same device (a T/H transmitter).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from core.config import Thresholds
from rules.model import Condition, RoomView, SeriesView, Severity
from rules.protections._common import DEFAULT_CLEAR_FOR, any_usable, event, no_data, set_or, unknown, usable

ID = "insects"
INPUTS: tuple[str, ...] = ("pest", "temperature", "humidity")


@dataclass(frozen=True, slots=True)
class InsectParams:
    """Effective insect thresholds."""

    temperature: float  # °C, above
    humidity: float  # %RH, above
    hold: float
    clear_hold: float = DEFAULT_CLEAR_FOR


DEFAULTS: MappingProxyType[str, InsectParams] = MappingProxyType(
    {"all": InsectParams(temperature=25.0, humidity=65.0, hold=86400.0)}
)


def params(kind: str, overrides: Thresholds) -> InsectParams:
    """The effective thresholds (the same for every room kind) with these overrides."""
    d = DEFAULTS["all"]
    o = overrides.insects
    if o is None:
        return d
    return InsectParams(
        temperature=set_or(o.temperature, d.temperature),
        humidity=set_or(o.humidity, d.humidity),
        hold=set_or(o.for_, d.hold),
        clear_hold=set_or(o.clear_for, d.clear_hold),
    )


def evaluate(view: RoomView, thresholds: InsectParams, now: float) -> list[Condition]:
    """pest_detected (critical at once); insect_climate (T and RH above their limits, held)."""
    out: list[Condition] = [] if any_usable(view, INPUTS) else [no_data(view, ID)]
    for s in view.series.get("pest", ()):
        out.append(event(view, ID, "pest_detected", s, f"检测到虫情 {s.value or 0:g} 只", "无虫情"))
    humidity: dict[str, SeriesView] = {h.device: h for h in view.series.get("humidity", ())}
    for t in view.series.get("temperature", ()):
        h = humidity.get(t.device)
        if h is not None:
            out.append(_climate(view, t, h, thresholds))
    return out


def _climate(view: RoomView, t: SeriesView, h: SeriesView, p: InsectParams) -> Condition:
    if not usable(view, t):
        return unknown(view, ID, "insect_climate", t, p.temperature)
    if not usable(view, h):
        return unknown(view, ID, "insect_climate", h, p.humidity)
    assert t.value is not None and h.value is not None
    hot, humid = t.value > p.temperature, h.value > p.humidity
    trigger = hot and humid
    # The full sentence only when it triggers: this runs for every T/H device at every evaluation.
    message = (
        (
            f"{view.name} 温度 {t.value:.1f}°C、湿度 {h.value:.1f}%RH 适宜害虫滋生"
            f"（温度 > {p.temperature:g}°C 且湿度 > {p.humidity:g}% 持续 {_duration(p.hold)}即预警）"
        )
        if trigger
        else f"{view.name} 温湿度不利于害虫滋生"
    )
    return Condition(
        ID,
        "insect_climate",
        view.room,
        t.device,
        trigger=trigger,
        clear=not trigger,
        severity=Severity.WARNING,
        value=t.value,
        threshold=p.temperature,
        message=message,
        hold=p.hold,
        clear_hold=p.clear_hold,
    )


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} 小时"
    return f"{seconds / 60:g} 分钟"
