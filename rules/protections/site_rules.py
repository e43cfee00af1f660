"""A site's own rules (top-level ``rules:`` of devices.yaml): a threshold on any metric of a device or
a room, with a hold, an optional clear level, a severity and the protection it counts for.

Example: {name: 恒温恒湿机停机, device: ac-1, metric: power, below: 1, for: 5m, protection: temperature}.
The rule's name is its ``Condition.rule``.
"""

from __future__ import annotations

from collections.abc import Sequence

from core.config import SiteRule
from rules.model import Condition, RoomView, Severity
from rules.protections._common import DEFAULT_CLEAR_FOR, Level, above, below, label


def level(rule: SiteRule) -> Level:
    """The trigger/clear levels of a site rule."""
    limit = rule.above if rule.above is not None else rule.below
    assert limit is not None  # the config model requires one of above / below
    return Level(
        limit,
        limit if rule.clear is None else rule.clear,
        rule.for_ or 0.0,
        DEFAULT_CLEAR_FOR if rule.clear_for is None else rule.clear_for,
        severity=Severity(rule.severity),
    )


def evaluate(view: RoomView, rules: Sequence[SiteRule], now: float) -> list[Condition]:
    """One condition per rule and matching series of the room; unknown when the series is missing."""
    out: list[Condition] = []
    for rule in rules:
        lv = level(rule)
        check = above if rule.above is not None else below
        matched = False
        for s in view.series.get(rule.metric, ()):
            if rule.device is not None and s.device != rule.device:
                continue
            matched = True
            out.append(
                check(view, rule.protection, rule.name, s, lv, what=f"{rule.name}（{label(rule.metric)}）")
            )
        if not matched:
            out.append(
                Condition(
                    rule.protection,
                    rule.name,
                    view.room,
                    rule.device,
                    trigger=False,
                    clear=False,
                    severity=lv.severity,
                    value=None,
                    threshold=lv.limit,
                    message=f"{view.name} {rule.name}：无 {rule.metric} 数据，状态未知",
                    unknown=True,
                )
            )
    return out
