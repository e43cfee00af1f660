"""防光 Light: light left on while the room is closed, and ultraviolet above its limit.

Sources (docs/protections.md, 防光 row): "light on while the room is closed (lux
above a small threshold outside access hours); UV > 75 µW/lm".
- The "small threshold" has no number in the sources: 10 lux is Bafang's default, far below any lit
  room and above darkness; set `light: {closed_lux: …}` per site.
- Both are warnings that fire at once (no hold) and clear after clear_for (5 min, Bafang's default).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from core.config import Thresholds
from rules.model import Condition, RoomView, Severity
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

ID = "light"
INPUTS: tuple[str, ...] = ("light", "uv")


@dataclass(frozen=True, slots=True)
class LightParams:
    """Effective light thresholds."""

    closed_lux: float
    uv_max: float  # µW/lm
    hold: float = 0.0
    clear_hold: float = DEFAULT_CLEAR_FOR


DEFAULTS: MappingProxyType[str, LightParams] = MappingProxyType(
    {"all": LightParams(closed_lux=10.0, uv_max=75.0)}
)


def params(kind: str, overrides: Thresholds) -> LightParams:
    """The effective thresholds (the same for every room kind) with these overrides."""
    d = DEFAULTS["all"]
    o = overrides.light
    if o is None:
        return d
    return LightParams(
        closed_lux=set_or(o.closed_lux, d.closed_lux),
        uv_max=set_or(o.uv_max, d.uv_max),
        hold=set_or(o.for_, d.hold),
        clear_hold=set_or(o.clear_for, d.clear_hold),
    )


def evaluate(view: RoomView, thresholds: LightParams, now: float) -> list[Condition]:
    """light_after_hours (lux above closed_lux while closed), uv_high (UV above uv_max)."""
    out: list[Condition] = [] if any_usable(view, INPUTS) else [no_data(view, ID)]
    lux = Level(thresholds.closed_lux, thresholds.closed_lux, thresholds.hold, thresholds.clear_hold)
    for s in view.series.get("light", ()):
        if not usable(view, s):
            out.append(unknown(view, ID, "light_after_hours", s, thresholds.closed_lux))
        elif view.open_now:
            # Inside access hours lights are meant to be on: nothing to judge, and an open alert clears.
            out.append(
                Condition(
                    ID,
                    "light_after_hours",
                    view.room,
                    s.device,
                    trigger=False,
                    clear=True,
                    severity=Severity.WARNING,
                    value=s.value,
                    threshold=thresholds.closed_lux,
                    message=f"{view.name} 开放时间内照度 {s.value:.1f}lux（{s.device}）",
                    hold=thresholds.hold,
                    clear_hold=thresholds.clear_hold,
                )
            )
        else:
            out.append(above(view, ID, "light_after_hours", s, lux, what="非开放时间照度"))
    uv = Level(thresholds.uv_max, thresholds.uv_max, thresholds.hold, thresholds.clear_hold)
    for s in view.series.get("uv", ()):
        out.append(above(view, ID, "uv_high", s, uv, what="紫外线"))
    return out
