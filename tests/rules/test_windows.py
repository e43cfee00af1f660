"""Rolling windows: checked against brute force over random streams, plus the edge cases by hand."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from typing import Any

import pytest

from rules.windows import RateOfRise, RollingMean, RollingMinMax

T0 = 1_767_225_600.0  # 2026-01-01T00:00Z, a whole number of minutes
DAY = 86400.0


def _live(samples: list[tuple[float, float]], now: float, window: float, res: float) -> list[float]:
    """Brute force with the documented bucket semantics: a sample counts while its bucket overlaps."""
    return [v for t, v in samples if (t - t % res) + res > now - window and t <= now]


# --- RollingMinMax ----------------------------------------------------------------------------------


def test_minmax_empty() -> None:
    w = RollingMinMax()
    assert w.min(T0) is None
    assert w.max(T0) is None
    assert w.span(T0) is None


def test_minmax_24h_swing_by_hand() -> None:
    w = RollingMinMax(window=DAY, resolution=60)
    w.add(T0, 20.0)
    w.add(T0 + 3600, 23.5)
    w.add(T0 + 7200, 21.0)
    assert (w.min(T0 + 7200), w.max(T0 + 7200), w.span(T0 + 7200)) == (20.0, 23.5, 3.5)
    # 24 h after the first sample its minute bucket is out: the 20.0 leaves, 23.5 stays.
    assert w.min(T0 + DAY + 60) == 21.0
    assert w.max(T0 + DAY + 60) == 23.5
    assert w.max(T0 + DAY + 3660) == 21.0
    assert w.min(T0 + 2 * DAY + 7200) is None


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("late_share", [0.0, 0.2])
def test_minmax_matches_brute_force(seed: int, late_share: float) -> None:
    rng = random.Random(seed)
    window, res = 3600.0, 60.0
    w = RollingMinMax(window=window, resolution=res)
    samples: list[tuple[float, float]] = []
    latest = now = T0
    for _ in range(2000):
        latest += rng.uniform(0, 30)
        t = latest - rng.uniform(0, 2 * window) if rng.random() < late_share else latest
        v = round(rng.gauss(20, 3), 1)  # rounded: equal values must be handled too
        accepted = w.add(t, v)
        newest = max(s[0] for s in samples) if samples else t
        newest = max(newest, t)
        assert accepted == ((t - t % res) + res > newest - window)
        if accepted:
            samples.append((t, v))
        # The engine's clock never goes back, but readings may carry times behind it.
        now = max(now, latest + rng.choice([0.0, 0.0, rng.uniform(0, window / 4)]))
        live = _live(samples, now, window, res)
        assert w.min(now) == (min(live) if live else None)
        assert w.max(now) == (max(live) if live else None)
        assert len(w) <= window / res + 2


def test_minmax_memory_is_bounded_by_time_not_rate() -> None:
    w = RollingMinMax(window=DAY, resolution=60)
    for i in range(200_000):  # 2 samples/s for 27 h, rising: the worst case for the min deque
        w.add(T0 + i * 0.5, float(i))
    assert len(w) <= DAY / 60 + 2


def test_minmax_round_trips_through_json() -> None:
    w = RollingMinMax(window=3600, resolution=10)
    rng = random.Random(7)
    for i in range(500):
        w.add(T0 + i * 7, rng.uniform(0, 100))
    clone = RollingMinMax.from_dict(json.loads(json.dumps(w.to_dict())))
    for extra in range(50):
        t = T0 + 3500 + extra * 20
        v = rng.uniform(0, 100)
        assert w.add(t, v) == clone.add(t, v)
        assert (w.min(t), w.max(t)) == (clone.min(t), clone.max(t))
    assert RollingMinMax.from_dict(RollingMinMax().to_dict()).min(T0) is None


# --- RollingMean ------------------------------------------------------------------------------------


def test_mean_by_hand() -> None:
    m = RollingMean(window=DAY, resolution=60)
    assert m.mean(T0) is None
    for i, v in enumerate([40.0, 60.0, 80.0]):
        m.add(T0 + i * 3600, v)
    assert m.mean(T0 + 7200) == 60.0
    assert m.count(T0 + 7200) == 3
    assert m.mean(T0 + DAY + 60) == 70.0  # the first hour's sample left the window
    assert m.mean(T0 + 3 * DAY) is None


@pytest.mark.parametrize("seed", range(4))
def test_mean_matches_brute_force_with_late_samples(seed: int) -> None:
    rng = random.Random(seed)
    window, res = 1800.0, 60.0
    m = RollingMean(window=window, resolution=res)
    samples: list[tuple[float, float]] = []
    latest = T0
    for _ in range(1500):
        latest += rng.uniform(0, 20)
        t = latest - rng.uniform(0, 1.5 * window) if rng.random() < 0.15 else latest
        v = rng.uniform(0, 150)
        if m.add(t, v):
            samples.append((t, v))
        live = _live(samples, latest, window, res)
        got = m.mean(latest)
        assert (got is None) == (not live)
        if live:
            assert got == pytest.approx(math.fsum(live) / len(live), rel=1e-9)


def test_mean_does_not_drift_over_long_runs() -> None:
    m = RollingMean(window=600, resolution=60)
    for i in range(100_000):
        m.add(T0 + i * 10, 1e6 if i % 2 else 0.1)
    assert m.mean(T0 + 100_000 * 10) == pytest.approx((1e6 + 0.1) / 2, rel=1e-12)


def test_mean_round_trips_through_json() -> None:
    m = RollingMean(window=3600, resolution=60)
    for i in range(300):
        m.add(T0 + i * 30, float(i % 13))
    clone = RollingMean.from_dict(json.loads(json.dumps(m.to_dict())))
    now = T0 + 300 * 30
    assert clone.mean(now) == m.mean(now)
    assert clone.count(now) == m.count(now)


# --- RateOfRise -------------------------------------------------------------------------------------


def _rise_brute(samples: list[tuple[float, float]], window: float, min_span: float) -> float | None:
    t_n, v_n = max(samples, key=lambda s: s[0])
    rates = [(v_n - v) * 60 / (t_n - t) for t, v in samples if min_span <= t_n - t <= window]
    return max(rates) if rates else None


def test_rise_steady_drift_and_fire() -> None:
    r = RateOfRise(window=300, min_span=60, resolution=5)
    for i in range(60):  # a normal room: 0.005 °C/min
        r.add(T0 + i * 10, 20.0 + 0.005 * i * 10 / 60)
    rise = r.rise_per_min(T0 + 590)
    assert rise == pytest.approx(0.005, abs=1e-9)
    # A fire: +5 °C/min from here on; after one minute the rate is seen at full strength.
    t = T0 + 590
    base = 20.0 + 0.005 * 590 / 60
    for k in range(1, 7):
        r.add(t + k * 10, base + 5.0 * k * 10 / 60)
    rise = r.rise_per_min(t + 60)
    assert rise is not None
    assert rise == pytest.approx(5.0, rel=0.01)


def test_rise_ignores_pairs_closer_than_min_span() -> None:
    r = RateOfRise(window=300, min_span=60, resolution=5)
    r.add(T0, 20.0)
    r.add(T0 + 10, 20.1)  # a quantisation step, 0.6 °C/min if read over 10 s
    assert r.rise_per_min(T0 + 10) is None
    r.add(T0 + 60, 20.1)
    assert r.rise_per_min(T0 + 60) == pytest.approx(0.1)


def test_rise_silent_sensor_has_no_rate() -> None:
    r = RateOfRise(window=300, min_span=60)
    r.add(T0, 20.0)
    r.add(T0 + 120, 30.0)
    assert r.rise_per_min(T0 + 120) == pytest.approx(5.0)
    assert r.rise_per_min(T0 + 421) is None


def test_rise_may_be_negative() -> None:
    r = RateOfRise()
    r.add(T0, 25.0)
    r.add(T0 + 120, 23.0)
    assert r.rise_per_min(T0 + 120) == pytest.approx(-1.0)


@pytest.mark.parametrize("seed", range(6))
def test_rise_matches_brute_force_at_resolution_one_sample_per_bucket(seed: int) -> None:
    """With at most one sample per bucket the bucketing loses nothing: exact agreement."""
    rng = random.Random(seed)
    r = RateOfRise(window=300, min_span=60, resolution=5)
    samples: list[tuple[float, float]] = []
    t = T0
    for _ in range(400):
        t += rng.choice([5.0, 10.0, 15.0, 30.0])
        v = 20 + rng.gauss(0, 1)
        r.add(t, v)
        samples.append((t, v))
        expected = _rise_brute(samples, 300, 60)
        got = r.rise_per_min(t)
        if expected is None:
            assert got is None
        else:
            assert got == pytest.approx(expected, rel=1e-12)


def test_rise_with_many_samples_per_bucket_is_close_to_brute_force() -> None:
    """Sub-bucket samples keep only each bucket's low: never steeper than the truth, close to it."""
    rng = random.Random(3)
    r = RateOfRise(window=300, min_span=60, resolution=5)
    samples: list[tuple[float, float]] = []
    t = T0
    for i in range(1200):
        t += 1.0
        v = 20 + 0.05 * i / 60 * 60 + rng.gauss(0, 0.05)  # rising 3 °C/min with noise
        r.add(t, v)
        samples.append((t, v))
    expected = _rise_brute(samples, 300, 60)
    got = r.rise_per_min(t)
    assert expected is not None and got is not None
    assert got <= expected + 1e-12
    assert got == pytest.approx(expected, rel=0.1)


def test_rise_late_sample_inside_window_counts() -> None:
    r = RateOfRise(window=300, min_span=60, resolution=5)
    r.add(T0 + 200, 30.0)
    assert r.add(T0 + 80, 18.0)  # late, but inside the window
    assert r.rise_per_min(T0 + 200) == pytest.approx(6.0)
    assert not r.add(T0 - 200, 0.0)  # outside the window of the latest sample


def test_rise_round_trips_through_json() -> None:
    r = RateOfRise()
    for i in range(100):
        r.add(T0 + i * 3, 20 + math.sin(i / 5))
    clone = RateOfRise.from_dict(json.loads(json.dumps(r.to_dict())))
    assert clone.rise_per_min(T0 + 300) == r.rise_per_min(T0 + 300)
    assert RateOfRise.from_dict(RateOfRise().to_dict()).rise_per_min(T0) is None


# --- shared -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: RollingMinMax(window=0),
        lambda: RollingMean(resolution=-1),
        lambda: RateOfRise(window=60, min_span=120),
        lambda: RateOfRise(resolution=math.nan),
    ],
)
def test_bad_parameters_are_refused(make: Callable[[], Any]) -> None:
    with pytest.raises(ValueError, match="must"):
        make()


@pytest.mark.parametrize("cls", [RollingMinMax, RollingMean, RateOfRise])
def test_non_finite_samples_are_refused(cls: Callable[[], Any]) -> None:
    w = cls()
    with pytest.raises(ValueError, match="finite"):
        w.add(T0, math.nan)
    with pytest.raises(ValueError, match="finite"):
        w.add(math.inf, 1.0)


@pytest.mark.parametrize("cls", [RollingMinMax, RollingMean, RateOfRise])
def test_unknown_state_version_is_refused(cls: Any) -> None:
    with pytest.raises(ValueError, match="version"):
        cls.from_dict({"v": 2})
