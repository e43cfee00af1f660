"""Access hours: when a room is open (door, intrusion and light rules depend on it)."""

from __future__ import annotations

import functools
import re
import zoneinfo
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from pydantic import BeforeValidator

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_SPAN = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
# The usual office day of a Chinese power-supply company's archive; override per room.
DEFAULT_ACCESS_HOURS = "Mon-Fri 08:30-17:30"


@dataclass(frozen=True, slots=True)
class Schedule:
    """Weekly opening spans: for each weekday (0 = Monday) the (start, end) minutes after midnight."""

    text: str
    days: tuple[tuple[tuple[int, int], ...], ...]

    def open_at(self, epoch: float, tz: str) -> bool:
        """Whether the room is inside its access hours at this instant, in the site's time zone."""
        local = datetime.fromtimestamp(epoch, zoneinfo.ZoneInfo(tz))
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.days[local.weekday()])


def _day(token: str) -> int:
    name = token.strip().lower()
    for i, day in enumerate(_DAYS):
        if len(name) >= 3 and day.startswith(name[:3]) and _FULL_DAYS[i].startswith(name):
            return i
    return -1


def _minute(hours: str, minutes: str) -> int:
    h, m = int(hours), int(minutes)
    if m > 59 or h > 24 or (h == 24 and m):
        raise ValueError(f"{hours}:{minutes} is not a time of day (00:00 … 24:00)")
    return h * 60 + m


@functools.lru_cache(maxsize=256)
def parse_access_hours(text: str) -> Schedule:
    """Read ``Mon-Fri 08:30-12:00,13:30-17:30; Sat 09:00-12:00`` (or ``always`` / ``never``)."""
    word = text.strip().lower()
    if word in ("always", "24/7"):
        return Schedule(text, tuple(((0, 1440),) for _ in _DAYS))
    if word == "never":
        return Schedule(text, tuple(() for _ in _DAYS))
    spans: list[list[tuple[int, int]]] = [[] for _ in _DAYS]
    hint = "write e.g. 'Mon-Fri 08:30-12:00,13:30-17:30; Sat 09:00-12:00', 'always' or 'never'"
    for group in text.split(";"):
        parts = group.split()
        if len(parts) != 2:
            raise ValueError(f"{group.strip()!r}: expected days then times, groups separated by ';'; {hint}")
        days: list[int] = []
        for item in parts[0].split(","):
            first, _, last = item.partition("-")
            a = _day(first)
            b = _day(last) if last else a
            if a < 0 or b < 0:
                raise ValueError(f"{item!r} is not a day or a day range such as Mon-Fri")
            days.extend((a + k) % 7 for k in range((b - a) % 7 + 1))  # Fri-Mon wraps over the weekend
        for item in parts[1].split(","):
            m = _SPAN.match(item)
            if not m:
                raise ValueError(f"{item!r} is not a span of time such as 08:30-17:30")
            start, end = _minute(m.group(1), m.group(2)), _minute(m.group(3), m.group(4))
            if end <= start:
                raise ValueError(
                    f"{item!r} ends before it starts "
                    "(split a night across midnight: 'Mon 22:00-24:00; Tue 00:00-06:00')"
                )
            for d in days:
                spans[d].append((start, end))
    return Schedule(text, tuple(tuple(sorted(s)) for s in spans))


def _access_hours(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"access hours must be text such as {DEFAULT_ACCESS_HOURS!r} (got {value!r})")
    parse_access_hours(value)
    return value


AccessHours = Annotated[str, BeforeValidator(_access_hours)]
