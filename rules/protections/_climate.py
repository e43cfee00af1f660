"""The band-and-swing rules shared by damp (humidity) and temperature: outside [min, max] for a hold,
with hysteresis, and the daily fluctuation (max − min over the rolling 24 h)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from core.config import Band, Swing
from rules.model import Condition, RoomView
from rules.protections._common import (
    DEFAULT_CLEAR_FOR,
    Level,
    above,
    any_usable,
    below,
    label,
    no_data,
    set_or,
    usable,
)


@dataclass(frozen=True, slots=True)
class ClimateParams:
    """Effective thresholds of one climate quantity in one room."""

    min: float
    max: float
    hold: float  # for:
    clear: float  # hysteresis
    clear_hold: float  # clear_for:
    critical: float | None  # high side
    critical_low: float | None
    swing_max: float  # 24 h max − min
    swing_hold: float = 0.0
    swing_clear: float = 0.0
    swing_clear_hold: float = DEFAULT_CLEAR_FOR
    # (high, low, swing), built once so that evaluate allocates only its conditions.
    levels: tuple[Level, Level, Level] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        high = Level(self.max, self.max - self.clear, self.hold, self.clear_hold, self.critical)
        low = Level(self.min, self.min + self.clear, self.hold, self.clear_hold, self.critical_low)
        swing = Level(
            self.swing_max, self.swing_max - self.swing_clear, self.swing_hold, self.swing_clear_hold
        )
        object.__setattr__(self, "levels", (high, low, swing))

    def with_overrides(self, band: Band | None, swing: Swing | None) -> ClimateParams:
        """These defaults with a room's (merged) overrides applied; refuses an inverted band."""
        p = self
        if band is not None:
            p = replace(
                p,
                min=set_or(band.min, p.min),
                max=set_or(band.max, p.max),
                hold=set_or(band.for_, p.hold),
                clear=set_or(band.clear, p.clear),
                clear_hold=set_or(band.clear_for, p.clear_hold),
                critical=band.critical if band.critical is not None else p.critical,
                critical_low=band.critical_low if band.critical_low is not None else p.critical_low,
            )
        if swing is not None:
            p = replace(
                p,
                swing_max=set_or(swing.max, p.swing_max),
                swing_hold=set_or(swing.for_, p.swing_hold),
                swing_clear=set_or(swing.clear, p.swing_clear),
                swing_clear_hold=set_or(swing.clear_for, p.swing_clear_hold),
            )
        if not p.min < p.max:
            raise ValueError(f"min {p.min:g} must be below max {p.max:g} once merged with the defaults")
        # A max raised past the default critical level leaves no separate critical level.
        if p.critical is not None and p.critical < p.max:
            p = replace(p, critical=None)
        if p.critical_low is not None and p.critical_low > p.min:
            p = replace(p, critical_low=None)
        return p


def evaluate_climate(
    view: RoomView, protection: str, metric: str, levels: tuple[Level, Level, Level]
) -> list[Condition]:
    """High, low and 24 h swing for every series of ``metric`` in the room."""
    series = view.series.get(metric, ())
    out: list[Condition] = [] if any_usable(view, (metric,)) else [no_data(view, protection)]
    high, low, swing = levels
    what = f"24小时{label(metric)}波动"
    for s in series:
        out.append(above(view, protection, f"{metric}_high", s, high))
        out.append(below(view, protection, f"{metric}_low", s, low))
        if s.min_24h is not None and s.max_24h is not None:
            out.append(above(view, protection, f"{metric}_swing", s, swing, s.max_24h - s.min_24h, what))
        elif not usable(view, s):
            out.append(above(view, protection, f"{metric}_swing", s, swing))  # unknown
    return out
