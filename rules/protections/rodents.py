"""防鼠 Rodents: any detection by a rodent sensor alerts at once (critical).

Source: docs/protections.md, 防鼠 row ("any detection"); a detection is an event, critical at once:
an animal in the store is damage under way, not a trend.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from core.config import Thresholds
from rules.model import Condition, RoomView
from rules.protections._common import any_usable, event, no_data

ID = "rodents"
INPUTS: tuple[str, ...] = ("rodent",)


@dataclass(frozen=True, slots=True)
class RodentParams:
    """Nothing to tune: any detection counts."""


DEFAULTS: MappingProxyType[str, RodentParams] = MappingProxyType({"all": RodentParams()})


def params(kind: str, overrides: Thresholds) -> RodentParams:
    """The (empty) thresholds."""
    return DEFAULTS["all"]


def evaluate(view: RoomView, thresholds: RodentParams, now: float) -> list[Condition]:
    """rodent_detected, critical at once."""
    out: list[Condition] = [] if any_usable(view, INPUTS) else [no_data(view, ID)]
    for s in view.series.get("rodent", ()):
        out.append(event(view, ID, "rodent_detected", s, "检测到鼠情", "无鼠情"))
    return out
