"""防水 Water: a leak rope or point sensor that reports a leak alerts at once (critical).

Source: docs/protections.md, 防水 row ("leak = critical at once"); JGJ 25-2010 §5.1.1
names 防水 among the protections of an archive store.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from core.config import Thresholds
from rules.model import Condition, RoomView
from rules.protections._common import any_usable, event, no_data

ID = "water"
INPUTS: tuple[str, ...] = ("water_leak",)


@dataclass(frozen=True, slots=True)
class WaterParams:
    """Nothing to tune: any leak counts."""


DEFAULTS: MappingProxyType[str, WaterParams] = MappingProxyType({"all": WaterParams()})


def params(kind: str, overrides: Thresholds) -> WaterParams:
    """The (empty) thresholds."""
    return DEFAULTS["all"]


def evaluate(view: RoomView, thresholds: WaterParams, now: float) -> list[Condition]:
    """leak, critical at once."""
    out: list[Condition] = [] if any_usable(view, INPUTS) else [no_data(view, ID)]
    for s in view.series.get("water_leak", ()):
        out.append(event(view, ID, "leak", s, "漏水报警", "无漏水"))
    return out
