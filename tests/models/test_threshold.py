"""pick_thresholds: hand-computed cut points per case, invariants on random scores, degenerate inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.threshold import (
    METHOD_FALLBACK,
    METHOD_NORMAL_BOUND,
    METHOD_VALIDATION,
    allowed_misses,
    anomalies_for_bound,
    miss_rate_bound,
    pick_thresholds,
)

# Scores are multiples of 1/8 so that every midpoint below is exact in binary floating point.
CASES = [
    # id, normal, anomalous, target_miss_rate, hold_false_alarm_rate, release, hold, method
    # separated: a quarter up the gap from top normal 0.375 to anomaly 0.75 would be 0.46875, but two
    # anomalies cannot measure 1 %: capped at the normal cut q99.5 (0.37375) + 0.02; hold midway
    ("separated", [0.125, 0.25, 0.375], [0.75, 0.875], 0.01, 0.005, 0.39375, 0.5625, METHOD_NORMAL_BOUND),
    # overlap: lowest anomaly 0.375 sits below normals 0.5/0.625 -> cut a quarter up from normal 0.25;
    # hold: top normal 0.625, next score up is anomaly 0.75
    (
        "overlap",
        [0.125, 0.25, 0.5, 0.625],
        [0.375, 0.75, 0.875],
        0.01,
        0.005,
        0.28125,
        0.6875,
        METHOD_VALIDATION,
    ),
    # one of 4 anomalies may be missed at 40 % (promise 2 / 5): pivot a[1] = 0.5, highest score below
    # it is normal 0.375
    (
        "one_miss_allowed",
        [0.125, 0.375],
        [0.25, 0.5, 0.75, 1.0],
        0.4,
        0.005,
        0.40625,
        0.4375,
        METHOD_VALIDATION,
    ),
    # tie at the pivot: taking one 0.5 would take both, so no miss is used; cut a quarter up from 0.25
    ("tie_at_pivot", [0.25], [0.5, 0.5, 0.75, 1.0], 0.4, 0.005, 0.3125, 0.375, METHOD_VALIDATION),
    # the lowest anomaly is the lowest score of all: cut a quarter up from 0, nothing is released
    ("anomaly_lowest", [0.5, 0.625], [0.25, 0.75], 0.01, 0.005, 0.0625, 0.6875, METHOD_VALIDATION),
    # no normal may be held: hold midway between top normal 0.75 and anomaly 1.0, above release
    (
        "hold_above_release",
        [0.125, 0.25, 0.375, 0.75],
        [0.5, 1.0],
        0.01,
        0.0,
        0.40625,
        0.875,
        METHOD_VALIDATION,
    ),
    # one of four normals may be held: pivot is the second-highest normal 0.375 -> hold 0.4375
    (
        "hold_one_allowed",
        [0.125, 0.25, 0.375, 0.75],
        [0.5, 1.0],
        0.01,
        0.25,
        0.40625,
        0.4375,
        METHOD_VALIDATION,
    ),
    # top normal at 1.0: nothing above it, hold capped at the top of the scale
    ("hold_capped", [0.25, 1.0], [0.5], 0.01, 0.0, 0.3125, 1.0, METHOD_VALIDATION),
    # all normals equal is fine when anomalies separate from them; one anomaly cannot measure 1 %, so
    # the cut (a quarter up to 0.75 would be 0.375) is capped just above the normals: 0.25 + 0.02
    ("normals_equal", [0.25, 0.25], [0.75], 0.01, 0.005, 0.27, 0.5, METHOD_NORMAL_BOUND),
    # one normal image: capped the same way at 0.125 + 0.02, not a quarter up to 0.75 (0.28125);
    # hold midway between the normal and the lowest anomaly
    ("one_normal", [0.125], [0.75, 0.875, 0.9375, 1.0], 0.01, 0.005, 0.145, 0.4375, METHOD_NORMAL_BOUND),
    # one normal above the lowest anomaly: the cut from the anomalies is already lower than the cap
    ("one_normal_above_an_anomaly", [0.5], [0.25, 0.75], 0.01, 0.005, 0.0625, 0.625, METHOD_VALIDATION),
    # fallback: normals i/400 for i = 0..200; q99.5 (linear) = 199/400 = 0.4975, + 0.02 margin;
    # hold: floor(0.005 * 201) = 1 normal may be held -> midway 199/400..200/400 = 0.49875 < release
    ("fallback", [i / 400 for i in range(201)], None, 0.01, 0.005, 0.5175, 0.5175, METHOD_FALLBACK),
    # an empty anomalous array is the same as None
    ("fallback_empty", [i / 400 for i in range(201)], [], 0.01, 0.005, 0.5175, 0.5175, METHOD_FALLBACK),
    # fallback capped at 1: q99.5 of 0, .25, .5, .75, 1 = 0.995, + 0.02 > 1
    ("fallback_capped", [0.0, 0.25, 0.5, 0.75, 1.0], None, 0.01, 0.005, 1.0, 1.0, METHOD_FALLBACK),
]


@pytest.mark.parametrize(
    ("normal", "anomalous", "miss", "false_alarm", "release", "hold", "method"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_pick_thresholds_hand_computed(
    normal: list[float],
    anomalous: list[float] | None,
    miss: float,
    false_alarm: float,
    release: float,
    hold: float,
    method: str,
) -> None:
    got = pick_thresholds(
        np.array(normal),
        None if anomalous is None else np.array(anomalous),
        target_miss_rate=miss,
        hold_false_alarm_rate=false_alarm,
    )
    assert got.release == pytest.approx(release, abs=1e-12)
    assert got.hold == pytest.approx(hold, abs=1e-12)
    assert got.target_miss_rate == miss
    assert got.method == method


def test_thirty_anomalies_at_one_percent_cut_below_the_lowest() -> None:
    # 30 anomalies at 1 %: floor(0.3) = 0 misses allowed. A quarter up from the highest normal (0.5)
    # to min anomaly 0.6 would be 0.525; 30 < 100 anomalies cannot measure 1 %, so the cut is capped
    # at the normal cut q99.5 = 0.4975 + 0.02 = 0.5175, not on any data point
    normal = np.linspace(0.0, 0.5, 101)
    anomalous = np.linspace(0.6, 0.9, 30)
    got = pick_thresholds(normal, anomalous)
    assert got.release == pytest.approx(0.5175, abs=1e-12)
    assert got.method == METHOD_NORMAL_BOUND
    assert not np.any(np.concatenate([normal, anomalous]) == got.release)
    assert np.count_nonzero(anomalous < got.release) == 0


@pytest.mark.parametrize(
    ("n_anomalous", "method"),
    [(6, METHOD_NORMAL_BOUND), (99, METHOD_NORMAL_BOUND), (100, METHOD_VALIDATION), (300, METHOD_VALIDATION)],
)
def test_the_normal_bound_applies_only_below_one_over_the_target(n_anomalous: int, method: str) -> None:
    # normals in [0, 0.3], anomalies well above: the anomaly cut is high, the normal cut ~0.32
    normal = np.linspace(0.0, 0.3, 201)
    anomalous = np.linspace(0.8, 1.0, n_anomalous)
    got = pick_thresholds(normal, anomalous, target_miss_rate=0.01)
    assert got.method == method
    if method == METHOD_NORMAL_BOUND:
        assert got.release == pytest.approx(float(np.quantile(normal, 0.995)) + 0.02, abs=1e-12)
    else:
        # >= 100 anomalies: the cut is placed by them alone, releasing the misses allowed
        assert got.release > 0.3
        assert np.count_nonzero(anomalous < got.release) == allowed_misses(0.01, n_anomalous)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize(("miss", "false_alarm"), [(0.01, 0.005), (0.05, 0.02), (0.0, 0.0)])
def test_rates_are_met_on_validation(seed: int, miss: float, false_alarm: float) -> None:
    rng = np.random.default_rng(seed)
    normal = np.clip(rng.normal(0.3, 0.1, 500), 0, 1)
    anomalous = np.clip(rng.normal(0.6, 0.15, 300), 0, 1)
    got = pick_thresholds(normal, anomalous, target_miss_rate=miss, hold_false_alarm_rate=false_alarm)
    assert np.count_nonzero(anomalous < got.release) <= math.floor(miss * anomalous.size)
    assert np.count_nonzero(normal >= got.hold) <= math.floor(false_alarm * normal.size)
    assert 0.0 <= got.release <= got.hold <= 1.0
    # never on a data point, never at the minimum score
    assert got.release not in set(np.concatenate([normal, anomalous]).tolist())
    assert got.release > min(normal.min(), anomalous.min())


ERRORS = [
    # id, normal, anomalous, kwargs, message fragment
    ("no_normals", [], [0.5], {}, "normal_scores is empty"),
    ("nan_normal", [0.1, float("nan")], [0.5], {}, "normal_scores contain 1 NaN or infinite"),
    ("inf_anomalous", [0.1], [float("inf"), 0.5], {}, "anomalous_scores contain 1 NaN or infinite"),
    ("above_one", [0.1, 1.5], None, {}, "normal_scores must lie in [0, 1]; got values from 0.1 to 1.5"),
    ("below_zero", [0.1], [-0.25], {}, "anomalous_scores must lie in [0, 1]; got values from -0.25 to -0.25"),
    ("all_equal", [0.5, 0.5], [0.5], {}, "all 3 validation scores (normal and anomalous) equal 0.5"),
    ("fallback_all_equal", [0.2, 0.2, 0.2], None, {}, "all 3 normal validation scores equal 0.2"),
    # the anomaly that sets the cut scores 0: the only cut under it was 0, the minimum score
    ("anomaly_at_zero", [0.2, 0.4], [0.0, 0.9], {}, "anomalous validation score 1 of 2 (lowest first; 0"),
    (
        "anomaly_at_zero_below_normals",  # the reviewer's case: a normal at 0 as well, 150 anomalies
        [0.0, 1 / 3],
        [0.0] + [1 / 3] * 149,
        {},
        "score 1 of 150 (lowest first; 0 may be released at the target miss rate) is 0, the bottom",
    ),
    (
        "second_anomaly_at_zero",  # one miss allowed at 1 % of 199: the second lowest sets the cut
        [0.2, 0.4],
        [0.0, 0.0] + [0.9] * 197,
        {},
        "score 2 of 199 (lowest first; 1 may be released at the target miss rate) is 0",
    ),
    (
        "miss_rate_one",
        [0.1],
        [0.5],
        {"target_miss_rate": 1.0},
        "target_miss_rate must be a number in [0, 1); got 1.0",
    ),
    ("miss_rate_neg", [0.1], [0.5], {"target_miss_rate": -0.01}, "got -0.01"),
    ("hold_rate_nan", [0.1], [0.5], {"hold_false_alarm_rate": float("nan")}, "hold_false_alarm_rate must be"),
]


@pytest.mark.parametrize(
    ("normal", "anomalous", "kwargs", "fragment"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS]
)
def test_degenerate_inputs_raise(
    normal: list[float], anomalous: list[float] | None, kwargs: dict[str, float], fragment: str
) -> None:
    with pytest.raises(ValueError) as info:
        pick_thresholds(np.array(normal), None if anomalous is None else np.array(anomalous), **kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("n_anomalous", "target", "bound"),
    [
        (0, 0.01, None),  # no anomalous validation images: the cut promises nothing about misses
        (6, 0.01, 1 / 7),  # the benchmark's vacuum packs: 14 %, not 1 %
        (30, 0.01, 1 / 31),
        (99, 0.01, 1 / 100),  # the fewest that promise 1 %
        (100, 0.01, 1 / 101),  # floor(0.01 * 100) = 1 miss would promise 2 / 101 = 2 %
        (150, 0.01, 1 / 151),  # ... and 2 / 151 = 1.3 % here
        (199, 0.01, 2 / 200),  # one miss allowed from 199 on
        (300, 0.01, 3 / 301),  # two misses allowed: the cut sits at the third lowest
        (20, 0.05, 1 / 21),
        (6, 0.0, 1 / 7),
    ],
)
def test_miss_rate_bound(n_anomalous: int, target: float, bound: float | None) -> None:
    assert miss_rate_bound(n_anomalous, target) == pytest.approx(bound)


@pytest.mark.parametrize(("target", "needed"), [(0.01, 99), (0.05, 19), (0.03, 33), (0.2, 4), (0.0, None)])
def test_anomalies_for_bound(target: float, needed: int | None) -> None:
    assert anomalies_for_bound(target) == needed
    if needed is not None:
        at, short = miss_rate_bound(needed, target), miss_rate_bound(needed - 1, target)
        assert at is not None and at <= target + 1e-12
        assert short is None or short > target


@pytest.mark.parametrize("target", [0.01, 0.05, 0.03, 0.2, 0.001])
def test_the_promise_meets_the_target_from_the_fewest_on(target: float) -> None:
    needed = anomalies_for_bound(target)
    assert needed is not None
    for n in range(1, 1200):
        bound = miss_rate_bound(n, target)
        assert bound is not None
        assert (bound <= target + 1e-12) == (n >= needed), n
        # the cut allows as many misses as keep that promise, and the validation share within target
        k = allowed_misses(target, n)
        assert k <= math.floor(target * n + 1e-9)
        assert (k + 2) / (n + 1) > target or k == 0 and n + 1 < 1 / target - 1e-9


@pytest.mark.parametrize(("n", "misses"), [(99, 0), (150, 0), (198, 0), (199, 1), (299, 2), (1000, 9)])
def test_the_cut_releases_the_misses_allowed(n: int, misses: int) -> None:
    normal = np.linspace(0.0, 0.1, 400)
    anomalous = np.linspace(0.2, 1.0, n)
    got = pick_thresholds(normal, anomalous, target_miss_rate=0.01)
    assert allowed_misses(0.01, n) == misses
    assert np.count_nonzero(anomalous < got.release) == misses


def test_miss_rate_bound_of_a_cut_under_another_rule() -> None:
    # a card written by an earlier version allowed floor(0.01 * 150) = 1 miss
    assert miss_rate_bound(150, 0.01, misses_allowed=1) == pytest.approx(2 / 151)
    with pytest.raises(ValueError, match="misses_allowed"):
        miss_rate_bound(150, 0.01, misses_allowed=150)


def test_miss_rate_bound_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="n_anomalous"):
        miss_rate_bound(-1, 0.01)
    with pytest.raises(ValueError, match="target_miss_rate"):
        miss_rate_bound(6, 1.0)


@pytest.mark.parametrize(
    ("n_anomalous", "target", "at_least"),
    [
        (6, 0.01, 0.0),  # the cut is also capped above the clean scores: it can only miss fewer
        (40, 0.05, 1 / 41),  # one miss allowed: the cut lies between the 1st and 2nd lowest anomaly
        (10, 0.2, 1 / 11),
    ],
)
def test_the_bound_holds_for_new_anomalies(n_anomalous: int, target: float, at_least: float) -> None:
    # Many validation draws; each cut is judged on new anomalies from the same distribution.
    rng = np.random.default_rng(7)
    misses = []
    for _ in range(3000):
        normal = rng.uniform(0.0, 0.2, 60)
        anomalous = rng.beta(2.0, 2.0, n_anomalous) * 0.8 + 0.15
        release = pick_thresholds(normal, anomalous, target_miss_rate=target).release
        new = rng.beta(2.0, 2.0, 50) * 0.8 + 0.15
        misses.append(float(np.mean(new < release)))
    bound = miss_rate_bound(n_anomalous, target)
    assert bound is not None
    # the mean over 150 000 new anomalies: its standard error is well under 0.003
    assert at_least - 0.005 < float(np.mean(misses)) <= bound + 0.005


def test_a_fallback_cut_promises_nothing() -> None:
    assert miss_rate_bound(6, 0.01, method=METHOD_FALLBACK) is None
    assert miss_rate_bound(6, 0.01, method=METHOD_NORMAL_BOUND) == pytest.approx(1 / 7)
