"""Monitoring lost (监测中断): a device with no valid reading for 3 poll intervals, or reported offline.

Source: docs/protections.md, "monitoring lost" row: "no valid reading for 3 poll
intervals (or a point's stale_after) = alert of its own; a sensor that stops reporting must never show
the last value as current". The engine marks ``SeriesView.stale`` using ``missed_intervals``; this
module raises one alert per device (warning) and lists its silent metrics. The other protections show
``unknown`` for the inputs concerned (see _common.usable).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

from core.config import Thresholds
from core.protections import PROTECTIONS
from rules.model import Condition, RoomView, SeriesView, Severity
from rules.protections._common import label

ID = "monitoring"
OFFLINE_GRACE = 60.0  # seconds a device may be reported offline before monitoring fires
INPUTS: tuple[str, ...] = ()  # every series of the room


@dataclass(frozen=True, slots=True)
class MonitoringParams:
    """How many missed poll intervals make a series stale (used by the engine)."""

    missed_intervals: int


DEFAULTS: MappingProxyType[str, MonitoringParams] = MappingProxyType(
    {"all": MonitoringParams(missed_intervals=3)}
)


def params(kind: str, overrides: Thresholds) -> MonitoringParams:
    """The effective threshold (the same for every room kind) with these overrides."""
    o = overrides.monitoring
    if o is None or o.missed_intervals is None:
        return DEFAULTS["all"]
    return MonitoringParams(missed_intervals=o.missed_intervals)


def evaluate(view: RoomView, thresholds: MonitoringParams, now: float) -> list[Condition]:
    """stale: one condition per device of the room, triggered when any of its series is stale."""
    by_device: dict[str, list[SeriesView]] = {}
    for series in view.series.values():
        for s in series:
            by_device.setdefault(s.device, []).append(s)
    for device in view.offline:
        by_device.setdefault(device, [])
    if not by_device:
        return [
            Condition(
                ID,
                "no_devices",
                view.room,
                None,
                trigger=False,
                clear=False,
                severity=Severity.WARNING,
                value=None,
                threshold=None,
                message=f"{view.name} 未配置监测设备，{PROTECTIONS[ID][0]}状态未知",
                unknown=True,
            )
        ]
    out: list[Condition] = []
    for device in sorted(by_device):
        out.append(_device(view, device, by_device[device], thresholds, now))
    return out


def _device(
    view: RoomView, device: str, series: list[SeriesView], p: MonitoringParams, now: float
) -> Condition:
    offline = device in view.offline
    silent = [s for s in series if s.stale]
    # Stale series fire at once. Offline alone (one failed poll, a gateway's last will) fires after a
    # grace of OFFLINE_GRACE: a blip comes back before it, and a sensor that reports only on change
    # (no poll:, never stale) is still watched when its gateway goes down.
    trigger = bool(silent) or offline
    clear = not trigger
    if not trigger:
        message = f"{view.name} 设备 {device} {'离线，等待恢复' if offline else '监测正常'}"
    else:
        # The silent points' last reading, not the device's: a point still reporting says nothing of
        # one that stopped (or never reported at all).
        quiet = silent if silent and not offline else series
        last = max((s.time for s in quiet if s.time is not None), default=None)
        since = f"，最后有效数据{_ago(now - last)}" if last is not None else "，从未收到有效数据"
        what = "、".join(label(s.metric) for s in silent) if silent and not offline else "全部测点"
        message = f"{view.name} 设备 {device} {'离线' if offline else '数据中断'}：{what} 无有效数据{since}"
    return Condition(
        ID,
        "stale",
        view.room,
        device,
        trigger=trigger,
        clear=clear,
        severity=Severity.WARNING,
        value=float(len(silent)) if trigger else 0.0,
        threshold=float(p.missed_intervals),
        hold=0.0 if silent or not series else OFFLINE_GRACE,
        message=message,
        clear_hold=0.0,
    )


def _ago(seconds: float) -> str:
    """When, for people ("在 5 分钟前"), changing at most once a minute (the message is re-rendered each pass)."""
    minutes = int(seconds // 60)
    if minutes < 1:
        return "在 1 分钟内"
    if minutes < 120:
        return f"在 {minutes} 分钟前"
    return f"在 {minutes // 60} 小时前"
