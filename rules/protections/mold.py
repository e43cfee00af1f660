"""防霉 Mold: the room's accumulated mold risk reaches germination.

Sources (docs/protections.md, 防霉 row and "Mold"): growth needs sustained exposure
above the lowest germination isopleth LIM0 (Zeng et al. 2023), RH_crit(T) = 100·(0.02633·cosh(0.10083·
(T − 30)) + 0.7153) %; an IPI-style mold risk factor sums Δt / days-to-germination, and ≥ 1 means
germination is expected.
- Input: the engine derives the metric ``mold_risk`` (that 0…1+ factor, accumulated from the room's
  temperature and humidity and reset only slowly) and hands it in as a ``SeriesView`` with
  ``metric="mold_risk"`` and ``device="climate"`` (the room's, not one transmitter's: a site rule on it
  names the room, core/config/checks.py). This module only judges it.
- Default: warning at 1.0 (germination expected). It clears once the factor is back below the limit for
  clear_for (5 min, Bafang's default); the factor itself decays slowly, so this does not flap.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from core.config import Thresholds
from rules.model import Condition, RoomView
from rules.protections._common import DEFAULT_CLEAR_FOR, Level, above, any_usable, no_data, set_or

# Our choice, not a published value (rules/climate.py MoldRiskAccumulator explains why): short, so that
# the alarm comes early. A site sets its own per room with thresholds.mold.days_to_germination.
DEFAULT_DAYS_TO_GERMINATION = 7.0

ID = "mold"
METRIC = "mold_risk"
INPUTS: tuple[str, ...] = (METRIC,)


@dataclass(frozen=True, slots=True)
class MoldParams:
    """Effective mold threshold, as a trigger level on the mold risk factor, and the days above the
    germination isopleth after which germination is expected (the factor's denominator)."""

    risk: Level
    days_to_germination: float = DEFAULT_DAYS_TO_GERMINATION


DEFAULTS: MappingProxyType[str, MoldParams] = MappingProxyType(
    {"all": MoldParams(risk=Level(1.0, 1.0, inclusive=True))}
)


def params(kind: str, overrides: Thresholds) -> MoldParams:
    """The effective threshold (the same for every room kind) with these overrides."""
    d = DEFAULTS["all"]
    o = overrides.mold
    if o is None:
        return d
    limit = set_or(o.max, d.risk.limit)
    return MoldParams(
        risk=Level(limit, limit, clear_hold=set_or(o.clear_for, DEFAULT_CLEAR_FOR), inclusive=True),
        days_to_germination=set_or(o.days_to_germination, d.days_to_germination),
    )


def evaluate(view: RoomView, thresholds: MoldParams, now: float) -> list[Condition]:
    """mold_risk: the accumulated risk factor at or above its limit."""
    out: list[Condition] = [] if any_usable(view, INPUTS) else [no_data(view, ID)]
    for s in view.series.get(METRIC, ()):
        out.append(
            above(
                view, ID, "mold_risk", s, thresholds.risk, unit_text="", note="霉菌萌发风险因子，≥ 1 预计萌发"
            )
        )
    return out
