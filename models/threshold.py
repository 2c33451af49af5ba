"""Operating-point thresholds: where to cut the final anomaly score.

Clearsight is judged at an operating point, not by AUROC: the share of clean cargo released while at
most ``target_miss_rate`` (1 %) of anomalous cargo is released. :func:`pick_thresholds` turns the
validation scores of a trained model into the two cut points of :class:`~models.inference.Thresholds`:

* ``release`` — an image is released when ``score < release``. With anomalous validation scores it is
  the highest cut that releases at most :func:`allowed_misses` of them, so few that the cut promises
  new anomalies a miss rate of at most ``target_miss_rate`` wherever the validation set is large
  enough to promise it (method ``"miss_rate_on_validation"``; see "What the release cut promises").
  Without them it falls back to a high quantile of the normal scores plus a margin (method
  ``"normal_quantile_fallback"``); the caller should say so to the user, because that threshold
  promises nothing about misses.
* ``hold`` — an image is held physically when ``score >= hold``. It is the lowest cut at which at
  most ``hold_false_alarm_rate`` of normal validation images would be held (a physical hold of clean
  cargo is expensive), and never below ``release``. Between the two an officer reviews remotely.

Cut points are never placed *on* a validation score: a threshold equal to a score makes the outcome
for that image depend on ``<`` versus ``<=`` and on float rounding. Each cut is put inside the gap
between the two neighbouring distinct scores that bound the admissible range: ``hold`` in its middle,
``release`` a quarter of the way up from the lower score (:data:`RELEASE_GAP_POSITION`). Every cut in
the gap gives the same validation figures, but new anomalies score lower than validation ones far
more often than they score higher (the validation set has seen only a few of them), and releasing one
costs far more than holding a clean container, so the release cut leans toward the lower score.

Small-sample rule: with ``n`` anomalous validation images the miss rate can only be measured in
steps of ``1/n``. When ``n < 1 / target_miss_rate`` (no miss at all may be allowed), ``release`` is
also capped at the normal-quantile cut of the fallback (method ``"normal_bound_few_anomalies"`` when
the cap binds): the cut then sits just above the validation normals instead of somewhere below the
few anomalies, whose lowest score says little about the next anomaly's. One normal image, or normals
that all score alike, cap it at their score plus the margin (the fallback alone refuses them).
Even so the true miss rate on new cargo is only bounded loosely (with 30 anomalies and none missed,
the 95 % upper confidence bound on the miss rate is about 10 %, the "rule of three"). Collect more
anomalous validation images before trusting the 1 % figure.

What the release cut promises (:func:`miss_rate_bound`): it lies at or below the ``(k+1)``-th lowest of
the ``n`` anomalous validation scores, so a new anomaly that is exchangeable with them (the same
kinds, drawn the same way) scores below it with probability at most ``(k + 1) / (n + 1)``, whatever
the score distribution (the split-conformal argument: among the ``n + 1`` scores, the new one is as
likely to hold any rank). ``k`` is :func:`allowed_misses`: the most for which ``(k + 1) / (n + 1)``
stays within the target, ``floor(target * (n + 1)) - 1``, and 0 below that. Allowing
``floor(target * n)`` misses instead (the validation miss rate alone within the target) promised
more than the target for most ``n``: 2 / 151 = 1.3 % at 150 anomalies, where 99 promise 1 %. With 6
anomalies the promise is 1 / 7 = 14 %, not 1 %; :func:`anomalies_for_bound` gives the ``n`` from which
on the promise meets the target (99 for 1 %).
The bound is on the expected miss rate over validation draws, for anomalies like the validation ones:
an anomaly of a kind validation never saw is covered by nothing but the test set. It also assumes
that the score was fixed before the validation images were seen; training fits the calibration and
the fusion gates on them too, which makes them look slightly easier than new anomalies, so read it
as an optimistic estimate of the expected miss rate, not a guarantee (four fine-tuned vacuum models
of the benchmark missed 12.8 % of new anomalies of the validated kinds; 14.3 % was promised for 6).

The bug this module exists to avoid is a threshold that collapses to the minimum score when no
anomalous validation images exist (anomalib issue #2433), which silently flags everything. Degenerate
inputs — no normal scores, NaN or infinite scores, scores outside [0, 1], all scores equal, an
anomalous score of 0 that the release cut would have to stay under — raise ``ValueError`` naming the
problem instead of returning such a threshold.
"""

from __future__ import annotations

import math

import numpy as np

from models.inference import Thresholds

__all__ = [
    "FALLBACK_MARGIN",
    "FALLBACK_QUANTILE",
    "METHOD_FALLBACK",
    "METHOD_NORMAL_BOUND",
    "METHOD_VALIDATION",
    "RELEASE_GAP_POSITION",
    "allowed_errors",
    "allowed_misses",
    "anomalies_for_bound",
    "miss_rate_bound",
    "pick_thresholds",
]

METHOD_VALIDATION = "miss_rate_on_validation"
METHOD_NORMAL_BOUND = "normal_bound_few_anomalies"
METHOD_FALLBACK = "normal_quantile_fallback"

RELEASE_GAP_POSITION = 0.25
"""Where in its admissible gap the release cut sits: 0 = at the lower score, 1 = at the pivot anomaly."""

FALLBACK_QUANTILE = 0.995
"""Quantile of the normal validation scores used for ``release`` when there are no anomalous ones."""

FALLBACK_MARGIN = 0.02
"""Added to the fallback quantile (on the [0, 1] score scale) so that release is above it, not on it."""

# A rate times a count such as 0.07 * 100 comes out as 7.000000000000001; without this slack the
# allowed number of misses would be off by one for such products.
_COUNT_EPS = 1e-9


def _as_scores(values: np.ndarray, name: str) -> np.ndarray:
    """Validate scores and return them as a sorted float64 vector (N,)."""
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size and not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ValueError(f"{name} contain {bad} NaN or infinite value(s); scores must be finite, in [0, 1]")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(f"{name} must lie in [0, 1]; got values from {arr.min():.6g} to {arr.max():.6g}")
    return np.sort(arr)


def _check_rate(value: float, name: str) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and 0.0 <= value < 1.0):
        raise ValueError(f"{name} must be a number in [0, 1); got {value!r}")


def allowed_errors(rate: float, n: int) -> int:
    """How many of ``n`` images may be on the wrong side of a cut at ``rate``: floor(rate * n).

    The one count behind the thresholds here and the operating-point metrics (``pipeline.metrics``).
    """
    if not (math.isfinite(rate) and 0.0 <= rate < 1.0):
        raise ValueError(f"rate must be in [0, 1); got {rate!r}")
    return int(math.floor(rate * n + _COUNT_EPS))


def allowed_misses(target_miss_rate: float, n: int) -> int:
    """How many of ``n`` anomalous validation scores the release cut may release: the most ``k`` for
    which it promises new anomalies a miss rate ``(k + 1) / (n + 1)`` within the target, i.e.
    ``floor(target * (n + 1)) - 1``; 0 when even none missed cannot promise it (``n + 1 < 1 / target``).

    Never more than ``floor(target * n)``, so the validation miss rate is within the target too.
    """
    _check_rate(target_miss_rate, "target_miss_rate")
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    return max(0, int(math.floor(target_miss_rate * (n + 1) + _COUNT_EPS)) - 1)


def _release_from_anomalies(normal: np.ndarray, anomalous: np.ndarray, target_miss_rate: float) -> float:
    """Highest release cut releasing at most :func:`allowed_misses` of the anomalous scores.

    Sorted anomalous scores ``a`` (ascending) and ``k`` allowed misses: any cut at or below ``a[k]``
    releases at most ``k`` of them (fewer on ties), any cut above releases more. The cut goes a
    quarter of the way up from the highest score (normal or anomalous) strictly below ``a[k]`` to
    ``a[k]``, or from 0 when nothing scores lower.

    Raises:
        ValueError: ``a[k]`` is 0: no cut lies under it but 0 itself, the minimum score, which
            releases nothing and sits on the scores of 0.
    """
    k = allowed_misses(target_miss_rate, anomalous.size)
    pivot = float(anomalous[k])
    if pivot == 0.0:
        raise ValueError(
            f"anomalous validation score {k + 1} of {anomalous.size} (lowest first; {k} may be released "
            "at the target miss rate) is 0, the bottom of the score scale: a release cut under it would be "
            "0 itself, which releases nothing; the model scores that anomaly as the cleanest image can be"
        )
    both = np.concatenate([normal, anomalous])
    below = both[both < pivot]
    lower = float(below.max()) if below.size else 0.0
    return lower + RELEASE_GAP_POSITION * (pivot - lower)


def _normal_cut(normal: np.ndarray) -> float:
    """The 99.5th percentile of normal scores (linear interpolation) + margin, at most 1.

    One normal score, or several equal ones, give that score + margin: still just above the normals.
    """
    quantile = float(np.quantile(normal, FALLBACK_QUANTILE))
    return min(1.0, quantile + FALLBACK_MARGIN)


def _release_from_normals(normal: np.ndarray) -> float:
    """Fallback release cut (no anomalous scores): :func:`_normal_cut`, refused on equal normals."""
    if normal[0] == normal[-1]:
        raise ValueError(
            f"all {normal.size} normal validation scores equal {normal[0]:.6g} and there are no anomalous "
            "ones: the model does not separate anything, so no release threshold can be placed"
        )
    return _normal_cut(normal)


def _hold_from_normals(normal: np.ndarray, anomalous: np.ndarray, hold_false_alarm_rate: float) -> float:
    """Lowest hold cut at which at most ``hold_false_alarm_rate`` of normal scores are ``>=`` it.

    Sorted normal scores descending ``d`` and ``m = floor(rate * n)`` allowed holds: the cut must be
    above ``d[m]``. It goes midway between ``d[m]`` and the lowest score (normal or anomalous)
    strictly above it, or midway to 1 when nothing scores higher (capped at 1, the top of the scale).
    """
    pivot = float(normal[::-1][allowed_errors(hold_false_alarm_rate, normal.size)])
    both = np.concatenate([normal, anomalous])
    above = both[both > pivot]
    upper = float(above.min()) if above.size else 1.0
    return (pivot + upper) / 2.0


def miss_rate_bound(
    n_anomalous: int,
    target_miss_rate: float,
    *,
    method: str = METHOD_VALIDATION,
    misses_allowed: int | None = None,
) -> float | None:
    """What a release cut picked from ``n_anomalous`` anomalous validation scores promises.

    Returns ``(k + 1) / (n + 1)`` with ``k`` the misses the cut allowed (``misses_allowed``; by default
    :func:`allowed_misses`, the rule of :func:`pick_thresholds`): an upper bound on the probability
    that a new anomaly exchangeable with the validation ones is released, for a cut at or below the
    ``(k+1)``-th lowest anomalous score (methods ``miss_rate_on_validation`` and
    ``normal_bound_few_anomalies``). ``None`` when there are no anomalous validation scores or the
    cut's ``method`` is the fallback: a cut from clean images only promises nothing about misses.
    """
    _check_rate(target_miss_rate, "target_miss_rate")
    if n_anomalous < 0:
        raise ValueError(f"n_anomalous must be >= 0; got {n_anomalous}")
    if n_anomalous == 0 or method == METHOD_FALLBACK:
        return None
    k = allowed_misses(target_miss_rate, n_anomalous) if misses_allowed is None else misses_allowed
    if not 0 <= k < n_anomalous:
        raise ValueError(f"misses_allowed must be in [0, {n_anomalous}); got {k}")
    return (k + 1) / (n_anomalous + 1)


def anomalies_for_bound(target_miss_rate: float) -> int | None:
    """Fewest anomalous validation images for which :func:`miss_rate_bound` is at most the target; it
    stays within the target for every larger number too.

    99 for the default 1 %; ``None`` for a target of 0, which no finite validation set promises.
    """
    _check_rate(target_miss_rate, "target_miss_rate")
    if target_miss_rate == 0.0:
        return None
    # Below 1 / rate - 1 images no miss is allowed and the bound is 1 / (n + 1) > rate; the answer is
    # about ceil(1 / rate) - 1. Start one short of it and step, so float rounding of 1 / rate cannot
    # skip the first n that qualifies.
    n = max(1, math.ceil(1.0 / target_miss_rate) - 2)
    while (miss_rate_bound(n, target_miss_rate) or 1.0) > target_miss_rate + _COUNT_EPS:
        n += 1
    return n


def pick_thresholds(
    normal_scores: np.ndarray,
    anomalous_scores: np.ndarray | None,
    *,
    target_miss_rate: float = 0.01,
    hold_false_alarm_rate: float = 0.005,
) -> Thresholds:
    """Choose the release and hold thresholds from validation scores.

    Args:
        normal_scores: (N,) final scores in [0, 1] of normal (good) validation images; N >= 1.
            Any shape is accepted and flattened.
        anomalous_scores: (M,) final scores in [0, 1] of anomalous validation images, or ``None`` (or
            empty) when there are none; then ``release`` falls back to the normal-score quantile.
        target_miss_rate: largest share of new anomalies that may score below ``release`` (be
            released), in [0, 1): the cut releases at most :func:`allowed_misses` of the anomalous
            validation images.
        hold_false_alarm_rate: largest share of normal validation images that may score at or above
            ``hold`` (be held physically), in [0, 1).

    Returns:
        ``Thresholds(release, hold, target_miss_rate, method)`` with ``0 <= release <= hold <= 1``.

    Raises:
        ValueError: no normal scores; NaN, infinite or out-of-range scores; all scores equal; the
            anomalous score the release cut must stay under is 0; a rate outside [0, 1).
    """
    _check_rate(target_miss_rate, "target_miss_rate")
    _check_rate(hold_false_alarm_rate, "hold_false_alarm_rate")
    normal = _as_scores(normal_scores, "normal_scores")
    anomalous = _as_scores(np.empty(0) if anomalous_scores is None else anomalous_scores, "anomalous_scores")
    if normal.size == 0:
        raise ValueError("normal_scores is empty: at least one normal validation score is needed")

    if anomalous.size:
        both = np.concatenate([normal, anomalous])
        if both.min() == both.max():
            raise ValueError(
                f"all {both.size} validation scores (normal and anomalous) equal {both[0]:.6g}: "
                "the model does not separate anything, so no threshold can be placed"
            )
        release = _release_from_anomalies(normal, anomalous, target_miss_rate)
        method = METHOD_VALIDATION
        if allowed_errors(target_miss_rate, anomalous.size) == 0:
            # Too few anomalies to measure the target rate (fewer than 1 / rate): the cut under the
            # lowest one says little about new anomalies (seen: 33 % of test anomalies released by a
            # cut placed from 6 validation ones). Never cut higher than just above the normals, also
            # when they are one image or all score alike: their quantile is then that one score.
            bound = _normal_cut(normal)
            if bound < release:
                release, method = bound, METHOD_NORMAL_BOUND
    else:
        release = _release_from_normals(normal)
        method = METHOD_FALLBACK

    hold = max(release, _hold_from_normals(normal, anomalous, hold_false_alarm_rate))
    return Thresholds(
        release=float(release), hold=float(hold), target_miss_rate=float(target_miss_rate), method=method
    )
