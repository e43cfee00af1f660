"""Plausibility of one value: fault sentinels, NaN, scale/offset and the metric's physical range.

Shared by every collector so that a value means the same whichever protocol brought it.
An implausible value is rejected with a reason; it is never clamped into range.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from core.config import ModbusPoint, MqttPoint
from core.types import Reason

# Raw sentinels that common transmitters send instead of a value when the sensing element fails.
# For int16, 0xFFFF is −1 (−0.1 °C at scale 0.1), a real value, so only 0x7FFF and 0x8000 are faults.
_CODES: dict[str, tuple[float, ...]] = {
    "uint16": (0x7FFF, 0xFFFF),
    "int16": (0x7FFF, -0x8000),
    "uint32": (0x7FFFFFFF, 0xFFFFFFFF),
    "int32": (0x7FFFFFFF, -0x80000000),
    "float32": (-999.0, -9999.0),
    "float64": (-999.0, -9999.0),
    "uint64": (0xFFFFFFFFFFFFFFFF,),
    "int64": (0x7FFFFFFFFFFFFFFF, -0x8000000000000000),
    "bool": (),
}
# Decoded values are floats: compare with the sentinels as the same floats (2**64 - 1 is not a float).
MODBUS_FAULT_CODES: dict[str, frozenset[float]] = {
    t: frozenset(float(c) for c in cs) for t, cs in _CODES.items()
}
# Values in JSON payloads: gateways forward the raw register sentinels or write −999.
MQTT_FAULT_CODES: frozenset[float] = frozenset({-999.0, -9999.0, 0x7FFF, 0xFFFF})

Verdict = float | tuple[Reason, str]


def _finish(point: ModbusPoint | MqttPoint, raw: float) -> Verdict:
    # Rounding drops the binary noise of scaling (0.1 × 193 = 19.300000000000001) without losing
    # anything a sensor can resolve; an unscaled value has no such noise (and round() is slow).
    scale, offset = point.scale, point.offset
    value = raw if scale == 1.0 and offset == 0.0 else round(raw * scale + offset, 6)
    if math.isnan(value) or math.isinf(value):
        return (Reason.NAN, f"{point.metric}: {value} is not a number")
    low, high = point.resolved_range
    if not low <= value <= high:
        return (Reason.OUT_OF_RANGE, f"{point.metric}: {value:g} outside {low:g}…{high:g}")
    return value


def check_modbus(point: ModbusPoint, raw: float) -> Verdict:
    """The stored value of a decoded register value, or why it is rejected."""
    if isinstance(raw, float) and (math.isnan(raw) or math.isinf(raw)):
        return (Reason.NAN, f"{point.metric}: {raw} is not a number")
    codes = MODBUS_FAULT_CODES[point.data_type] if point.fault_codes is None else point.fault_codes
    if float(raw) in codes:
        return (Reason.FAULT_CODE, f"{point.metric}: sensor fault code {_show(raw, point.data_type)}")
    return _finish(point, raw)


def check_mqtt(point: MqttPoint, value: object) -> Verdict:
    """The stored value of a JSON value, or why it is rejected."""
    if point.map is not None and not isinstance(value, dict | list):
        key = str(value).lower() if isinstance(value, bool) else str(value)
        if key in point.map:
            return _finish(point, point.map[key])
        if not isinstance(value, int | float):
            return (Reason.UNMAPPED, f"{point.metric}: {value!r} is not one of {', '.join(point.map)}")
    if isinstance(value, bool):
        raw = 1.0 if value else 0.0
    elif isinstance(value, float):
        raw = value
    elif isinstance(value, int):
        try:
            raw = float(value)
        except OverflowError:  # an integer beyond any float: no sensor means that
            return (Reason.OUT_OF_RANGE, f"{point.metric}: {_short(value)} is beyond any plausible value")
    else:
        return (
            Reason.WRONG_TYPE,
            f"{point.metric}: expected a number, got {type(value).__name__} {_short(value)}",
        )
    if math.isnan(raw) or math.isinf(raw):
        return (Reason.NAN, f"{point.metric}: {raw} is not a number")
    binary_metric = point.resolved_range == (0.0, 1.0)
    codes = (
        (frozenset() if binary_metric else MQTT_FAULT_CODES)
        if point.fault_codes is None
        else point.fault_codes
    )
    if raw in codes:
        return (Reason.FAULT_CODE, f"{point.metric}: sensor fault code {raw:g}")
    return _finish(point, raw)


def _show(raw: float, data_type: str) -> str:
    if data_type.startswith(("uint", "int")) and raw >= 0:
        return f"0x{int(raw):X}"
    return f"{raw:g}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


Check = Callable[[object], Verdict]


def mqtt_check(point: MqttPoint) -> Check:
    """``check_mqtt`` for one point, its constants looked up once: the per-message path of a collector.

    A plain number is judged inline (scale, offset, fault codes, range); anything else (a mapped text,
    a boolean, NaN, a value out of range) goes to ``check_mqtt``, which gives the same verdicts.
    """
    low, high = point.resolved_range
    scale, offset = point.scale, point.offset
    binary_metric = (low, high) == (0.0, 1.0)
    if point.fault_codes is not None:
        codes = frozenset(point.fault_codes)
    else:
        codes = frozenset() if binary_metric else MQTT_FAULT_CODES
    if point.map is not None:
        return lambda value: check_mqtt(point, value)
    plain = scale == 1.0 and offset == 0.0

    def check(value: object) -> Verdict:
        kind = value.__class__
        if kind is float or kind is int:
            try:
                raw = float(value)  # type: ignore[arg-type]
            except OverflowError:
                return check_mqtt(point, value)
            if raw not in codes:
                v = raw if plain else round(raw * scale + offset, 6)
                if low <= v <= high:  # False for NaN and infinities: judged below
                    return v
        return check_mqtt(point, value)

    return check
