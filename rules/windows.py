"""Rolling windows the rules engine keeps per (device, metric): 24 h min/max, time-window mean, rate of rise.

Pure and clock-free: every sample carries its time and every query is given ``now`` (seconds since
the epoch). Memory is bounded by time, not by sample rate: samples are grouped into buckets of
``resolution`` seconds, so a window holds at most window/resolution + 2 entries however fast a
device reports.

Nothing here assumes samples at exact times: a Modbus reading is stamped after its read (jitter of
tens of ms), an MQTT sensor reports when it likes. For the min/max and the mean the window edge moves
in whole buckets: a bucket counts while any part of it lies inside (now − window, now], i.e. a sample
counts for at least ``window`` and at most ``window + resolution`` after its own time (never shorter),
so jitter at a bucket edge moves its exit by one bucket, which for a 24 h swing or a 24 h mean is
immaterial. The rate of rise interpolates between samples instead (see RateOfRise): its spans are
exact whatever the sample times.

Late (out-of-order) samples that can still count are merged where they belong; the others are
dropped, and ``add`` returns False for them. All have ``to_dict``/``from_dict`` with plain JSON types
so the engine can persist them across a restart.

Queries prune what has left the window at ``now``, so ``now`` must not go backwards between calls
(pass the engine clock's time); readings may still carry times behind it.
"""

from __future__ import annotations

import math
import operator
from bisect import bisect_left, bisect_right
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


def _version(data: dict[str, Any], what: str, known: tuple[int, ...] = (1,)) -> int:
    """The state's version, refused unless ``known``."""
    version = data.get("v")
    if version not in known:
        raise ValueError(f"{what} state: unknown version {version!r}")
    return int(version)


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
        if time - time or value - value:  # NaN or ±inf (x - x is 0.0 for every finite x)
            _check_sample(time, value)
        key = time - time % self.resolution
        min_keys, mins, max_keys, maxs = self._min_keys, self._min, self._max_keys, self._max
        if (
            time >= self._latest
            and min_keys
            and min_keys[-1] == key
            and max_keys[-1] == key
            and mins[-1] <= value <= maxs[-1]
        ):
            # The common case (a steady sensor): the newest bucket already holds values at least as
            # extreme, so neither deque changes; their oldest entries expire when the bucket changes.
            self._latest = time
            return True
        if time > self._latest:
            self._latest = time
        if not self._live(key, self._latest):
            return False
        # "old is beaten by new": for the minimum a newer value no larger, for the maximum no smaller.
        _insert(min_keys, mins, key, value, operator.ge)
        _insert(max_keys, maxs, key, value, operator.le)
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
        if time - time or value - value:  # NaN or ±inf (x - x is 0.0 for every finite x)
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
    """Rise per minute into the latest sample over the fire window, robust to jitter and gaps (fire pre-alarm).

    Definition. Let f be the piecewise-linear curve through the samples (within one ``resolution``
    bucket their centroid, the latest sample itself exactly) and (t_n, v_n) the latest sample:

        rise = max over s in [min_span, window] of (v_n − f(t_n − s)) · 60 / s      (units per minute)

    the steepest mean slope of f over a span of ``min_span`` … ``window`` seconds ending at the
    latest sample. On each piece of f that expression is monotonic in s, so its maximum lies at
    s = min_span, at s = window or at a sample's own time: only those spans are computed.

    Why this form, with the facts of the 防火 row (rules/protections/fire.py, after environment.md):
    a rise > 4 °C/min over a 1–5 min window is a pre-alarm, a normal room drifts < 0.01 °C/min, and a
    T/H transmitter is ±0.5 °C accurate with a 0.1 °C resolution.

    - Jitter and irregular sampling. A Modbus reading is stamped after its read, an MQTT sensor
      reports every 7–13 s: no two samples are exactly ``window`` apart. The reference f(t_n − s) is
      interpolated between the samples either side of t_n − s instead of needing a sample there, so
      a steady ramp reads its own slope whatever the times. (The former rule took only pairs
      min_span ≤ Δt ≤ window apart; with the default 60 s fire window both are 60 s, and a few ms
      of jitter left no pair at all: the pre-alarm never fired.)
    - Noise. A single step of h between two samples moves v_n − f(t_n − s) by at most h, so it reads
      at most h · 60 / min_span: with min_span = 60 s a 0.5 °C step (the sensor's accuracy) reads
      ≤ 0.5 °C/min and a 0.1 °C quantisation step ≤ 0.1 °C/min, far under 4; at the shortest
      configurable window, 10 s, a 0.5 °C step still reads ≤ 3 °C/min. A drift reads its drift.
    - Reaction. The maximum over spans, not a regression over the window: in a 5 min window a fire
      that began ``min_span`` ago already reads at full strength.
    - A window shorter than the sampling interval reads the slope of the last interval (t_n − s
      falls inside it); it is never extrapolated beyond the samples.
    - Gaps. f joins two consecutive samples only when they are at most ``max_gap`` apart (300 s by
      default, the long end of the convention's 1–5 min): the rise is measured over the samples since
      the last longer silence only, so right after one it is None until fresh samples span
      ``min_span``. A missed poll or two is bridged.

    The result may be negative (the temperature is falling). None without a span in range, and when
    the latest sample is older than ``window`` at ``now`` (a silent sensor has no current rise).

    Memory: per bucket (Σ time offset, Σ value, count); a bucket is kept while its centroid lies in
    the window ending at the latest sample, plus the last one before it (the left neighbour of
    t_n − window): ≤ window/resolution + 2 (14 at the default 60 s). Late samples merge into their
    bucket; one older than the window's start is kept only as that left neighbour (``add`` returns
    False when it is not kept). Queries scan the kept buckets.
    """

    __slots__ = ("_buckets", "_latest_t", "_latest_v", "max_gap", "min_span", "resolution", "window")

    def __init__(
        self, window: float = 300.0, min_span: float = 60.0, resolution: float = 5.0, max_gap: float = 300.0
    ) -> None:
        _check_positive(window=window, min_span=min_span, resolution=resolution, max_gap=max_gap)
        if min_span > window:
            raise ValueError(f"min_span ({min_span} s) must not exceed window ({window} s)")
        if resolution > min_span:
            raise ValueError(f"resolution ({resolution} s) must not exceed min_span ({min_span} s)")
        self.window = float(window)
        self.min_span = float(min_span)
        self.resolution = float(resolution)
        self.max_gap = float(max_gap)
        # [bucket start, Σ (time − start), Σ value, count], start ascending. Offsets, not epoch
        # times, are summed so that the centroid keeps sub-millisecond precision.
        self._buckets: deque[list[float]] = deque()
        self._latest_t = -math.inf
        self._latest_v = 0.0

    def add(self, time: float, value: float) -> bool:
        """Add a sample; False when it is too old to count (dropped)."""
        if time - time or value - value:  # NaN or ±inf (x - x is 0.0 for every finite x)
            _check_sample(time, value)
        if time >= self._latest_t:
            self._latest_t = time
            self._latest_v = value
        elif time < self._latest_t - self.window - self.max_gap:
            return False  # older than any left neighbour of the window's start could be
        key = time - time % self.resolution
        buckets = self._buckets
        if buckets and buckets[-1][0] == key:
            _merge(buckets[-1], time, value)
        elif not buckets or key > buckets[-1][0]:
            buckets.append([key, time - key, value, 1.0])
        else:  # late sample (rare)
            p = bisect_left([b[0] for b in buckets], key)
            if buckets[p][0] == key:
                _merge(buckets[p], time, value)
            else:
                buckets.insert(p, [key, time - key, value, 1.0])
        self._prune()
        return buckets[0][0] <= key  # its bucket was kept (pruning takes from the left only)

    def _prune(self) -> None:
        buckets = self._buckets
        start = self._latest_t - self.window
        # The oldest bucket serves only as the left neighbour of the window's start: drop it once the
        # next one can serve, or when a silence longer than max_gap separates it from the next.
        while len(buckets) >= 2 and _centroid(buckets[1]) <= start:
            buckets.popleft()
        if len(buckets) >= 2:
            first = _centroid(buckets[0])
            if first < start and _centroid(buckets[1]) - first > self.max_gap:
                buckets.popleft()

    def rise_per_min(self, now: float) -> float | None:
        """The rise (units per minute) into the latest sample; None without a span in range or when silent."""
        t_n = self._latest_t
        if t_n == -math.inf or now - t_n > self.window:
            return None
        v_n = self._latest_v
        times: list[float] = []
        values: list[float] = []
        for b in self._buckets:
            t = _centroid(b)
            if t < t_n:  # the latest sample stands for itself, exactly
                times.append(t)
                values.append(b[2] / b[3])
        times.append(t_n)
        values.append(v_n)
        # Only the samples since the last silence longer than max_gap: f is not drawn across one.
        c = len(times) - 1
        while c > 0 and times[c] - times[c - 1] <= self.max_gap:
            c -= 1
        best: float | None = None
        for span in (self.min_span, self.window) if self.window > self.min_span else (self.min_span,):
            x = t_n - span
            if x < times[c]:
                continue
            i = bisect_right(times, x, c) - 1  # times[i] ≤ x < times[i + 1]: x < t_n, so i + 1 exists
            ref = values[i] + (values[i + 1] - values[i]) * (x - times[i]) / (times[i + 1] - times[i])
            rate = (v_n - ref) * 60.0 / span
            if best is None or rate > best:
                best = rate
        for i in range(c, len(times) - 1):
            span = t_n - times[i]
            if self.min_span < span < self.window:
                rate = (v_n - values[i]) * 60.0 / span
                if best is None or rate > best:
                    best = rate
        return best

    def __len__(self) -> int:
        return len(self._buckets)

    def to_dict(self) -> dict[str, Any]:
        """The state as plain JSON types."""
        return {
            "v": 2,
            "window": self.window,
            "min_span": self.min_span,
            "resolution": self.resolution,
            "max_gap": self.max_gap,
            "latest": None if self._latest_t == -math.inf else [self._latest_t, self._latest_v],
            "buckets": [[b[0], b[1], b[2], int(b[3])] for b in self._buckets],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RateOfRise:
        """Rebuild from ``to_dict`` output; state of version 1 (per-bucket lows) is converted."""
        version = _version(data, "RateOfRise", known=(1, 2))
        if version == 1:
            # v1 kept each bucket's lowest sample with its time: one sample per bucket is what it knew.
            r = cls(window=data["window"], min_span=data["min_span"], resolution=data["resolution"])
            r._buckets = deque([float(k), float(t) - float(k), float(v), 1.0] for k, t, v in data["lows"])
        else:
            r = cls(
                window=data["window"],
                min_span=data["min_span"],
                resolution=data["resolution"],
                max_gap=data["max_gap"],
            )
            r._buckets = deque([float(k), float(dt), float(s), float(n)] for k, dt, s, n in data["buckets"])
        if data["latest"] is not None:
            r._latest_t, r._latest_v = float(data["latest"][0]), float(data["latest"][1])
        r._prune()
        return r


def _centroid(bucket: list[float]) -> float:
    """The mean time of a rate-of-rise bucket's samples."""
    return bucket[0] + bucket[1] / bucket[3]


def _merge(bucket: list[float], time: float, value: float) -> None:
    bucket[1] += time - bucket[0]
    bucket[2] += value
    bucket[3] += 1
