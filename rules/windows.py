"""Rolling windows the rules engine keeps per (device, metric): 24 h min/max, time-window mean, rate of rise.

Pure and clock-free: every sample carries its time and every query is given ``now`` (seconds since
the epoch). Memory is bounded by time, not by sample rate: samples are grouped into buckets of
``resolution`` seconds, so a window holds at most window/resolution + 1 entries however fast a
device reports. The price is that the window edge moves in whole buckets: a bucket counts while any
part of it lies inside (now − window, now], i.e. a sample may count up to one resolution longer than
the exact window (never shorter), which for a 24 h swing or a 24 h mean is immaterial.

Late (out-of-order) samples still inside the window are merged where they belong; samples already
outside it are dropped, and ``add`` returns False for them. All have ``to_dict``/``from_dict`` with
plain JSON types so the engine can persist them across a restart.

Queries prune what has left the window at ``now``, so ``now`` must not go backwards between calls
(pass the engine clock's time); readings may still carry times behind it.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_left
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["RateOfRise", "RollingMean", "RollingMinMax"]


def _check_positive(**params: float) -> None:
    for name, value in params.items():
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number (got {value!r})")


def _check_sample(time: float, value: float) -> None:
    if not math.isfinite(time):
        raise ValueError(f"sample time must be finite (got {time!r})")
    if not math.isfinite(value):
        raise ValueError(f"sample value must be finite (got {value!r})")


def _version(data: dict[str, Any], what: str) -> None:
    if data.get("v") != 1:
        raise ValueError(f"{what} state: unknown version {data.get('v')!r}")


class RollingMinMax:
    """Minimum and maximum over a rolling window (24 h by default), O(1) amortised per in-order add.

    Two monotonic deques of (bucket start, value): the min deque has values strictly rising with
    time, the max deque strictly falling, so the oldest live entry is the answer. A sample removes
    the older entries it beats (they would expire before it without ever being the answer) and is
    itself dropped when a newer entry already beats it.
    """

    __slots__ = ("_latest", "_max", "_max_keys", "_min", "_min_keys", "resolution", "window")

    def __init__(self, window: float = 86400.0, resolution: float = 60.0) -> None:
        _check_positive(window=window, resolution=resolution)
        self.window = float(window)
        self.resolution = float(resolution)
        # Keys and values in parallel deques: the fast path touches only their right ends.
        self._min_keys: deque[float] = deque()
        self._min: deque[float] = deque()
        self._max_keys: deque[float] = deque()
        self._max: deque[float] = deque()
        self._latest = -math.inf  # the newest sample time seen

    def _live(self, key: float, now: float) -> bool:
        return key + self.resolution > now - self.window

    def add(self, time: float, value: float) -> bool:
        """Add a sample; False when it is already outside the window (dropped)."""
        _check_sample(time, value)
        if time > self._latest:
            self._latest = time
        key = time - time % self.resolution
        if not self._live(key, self._latest):
            return False
        # "old is beaten by new": for the minimum a newer value no larger, for the maximum no smaller.
        _insert(self._min_keys, self._min, key, value, operator.ge)
        _insert(self._max_keys, self._max, key, value, operator.le)
        self._prune(self._latest)
        return True

    def _prune(self, now: float) -> None:
        edge = now - self.window - self.resolution
        for keys, vals in ((self._min_keys, self._min), (self._max_keys, self._max)):
            while keys and keys[0] <= edge:
                keys.popleft()
                vals.popleft()

    def min(self, now: float) -> float | None:
        """The smallest value in the window ending at ``now``; None when it is empty."""
        self._prune(now)
        return self._min[0] if self._min else None

    def max(self, now: float) -> float | None:
        """The largest value in the window ending at ``now``; None when it is empty."""
        self._prune(now)
        return self._max[0] if self._max else None

    def span(self, now: float) -> float | None:
        """max − min over the window (the daily fluctuation); None when it is empty."""
        lo = self.min(now)
        hi = self.max(now)
        return None if lo is None or hi is None else hi - lo

    def __len__(self) -> int:
        return max(len(self._min), len(self._max))

    def to_dict(self) -> dict[str, Any]:
        """The state as plain JSON types."""
        return {
            "v": 1,
            "window": self.window,
            "resolution": self.resolution,
            "latest": None if self._latest == -math.inf else self._latest,
            "min": [list(kv) for kv in zip(self._min_keys, self._min, strict=True)],
            "max": [list(kv) for kv in zip(self._max_keys, self._max, strict=True)],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RollingMinMax:
        """Rebuild from ``to_dict`` output."""
        _version(data, "RollingMinMax")
        w = cls(window=data["window"], resolution=data["resolution"])
        w._latest = -math.inf if data["latest"] is None else float(data["latest"])
        w._min_keys = deque(float(k) for k, _ in data["min"])
        w._min = deque(float(v) for _, v in data["min"])
        w._max_keys = deque(float(k) for k, _ in data["max"])
        w._max = deque(float(v) for _, v in data["max"])
        return w


def _insert(
    keys: deque[float], vals: deque[float], key: float, value: float, beaten: Callable[[float, float], bool]
) -> None:
    """Insert (key, value) into a monotonic deque; ``beaten(old, new)`` says new makes old useless.

    Invariant: keys strictly ascending, and no entry is beaten by a later-or-equal-keyed one.
    """
    if not keys or key >= keys[-1]:  # in order: the common case
        if keys and keys[-1] == key and not beaten(vals[-1], value):
            return  # the same bucket already holds a value at least as extreme
        while vals and beaten(vals[-1], value):
            keys.pop()
            vals.pop()
        keys.append(key)
        vals.append(value)
        return
    # Late sample: O(n) in the worst case, but late samples are rare.
    p = bisect_left(keys, key)  # the first entry at least as new
    if beaten(value, vals[p]):
        return  # an entry at least as new is at least as extreme: this one can never be the answer
    # Values are monotonic, so vals[p] is the most extreme of the newer entries: the new value beats
    # none of them except one in its own bucket; of the older ones it removes those it beats.
    if keys[p] == key:
        del keys[p]
        del vals[p]
    q = p
    while q > 0 and beaten(vals[q - 1], value):
        q -= 1
        del keys[q]
        del vals[q]
    keys.insert(q, key)
    vals.insert(q, value)


class RollingMean:
    """Arithmetic mean of the samples in a rolling window (e.g. PM2.5 over 24 h).

    A sample mean, not a time-weighted one: right for a device polled at a steady interval (Modbus),
    biased towards busy periods for one that reports only on change. Buckets hold (Σ value, count).
    """

    __slots__ = ("_buckets", "_count", "_latest", "_sum", "resolution", "window")

    def __init__(self, window: float = 86400.0, resolution: float = 60.0) -> None:
        _check_positive(window=window, resolution=resolution)
        self.window = float(window)
        self.resolution = float(resolution)
        self._buckets: deque[list[float]] = deque()  # [bucket start, Σ value, count], start ascending
        self._sum = 0.0
        self._count = 0
        self._latest = -math.inf

    def add(self, time: float, value: float) -> bool:
        """Add a sample; False when it is already outside the window (dropped)."""
        _check_sample(time, value)
        if time > self._latest:
            self._latest = time
        key = time - time % self.resolution
        if key + self.resolution <= self._latest - self.window:
            return False
        buckets = self._buckets
        if buckets and buckets[-1][0] == key:
            b = buckets[-1]
            b[1] += value
            b[2] += 1
        elif not buckets or key > buckets[-1][0]:
            buckets.append([key, value, 1.0])
        else:  # late sample: find its bucket (rare)
            p = bisect_left([b[0] for b in buckets], key)
            if buckets[p][0] == key:
                buckets[p][1] += value
                buckets[p][2] += 1
            else:
                buckets.insert(p, [key, value, 1.0])
        self._sum += value
        self._count += 1
        self._prune(self._latest)
        return True

    def _prune(self, now: float) -> None:
        buckets = self._buckets
        edge = now - self.window - self.resolution
        evicted = False
        while buckets and buckets[0][0] <= edge:
            buckets.popleft()
            evicted = True
        if evicted:  # re-sum rather than subtract, so rounding does not drift over months
            self._sum = math.fsum(b[1] for b in buckets)
            self._count = sum(int(b[2]) for b in buckets)

    def mean(self, now: float) -> float | None:
        """The mean over the window ending at ``now``; None when it is empty."""
        self._prune(now)
        return self._sum / self._count if self._count else None

    def count(self, now: float) -> int:
        """How many samples the window ending at ``now`` holds (to judge coverage)."""
        self._prune(now)
        return self._count

    def to_dict(self) -> dict[str, Any]:
        """The state as plain JSON types."""
        return {
            "v": 1,
            "window": self.window,
            "resolution": self.resolution,
            "latest": None if self._latest == -math.inf else self._latest,
            "buckets": [[b[0], b[1], int(b[2])] for b in self._buckets],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RollingMean:
        """Rebuild from ``to_dict`` output."""
        _version(data, "RollingMean")
        m = cls(window=data["window"], resolution=data["resolution"])
        m._latest = -math.inf if data["latest"] is None else float(data["latest"])
        m._buckets = deque([float(k), float(s), float(n)] for k, s, n in data["buckets"])
        m._sum = math.fsum(b[1] for b in m._buckets)
        m._count = sum(int(b[2]) for b in m._buckets)
        return m


class RateOfRise:
    """Steepest rise per minute into the latest sample, over pairs 1–5 min apart (fire pre-alarm).

    rise = max over earlier samples j of (v_latest − v_j) / ((t_latest − t_j) / 60), for
    ``min_span`` ≤ t_latest − t_j ≤ ``window``. This is the pairwise form, not a regression slope:
    a regression over 5 min flattens a fire that starts in the last minute, while the pairwise
    maximum sees it as soon as it has lasted ``min_span``. ``min_span`` (default 60 s, the short end of
    environment.md's "1–5 min window") keeps sensor noise out: a 0.1 °C step 10 s apart would read as
    0.6 °C/min. The result may be negative (the temperature is falling everywhere in the window).

    Memory: per ``resolution`` bucket only the lowest sample (with its own time) is kept as an
    earlier end of a pair, since for a given latest sample a lower start gives the steeper rise to
    within one bucket's time; the latest sample itself is kept exactly. Queries scan the ≤
    window/resolution + 1 buckets (61 by default).
    """

    __slots__ = ("_latest_t", "_latest_v", "_lows", "min_span", "resolution", "window")

    def __init__(self, window: float = 300.0, min_span: float = 60.0, resolution: float = 5.0) -> None:
        _check_positive(window=window, min_span=min_span, resolution=resolution)
        if min_span > window:
            raise ValueError(f"min_span ({min_span} s) must not exceed window ({window} s)")
        self.window = float(window)
        self.min_span = float(min_span)
        self.resolution = float(resolution)
        self._lows: deque[list[float]] = deque()  # [bucket start, time of the low, low], start ascending
        self._latest_t = -math.inf
        self._latest_v = 0.0

    def add(self, time: float, value: float) -> bool:
        """Add a sample; False when it is already outside the window (dropped)."""
        _check_sample(time, value)
        if time >= self._latest_t:
            self._latest_t = time
            self._latest_v = value
        elif time < self._latest_t - self.window:
            return False
        key = time - time % self.resolution
        lows = self._lows
        if lows and lows[-1][0] == key:
            b = lows[-1]
            if value < b[2]:
                b[1] = time
                b[2] = value
        elif not lows or key > lows[-1][0]:
            lows.append([key, time, value])
        else:  # late sample (rare)
            p = bisect_left([b[0] for b in lows], key)
            if lows[p][0] == key:
                if value < lows[p][2]:
                    lows[p][1] = time
                    lows[p][2] = value
            else:
                lows.insert(p, [key, time, value])
        edge = self._latest_t - self.window - self.resolution
        while lows and lows[0][0] <= edge:
            lows.popleft()
        return True

    def rise_per_min(self, now: float) -> float | None:
        """Steepest rise (units per minute) into the latest sample; None without a pair in range.

        None too when the latest sample is older than ``window`` at ``now``: a silent sensor has no
        current rate of rise.
        """
        t_n = self._latest_t
        if t_n == -math.inf or now - t_n > self.window:
            return None
        v_n = self._latest_v
        lo = t_n - self.window
        hi = t_n - self.min_span
        best: float | None = None
        for _, t_j, v_j in self._lows:
            if t_j > hi:
                break  # buckets ascend; a low's time lies inside its bucket
            if t_j < lo:
                continue
            rate = (v_n - v_j) * 60.0 / (t_n - t_j)
            if best is None or rate > best:
                best = rate
        return best

    def to_dict(self) -> dict[str, Any]:
        """The state as plain JSON types."""
        return {
            "v": 1,
            "window": self.window,
            "min_span": self.min_span,
            "resolution": self.resolution,
            "latest": None if self._latest_t == -math.inf else [self._latest_t, self._latest_v],
            "lows": [list(b) for b in self._lows],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RateOfRise:
        """Rebuild from ``to_dict`` output."""
        _version(data, "RateOfRise")
        r = cls(window=data["window"], min_span=data["min_span"], resolution=data["resolution"])
        if data["latest"] is not None:
            r._latest_t, r._latest_v = float(data["latest"][0]), float(data["latest"][1])
        r._lows = deque([float(k), float(t), float(v)] for k, t, v in data["lows"])
        return r
