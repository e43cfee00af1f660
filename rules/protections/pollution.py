"""防污染 Pollution: indoor gases above their limits (CO₂, HCHO, TVOC, SO₂, NO₂, O₃).

Sources: docs/protections.md, 防污染 row: "thresholds per site (archive limits not
found; GB/T 18883 values as fallback)". The fallback values are those of GB/T 18883-2022
《室内空气质量标准》Table 1 (converted to the units of Bafang's metric vocabulary):
CO₂ 0.10 % = 1000 ppm (1 h mean), HCHO 0.08 mg/m³ (1 h), TVOC 0.60 mg/m³ (8 h), SO₂ 0.50 mg/m³ =
500 µg/m³ (1 h), NO₂ 0.20 mg/m³ = 200 µg/m³ (1 h), O₃ 0.16 mg/m³ = 160 µg/m³ (1 h).
- A mean over the standard's period is approximated by a hold of that period (``for:``): the value
  staying above the limit for the whole period means its mean is above it too. This errs towards
  fewer alerts; a site can shorten ``for:`` per pollutant.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from core.config import POLLUTANTS, Limit, Thresholds
from rules.model import Condition, RoomView
from rules.protections._common import DEFAULT_CLEAR_FOR, Level, above, any_usable, no_data, set_or

ID = "pollution"
INPUTS: tuple[str, ...] = POLLUTANTS

HOUR = 3600.0


@dataclass(frozen=True, slots=True)
class PollutionParams:
    """Effective limits per pollutant metric."""

    limits: MappingProxyType[str, Level]


DEFAULTS: MappingProxyType[str, PollutionParams] = MappingProxyType(
    {
        "all": PollutionParams(
            MappingProxyType(
                {
                    "co2": Level(1000.0, 1000.0, HOUR),
                    "hcho": Level(0.08, 0.08, HOUR),
                    "tvoc": Level(0.60, 0.60, 8 * HOUR),
                    "so2": Level(500.0, 500.0, HOUR),
                    "no2": Level(200.0, 200.0, HOUR),
                    "o3": Level(160.0, 160.0, HOUR),
                }
            )
        )
    }
)


def _level(d: Level, o: Limit | None) -> Level:
    if o is None:
        return d
    limit = set_or(o.max, d.limit)
    return Level(limit, limit, set_or(o.for_, d.hold), set_or(o.clear_for, DEFAULT_CLEAR_FOR), o.critical)


def params(kind: str, overrides: Thresholds) -> PollutionParams:
    """The effective limits (the same for every room kind) with these overrides."""
    d = DEFAULTS["all"]
    o = overrides.pollution
    if o is None:
        return d
    return PollutionParams(MappingProxyType({m: _level(d.limits[m], getattr(o, m)) for m in POLLUTANTS}))


def evaluate(view: RoomView, thresholds: PollutionParams, now: float) -> list[Condition]:
    """<metric>_high for each pollutant the room measures."""
    out: list[Condition] = [] if any_usable(view, INPUTS) else [no_data(view, ID)]
    for metric, level in thresholds.limits.items():
        for s in view.series.get(metric, ()):
            out.append(above(view, ID, f"{metric}_high", s, level))
    return out
