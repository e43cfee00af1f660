"""防火 Fire: smoke detectors and fire-panel contacts alert at once; the room temperature gives an
advisory pre-alarm.

Sources (docs/protections.md, 防火 row):
- Smoke / fire contact = critical at once.
- Rate-of-rise convention: a temperature rise > 4 °C/min over a 1–5 min window, or a temperature
  ≥ 46 °C = fire pre-alarm. A T/H transmitter is not a certified heat detector, so this is advisory
  (warning, never critical); a normal room drifts < 0.01 °C/min. The window defaults to the short end
  (1 min): 4 °C in a minute is far above the ±0.5 °C sensor noise, and a short window reacts first.
  The engine computes ``SeriesView.rise_per_min`` over ``window``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from core.config import Thresholds
from rules.model import Condition, RoomView
from rules.protections._common import (
    DEFAULT_CLEAR_FOR,
    Level,
    above,
    any_usable,
    event,
    no_data,
    set_or,
    usable,
)

ID = "fire"
INPUTS: tuple[str, ...] = ("smoke", "fire", "temperature")
# The fire detectors proper: without one of them working the protection is unknown, whatever the
# advisory temperature says.
DETECTORS: tuple[str, ...] = ("smoke", "fire")


@dataclass(frozen=True, slots=True)
class FireParams:
    """Effective fire thresholds."""

    rate: float  # °C per minute
    window: float  # seconds over which the engine measures the rise
    max_temperature: float  # °C
    clear_hold: float = DEFAULT_CLEAR_FOR


DEFAULTS: MappingProxyType[str, FireParams] = MappingProxyType(
    {"all": FireParams(rate=4.0, window=60.0, max_temperature=46.0)}
)


def params(kind: str, overrides: Thresholds) -> FireParams:
    """The effective thresholds (the same for every room kind) with these overrides."""
    d = DEFAULTS["all"]
    o = overrides.fire
    if o is None:
        return d
    return FireParams(
        rate=set_or(o.rate, d.rate),
        window=set_or(o.window, d.window),
        max_temperature=set_or(o.max_temperature, d.max_temperature),
    )


def evaluate(view: RoomView, thresholds: FireParams, now: float) -> list[Condition]:
    """smoke, fire_alarm (critical at once); temperature_rise, temperature_high (advisory warnings)."""
    out: list[Condition] = [] if any_usable(view, DETECTORS) else [no_data(view, ID)]
    for s in view.series.get("smoke", ()):
        out.append(event(view, ID, "smoke", s, "烟感报警", "烟感正常"))
    for s in view.series.get("fire", ()):
        out.append(event(view, ID, "fire_alarm", s, "消防主机火警", "消防主机无火警"))
    rate = Level(thresholds.rate, thresholds.rate, clear_hold=thresholds.clear_hold)
    hot = Level(
        thresholds.max_temperature,
        thresholds.max_temperature,
        clear_hold=thresholds.clear_hold,
        inclusive=True,
    )
    for s in view.series.get("temperature", ()):
        if s.rise_per_min is not None or not usable(view, s):
            out.append(
                above(view, ID, "temperature_rise", s, rate, s.rise_per_min, "温升速率", "°C/min", _ADVISORY)
            )
        out.append(above(view, ID, "temperature_high", s, hot, note=_ADVISORY))
    return out


_ADVISORY = "火灾预警，温湿度变送器读数，仅供参考"
