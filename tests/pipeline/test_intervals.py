"""95 % intervals: exact binomial ends against closed forms, the bootstrap against pipeline.metrics."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline import metrics as m
from pipeline.intervals import (
    Interval,
    binomial_interval,
    bootstrap_intervals,
    resampled_metrics,
    trials_to_show,
    unshown_upper,
)


@pytest.mark.parametrize(
    ("successes", "trials", "expected"),
    [
        (0, 10, (0.0, 1 - 0.025 ** (1 / 10))),  # 0.3085: no success, upper end in closed form
        (10, 10, (0.025 ** (1 / 10), 1.0)),
        (0, 60, (0.0, 0.059629)),  # 0 misses among 60 anomalies: up to 6 %, not 1 %
        (5, 10, (0.187086, 0.812914)),  # symmetric about one half
        (1, 4, (1 - 0.975 ** (1 / 4), 0.805880)),
        (7, 60, (0.048215, 0.225716)),
        (0, 1, (0.0, 0.975)),
    ],
)
def test_binomial_interval(successes: int, trials: int, expected: tuple[float, float]) -> None:
    got = binomial_interval(successes, trials)
    assert got is not None
    assert got == pytest.approx(expected, abs=1e-6)


def test_binomial_interval_mirrors_and_narrows() -> None:
    a, b = binomial_interval(3, 20), binomial_interval(17, 20)
    assert a is not None and b is not None
    assert a.low == pytest.approx(1 - b.high) and a.high == pytest.approx(1 - b.low)
    wide, narrow = binomial_interval(1, 10), binomial_interval(100, 1000)
    assert wide is not None and narrow is not None
    assert narrow.high - narrow.low < wide.high - wide.low
    assert binomial_interval(0, 0) is None


@pytest.mark.parametrize(
    ("args", "message"),
    [((5, 4), "successes <= trials"), ((-1, 4), "successes <= trials"), ((1, 4, 1.0), "confidence")],
)
def test_binomial_interval_rejects(args: tuple[float, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        binomial_interval(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize(("rate", "needed"), [(0.01, 368), (0.05, 72), (0.1, 36), (0.5, 6), (0.0, None)])
def test_trials_to_show(rate: float, needed: int | None) -> None:
    assert trials_to_show(rate) == needed
    if needed is not None:
        shown, short = binomial_interval(0, needed), binomial_interval(0, needed - 1)
        assert shown is not None and short is not None
        assert shown.high <= rate < short.high


def _rows(rng: np.random.Generator, n: int, ties: bool) -> np.ndarray:
    values = rng.integers(0, 6, size=(5, n)) / 5.0 if ties else rng.uniform(size=(5, n))
    return np.sort(values, axis=1)


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize(("n_good", "n_anomalous"), [(7, 5), (150, 120), (3, 200)])
def test_resampled_metrics_equal_the_metric_definitions(n_good: int, n_anomalous: int, ties: bool) -> None:
    rng = np.random.default_rng(n_good * 1000 + n_anomalous)
    good, anomalous = _rows(rng, n_good, ties), _rows(rng, n_anomalous, ties) + 0.1
    got = resampled_metrics(good, anomalous, fnr=0.01, fpr=0.05)
    for row in range(good.shape[0]):
        scores = np.r_[good[row], anomalous[row]]
        labels = np.r_[np.zeros(n_good, bool), np.ones(n_anomalous, bool)]
        assert got["image_auroc"][row] == pytest.approx(m.image_auroc(scores, labels).value)
        assert got["tnr_at_fnr"][row] == pytest.approx(m.tnr_at_fnr(scores, labels, 0.01).value)
        assert got["detection_rate_at_fpr"][row] == pytest.approx(
            m.detection_rate_at_fpr(scores, labels, 0.05).value
        )


def _scores(seed: int, n: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = np.r_[rng.normal(0.0, 1.0, n), rng.normal(shift, 1.0, n)]
    return scores, np.r_[np.zeros(n, bool), np.ones(n, bool)]


def test_bootstrap_intervals_hold_the_estimate_and_shrink_with_more_data() -> None:
    small = bootstrap_intervals(*_scores(1, 60, 2.0))
    large = bootstrap_intervals(*_scores(1, 2000, 2.0))
    assert small is not None and large is not None
    scores, labels = _scores(1, 60, 2.0)
    auroc = m.image_auroc(scores, labels).value
    assert auroc is not None and small["image_auroc"].low < auroc < small["image_auroc"].high
    for name in small:
        assert large[name].high - large[name].low < small[name].high - small[name].low, name
    # the AUROC of two unit normals 2 apart is Phi(2 / sqrt 2) = 0.921; the large set's interval holds it
    assert large["image_auroc"].low < 0.921 < large["image_auroc"].high


def test_bootstrap_intervals_are_seeded() -> None:
    scores, labels = _scores(2, 80, 1.5)
    first = bootstrap_intervals(scores, labels, seed=3)
    assert first == bootstrap_intervals(scores, labels, seed=3)
    assert first != bootstrap_intervals(scores, labels, seed=4)


def test_bootstrap_cannot_widen_past_a_perfect_ranking() -> None:
    scores, labels = _scores(3, 30, 20.0)
    got = bootstrap_intervals(scores, labels)
    assert got is not None
    assert got["image_auroc"] == Interval(1.0, 1.0)


@pytest.mark.parametrize(("n", "given"), [(99, False), (199, False), (200, True)])
def test_no_interval_for_a_cut_at_the_samples_extreme(n: int, given: bool) -> None:
    """Under 100 anomalous images the 1 % FNR cut is the lowest anomaly score (likewise the 1 % FPR
    cut and the highest clean one), where a percentile bootstrap covered the truth 2 times in 3; up
    to 199 it is the next one, covered 0.83-0.94 of the time."""
    scores, labels = _scores(5, n, 2.0)
    got = bootstrap_intervals(scores, labels, resamples=200)
    assert got is not None and "image_auroc" in got
    assert ("tnr_at_fnr" in got, "detection_rate_at_fpr" in got) == (given, given)


def test_bootstrap_intervals_need_both_classes_and_enough_resamples() -> None:
    assert bootstrap_intervals(np.array([0.1, 0.2]), np.array([0, 0])) is None
    with pytest.raises(ValueError, match="resamples must be at least 100"):
        bootstrap_intervals(*_scores(4, 10, 1.0), resamples=10)
    with pytest.raises(ValueError, match="same length"):
        bootstrap_intervals(np.array([0.1, 0.2]), np.array([0, 1, 1]))


@pytest.mark.parametrize(
    ("rate", "interval", "expected"),
    [
        (0.0, [0.0, 0.0596], 0.0596),  # none of 60 missed: consistent with 1 %, not shown
        (0.0, [0.0, 0.009], None),  # shown
        (0.05, [0.02, 0.12], None),  # over the target: nothing to show
        (None, None, None),
    ],
)
def test_unshown_upper(rate: float | None, interval: list[float] | None, expected: float | None) -> None:
    assert unshown_upper(rate, interval, 0.01) == expected
