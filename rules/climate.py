"""Derived climate of a room: dew point, Preservation Index and TWPI, %EMC, mold risk. Pure, no I/O.

Every formula and threshold here comes from docs/protections.md ("Climate maths"), which names its source
and the published values it was checked against (tests/rules/test_climate.py repeats those checks).
Time is passed in (seconds since the epoch); nothing here reads a clock.

Accumulators (``TwpiAccumulator``, ``MoldRiskAccumulator``) treat a sample as valid from its time
until the next sample, but for at most ``max_gap`` seconds: a sensor that goes silent does not keep
weighing in with its last value (a gap counts for nothing, neither good nor bad). Samples older than
the latest one already seen are ignored (a time-weighted sum cannot be re-ordered after the fact).
Both have ``to_dict``/``from_dict`` with plain JSON types so the engine can persist them.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Literal

__all__ = [
    "DAY",
    "HOUR",
    "EmcMechanicalRating",
    "EmcMetalRating",
    "MoldRiskAccumulator",
    "PiRating",
    "TwpiAccumulator",
    "dew_point",
    "emc",
    "emc_mechanical_rating",
    "emc_metal_rating",
    "lim0_rh_crit",
    "pi_rating",
    "preservation_index",
]

HOUR = 3600.0
DAY = 86400.0

PiRating = Literal["good", "ok", "risk"]
EmcMechanicalRating = Literal["ok", "risk"]
EmcMetalRating = Literal["good", "ok", "risk"]

# Magnus coefficients over water, Alduchov & Eskridge (1996), J. Appl. Meteor. 35:601-609.
_MAGNUS_A = 17.625
_MAGNUS_B = 243.04  # °C

# Preservation Index: least-squares fit of ln PI to IPI's published values (T in K, RH in %),
# within ±5.5 % of them over 10–30 °C × 30–70 %RH (environment.md, "Preservation Index").
_PI_C0 = -33.9392
_PI_CT = 11458.69
_PI_CRH = 0.0293693
_PI_CRHT = -16.5663

# IPI ratings for PI (years): ≥ 75 good, 45–75 OK, < 45 risk.
PI_GOOD = 75.0
PI_OK = 45.0

# %EMC ratings (environment.md, after IPI): mechanical damage OK for 5 ≤ EMC ≤ 12.5;
# metal corrosion good < 7, OK 7–10.5, risk ≥ 10.5.
EMC_MECHANICAL_MIN = 5.0
EMC_MECHANICAL_MAX = 12.5
EMC_METAL_GOOD = 7.0
EMC_METAL_RISK = 10.5

_KELVIN = 273.15


def _check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number (got {value!r})")


def _check_rh(rh: float, *, allow_zero: bool) -> None:
    _check_finite("rh", rh)
    if rh > 100.0 or rh < 0.0 or (rh == 0.0 and not allow_zero):
        bound = "0 ≤ rh ≤ 100" if allow_zero else "0 < rh ≤ 100"
        raise ValueError(f"relative humidity must be {bound} % (got {rh})")


def dew_point(t_c: float, rh: float) -> float:
    """Dew point in °C from air temperature (°C) and relative humidity (%), Magnus form."""
    _check_finite("t_c", t_c)
    _check_rh(rh, allow_zero=False)  # ln(0): dry air has no dew point
    gamma = math.log(rh / 100.0) + _MAGNUS_A * t_c / (_MAGNUS_B + t_c)
    return _MAGNUS_B * gamma / (_MAGNUS_A - gamma)


def preservation_index(t_c: float, rh: float) -> float:
    """Preservation Index in years (IPI's meaning) from T (°C) and RH (%), by the closed-form fit.

    Outside 10–30 °C × 30–70 %RH the fit is an extrapolation; it still returns a positive number.
    """
    _check_finite("t_c", t_c)
    _check_rh(rh, allow_zero=True)
    t_k = t_c + _KELVIN
    return math.exp(_PI_C0 + _PI_CT / t_k + _PI_CRH * rh + _PI_CRHT * rh / t_k)


def pi_rating(pi: float) -> PiRating:
    """IPI's rating of a (TW)PI: "good" ≥ 75 years, "ok" 45–75, "risk" < 45."""
    _check_finite("pi", pi)
    if pi >= PI_GOOD:
        return "good"
    if pi >= PI_OK:
        return "ok"
    return "risk"


def emc(t_c: float, rh: float) -> float:
    """Equilibrium moisture content of wood/paper in % from T (°C) and RH (%), US FPL equation."""
    _check_finite("t_c", t_c)
    _check_rh(rh, allow_zero=True)
    t = t_c
    h = rh / 100.0
    w = 349.0 + 1.29 * t + 0.0135 * t * t
    k = 0.805 + 0.000736 * t - 0.00000273 * t * t
    k1 = 6.27 - 0.00938 * t - 0.000303 * t * t
    k2 = 1.91 + 0.0407 * t - 0.000293 * t * t
    kh = k * h
    return (1800.0 / w) * (
        kh / (1.0 - kh) + (k1 * kh + 2.0 * k1 * k2 * kh * kh) / (1.0 + k1 * kh + k1 * k2 * kh * kh)
    )


def emc_mechanical_rating(value: float) -> EmcMechanicalRating:
    """Mechanical-damage rating of an %EMC: "ok" for 5 ≤ EMC ≤ 12.5, else "risk"."""
    _check_finite("emc", value)
    return "ok" if EMC_MECHANICAL_MIN <= value <= EMC_MECHANICAL_MAX else "risk"


def emc_metal_rating(value: float) -> EmcMetalRating:
    """Metal-corrosion rating of an %EMC: "good" < 7, "ok" 7–10.5, "risk" ≥ 10.5."""
    _check_finite("emc", value)
    if value < EMC_METAL_GOOD:
        return "good"
    if value < EMC_METAL_RISK:
        return "ok"
    return "risk"


def lim0_rh_crit(t_c: float) -> float:
    """RH (%) of the lowest mold germination isopleth LIM0 at T (°C), Zeng et al. (2023)."""
    _check_finite("t_c", t_c)
    return 100.0 * (0.02633 * math.cosh(0.10083 * (t_c - 30.0)) + 0.7153)


def _check_params(**params: float) -> None:
    for name, value in params.items():
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"{name} must be a positive number (got {value!r})")


class TwpiAccumulator:
    """Time-Weighted Preservation Index over a rolling window: Σ Δt / Σ (Δt / PI).

    Memory is bounded: Δt and Δt/PI are summed into buckets (1 h by default), so at most
    window/bucket + 1 buckets are kept (721 for 30 days) whatever the sample rate. The window edge is
    therefore a bucket boundary: a bucket counts while any part of it lies inside the window.
    """

    __slots__ = ("_buckets", "_inv", "_last_pi", "_last_t", "_sum_dt", "bucket", "max_gap", "window")

    def __init__(self, window: float = 30 * DAY, bucket: float = HOUR, max_gap: float = 2 * HOUR) -> None:
        _check_params(window=window, bucket=bucket, max_gap=max_gap)
        self.window = float(window)
        self.bucket = float(bucket)
        self.max_gap = float(max_gap)
        self._buckets: deque[list[float]] = deque()  # [bucket index, Σ Δt, Σ Δt/PI], index ascending
        self._sum_dt = 0.0
        self._inv = 0.0
        self._last_t: float | None = None
        self._last_pi = 0.0

    def add(self, time: float, pi: float) -> bool:
        """Record a PI sample at ``time``; False when it is older than the latest one (ignored)."""
        _check_finite("time", time)
        _check_finite("pi", pi)
        if pi <= 0:
            raise ValueError(f"pi must be positive, a Preservation Index in years (got {pi})")
        last_t = self._last_t
        if last_t is not None:
            if time < last_t:
                return False
            dt = time - last_t
            if dt > self.max_gap:
                dt = self.max_gap
            if dt > 0:
                self._credit(last_t, dt, self._last_pi)
        self._last_t = time
        self._last_pi = pi
        return True

    def _credit(self, start: float, dt: float, pi: float) -> None:
        """Add the interval [start, start + dt) at ``pi`` to its bucket(s)."""
        size = self.bucket
        end = start + dt
        buckets = self._buckets
        while start < end:
            index = math.floor(start / size)
            seg_end = min(end, (index + 1) * size)
            seg = seg_end - start
            if seg <= 0:  # float rounding at a bucket edge
                break
            if buckets and buckets[-1][0] == index:
                b = buckets[-1]
                b[1] += seg
                b[2] += seg / pi
            else:
                buckets.append([float(index), seg, seg / pi])
            self._sum_dt += seg
            self._inv += seg / pi
            start = seg_end
        self._prune(end)

    def _prune(self, now: float) -> None:
        buckets = self._buckets
        edge = now - self.window
        evicted = False
        while buckets and (buckets[0][0] + 1) * self.bucket <= edge:
            buckets.popleft()
            evicted = True
        if evicted:  # re-sum rather than subtract, so rounding does not drift over months
            self._sum_dt = math.fsum(b[1] for b in buckets)
            self._inv = math.fsum(b[2] for b in buckets)

    def value(self, now: float) -> float | None:
        """The TWPI (years) over the window ending at ``now``; None before any time has been covered."""
        _check_finite("now", now)
        self._prune(now)
        total_dt = self._sum_dt
        total_inv = self._inv
        if self._last_t is not None:  # the latest sample holds until now (at most max_gap)
            tail = min(now - self._last_t, self.max_gap)
            if tail > 0:
                total_dt += tail
                total_inv += tail / self._last_pi
        if total_dt <= 0:
            return None
        return total_dt / total_inv

    def to_dict(self) -> dict[str, Any]:
        """The state as plain JSON types."""
        return {
            "v": 1,
            "window": self.window,
            "bucket": self.bucket,
            "max_gap": self.max_gap,
            "last": None if self._last_t is None else [self._last_t, self._last_pi],
            "buckets": [list(b) for b in self._buckets],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TwpiAccumulator:
        """Rebuild from ``to_dict`` output."""
        if data.get("v") != 1:
            raise ValueError(f"TWPI state: unknown version {data.get('v')!r}")
        acc = cls(window=data["window"], bucket=data["bucket"], max_gap=data["max_gap"])
        last = data["last"]
        if last is not None:
            acc._last_t, acc._last_pi = float(last[0]), float(last[1])
        acc._buckets = deque([float(i), float(dt), float(inv)] for i, dt, inv in data["buckets"])
        acc._sum_dt = math.fsum(b[1] for b in acc._buckets)
        acc._inv = math.fsum(b[2] for b in acc._buckets)
        return acc


class MoldRiskAccumulator:
    """Mold germination risk: time above the LIM0 isopleth, accumulated, forgiven only slowly.

    While RH is above ``lim0_rh_crit(T)`` the risk grows by the time spent there; below it, it shrinks
    at ``decay`` times that rate (default 0.25: four dry hours undo one damp hour), never below zero.
    Spores that began to germinate do not start from nothing after a short dry spell, which is what
    "accumulate ... and reset only slowly" in environment.md asks for; a full reset would miss a room
    that is damp every afternoon.

    ``risk_factor`` = risk hours / (24 · ``days_to_germination``), after IPI's mold risk factor
    (Σ Δt / days-to-germination): ≥ 1 means germination is expected.

    ``days_to_germination`` defaults to 7 days. environment.md gives no number (IPI's days-to-mold
    table is not openly licensed, and LIM0 itself is the boundary where germination time becomes very
    long), so this default is our choice, not a published value: deliberately short, so that the alarm
    comes early. A site can set its own per room. The rate does not depend on how far above the
    isopleth the room is; that would need a model we cannot cite.
    """

    __slots__ = ("_above", "_hours", "_last_t", "days_to_germination", "decay", "max_gap")

    def __init__(
        self, days_to_germination: float = 7.0, decay: float = 0.25, max_gap: float = 2 * HOUR
    ) -> None:
        _check_params(days_to_germination=days_to_germination, max_gap=max_gap)
        if not math.isfinite(decay) or decay < 0:
            raise ValueError(f"decay must be ≥ 0 (got {decay!r})")
        self.days_to_germination = float(days_to_germination)
        self.decay = float(decay)
        self.max_gap = float(max_gap)
        self._hours = 0.0  # accumulated risk, in hours above the isopleth (net of decay)
        self._last_t: float | None = None
        self._above = False  # the latest sample's condition, held until the next one

    def add(self, time: float, t_c: float, rh: float) -> bool:
        """Record a T/RH sample at ``time``; False when it is older than the latest one (ignored)."""
        _check_finite("time", time)
        _check_finite("t_c", t_c)
        _check_rh(rh, allow_zero=True)
        if self._last_t is not None:
            if time < self._last_t:
                return False
            self._hours = self._advance(self._hours, time - self._last_t)
        self._last_t = time
        self._above = rh > lim0_rh_crit(t_c)
        return True

    def _advance(self, hours: float, dt: float) -> float:
        if dt > self.max_gap:
            dt = self.max_gap
        if dt <= 0:
            return hours
        if self._above:
            return hours + dt / HOUR
        return max(0.0, hours - self.decay * dt / HOUR)

    @property
    def above(self) -> bool | None:
        """Whether the latest sample was above the isopleth; None before any sample."""
        return None if self._last_t is None else self._above

    def risk_hours(self, now: float) -> float:
        """Accumulated hours above the isopleth (net of the slow decay) as of ``now``."""
        _check_finite("now", now)
        if self._last_t is None:
            return 0.0
        return self._advance(self._hours, now - self._last_t)

    def risk_factor(self, now: float) -> float:
        """Risk hours ÷ hours to germination: 0 is clean, ≥ 1 means germination is expected."""
        return self.risk_hours(now) / (24.0 * self.days_to_germination)

    def to_dict(self) -> dict[str, Any]:
        """The state as plain JSON types."""
        return {
            "v": 1,
            "days_to_germination": self.days_to_germination,
            "decay": self.decay,
            "max_gap": self.max_gap,
            "hours": self._hours,
            "last_t": self._last_t,
            "above": self._above,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MoldRiskAccumulator:
        """Rebuild from ``to_dict`` output."""
        if data.get("v") != 1:
            raise ValueError(f"mold risk state: unknown version {data.get('v')!r}")
        acc = cls(
            days_to_germination=data["days_to_germination"], decay=data["decay"], max_gap=data["max_gap"]
        )
        acc._hours = float(data["hours"])
        acc._last_t = None if data["last_t"] is None else float(data["last_t"])
        acc._above = bool(data["above"])
        return acc
