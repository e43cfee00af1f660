"""防潮 Damp: relative humidity outside the room kind's band for a hold time, and the 24 h swing.

Sources (docs/protections.md):
- Bands per room kind: JGJ 25-2010《档案馆建筑设计规范》Tables 5.2.1–5.2.2 (same values in
  档案库房技术管理暂行规定 1987 Art. 7–8): paper 45–60 %RH, special 45–55, magnetic 40–60,
  film copy 40–60, film master 35–45.
- Daily fluctuation ≤ ±5 %RH: JGJ 25-2010 §5.2.3, read as max − min over a rolling 24 h ≤ 10 %RH.
- Hold 10 min, critical at 70 %RH, hysteresis 2 %RH, clear_for 5 min: no source gives these; they are
  Bafang's defaults, each with its reason in docs/protections.md ("Bafang's own defaults").
"""

from __future__ import annotations

from types import MappingProxyType

from core.config import Thresholds
from rules.model import Condition, RoomView
from rules.protections._climate import ClimateParams, evaluate_climate

ID = "damp"
INPUTS: tuple[str, ...] = ("humidity",)


def _kind(low: float, high: float) -> ClimateParams:
    return ClimateParams(
        min=low,
        max=high,
        hold=600.0,
        clear=2.0,
        clear_hold=300.0,
        critical=70.0,
        critical_low=None,
        swing_max=10.0,
    )


DEFAULTS: MappingProxyType[str, ClimateParams] = MappingProxyType(
    {
        "paper": _kind(45.0, 60.0),
        "special": _kind(45.0, 55.0),
        "magnetic": _kind(40.0, 60.0),
        "film_copy": _kind(40.0, 60.0),
        "film_master": _kind(35.0, 45.0),
    }
)


def params(kind: str, overrides: Thresholds) -> ClimateParams:
    """The effective thresholds for a room of this kind with these (site + room) overrides."""
    return DEFAULTS[kind].with_overrides(overrides.humidity, overrides.humidity_swing)


def evaluate(view: RoomView, thresholds: ClimateParams, now: float) -> list[Condition]:
    """RH too high (humidity_high), too low (humidity_low), 24 h swing too wide (humidity_swing)."""
    return evaluate_climate(view, ID, "humidity", thresholds.levels)
