"""Scalars of devices.yaml: durations, identifiers, the Modbus literals, and the base model."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Read ``250ms``, ``30s``, ``5m``, ``1h``, ``2d`` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 30s, 5m or 1h is expected")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration such as 30s, 5m or 1h")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"a duration must be positive (got {value!r})")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")]

TableName = Literal["holding", "input", "coil", "discrete"]
DataType = Literal["bool", "uint16", "int16", "uint32", "int32", "float32", "uint64", "int64", "float64"]
ByteOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]
RoomKind = Literal["paper", "special", "magnetic", "film_copy", "film_master"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


NonNegative = Annotated[float, Field(ge=0)]
