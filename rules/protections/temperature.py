"""防高温 Temperature: temperature outside the room kind's band for a hold time, and the 24 h swing.

Sources (docs/protections.md):
- Bands per room kind: JGJ 25-2010《档案馆建筑设计规范》Tables 5.2.1–5.2.2 (same values in
  档案库房技术管理暂行规定 1987 Art. 7–8): paper 14–24 °C, special 14–20, magnetic 14–24,
  film copy 14–24, film master 13–15.
- Daily fluctuation ≤ ±2 °C: JGJ 25-2010 §5.2.3, read as max − min over a rolling 24 h ≤ 4 °C.
- Hold 10 min, clear_for 5 min: as for humidity (Bafang's defaults, docs/protections.md). Hysteresis 1 °C = twice the ±0.5 °C sensor
  accuracy advised for paper stores, so sensor noise alone cannot clear an alert.
- No critical level: no source gives one; a site sets `critical:` if it wants one (fire's 46 °C
  pre-alarm is separate, in fire.py).
"""

from __future__ import annotations

from types import MappingProxyType

from core.config import Thresholds
from rules.model import Condition, RoomView
from rules.protections._climate import ClimateParams, evaluate_climate

ID = "temperature"
INPUTS: tuple[str, ...] = ("temperature",)


def _kind(low: float, high: float) -> ClimateParams:
    return ClimateParams(
        min=low,
        max=high,
        hold=600.0,
        clear=1.0,
        clear_hold=300.0,
        critical=None,
        critical_low=None,
        swing_max=4.0,
    )


DEFAULTS: MappingProxyType[str, ClimateParams] = MappingProxyType(
    {
        "paper": _kind(14.0, 24.0),
        "special": _kind(14.0, 20.0),
        "magnetic": _kind(14.0, 24.0),
        "film_copy": _kind(14.0, 24.0),
        "film_master": _kind(13.0, 15.0),
    }
)


def params(kind: str, overrides: Thresholds) -> ClimateParams:
    """The effective thresholds for a room of this kind with these (site + room) overrides."""
    return DEFAULTS[kind].with_overrides(overrides.temperature, overrides.temperature_swing)


def evaluate(view: RoomView, thresholds: ClimateParams, now: float) -> list[Condition]:
    """T too high (temperature_high), too low (temperature_low), 24 h swing too wide (temperature_swing)."""
    return evaluate_climate(view, ID, "temperature", thresholds.levels)
