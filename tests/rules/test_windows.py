"""Rolling windows: checked against brute force over random streams, plus the edge cases by hand."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable
from itertools import pairwise
from typing import Any

import pytest

from rules.protections.fire import DEFAULTS
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


# Jittered and irregular polls: the 24 h swing and the 24 h mean make no exact-time assumption. A sample
# stamped a few ms either side of a bucket boundary counts for at least 24 h and at most 24 h + one
# bucket; late (redelivered) samples land where they belong.


@pytest.mark.parametrize("offset", [-0.05, -0.001, 0.0, 0.001, 0.05])
def test_a_jittered_extreme_counts_for_24h_to_24h_and_a_bucket(offset: float) -> None:
    rng = random.Random(str(offset))
    w = RollingMinMax(window=DAY, resolution=60)
    m = RollingMean(window=DAY, resolution=60)
    peak = T0 + 3600 + offset  # a 25 °C reading stamped `offset` s from a minute boundary
    polls = [T0 + 30 * k + rng.uniform(-0.05, 0.05) for k in range(int(1.2 * DAY / 30))]
    stream = sorted([(t, 20.0) for t in polls if abs(t - peak) > 1] + [(peak, 25.0)])
    probes = [(peak + DAY - 0.001, True), (peak + DAY + 60.001, False)]
    for t, v in stream:
        while probes and probes[0][0] < t:
            now, counts = probes.pop(0)
            assert w.max(now) == (25.0 if counts else 20.0)
            assert (m.mean(now) or 0.0) > 20.0 if counts else m.mean(now) == 20.0
        assert w.add(t, v)
        assert m.add(t, v)
    assert not probes


@pytest.mark.parametrize(
    "sampler", ["modbus 30 s ± 50 ms", "mqtt every 7–13 s", "modbus 30 s ± 50 ms, 5 % redelivered late"]
)
def test_swing_and_mean_under_field_timing_match_brute_force(sampler: str) -> None:
    """26 h of readings as the field stamps them, queried as the engine does (now never goes back)."""
    rng = random.Random(sampler)
    w = RollingMinMax(window=DAY, resolution=60)
    m = RollingMean(window=DAY, resolution=60)
    if sampler.startswith("mqtt"):
        times, t = [], T0
        while t < T0 + 26 * 3600:
            times.append(round(t, 3))
            t += rng.uniform(7, 13)
    else:
        times = [round(T0 + 30 * k + rng.uniform(-0.05, 0.05), 3) for k in range(26 * 120)]
    readings = [(t, round(20 + 3 * math.sin((t - T0) / 9000) + rng.gauss(0, 0.2), 1)) for t in times]
    if "late" in sampler:  # delivered up to 10 min late, as after an MQTT reconnect
        readings.sort(key=lambda tv: tv[0] + (rng.uniform(0, 600) if rng.random() < 0.05 else 0))
    accepted: list[tuple[float, float]] = []
    now = T0
    for i, (t, v) in enumerate(readings):
        ok = w.add(t, v)
        assert m.add(t, v) == ok
        if ok:
            accepted.append((t, v))
        now = max(now, t)
        if i % 97 == 0 or i == len(readings) - 1:
            live = _live(accepted, now, DAY, 60)
            assert (w.min(now), w.max(now)) == (min(live), max(live))
            assert m.mean(now) == pytest.approx(math.fsum(live) / len(live), rel=1e-9)


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
#
# The fire windows a user may configure (core/config/thresholds.py FireThresholds: 10 s … 600 s), each
# built as rules/engine.py builds it: spans of at least a minute, unless the window itself is shorter.

WINDOWS = (10.0, 60.0, 300.0, 600.0)
FIRE_RATE = DEFAULTS["all"].rate  # 4 °C/min, the pre-alarm threshold (rules/protections/fire.py)
QUANTUM = 0.1  # °C: a T/H transmitter's register resolution (scale 0.1)
R0 = T0 + 1200.0  # the fire starts after 20 quiet minutes at 20 °C
Sampler = Callable[[random.Random, float, float], list[tuple[float, float]]]


def _fire_rise(window: float) -> RateOfRise:
    return RateOfRise(window=window, min_span=min(60.0, window))


def _q(value: float) -> float:
    return round(value / QUANTUM) * QUANTUM


def _modbus(poll: float, jitter: float, missed: tuple[float, float] | None = None) -> Sampler:
    """Polls every ``poll`` s, each stamped up to ``jitter`` s off its read: (read, stamped) pairs.

    ``missed`` = (from, to) after R0: the polls in it time out (no reading).
    """

    def times(rng: random.Random, start: float, end: float) -> list[tuple[float, float]]:
        out = []
        k = 0
        while start + k * poll < end:
            t = start + k * poll
            k += 1
            if missed is not None and R0 + missed[0] <= t < R0 + missed[1]:
                continue
            out.append((t, round(t + rng.uniform(-jitter, jitter), 3)))
        return out

    return times


def _mqtt(shortest: float, longest: float) -> Sampler:
    """A sensor that reports every ``shortest``…``longest`` s (uniform) and stamps its own reports."""

    def times(rng: random.Random, start: float, end: float) -> list[tuple[float, float]]:
        out = []
        t = start + rng.uniform(0, longest)
        while t < end:
            out.append((t, round(t, 3)))
            t += rng.uniform(shortest, longest)
        return out

    return times


SAMPLERS: dict[str, tuple[Sampler, float]] = {  # name → (sampler, its longest interval)
    "modbus 10 s ± 50 ms": (_modbus(10, 0.05), 10.05),
    "modbus 30 s ± 50 ms (the default poll)": (_modbus(30, 0.05), 30.05),
    "modbus 10 s ± 50 ms, two polls missed": (_modbus(10, 0.05, missed=(95, 115)), 30.05),
    "mqtt every 7–13 s": (_mqtt(7, 13), 13.0),
}


def _run(
    window: float, sampler: Sampler, signal: Callable[[float], float], seed: str, end: float = R0 + 360
) -> list[tuple[float, float | None]]:
    """Feed ``signal`` (read at the read instant, stored under its stamp) and read the rise after each."""
    r = _fire_rise(window)
    out: list[tuple[float, float | None]] = []
    for read, stamped in sampler(random.Random(seed), T0, end):
        r.add(stamped, signal(read))
        out.append((read, r.rise_per_min(stamped + 0.5)))  # the engine evaluates right after the batch
    return out


def _tolerance(window: float, sampler: str) -> float:
    """How far a 5 °C/min ramp may read off 5: 0.1 °C quantisation at both ends, 2 × 50 ms of jitter."""
    jitter = 0.0 if sampler.startswith("mqtt") else 0.05
    return (QUANTUM + 5.0 * 2 * jitter / 60) * 60 / min(60.0, window) + 1e-9


def _ramp(t: float) -> float:
    """20 °C, then 5 °C/min from R0 (a smouldering fire heating the room), as the register reads it."""
    return _q(20.0 + max(0.0, t - R0) * 5.0 / 60)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("window", WINDOWS)
def test_rise_reads_a_5_per_min_ramp_whatever_the_sampling(window: float, sampler: str, seed: int) -> None:
    sample, longest = SAMPLERS[sampler]
    got = _run(window, sample, _ramp, f"{sampler}:{window}:{seed}")
    min_span = min(60.0, window)
    quiet = [rise for t, rise in got if T0 + 2 * longest + window < t < R0]
    assert quiet and all(rise == 0.0 for rise in quiet)  # a flat room reads 0, never None
    # Once the ramp covers min_span and the interval before it, every reading is 5 °C/min.
    tol = _tolerance(window, sampler)
    steady = [rise for t, rise in got if t >= R0 + min_span + longest]
    assert steady and all(rise is not None and abs(rise - 5.0) <= tol for rise in steady), (tol, steady)
    # Never steeper than the fire itself, and the pre-alarm threshold is crossed within that time.
    assert all(rise is None or rise <= 5.0 + tol for _, rise in got)
    first = next(t for t, rise in got if rise is not None and rise > FIRE_RATE)
    assert first - R0 <= min_span + longest


@pytest.mark.parametrize(
    ("noise", "height"),
    [
        ("a 0.1 °C quantisation step", 0.1),
        ("a 0.5 °C step (the sensor's accuracy)", 0.5),
        ("a single reading 0.5 °C off", 0.5),
    ],
)
@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("window", WINDOWS)
def test_rise_keeps_sensor_noise_out(window: float, sampler: str, noise: str, height: float) -> None:
    """A step of h reads at most h · 60 / min_span: far under the 4 °C/min pre-alarm at every window."""
    spike = noise.startswith("a single")

    def signal(t: float) -> float:
        if spike:
            return 20.5 if R0 <= t < R0 + 7 else 20.0  # one report (7 s is the shortest interval)
        return 20.0 + (height if t >= R0 else 0.0)

    got = [rise for _, rise in _run(window, SAMPLERS[sampler][0], signal, f"{noise}:{sampler}")]
    bound = height * 60 / min(60.0, window) + 1e-9
    assert max(r for r in got if r is not None) <= bound < FIRE_RATE


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("window", WINDOWS)
def test_rise_of_a_normal_drift_is_about_zero(window: float, sampler: str) -> None:
    """A room drifting 0.005 °C/min reads its drift; quantised, at most one 0.1 °C step over min_span."""
    sample = SAMPLERS[sampler][0]
    exact = _run(window, sample, lambda t: 20.0 + (t - T0) * 0.005 / 60, sampler, end=T0 + 7200)
    assert all(abs(r - 0.005) < 1e-3 for t, r in exact if t > T0 + 120 + window and r is not None)
    stepped = _run(window, sample, lambda t: _q(20.0 + (t - T0) * 0.005 / 60), sampler, end=T0 + 7200)
    assert max(r for _, r in stepped if r is not None) <= QUANTUM * 60 / min(60.0, window) + 1e-9


@pytest.mark.parametrize("window", WINDOWS)
def test_rise_is_not_read_across_a_long_silence(window: float) -> None:
    """The gateway is silent for 10 min (> max_gap) while the room heats: no rise averaged over the
    silence; from fresh readings spanning min_span the ramp reads 5 °C/min again."""
    sample = _modbus(10, 0.05)
    r = _fire_rise(window)
    rng = random.Random(f"silence:{window}")
    readings = [(t, s) for t, s in sample(rng, T0, R0 + 900) if not R0 - 300 <= t < R0 + 300]
    after: list[tuple[float, float | None]] = []
    for read, stamped in readings:
        r.add(stamped, _ramp(read))
        if read >= R0 + 300:
            after.append((read, r.rise_per_min(stamped + 0.5)))
    assert after[0][1] is None  # 600 s since the last reading: the rise over the silence is unknown
    min_span = min(60.0, window)
    steady = [rise for t, rise in after if t >= R0 + 300 + min_span + 10.05]
    tol = _tolerance(window, "modbus")
    assert steady and all(rise is not None and abs(rise - 5.0) <= tol for rise in steady)


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("seed", range(3))
def test_rise_does_not_depend_on_the_order_samples_arrive_in(window: float, seed: int) -> None:
    """MQTT QoS 1 redelivers after a reconnect: a fifth of the reports arrive up to 40 s late. After
    each arrival the rise equals that of the same reports added in time order."""
    rng = random.Random(seed)
    reports = [(s, _ramp(t)) for t, s in _mqtt(7, 13)(rng, R0 - 300, R0 + 300)]
    arrivals = sorted(reports, key=lambda tv: tv[0] + (rng.uniform(0, 40) if rng.random() < 0.2 else 0))
    late = _fire_rise(window)
    seen: list[tuple[float, float]] = []
    for t, v in arrivals:
        late.add(t, v)
        seen.append((t, v))
        in_order = _fire_rise(window)
        for s in sorted(seen):
            in_order.add(*s)
        now = max(s[0] for s in seen) + 0.5
        expected = in_order.rise_per_min(now)
        got = late.rise_per_min(now)
        assert (got is None) == (expected is None)
        if got is not None:
            assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_rise_late_sample_inside_window_counts() -> None:
    r = RateOfRise(window=300, min_span=60, resolution=5)
    r.add(T0 + 200, 30.0)
    assert r.add(T0 + 80, 18.0)  # late, but inside the window
    assert r.rise_per_min(T0 + 200) == pytest.approx(6.0)
    # Older than the window's start: kept as the left neighbour of T0 − 100, the start itself.
    assert r.add(T0 - 200, 0.0)
    assert r.rise_per_min(T0 + 200) == pytest.approx(6.0)  # (30 − 6.43) / 5 min reads less: no change
    assert not r.add(T0 - 250, 0.0)  # superseded by the neighbour at T0 − 200
    assert not r.add(T0 - 401, 0.0)  # more than max_gap before the window: it can never count
    assert len(r) == 3


def _rise_brute(
    samples: list[tuple[float, float]], now: float, window: float, min_span: float, max_gap: float = 300.0
) -> float | None:
    """The docstring's definition straight from every sample: no buckets, no pruning; spans on a grid too
    (the maximum must lie at min_span, window or a sample, so the grid may never beat those)."""
    pts = sorted(samples)
    t_n, v_n = pts[-1]
    if now - t_n > window:
        return None
    c = len(pts) - 1
    while c > 0 and pts[c][0] - pts[c - 1][0] <= max_gap:
        c -= 1
    run = pts[c:]

    def f(x: float) -> float | None:
        for (ta, va), (tb, vb) in pairwise(run):
            if ta <= x <= tb:
                return va + (vb - va) * (x - ta) / (tb - ta)
        return None

    spans = {min_span, window} | {t_n - t for t, _ in run if min_span <= t_n - t <= window}
    spans |= {min_span + (window - min_span) * k / 300 for k in range(301)}
    rates = [(v_n - ref) * 60 / s for s in spans if (ref := f(t_n - s)) is not None]
    return max(rates) if rates else None


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("seed", range(4))
def test_rise_matches_the_definition_at_one_sample_per_bucket(window: float, seed: int) -> None:
    """Irregular reports (5–15 s), silences of 1–12 min, late deliveries: with at most one sample per
    bucket the bucketing loses nothing, so the result is the definition's, exactly."""
    rng = random.Random(seed)
    min_span = min(60.0, window)
    times: list[float] = []
    t = T0
    for _ in range(300):
        t = round(t + (rng.uniform(60, 720) if rng.random() < 0.03 else rng.uniform(5, 15)), 3)
        if not times or (t - t % 5) > (times[-1] - times[-1] % 5):
            times.append(t)
    values = {t: 20 + rng.gauss(0, 1) + (t - T0) / 600 for t in times}
    arrivals = sorted(times, key=lambda t: t + (rng.uniform(0, 60) if rng.random() < 0.1 else 0))
    r = RateOfRise(window=window, min_span=min_span, resolution=5)
    seen: list[tuple[float, float]] = []
    for t in arrivals:
        r.add(t, values[t])
        seen.append((t, values[t]))
        now = max(s[0] for s in seen) + rng.choice([0.0, 1.0, window / 2, window + 1])
        expected = _rise_brute(seen, now, window, min_span)
        got = r.rise_per_min(now)
        assert (got is None) == (expected is None)
        if got is not None:
            assert got == pytest.approx(expected, rel=1e-6, abs=1e-9)  # epoch floats: 2.4e-7 s ulp
        assert len(r) <= window / 5 + 2


@pytest.mark.parametrize("window", WINDOWS)
def test_rise_with_many_samples_per_bucket_is_close_to_the_definition(window: float) -> None:
    """A 1 Hz sensor, 3 °C/min with noise: bucket centroids stand for their samples; memory stays bounded."""
    rng = random.Random(3)
    min_span = min(60.0, window)
    r = RateOfRise(window=window, min_span=min_span, resolution=5)
    samples: list[tuple[float, float]] = []
    t = T0
    for i in range(1200):
        t = T0 + i + rng.uniform(-0.05, 0.05)
        v = 20 + 3.0 * i / 60 + rng.gauss(0, 0.05)
        r.add(t, v)
        samples.append((t, v))
        assert len(r) <= window / 5 + 2
    expected = _rise_brute(samples, t, window, min_span)
    got = r.rise_per_min(t)
    assert expected is not None and got is not None
    assert got == pytest.approx(expected, abs=0.2 * 60 / min_span)
    assert got == pytest.approx(3.0, abs=0.2 * 60 / min_span)  # 0.2 °C over min_span: 4σ of the noise


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


def test_rise_ignores_spans_shorter_than_min_span() -> None:
    r = RateOfRise(window=300, min_span=60, resolution=5)
    r.add(T0, 20.0)
    r.add(T0 + 10, 20.1)  # a quantisation step, 0.6 °C/min if read over 10 s
    assert r.rise_per_min(T0 + 10) is None
    r.add(T0 + 60, 20.1)
    assert r.rise_per_min(T0 + 60) == pytest.approx(0.1)


def test_rise_window_shorter_than_the_poll_reads_the_last_interval() -> None:
    r = RateOfRise(window=10, min_span=10, resolution=5)
    r.add(T0, 20.0)
    r.add(T0 + 30.04, 22.5)  # a 30 s poll: no reading 10 s before this one
    assert r.rise_per_min(T0 + 30.04) == pytest.approx(2.5 * 60 / 30.04)


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


def test_rise_round_trips_through_json() -> None:
    r = RateOfRise()
    for i in range(100):
        r.add(T0 + i * 3 + (i % 7) * 0.011, 20 + math.sin(i / 5))
    clone = RateOfRise.from_dict(json.loads(json.dumps(r.to_dict())))
    assert clone.rise_per_min(T0 + 300) == r.rise_per_min(T0 + 300)
    for i in range(100, 150):
        t, v = T0 + i * 3, 20 + math.sin(i / 5)
        assert r.add(t, v) == clone.add(t, v)
        assert clone.rise_per_min(t) == r.rise_per_min(t)
    assert RateOfRise.from_dict(RateOfRise().to_dict()).rise_per_min(T0) is None


def test_rise_state_of_version_1_is_converted() -> None:
    """Version 1 kept each bucket's lowest sample and its time: read as one sample per bucket."""
    old = {
        "v": 1,
        "window": 60.0,
        "min_span": 60.0,
        "resolution": 5.0,
        "latest": [T0 + 60.02, 25.0],
        "lows": [[T0 - 5, T0 - 0.03, 20.0], [T0 + 5, T0 + 9.98, 20.8], [T0 + 60, T0 + 60.02, 25.0]],
    }
    r = RateOfRise.from_dict(old)
    # The reference at T0 + 0.02 lies between the first two lows: 20 + 0.8 · 0.05 / 10.01.
    assert r.rise_per_min(T0 + 61) == pytest.approx(25.0 - (20.0 + 0.8 * 0.05 / 10.01))
    assert r.to_dict()["v"] == 2


# --- shared -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [
        lambda: RollingMinMax(window=0),
        lambda: RollingMean(resolution=-1),
        lambda: RateOfRise(window=60, min_span=120),
        lambda: RateOfRise(resolution=math.nan),
        lambda: RateOfRise(window=10, min_span=10, resolution=15),
        lambda: RateOfRise(max_gap=0),
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
        cls.from_dict({"v": 3})
