"""防尘 Dust: the 24 h mean of PM2.5 and PM10 above its limit.

Sources (docs/protections.md, 防尘 row): no archive-specific limit was found;
GB/T 18883-2022《室内空气质量标准》(indoor air, human-health values, 24 h means) is the starting
default: PM2.5 50 µg/m³, PM10 100 µg/m³. The rule reads the engine's rolling 24 h mean, so no hold is
needed; until the engine has a mean the rule neither fires nor clears.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from core.config import Limit, Thresholds
from rules.model import Condition, RoomView
from rules.protections._common import (
    DEFAULT_CLEAR_FOR,
    Level,
    above,
    any_usable,
    no_data,
    set_or,
    unknown,
    usable,
)

ID = "dust"
INPUTS: tuple[str, ...] = ("pm25", "pm10")


@dataclass(frozen=True, slots=True)
class DustParams:
    """Effective dust limits, as trigger levels on the 24 h means."""

    pm25: Level
    pm10: Level


DEFAULTS: MappingProxyType[str, DustParams] = MappingProxyType(
    {"all": DustParams(pm25=Level(50.0, 50.0), pm10=Level(100.0, 100.0))}
)


def _level(d: Level, o: Limit | None) -> Level:
    if o is None:
        return d
    limit = set_or(o.max, d.limit)
    return Level(limit, limit, set_or(o.for_, d.hold), set_or(o.clear_for, DEFAULT_CLEAR_FOR), o.critical)


def params(kind: str, overrides: Thresholds) -> DustParams:
    """The effective limits (the same for every room kind) with these overrides."""
    d = DEFAULTS["all"]
    return DustParams(pm25=_level(d.pm25, overrides.pm25), pm10=_level(d.pm10, overrides.pm10))


def evaluate(view: RoomView, thresholds: DustParams, now: float) -> list[Condition]:
    """pm25_mean_high, pm10_mean_high on the rolling 24 h mean."""
    out: list[Condition] = [] if any_usable(view, INPUTS) else [no_data(view, ID)]
    for metric, level in (("pm25", thresholds.pm25), ("pm10", thresholds.pm10)):
        rule = f"{metric}_mean_high"
        for s in view.series.get(metric, ()):
            if s.mean_24h is None:
                if not usable(view, s):
                    out.append(unknown(view, ID, rule, s, level.limit))
                continue  # no mean yet: nothing to judge
            what = f"{'PM2.5' if metric == 'pm25' else 'PM10'} 24小时均值"
            out.append(above(view, ID, rule, s, level, s.mean_24h, what))
    return out
