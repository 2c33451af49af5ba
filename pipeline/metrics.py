"""Evaluation metrics for anomaly detection, in plain numpy.

Conventions, shared by every function here:

* ``scores``: (N,) final image scores, higher = more anomalous. ``labels``: (N,) with 1/``True`` for
  anomalous (the positive class) and 0/``False`` for good.
* An image is **released** when ``score < threshold`` and **flagged** when ``score >= threshold``,
  exactly as :class:`models.inference.Prediction` labels it. A *miss* is an anomalous image released;
  a *false alarm* is a good image flagged.
* A metric that is undefined on the data given (one class only, no ground-truth regions) comes back
  as :class:`MetricValue` with ``value=None`` and a ``reason`` a person can read, never as an
  exception or a NaN.

Image-level metrics are exact, ties included (a tied good/anomalous pair counts one half in AUROC,
as in the Mann-Whitney statistic). Pixel-level metrics stream over the test set through
:class:`PixelAccumulator`, which keeps histograms of the anomaly-map values in [0, 1]; they are exact
for maps quantised to the bin grid and otherwise differ from the exact values only through pixels of
both classes that share a bin (counted as ties). With the default 10 000 bins that is well below the
third decimal on any realistic map.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import cv2
import numpy as np

from models.threshold import allowed_errors

__all__ = [
    "DEFAULT_BINS",
    "Confusion",
    "MetricValue",
    "PixelAccumulator",
    "PrCurve",
    "RocCurve",
    "allowed_errors",
    "confusion",
    "detection_rate_at_fpr",
    "image_aupr",
    "image_auroc",
    "miss_rate",
    "pixel_auroc",
    "pr_curve",
    "pro",
    "release_rate",
    "roc_curve",
    "tnr_at_fnr",
]

DEFAULT_BINS = 10_000
"""Histogram bins over [0, 1] for the pixel metrics."""
_GRID_SLACK = 1e-3  # in bins (1e-7 in value, float32's resolution near 1): taken as on the edge above


class MetricValue(NamedTuple):
    """A metric's value, or ``None`` and the reason it is undefined on this data."""

    value: float | None
    reason: str | None = None


class RocCurve(NamedTuple):
    """ROC curve, one point per distinct score plus the origin.

    ``fpr``, ``tpr``: (K + 1,) float64, non-decreasing, from (0, 0) to (1, 1). ``thresholds``: (K + 1,)
    the cut giving each point (flag when ``score >= cut``), descending; the first is ``+inf``.
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


class PrCurve(NamedTuple):
    """Precision-recall curve, one point per distinct score plus (recall 0, precision 1).

    ``recall``, ``precision``: (K + 1,) float64; ``thresholds``: (K + 1,) descending, the first ``+inf``.
    """

    recall: np.ndarray
    precision: np.ndarray
    thresholds: np.ndarray


class Confusion(NamedTuple):
    """Counts at a threshold; positive = anomalous = flagged (``score >= threshold``)."""

    true_positive: int  # anomalous, flagged
    false_positive: int  # good, flagged (false alarm)
    true_negative: int  # good, released
    false_negative: int  # anomalous, released (miss)


# --------------------------------------------------------------------------------------- helpers


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return (scores float64 (N,), labels bool (N,))."""
    s = np.asarray(scores, dtype=np.float64)
    lab = np.asarray(labels)
    if s.ndim != 1 or lab.ndim != 1 or s.shape != lab.shape:
        raise ValueError(
            f"scores and labels must be 1-D of the same length; got shapes {s.shape} and {lab.shape}"
        )
    if s.size and not np.all(np.isfinite(s)):
        raise ValueError(f"scores contain {int(np.count_nonzero(~np.isfinite(s)))} NaN or infinite value(s)")
    if lab.dtype != np.bool_:
        if lab.size and not np.all((lab == 0) | (lab == 1)):
            raise ValueError(
                f"labels must be 0/1 or bool (1 = anomalous); got values {sorted(set(lab.tolist()))[:5]}"
            )
        lab = lab.astype(bool)
    return s, lab


def _one_class_reason(labels: np.ndarray) -> str | None:
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 and n_neg == 0:
        return "no images"
    if n_pos == 0:
        return f"only good images ({n_neg}); the metric needs anomalous ones too"
    if n_neg == 0:
        return f"only anomalous images ({n_pos}); the metric needs good ones too"
    return None


def _trapezoid(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


def _cumulative_counts(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tps, fps, thresholds) at each distinct score, scanning from the highest score down."""
    order = np.argsort(-scores, kind="stable")
    s, lab = scores[order], labels[order]
    # the last index of each run of equal scores: a cut there flags the whole run at once
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]
    tps = np.cumsum(lab)[last].astype(np.float64)
    fps = (last + 1).astype(np.float64) - tps
    return tps, fps, s[last]


# ----------------------------------------------------------------------------------- image level


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> RocCurve | None:
    """ROC curve of ``scores`` (N,) against ``labels`` (N,); ``None`` when one class is absent."""
    s, lab = _check(scores, labels)
    if _one_class_reason(lab) is not None:
        return None
    tps, fps, cuts = _cumulative_counts(s, lab)
    return RocCurve(
        fpr=np.r_[0.0, fps / fps[-1]], tpr=np.r_[0.0, tps / tps[-1]], thresholds=np.r_[np.inf, cuts]
    )


def pr_curve(scores: np.ndarray, labels: np.ndarray) -> PrCurve | None:
    """Precision-recall curve (anomalous = positive); ``None`` when one class is absent."""
    s, lab = _check(scores, labels)
    if _one_class_reason(lab) is not None:
        return None
    tps, fps, cuts = _cumulative_counts(s, lab)
    return PrCurve(
        recall=np.r_[0.0, tps / tps[-1]],
        precision=np.r_[1.0, tps / (tps + fps)],
        thresholds=np.r_[np.inf, cuts],
    )


def image_auroc(scores: np.ndarray, labels: np.ndarray) -> MetricValue:
    """Area under the ROC curve (trapezoidal over distinct scores: ties count one half).

    Summed in whole counts (twice the Mann-Whitney U) and divided once, so that two rankings with
    the same area give the same float: the fusion gates compare areas strictly, and a last-digit
    difference from summing rates in another order would decide a tie.
    """
    s, lab = _check(scores, labels)
    if (reason := _one_class_reason(lab)) is not None:
        return MetricValue(None, reason)
    tps, fps, _ = _cumulative_counts(s, lab)
    tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
    twice_u = float(np.sum(np.diff(fps) * (tps[1:] + tps[:-1])))  # exact: integers below 2**53
    return MetricValue(twice_u / (2.0 * tps[-1] * fps[-1]))


def image_aupr(scores: np.ndarray, labels: np.ndarray) -> MetricValue:
    """Average precision: sum over distinct cuts of (recall step) x precision, no interpolation."""
    s, lab = _check(scores, labels)
    if (reason := _one_class_reason(lab)) is not None:
        return MetricValue(None, reason)
    curve = pr_curve(s, lab)
    assert curve is not None
    return MetricValue(float(np.sum(np.diff(curve.recall) * curve.precision[1:])))


def confusion(scores: np.ndarray, labels: np.ndarray, threshold: float) -> Confusion:
    """Counts at ``threshold``: flagged when ``score >= threshold``."""
    s, lab = _check(scores, labels)
    flagged = s >= threshold
    return Confusion(
        true_positive=int(np.count_nonzero(flagged & lab)),
        false_positive=int(np.count_nonzero(flagged & ~lab)),
        true_negative=int(np.count_nonzero(~flagged & ~lab)),
        false_negative=int(np.count_nonzero(~flagged & lab)),
    )


def release_rate(scores: np.ndarray, labels: np.ndarray, threshold: float) -> MetricValue:
    """Share of good images released (``score < threshold``) — the clean cargo that goes through."""
    c = confusion(scores, labels, threshold)
    n_good = c.true_negative + c.false_positive
    if n_good == 0:
        return MetricValue(None, "no good images")
    return MetricValue(c.true_negative / n_good)


def miss_rate(scores: np.ndarray, labels: np.ndarray, threshold: float) -> MetricValue:
    """Share of anomalous images released (``score < threshold``) — the anomalies that slip through."""
    c = confusion(scores, labels, threshold)
    n_anomalous = c.true_positive + c.false_negative
    if n_anomalous == 0:
        return MetricValue(None, "no anomalous images")
    return MetricValue(c.false_negative / n_anomalous)


def tnr_at_fnr(scores: np.ndarray, labels: np.ndarray, fnr: float = 0.01) -> MetricValue:
    """Best share of good images released while at most ``fnr`` of anomalous ones are released.

    The cut is chosen on these very scores (an oracle operating point, the field's usual "TNR at
    1 % FNR"): with ``k = floor(fnr * n_anomalous)`` misses allowed, everything strictly below the
    (k+1)-th lowest anomalous score is released. Good images tied with that score are not.
    """
    s, lab = _check(scores, labels)
    if (reason := _one_class_reason(lab)) is not None:
        return MetricValue(None, reason)
    anomalous = np.sort(s[lab])
    cut = anomalous[allowed_errors(fnr, anomalous.size)]
    good = s[~lab]
    return MetricValue(float(np.count_nonzero(good < cut)) / good.size)


def detection_rate_at_fpr(scores: np.ndarray, labels: np.ndarray, fpr: float = 0.01) -> MetricValue:
    """Best share of anomalous images flagged while at most ``fpr`` of good ones are flagged.

    With ``m = floor(fpr * n_good)`` false alarms allowed, the cut sits just above the (m+1)-th
    highest good score; anomalous images tied with that score are not flagged.
    """
    s, lab = _check(scores, labels)
    if (reason := _one_class_reason(lab)) is not None:
        return MetricValue(None, reason)
    good = np.sort(s[~lab])[::-1]
    bound = good[allowed_errors(fpr, good.size)]
    anomalous = s[lab]
    return MetricValue(float(np.count_nonzero(anomalous > bound)) / anomalous.size)


# ----------------------------------------------------------------------------------- pixel level


class PixelAccumulator:
    """Streams anomaly maps and ground-truth masks into histograms for pixel AUROC and PRO.

    Memory is O(bins) whatever the size of the test set: a histogram of normal pixels, one of
    anomalous pixels, and for PRO one histogram in which every pixel of a ground-truth region is
    weighted by 1 / (its region's area), so that summing it above a cut gives the sum over regions
    of each region's overlap with the flagged pixels.

    Map values are clipped to [0, 1] and binned as ``floor(v * bins)``, one bin per value of the grid
    ``k / bins`` for ``k`` in 0..bins (``bins + 1`` of them: a map clamped at 1.0 has a bin of its
    own, apart from 0.9999); a pixel is flagged at cut ``b`` when its bin is ``>= b``. A map holding
    NaN or infinity is refused (``ValueError``): binned, NaN became a negative bin.
    """

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        if bins < 2:
            raise ValueError(f"bins must be at least 2; got {bins}")
        self.bins = bins
        self.normal = np.zeros(bins + 1, dtype=np.int64)
        self.anomalous = np.zeros(bins + 1, dtype=np.int64)
        self.region_weight = np.zeros(bins + 1, dtype=np.float64)
        self.regions = 0
        self.images = 0

    def _bin(self, values: np.ndarray) -> np.ndarray:
        if not np.isfinite(values).all():
            bad = int(np.count_nonzero(~np.isfinite(values)))
            raise ValueError(f"anomaly map holds {bad} NaN or infinite value(s)")
        v = np.clip(values.astype(np.float64, copy=False), 0.0, 1.0)
        # a float32 grid value (1e-4 is 0.99999997e-4) must land in its own bin, not the one below
        return np.minimum(np.floor(v * self.bins + _GRID_SLACK).astype(np.int64), self.bins)

    def add(self, anomaly_map: np.ndarray, mask: np.ndarray | None) -> None:
        """Add one image.

        Args:
            anomaly_map: (H, W) float in [0, 1]. Resized (bilinear) to the mask's size when the two
                differ, because the mask is the ground truth.
            mask: (H, W) or (H, W, 1) ground truth, nonzero = anomalous pixel (0/255 PNGs), or
                ``None`` for an image known to be anomaly-free (a good test image).
        """
        amap = np.asarray(anomaly_map, dtype=np.float32)
        if amap.ndim != 2:
            raise ValueError(f"anomaly_map must be 2-D (H, W); got shape {amap.shape}")
        if mask is None:
            self.normal += np.bincount(self._bin(amap).ravel(), minlength=self.bins + 1)
            self.images += 1
            return
        m = np.asarray(mask)
        if m.ndim == 3 and m.shape[2] == 1:
            m = m[:, :, 0]
        if m.ndim != 2:
            raise ValueError(f"mask must be 2-D (H, W); got shape {m.shape}")
        if amap.shape != m.shape:
            size = (m.shape[1], m.shape[0])
            amap = np.asarray(cv2.resize(amap, size, interpolation=cv2.INTER_LINEAR), dtype=np.float32)
        bins = self._bin(amap)
        positive = m != 0
        self.normal += np.bincount(bins[~positive], minlength=self.bins + 1)
        self.anomalous += np.bincount(bins[positive], minlength=self.bins + 1)
        n_labels, components = cv2.connectedComponents(positive.astype(np.uint8), connectivity=8)
        if n_labels > 1:
            areas = np.bincount(components.ravel(), minlength=n_labels).astype(np.float64)
            inside = components != 0
            weights = 1.0 / areas[components[inside]]
            self.region_weight += np.bincount(bins[inside], weights=weights, minlength=self.bins + 1)
            self.regions += n_labels - 1
        self.images += 1

    def _flagged_shares(self, counts: np.ndarray, total: float) -> np.ndarray:
        """Share flagged at cuts above every bin, then at bins, bins-1, ..., 0: (bins + 2,), from 0
        up to 1."""
        above = np.cumsum(counts[::-1])
        return np.r_[0.0, above / total]

    def pixel_auroc(self) -> MetricValue:
        """Pixel-level AUROC over every pixel added."""
        n_pos, n_neg = int(self.anomalous.sum()), int(self.normal.sum())
        if n_pos == 0:
            return MetricValue(None, "no anomalous pixels in the ground-truth masks")
        if n_neg == 0:
            return MetricValue(None, "no normal pixels")
        fpr = self._flagged_shares(self.normal, n_neg)
        tpr = self._flagged_shares(self.anomalous, n_pos)
        return MetricValue(_trapezoid(fpr, tpr))

    def pro(self, fpr_limit: float = 0.3) -> MetricValue:
        """Per-region overlap, integrated over FPR from 0 to ``fpr_limit`` and divided by it.

        The MVTec AD definition (Bergmann et al., IJCV 2021): regions are the 8-connected components
        of each ground-truth mask; at each cut, PRO is the mean over all regions of the share of the
        region's pixels that are flagged, and FPR the share of all normal pixels (of good and
        anomalous images) that are flagged. The curve is integrated with the trapezoid rule, linearly
        interpolated at ``fpr_limit``, so a perfect map scores 1.
        """
        if not 0.0 < fpr_limit <= 1.0:
            raise ValueError(f"fpr_limit must be in (0, 1]; got {fpr_limit!r}")
        n_neg = int(self.normal.sum())
        if self.regions == 0:
            return MetricValue(None, "no ground-truth regions in the masks")
        if n_neg == 0:
            return MetricValue(None, "no normal pixels")
        fpr = self._flagged_shares(self.normal, n_neg)
        overlap = self._flagged_shares(self.region_weight, self.regions)
        # fpr is non-decreasing; cut the curve at fpr_limit, interpolating the last segment
        keep = int(np.searchsorted(fpr, fpr_limit, side="right"))
        x, y = fpr[:keep], overlap[:keep]
        if keep < fpr.size and x[-1] < fpr_limit:
            x0, x1, y0, y1 = fpr[keep - 1], fpr[keep], overlap[keep - 1], overlap[keep]
            y_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
            x, y = np.r_[x, fpr_limit], np.r_[y, y_limit]
        return MetricValue(_trapezoid(x, y) / fpr_limit)


def _accumulate(
    maps: Iterable[np.ndarray], masks: Iterable[np.ndarray | None], bins: int
) -> PixelAccumulator:
    acc = PixelAccumulator(bins)
    for amap, mask in zip(maps, masks, strict=True):
        acc.add(amap, mask)
    return acc


def pixel_auroc(
    maps: Iterable[np.ndarray], masks: Iterable[np.ndarray | None], *, bins: int = DEFAULT_BINS
) -> MetricValue:
    """Pixel AUROC over (H, W) maps and their masks (``None`` = anomaly-free); see PixelAccumulator."""
    return _accumulate(maps, masks, bins).pixel_auroc()


def pro(
    maps: Iterable[np.ndarray],
    masks: Iterable[np.ndarray | None],
    *,
    fpr_limit: float = 0.3,
    bins: int = DEFAULT_BINS,
) -> MetricValue:
    """Normalised PRO up to ``fpr_limit`` over (H, W) maps and masks; see :meth:`PixelAccumulator.pro`."""
    return _accumulate(maps, masks, bins).pro(fpr_limit)
