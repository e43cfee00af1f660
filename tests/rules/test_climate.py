"""Derived climate checked against the published values in docs/protections.md."""

from __future__ import annotations

import json
import math

import pytest

from rules.climate import (
    DAY,
    HOUR,
    MoldRiskAccumulator,
    TwpiAccumulator,
    dew_point,
    emc,
    emc_mechanical_rating,
    emc_metal_rating,
    lim0_rh_crit,
    pi_rating,
    preservation_index,
)

T0 = 1_767_225_600.0  # 2026-01-01T00:00Z, ManualClock's default start


# --- published checks (environment.md) -------------------------------------------------------------


@pytest.mark.parametrize(
    ("t_c", "rh", "published"),
    [
        (20.0, 50.0, 9.26),  # environment.md "Dew point" check
        (24.0, 60.0, 15.76),
    ],
)
def test_dew_point_matches_published(t_c: float, rh: float, published: float) -> None:
    assert round(dew_point(t_c, rh), 2) == published


@pytest.mark.parametrize(
    ("t_c", "rh", "published"),
    [
        (20.0, 50.0, 44),  # IPI newsletter values quoted in environment.md
        (20.0, 45.0, 50),
        (21.0, 50.0, 39),
    ],
)
def test_preservation_index_within_the_fits_promise(t_c: float, rh: float, published: int) -> None:
    pi = preservation_index(t_c, rh)
    # The fit promises ±5.5 % of IPI's values; IPI publishes whole years, so allow their rounding too.
    assert abs(pi - published) <= 0.055 * published + 0.5
    # Rounded as IPI prints it, it lands on the published year or one off (20/45 gives 50.8 → 51).
    assert abs(round(pi) - published) <= 1


@pytest.mark.parametrize(
    ("t_c", "rh", "published"),
    [(20.0, 50.0, 9.27)],  # environment.md "%EMC" check (IPI's values match FPL to 0.1)
)
def test_emc_matches_published(t_c: float, rh: float, published: float) -> None:
    assert round(emc(t_c, rh), 2) == published


@pytest.mark.parametrize(("t_c", "published"), [(20.0, 75.6)])  # environment.md "Mold" check
def test_lim0_matches_published(t_c: float, published: float) -> None:
    assert round(lim0_rh_crit(t_c), 1) == published


def test_twpi_half_44_half_10_is_16_3() -> None:
    """environment.md: half the time PI 44, half PI 10 → 16.3 (a harmonic, not arithmetic, mean)."""
    acc = TwpiAccumulator(max_gap=30 * DAY)
    acc.add(T0, 44.0)
    acc.add(T0 + 15 * DAY, 10.0)
    value = acc.value(T0 + 30 * DAY)
    assert value is not None
    assert round(value, 1) == 16.3


def test_twpi_half_44_half_10_with_hourly_samples() -> None:
    acc = TwpiAccumulator()
    for h in range(30 * 24):
        acc.add(T0 + h * HOUR, 44.0 if h < 15 * 24 else 10.0)
    value = acc.value(T0 + 30 * 24 * HOUR)
    assert value is not None
    assert math.isclose(value, 2 / (1 / 44 + 1 / 10), rel_tol=1e-9)


# --- shape and ratings ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("t_c", "rh"),
    [(-10.0, 80.0), (0.0, 100.0), (14.0, 45.0), (24.0, 60.0), (35.0, 90.0)],
)
def test_dew_point_properties(t_c: float, rh: float) -> None:
    td = dew_point(t_c, rh)
    assert td <= t_c + 1e-9  # saturated air: Td = T; otherwise below
    if rh == 100.0:
        assert math.isclose(td, t_c, abs_tol=1e-9)


def test_dew_point_rejects_dry_air_and_nonsense() -> None:
    for rh in (0.0, -1.0, 100.1, math.nan):
        with pytest.raises(ValueError, match=r"humidity|rh"):
            dew_point(20.0, rh)
    with pytest.raises(ValueError, match="t_c"):
        dew_point(math.inf, 50.0)


def test_preservation_index_warmer_or_damper_is_worse() -> None:
    assert preservation_index(18.0, 50.0) > preservation_index(20.0, 50.0) > preservation_index(22.0, 50.0)
    assert preservation_index(20.0, 40.0) > preservation_index(20.0, 50.0) > preservation_index(20.0, 60.0)


@pytest.mark.parametrize(
    ("pi", "rating"),
    [(200.0, "good"), (75.0, "good"), (74.99, "ok"), (45.0, "ok"), (44.99, "risk"), (1.0, "risk")],
)
def test_pi_rating(pi: float, rating: str) -> None:
    assert pi_rating(pi) == rating


@pytest.mark.parametrize(
    ("t_c", "rh", "rating"),
    [
        (14.0, 45.0, "good"),  # the cool, dry corner of the JGJ paper-room band
        (19.0, 52.5, "ok"),  # its centre, only just
        (24.0, 45.0, "risk"),
        (24.0, 60.0, "risk"),  # the warm, damp corner: environment.md notes much of the band is "risk"
    ],
)
def test_pi_rating_across_the_jgj_paper_band(t_c: float, rh: float, rating: str) -> None:
    assert pi_rating(preservation_index(t_c, rh)) == rating


@pytest.mark.parametrize(
    ("value", "mechanical", "metal"),
    [
        (4.99, "risk", "good"),
        (5.0, "ok", "good"),
        (6.99, "ok", "good"),
        (7.0, "ok", "ok"),
        (10.49, "ok", "ok"),
        (10.5, "ok", "risk"),
        (12.5, "ok", "risk"),
        (12.51, "risk", "risk"),
    ],
)
def test_emc_ratings(value: float, mechanical: str, metal: str) -> None:
    assert emc_mechanical_rating(value) == mechanical
    assert emc_metal_rating(value) == metal


def test_emc_rises_with_humidity() -> None:
    values = [emc(20.0, rh) for rh in (0.0, 20.0, 40.0, 60.0, 80.0, 95.0)]
    assert values[0] == 0.0
    assert values == sorted(values)


def test_lim0_minimum_is_at_30_c() -> None:
    assert math.isclose(lim0_rh_crit(30.0), 100 * (0.02633 + 0.7153))
    assert lim0_rh_crit(20.0) > lim0_rh_crit(25.0) > lim0_rh_crit(30.0) < lim0_rh_crit(35.0)


# --- TWPI accumulator -------------------------------------------------------------------------------


def test_twpi_empty_and_single_sample() -> None:
    acc = TwpiAccumulator()
    assert acc.value(T0) is None
    acc.add(T0, 40.0)
    assert acc.value(T0) is None  # no time covered yet
    assert acc.value(T0 + 60) == pytest.approx(40.0)


def test_twpi_forgets_what_left_the_window() -> None:
    acc = TwpiAccumulator(window=10 * DAY)
    for h in range(20 * 24):  # 10 days at PI 10, then 10 days at PI 50
        acc.add(T0 + h * HOUR, 10.0 if h < 10 * 24 else 50.0)
    now = T0 + 20 * DAY
    value = acc.value(now)
    assert value is not None
    # The edge moves in whole hourly buckets; here it falls on one, so no PI-10 time is left.
    assert value == pytest.approx(50.0)
    assert len(acc.to_dict()["buckets"]) <= 10 * 24 + 1


def test_twpi_gap_counts_for_nothing() -> None:
    acc = TwpiAccumulator(max_gap=2 * HOUR)
    acc.add(T0, 10.0)
    acc.add(T0 + 2 * HOUR, 100.0)
    # A 3-day silence: the 100 holds for max_gap only, then the gap weighs nothing either way.
    acc.add(T0 + 3 * DAY, 100.0)
    value = acc.value(T0 + 3 * DAY)
    assert value == pytest.approx(4 * HOUR / (2 * HOUR / 10 + 2 * HOUR / 100))


def test_twpi_ignores_late_samples_and_rejects_bad_pi() -> None:
    acc = TwpiAccumulator()
    assert acc.add(T0 + 60, 40.0)
    assert not acc.add(T0, 5.0)
    assert acc.value(T0 + 120) == pytest.approx(40.0)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match=r"^pi "):
            acc.add(T0 + 180, bad)


def test_twpi_splits_intervals_across_buckets() -> None:
    acc = TwpiAccumulator(max_gap=3 * HOUR)
    acc.add(T0 + 30 * 60, 20.0)  # 00:30
    acc.add(T0 + 150 * 60, 20.0)  # 02:30: 2 h over three hourly buckets
    buckets = acc.to_dict()["buckets"]
    assert [b[1] for b in buckets] == [1800.0, 3600.0, 1800.0]


def test_twpi_state_round_trips_through_json() -> None:
    acc = TwpiAccumulator()
    for i in range(500):
        acc.add(T0 + i * 600, 30.0 + (i % 7))
    clone = TwpiAccumulator.from_dict(json.loads(json.dumps(acc.to_dict())))
    later = T0 + 500 * 600
    assert clone.value(later) == pytest.approx(acc.value(later), rel=1e-12)
    clone.add(later, 12.0)
    acc.add(later, 12.0)
    assert clone.value(later + HOUR) == pytest.approx(acc.value(later + HOUR), rel=1e-12)
    with pytest.raises(ValueError, match="version"):
        TwpiAccumulator.from_dict({"v": 99})


# --- mold risk --------------------------------------------------------------------------------------


def _feed(acc: MoldRiskAccumulator, start: float, hours: float, t_c: float, rh: float) -> float:
    """Samples every 10 minutes for ``hours``; returns the time after the last interval."""
    steps = int(hours * 6)
    for i in range(steps):
        acc.add(start + i * 600, t_c, rh)
    return start + steps * 600


@pytest.mark.parametrize(
    ("t_c", "rh", "above"),
    [
        (20.0, 75.0, False),  # LIM0(20 °C) = 75.6 %
        (20.0, 76.0, True),
        (30.0, 74.0, False),  # LIM0(30 °C) = 74.16 %
        (30.0, 74.5, True),
        (24.0, 60.0, False),  # a JGJ-compliant paper room
    ],
)
def test_mold_above_isopleth(t_c: float, rh: float, above: bool) -> None:
    acc = MoldRiskAccumulator()
    assert acc.above is None
    acc.add(T0, t_c, rh)
    assert acc.above is above


def test_mold_accumulates_above_and_decays_slowly_below() -> None:
    acc = MoldRiskAccumulator(days_to_germination=7.0, decay=0.25)
    t = _feed(acc, T0, 24, 22.0, 85.0)  # one damp day
    acc.add(t, 22.0, 50.0)
    assert acc.risk_hours(t) == pytest.approx(24.0)
    assert acc.risk_factor(t) == pytest.approx(24.0 / (7 * 24))
    t2 = _feed(acc, t, 24, 22.0, 50.0)  # one dry day undoes a quarter of it
    assert acc.risk_hours(t2) == pytest.approx(18.0)
    # Silence: the last dry sample (t2 - 10 min) holds for max_gap (2 h) only, then nothing counts.
    assert acc.risk_hours(t2 + 10 * DAY) == pytest.approx(18.0 + 0.25 * (600 - 2 * HOUR) / HOUR)
    t3 = _feed(acc, t2, 24 * 4, 22.0, 50.0)  # four more dry days: back to zero, never below
    assert acc.risk_hours(t3) == 0.0


def test_mold_factor_reaches_one_after_days_to_germination() -> None:
    acc = MoldRiskAccumulator(days_to_germination=2.0)
    t = _feed(acc, T0, 47, 25.0, 90.0)
    assert acc.risk_factor(t) < 1.0
    t = _feed(acc, t, 1, 25.0, 90.0)
    assert acc.risk_factor(t) == pytest.approx(1.0)
    assert acc.risk_factor(t + 3600) > 1.0  # 1+: keeps counting


def test_mold_daily_damp_afternoons_still_accumulate() -> None:
    """A room damp 8 h a day is never reset by its 16 dry hours (decay 0.25 → 4 h forgiven)."""
    acc = MoldRiskAccumulator()
    t = T0
    for _ in range(7):
        t = _feed(acc, t, 8, 22.0, 85.0)
        t = _feed(acc, t, 16, 22.0, 55.0)
    assert acc.risk_hours(t) == pytest.approx(7 * (8 - 16 * 0.25))


def test_mold_state_round_trips_and_ignores_late_samples() -> None:
    acc = MoldRiskAccumulator(days_to_germination=5.0, decay=0.1)
    t = _feed(acc, T0, 30, 26.0, 88.0)
    assert not acc.add(T0, 26.0, 10.0)
    clone = MoldRiskAccumulator.from_dict(json.loads(json.dumps(acc.to_dict())))
    assert clone.risk_factor(t + 600) == acc.risk_factor(t + 600)
    assert clone.above is True
    with pytest.raises(ValueError, match="version"):
        MoldRiskAccumulator.from_dict({"v": 0})


@pytest.mark.parametrize(
    "kwargs",
    [{"days_to_germination": 0.0}, {"decay": -0.1}, {"max_gap": math.nan}],
)
def test_mold_rejects_bad_parameters(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        MoldRiskAccumulator(**kwargs)
