"""How far to trust an evaluation's figures: 95 % confidence intervals.

A test set of 60 clean and 60 anomalous images gives an AUROC to three decimals, but not three decimals
of knowledge. Two kinds of interval are computed here:

* **Rates at a fixed threshold** (release rate, miss rate at the model's own threshold) are binomial
  proportions: :func:`binomial_interval` gives the exact Clopper-Pearson interval. It never claims more
  than the counts show: 0 misses out of 60 gives 0 % to 6.0 %, so a 1 % miss-rate target is not shown
  by 60 anomalous images, however well the model does on them.
* **Figures that rank or pick a cut on the test scores** (image AUROC, TNR at 1 % FNR, detection rate at
  1 % FPR) get a stratified percentile bootstrap, :func:`bootstrap_intervals`: clean and anomalous
  images are resampled separately (so each resample has the test set's class counts, and the
  metrics' allowed-miss counts stay the same), the metric is recomputed on each resample exactly as
  :mod:`pipeline.metrics` defines it, and the interval is the middle 95 % of those values. The
  bootstrap cannot see beyond the sample: a test set the model ranks perfectly gives [1, 1]. The
  binomial interval of the miss rate is the honest companion of such a figure. Nor can it follow an
  extreme: with fewer than 100 anomalous images the cut at 1 % FNR is the lowest anomaly score, and
  a bootstrap interval of TNR there covered the true value about two times in three (a simulation
  of 60 clean images and normal scores 2 sd apart); with 1 miss allowed (100-199 anomalous images)
  0.83-0.94, from 2 (200 and more) about 0.95. Intervals are given from 2 allowed errors (TNR from
  200 anomalous images, detection at 1 % FPR from 200 clean ones).

Both are seeded and deterministic, so ``metrics.json`` is reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from pipeline.metrics import allowed_errors

__all__ = [
    "CONFIDENCE",
    "MIN_ALLOWED_ERRORS",
    "RESAMPLES",
    "Interval",
    "binomial_interval",
    "bootstrap_intervals",
    "resampled_metrics",
    "trials_to_show",
    "unshown_upper",
]

CONFIDENCE = 0.95
"""Two-sided confidence level of every interval Clearsight reports."""

RESAMPLES = 2000
"""Bootstrap resamples per interval: enough for stable 2.5 % and 97.5 % percentiles."""

MIN_ALLOWED_ERRORS = 2
"""Errors the cut of TNR at FNR (detection at FPR) must allow before it gets an interval: at 1 %,
200 images of the class."""

# Resamples are drawn in blocks of at most this many scores, so a 10 000-image test set needs tens of
# megabytes, not gigabytes.
_BLOCK_VALUES = 2_000_000
_TARGET_SLACK = 1e-12  # a rate equal to its target meets it, whatever the float rounding
_BISECTION_STEPS = 60  # halves [0, 1] to below 1e-18: far under any rate that is printed


class Interval(NamedTuple):
    """A two-sided confidence interval, ``low <= high``, both in [0, 1] for the rates here."""

    low: float
    high: float


def _check_confidence(confidence: float) -> float:
    if not (isinstance(confidence, int | float) and 0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1); got {confidence!r}")
    return (1.0 - float(confidence)) / 2.0


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (exact to float precision)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    i = np.arange(1, k + 1, dtype=np.float64)
    log_comb = np.r_[0.0, np.cumsum(np.log(n - i + 1) - np.log(i))]  # log C(n, 0..k)
    j = np.arange(k + 1, dtype=np.float64)
    log_pmf = log_comb + j * math.log(p) + (n - j) * math.log1p(-p)
    return float(min(1.0, np.exp(log_pmf).sum()))


def _solve(f_decreasing: Callable[[float], float], target: float) -> float:
    """The p in [0, 1] where the decreasing function ``f(p)`` crosses ``target`` (bisection)."""
    lo, hi = 0.0, 1.0
    for _ in range(_BISECTION_STEPS):
        mid = (lo + hi) / 2.0
        if f_decreasing(mid) > target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def binomial_interval(successes: int, trials: int, confidence: float = CONFIDENCE) -> Interval | None:
    """Exact (Clopper-Pearson) interval for a proportion: ``successes`` of ``trials``.

    The lower end is the p at which P(X >= successes) = alpha / 2, the upper end the p at which
    P(X <= successes) = alpha / 2 (alpha = 1 - confidence); 0 and 1 at the extremes. ``None`` for 0
    trials. For 0 of n the upper end is ``1 - (alpha / 2) ** (1 / n)``.
    """
    tail = _check_confidence(confidence)
    if trials < 0 or not 0 <= successes <= max(trials, 0):
        raise ValueError(f"need 0 <= successes <= trials; got {successes} of {trials}")
    if trials == 0:
        return None
    # P(X >= k) = tail  <=>  P(X <= k - 1) = 1 - tail, and the binomial CDF falls as p rises.
    low = 0.0 if successes == 0 else _solve(lambda p: _binomial_cdf(successes - 1, trials, p), 1.0 - tail)
    high = 1.0 if successes == trials else _solve(lambda p: _binomial_cdf(successes, trials, p), tail)
    return Interval(low, high)


def trials_to_show(rate: float, confidence: float = CONFIDENCE) -> int | None:
    """Fewest trials with no success whose :func:`binomial_interval` reaches no higher than ``rate``.

    How many anomalous test images, none of them missed, it takes to show a miss rate of at most
    ``rate``: ``ceil(log(alpha / 2) / log(1 - rate))``, 368 for 1 %. ``None`` for a rate of 0.
    """
    tail = _check_confidence(confidence)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate must be in [0, 1); got {rate!r}")
    if rate == 0.0:
        return None
    n = max(1, math.ceil(math.log(tail) / math.log1p(-rate)))
    # guard the float rounding of the closed form against the exact bound
    while n > 1 and 1.0 - tail ** (1.0 / (n - 1)) <= rate:
        n -= 1
    while 1.0 - tail ** (1.0 / n) > rate:
        n += 1
    return n


def unshown_upper(rate: float | None, interval: Sequence[float] | None, target: float) -> float | None:
    """The upper end of ``rate``'s interval when ``rate`` meets ``target`` but the interval reaches
    past it (the test set is too small to show the target); ``None`` otherwise."""
    if rate is None or interval is None or rate > target + _TARGET_SLACK:
        return None
    high = float(interval[1])
    return high if high > target + _TARGET_SLACK else None


def resampled_metrics(
    good: np.ndarray, anomalous: np.ndarray, *, fnr: float, fpr: float
) -> dict[str, np.ndarray]:
    """Image AUROC, TNR at ``fnr`` and detection rate at ``fpr`` of each resample, row by row.

    Args:
        good: (B, G) clean-image scores of B resamples, each row sorted ascending.
        anomalous: (B, A) anomalous-image scores of the same resamples, each row sorted ascending.

    Returns:
        ``{"image_auroc", "tnr_at_fnr", "detection_rate_at_fpr"}``, each (B,) float64, equal to
        :func:`pipeline.metrics.image_auroc`, :func:`~pipeline.metrics.tnr_at_fnr` and
        :func:`~pipeline.metrics.detection_rate_at_fpr` on that row's scores (ties as they count them).
    """
    b, n_good = good.shape
    n_anom = anomalous.shape[1]
    auroc = np.empty(b, dtype=np.float64)
    for row in range(b):
        below = np.searchsorted(good[row], anomalous[row], side="left")
        not_above = np.searchsorted(good[row], anomalous[row], side="right")
        # Mann-Whitney: each (anomalous, clean) pair counts 1 when ordered right, 1/2 when tied.
        auroc[row] = (below.sum() + 0.5 * (not_above - below).sum()) / (n_anom * n_good)
    # TNR at FNR: k misses allowed, clean images strictly below the (k+1)-th lowest anomaly released.
    cut = anomalous[:, allowed_errors(fnr, n_anom)]
    tnr = np.count_nonzero(good < cut[:, None], axis=1) / n_good
    # Detection at FPR: m false alarms allowed, anomalies strictly above the (m+1)-th highest clean.
    bound = good[:, n_good - 1 - allowed_errors(fpr, n_good)]
    detection = np.count_nonzero(anomalous > bound[:, None], axis=1) / n_anom
    return {"image_auroc": auroc, "tnr_at_fnr": tnr, "detection_rate_at_fpr": detection}


def bootstrap_intervals(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    fnr: float = 0.01,
    fpr: float = 0.01,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = 0,
) -> dict[str, Interval] | None:
    """Stratified percentile-bootstrap intervals of the image-level ranking figures.

    Args:
        scores: (N,) final image scores. labels: (N,) bool or 0/1, 1 = anomalous.
        fnr, fpr: the operating points of TNR-at-FNR and detection-rate-at-FPR.
        resamples: bootstrap resamples (>= 100).
        seed: the resampling seed; the same inputs and seed give the same intervals.

    Returns:
        ``{"image_auroc", "tnr_at_fnr", "detection_rate_at_fpr"}`` -> :class:`Interval`, or ``None``
        when one class is absent (the metrics are undefined too). ``tnr_at_fnr`` is left out when
        ``fnr`` allows fewer than :data:`MIN_ALLOWED_ERRORS` misses among the anomalous images,
        ``detection_rate_at_fpr`` likewise for false alarms among the clean ones: the cut is then at
        or next to the sample's extreme, which a bootstrap does not bound (the module's docstring).
    """
    tail = _check_confidence(confidence)
    if resamples < 100:
        raise ValueError(f"resamples must be at least 100 for a 95 % interval; got {resamples}")
    s = np.asarray(scores, dtype=np.float64)
    lab = np.asarray(labels).astype(bool)
    if s.shape != lab.shape or s.ndim != 1:
        raise ValueError(f"scores and labels must be 1-D of the same length; got {s.shape} and {lab.shape}")
    good, anomalous = s[~lab], s[lab]
    if good.size == 0 or anomalous.size == 0:
        return None
    rng = np.random.default_rng(seed)
    block = max(1, _BLOCK_VALUES // s.size)
    values: dict[str, list[np.ndarray]] = {}
    for start in range(0, resamples, block):
        rows = min(block, resamples - start)
        g = np.sort(good[rng.integers(good.size, size=(rows, good.size))], axis=1)
        a = np.sort(anomalous[rng.integers(anomalous.size, size=(rows, anomalous.size))], axis=1)
        for name, vals in resampled_metrics(g, a, fnr=fnr, fpr=fpr).items():
            values.setdefault(name, []).append(vals)
    extreme = {
        "tnr_at_fnr": allowed_errors(fnr, anomalous.size) < MIN_ALLOWED_ERRORS,
        "detection_rate_at_fpr": allowed_errors(fpr, good.size) < MIN_ALLOWED_ERRORS,
    }
    out: dict[str, Interval] = {}
    for name, chunks in values.items():
        if extreme.get(name, False):
            continue
        low, high = np.quantile(np.concatenate(chunks), [tail, 1.0 - tail])
        out[name] = Interval(float(low), float(high))
    return out
