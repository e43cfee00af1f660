"""防盗 Theft: door contacts and intrusion detectors, judged against the room's access hours.

Sources (docs/protections.md, 防盗 row): "door open outside access hours, or open
longer than N min inside them; intrusion outside hours". The exit-gate rule (a dossier leaving without
an open loan) belongs to the dossier tracker, not here.
- N (door_open_max) has no source clause: 30 min is Bafang's default, long enough for fetching and
  returning boxes, short enough to catch a door left open over lunch. Set `door: {open_max: …}` per site.
- Door open or intrusion while closed = critical at once (an event); a door open too long inside hours
  = warning after the hold. ``RoomView.open_now`` comes from the room's ``access_hours``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from core.config import Thresholds
from rules.model import Condition, RoomView, Severity
from rules.protections._common import any_usable, event, no_data, set_or, unknown, usable

ID = "theft"
INPUTS: tuple[str, ...] = ("door", "intrusion")


@dataclass(frozen=True, slots=True)
class TheftParams:
    """Effective theft thresholds."""

    door_open_max: float  # seconds a door may stand open inside access hours


DEFAULTS: MappingProxyType[str, TheftParams] = MappingProxyType({"all": TheftParams(door_open_max=1800.0)})


def params(kind: str, overrides: Thresholds) -> TheftParams:
    """The effective thresholds (the same for every room kind) with these overrides."""
    d = DEFAULTS["all"]
    o = overrides.door
    return d if o is None else TheftParams(door_open_max=set_or(o.open_max, d.door_open_max))


def evaluate(view: RoomView, thresholds: TheftParams, now: float) -> list[Condition]:
    """door_after_hours, intrusion (critical at once while closed); door_open_long (inside hours)."""
    out: list[Condition] = [] if any_usable(view, INPUTS) else [no_data(view, ID)]
    closed = not view.open_now
    minutes = thresholds.door_open_max / 60
    for s in view.series.get("door", ()):
        out.append(
            event(
                view,
                ID,
                "door_after_hours",
                s,
                "非开放时间门被打开",
                "门已关闭",
                closed,
                idle_text="开放时间内门打开",
            )
        )
        if not usable(view, s):
            out.append(unknown(view, ID, "door_open_long", s, thresholds.door_open_max))
            continue
        is_open = s.value is not None and s.value > 0
        out.append(
            Condition(
                ID,
                "door_open_long",
                view.room,
                s.device,
                trigger=is_open and not closed,
                clear=not is_open,
                severity=Severity.WARNING,
                value=s.value,
                threshold=thresholds.door_open_max,
                message=(
                    f"{view.name} 门已关闭（{s.device}）"
                    if not is_open
                    else f"{view.name} 非开放时间门打开（{s.device}）"
                    if closed
                    else f"{view.name} 开放时间内门打开超过 {minutes:g} 分钟未关（{s.device}）"
                ),
                hold=thresholds.door_open_max,
                clear_hold=0.0,
            )
        )
    for s in view.series.get("intrusion", ()):
        out.append(
            event(
                view,
                ID,
                "intrusion",
                s,
                "非开放时间入侵报警",
                "无入侵",
                closed,
                idle_text="开放时间内有人活动",
            )
        )
    return out
