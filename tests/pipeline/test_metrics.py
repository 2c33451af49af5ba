"""pipeline.metrics against values computed by hand on small fixed score sets, ties included."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.metrics import (
    Confusion,
    MetricValue,
    PixelAccumulator,
    confusion,
    detection_rate_at_fpr,
    image_aupr,
    image_auroc,
    miss_rate,
    pixel_auroc,
    pr_curve,
    pro,
    release_rate,
    roc_curve,
    tnr_at_fnr,
)

IMAGE_CASES = [
    # id, scores, labels (1 = anomalous), auroc, average precision
    # 3 of 4 good/anomalous pairs ordered right; AP = 0.5 * 1 + 0.5 * 2/3
    ("mixed", [0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1], 0.75, 5 / 6),
    # one tied pair (0.5, 0.5) counts one half: 3.5 / 4; AP = 0.5 * 1 + 0.5 * 2/3
    ("tie", [0.5, 0.5, 0.2, 0.8], [1, 0, 0, 1], 0.875, 5 / 6),
    ("perfect", [0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], 1.0, 1.0),
    # everything tied: one cut, precision 0.5 at recall 1
    ("all_tied", [0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1], 0.5, 0.5),
    # inverted: the anomaly only found after the good image, precision 1/2 at recall 1
    ("inverted", [0.9, 0.1], [0, 1], 0.0, 0.5),
]


@pytest.mark.parametrize(
    ("scores", "labels", "auroc", "ap"), [c[1:] for c in IMAGE_CASES], ids=[c[0] for c in IMAGE_CASES]
)
def test_image_auroc_and_aupr(scores: list[float], labels: list[int], auroc: float, ap: float) -> None:
    got_auroc = image_auroc(np.array(scores), np.array(labels))
    got_ap = image_aupr(np.array(scores), np.array(labels, dtype=bool))
    assert got_auroc.reason is None and got_ap.reason is None
    assert got_auroc.value == pytest.approx(auroc, abs=1e-12)
    assert got_ap.value == pytest.approx(ap, abs=1e-12)


def test_roc_and_pr_curve_points() -> None:
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    roc = roc_curve(scores, labels)
    assert roc is not None
    assert roc.fpr.tolist() == [0.0, 0.0, 0.5, 0.5, 1.0]
    assert roc.tpr.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert roc.thresholds.tolist() == [np.inf, 0.8, 0.4, 0.35, 0.1]
    pr = pr_curve(scores, labels)
    assert pr is not None
    assert pr.recall.tolist() == [0.0, 0.5, 0.5, 1.0, 1.0]
    assert pr.precision.tolist() == pytest.approx([1.0, 1.0, 0.5, 2 / 3, 0.5], abs=1e-12)


def test_roc_curve_collapses_ties_into_one_point() -> None:
    roc = roc_curve(np.array([0.5, 0.5, 0.2, 0.8]), np.array([1, 0, 0, 1]))
    assert roc is not None
    assert roc.fpr.tolist() == [0.0, 0.0, 0.5, 1.0]
    assert roc.tpr.tolist() == [0.0, 0.5, 1.0, 1.0]


CONFUSION_CASES = [
    # id, threshold, confusion, release rate (good released), miss rate (anomalous released)
    ("at_0.4", 0.4, Confusion(1, 1, 1, 1), 0.5, 0.5),  # a score equal to the threshold is flagged
    ("at_0.35", 0.35, Confusion(2, 1, 1, 0), 0.5, 0.0),
    ("at_0.9", 0.9, Confusion(0, 0, 2, 2), 1.0, 1.0),
    ("at_0.0", 0.0, Confusion(2, 2, 0, 0), 0.0, 0.0),
]


@pytest.mark.parametrize(
    ("threshold", "expected", "released", "missed"),
    [c[1:] for c in CONFUSION_CASES],
    ids=[c[0] for c in CONFUSION_CASES],
)
def test_confusion_release_and_miss_rate(
    threshold: float, expected: Confusion, released: float, missed: float
) -> None:
    scores, labels = np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])
    assert confusion(scores, labels, threshold) == expected
    assert release_rate(scores, labels, threshold) == MetricValue(released)
    assert miss_rate(scores, labels, threshold) == MetricValue(missed)


OPERATING_CASES = [
    # id, good, anomalous, rate, tnr_at_fnr(rate), detection_rate_at_fpr(rate)
    # no miss allowed: release below 0.25 -> good 0.1, 0.2 released; no false alarm: flag above 0.4 -> 0.6
    ("strict", [0.1, 0.2, 0.3, 0.4], [0.25, 0.4, 0.6], 0.01, 0.5, 1 / 3),
    # 34 % of 3 anomalies -> 1 miss allowed: release below 0.4 -> 3 of 4 good (0.4 is tied, not released);
    # 34 % of 4 good -> 1 false alarm allowed: flag above 0.3 -> anomalies 0.4 and 0.6
    ("one_allowed", [0.1, 0.2, 0.3, 0.4], [0.25, 0.4, 0.6], 0.34, 0.75, 2 / 3),
    # a good image tied with the lowest anomaly is not released;
    # an anomaly tied with the top good image is not flagged
    ("ties", [0.25, 0.1], [0.25, 0.9], 0.01, 0.5, 0.5),
    ("separated", [0.1, 0.2], [0.8, 0.9], 0.01, 1.0, 1.0),
]


@pytest.mark.parametrize(
    ("good", "anomalous", "rate", "tnr", "detection"),
    [c[1:] for c in OPERATING_CASES],
    ids=[c[0] for c in OPERATING_CASES],
)
def test_operating_point_metrics(
    good: list[float], anomalous: list[float], rate: float, tnr: float, detection: float
) -> None:
    scores = np.array(good + anomalous)
    labels = np.array([0] * len(good) + [1] * len(anomalous))
    assert tnr_at_fnr(scores, labels, fnr=rate).value == pytest.approx(tnr, abs=1e-12)
    assert detection_rate_at_fpr(scores, labels, fpr=rate).value == pytest.approx(detection, abs=1e-12)


DEGENERATE = [
    ("only_good", [0.1, 0.2, 0.3], [0, 0, 0], "only good images (3); the metric needs anomalous ones too"),
    ("only_anomalous", [0.7, 0.8], [1, 1], "only anomalous images (2); the metric needs good ones too"),
    ("empty", [], [], "no images"),
]


@pytest.mark.parametrize(
    ("scores", "labels", "reason"), [d[1:] for d in DEGENERATE], ids=[d[0] for d in DEGENERATE]
)
def test_one_class_gives_none_with_reason(scores: list[float], labels: list[int], reason: str) -> None:
    s, lab = np.array(scores, dtype=float), np.array(labels, dtype=int)
    for metric in (image_auroc, image_aupr, tnr_at_fnr, detection_rate_at_fpr):
        assert metric(s, lab) == MetricValue(None, reason)
    assert roc_curve(s, lab) is None
    assert pr_curve(s, lab) is None


def test_rates_without_their_class() -> None:
    good_only = (np.array([0.1, 0.9]), np.array([0, 0]))
    assert release_rate(*good_only, 0.5) == MetricValue(0.5)
    assert miss_rate(*good_only, 0.5) == MetricValue(None, "no anomalous images")
    anomalous_only = (np.array([0.1, 0.9]), np.array([1, 1]))
    assert release_rate(*anomalous_only, 0.5) == MetricValue(None, "no good images")


BAD_INPUTS = [
    ("length", [0.1, 0.2], [0], "scores and labels must be 1-D of the same length; got shapes (2,) and (1,)"),
    ("nan", [0.1, float("nan")], [0, 1], "scores contain 1 NaN or infinite value(s)"),
    ("label_2", [0.1, 0.2], [0, 2], "labels must be 0/1 or bool (1 = anomalous); got values [0, 2]"),
]


@pytest.mark.parametrize(
    ("scores", "labels", "message"), [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS]
)
def test_bad_inputs_raise(scores: list[float], labels: list[int], message: str) -> None:
    with pytest.raises(ValueError) as info:
        image_auroc(np.array(scores), np.array(labels))
    assert str(info.value) == message


# ----------------------------------------------------------------------------------- pixel level
# bins=10 and map values at bin centres (0.05, 0.15, ...) make the histogram metrics exact.

PIXEL_CASES = [
    # id, [(map, mask or None)], pixel auroc, pro (fpr_limit 0.3)
    (
        "perfect",
        [(np.array([[0.95, 0.05], [0.05, 0.05]]), np.array([[255, 0], [0, 0]]))],
        1.0,
        1.0,
    ),
    (
        # anomalous pixels 0.95, 0.55; normal 0.35, 0.15 (+ good image 0.55, 0.05): 7.5 of 8 pairs.
        # PRO curve (fpr, overlap): (0, 0) -> (0, 0.5) -> (0.25, 1) -> (0.3, 1):
        # area 0.25 * 0.75 + 0.05 * 1 = 0.2375, / 0.3
        "one_region_and_a_good_image",
        [
            (np.array([[0.95, 0.55, 0.35, 0.15]]), np.array([[255, 255, 0, 0]])),
            (np.array([[0.55, 0.05]]), None),
        ],
        0.9375,
        0.2375 / 0.3,
    ),
    (
        # two regions, areas 3 and 1: at cut 0.95 region A is 2/3 covered, B not at all -> mean 1/3, and the
        # next cut that adds region pixels (0.15) comes after FPR has passed 0.3 -> PRO 1/3 (pixel-wise
        # overlap would be 1/2). Pixel AUROC: 0.95s beat both normals, 0.15s beat one -> 6 / 8.
        "two_regions_weighted_equally",
        [(np.array([[0.95, 0.95, 0.15, 0.55, 0.05, 0.15]]), np.array([[1, 1, 1, 0, 0, 1]]))],
        0.75,
        1 / 3,
    ),
]


@pytest.mark.parametrize(
    ("pairs", "auroc", "expected_pro"), [c[1:] for c in PIXEL_CASES], ids=[c[0] for c in PIXEL_CASES]
)
def test_pixel_auroc_and_pro(
    pairs: list[tuple[np.ndarray, np.ndarray | None]], auroc: float, expected_pro: float
) -> None:
    maps = [p[0] for p in pairs]
    masks = [p[1] for p in pairs]
    assert pixel_auroc(maps, masks, bins=10).value == pytest.approx(auroc, abs=1e-12)
    assert pro(maps, masks, bins=10).value == pytest.approx(expected_pro, abs=1e-12)


def test_pixel_auroc_matches_exact_auroc_on_quantised_maps() -> None:
    rng = np.random.default_rng(7)
    bins = 50
    maps = [(rng.integers(0, bins, (8, 9)) + 0.5) / bins for _ in range(4)]
    masks = [(rng.random((8, 9)) < 0.3).astype(np.uint8) * 255 for _ in range(3)] + [None]
    flat_labels = np.concatenate([(m if m is not None else np.zeros((8, 9))).ravel() > 0 for m in masks])
    exact = image_auroc(np.concatenate([m.ravel() for m in maps]), flat_labels)
    assert pixel_auroc(maps, masks, bins=bins).value == pytest.approx(exact.value, abs=1e-12)


def test_regions_are_8_connected_and_maps_resized_to_the_mask() -> None:
    acc = PixelAccumulator(bins=10)
    # diagonal neighbours are one region (MVTec's scipy.ndimage.label with a 3x3 structure)
    acc.add(np.array([[0.95, 0.05], [0.05, 0.95]]), np.array([[255, 0], [0, 255]]))
    assert acc.regions == 1
    # a 2x2 map against a 4x4 mask is resized to 4x4: 16 pixels counted
    acc.add(np.full((2, 2), 0.45, dtype=np.float32), np.zeros((4, 4, 1), dtype=np.uint8))
    assert int(acc.normal.sum() + acc.anomalous.sum()) == 4 + 16
    assert acc.images == 2


def test_pixel_metrics_without_regions() -> None:
    acc = PixelAccumulator(bins=10)
    acc.add(np.array([[0.1, 0.2]]), None)
    assert acc.pixel_auroc() == MetricValue(None, "no anomalous pixels in the ground-truth masks")
    assert acc.pro() == MetricValue(None, "no ground-truth regions in the masks")
    all_anomalous = PixelAccumulator(bins=10)
    all_anomalous.add(np.array([[0.1, 0.2]]), np.array([[1, 1]]))
    assert all_anomalous.pixel_auroc() == MetricValue(None, "no normal pixels")
    assert all_anomalous.pro() == MetricValue(None, "no normal pixels")


def test_pixel_accumulator_rejects_bad_shapes() -> None:
    acc = PixelAccumulator(bins=10)
    with pytest.raises(ValueError, match=r"anomaly_map must be 2-D \(H, W\); got shape \(2, 2, 3\)"):
        acc.add(np.zeros((2, 2, 3)), None)
    with pytest.raises(ValueError, match="bins must be at least 2; got 1"):
        PixelAccumulator(bins=1)


def test_two_rankings_with_one_area_give_one_float() -> None:
    """Both are 11/15: summed as rates in different orders they differed in the last digit, and a
    gate that keeps a signal only when it is strictly better kept one on a tie."""
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
    a = image_auroc(np.array([6, 7, 1, 5, 2, 0, 3, 4], float), labels).value
    b = image_auroc(np.array([7, 2, 5, 4, 1, 3, 0, 6], float), labels).value
    assert a == b == 11 / 15


def test_a_map_on_the_bin_grid_is_binned_exactly_in_float32() -> None:
    from pipeline.metrics import DEFAULT_BINS, PixelAccumulator

    grid = (np.arange(DEFAULT_BINS + 1) / DEFAULT_BINS).astype(np.float32)
    bins = PixelAccumulator()._bin(grid)
    assert np.array_equal(bins, np.arange(DEFAULT_BINS + 1))  # 4,967 of them fell a bin low


@pytest.mark.parametrize("bins", [10, 10_000])
def test_a_map_clamped_at_one_ranks_above_the_bin_below(bins: int) -> None:
    # maps are clipped to [0, 1], so defects pile up at exactly 1.0; 1.0 shared the top bin with
    # 1 - 1 / bins, and the pixel AUROC of 1.0 against 0.9 came out 0.5 at 10 bins
    normal = np.full((4, 4), 1.0 - 1.0 / bins, np.float32)
    defect = np.ones((4, 4), np.float32)
    mask = np.zeros((4, 4), np.uint8)
    mask[1:3, 1:3] = 255
    defect[mask == 0] = 1.0 - 1.0 / bins
    assert pixel_auroc([normal, defect], [None, mask], bins=bins).value == pytest.approx(1.0)
    assert pro([normal, defect], [None, mask], bins=bins).value == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_map_holding_nan_is_refused_by_name(bad: float) -> None:
    amap = np.zeros((4, 4), np.float32)
    amap[0, 0] = bad
    with pytest.raises(ValueError, match=r"anomaly map holds 1 NaN or infinite value\(s\)"):
        PixelAccumulator(bins=10).add(amap, None)
