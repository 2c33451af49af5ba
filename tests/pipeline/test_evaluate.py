"""pipeline.evaluate with a fake predictor on a tiny MVTec-layout folder; metrics computed by hand."""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from evaluate_fakes import Dataset, FakePredictor, Item, write_dataset  # noqa: E402

from datasets.errors import DatasetFormatError, ModelError  # noqa: E402
from datasets.mvtec import read_mvtec  # noqa: E402
from models.inference import GOOD, Predictor, Thresholds  # noqa: E402
from pipeline.evaluate import EvaluationResult, evaluate, threshold_promise, write_outputs  # noqa: E402


def _pro(steps: Sequence[tuple[float, float]], limit: float = 0.3) -> float:
    """Area under a polyline of (fpr, overlap) points up to ``limit``, normalised."""
    area = 0.0
    for (x0, y0), (x1, y1) in zip(steps, steps[1:], strict=False):
        if x0 >= limit:
            break
        if x1 > limit:
            y1 = y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
            x1 = limit
        area += (x1 - x0) * (y0 + y1) / 2
    return area / limit


# Overall: normal pixels = 4 good x 64 + 3 masked anomalous x 60 background = 436; anomalous pixels
# 4 @ 0.8 (beat all), 4 @ 0.902 (beat all), 4 @ 0.4 (beat 64 + 64 + 180, tie 64 with g2) -> AUROC
# (8 * 436 + 4 * 340) / (12 * 436). PRO: 3 regions; cuts 0.902, 0.8 add a region each at FPR 0; cut 0.6
# adds g3 (64 / 436); cut 0.4 adds g2 and region c2 together.
OVERALL_PRO = _pro([(0, 0), (0, 1 / 3), (0, 2 / 3), (64 / 436, 2 / 3), (128 / 436, 1.0), (192 / 436, 1.0)])
# Crack only: normal 256 + 120 = 376; regions c1 (0.8) and c2 (0.4, tied with g2).
CRACK_PRO = _pro([(0, 0), (0, 0.5), (64 / 376, 0.5), (128 / 376, 1.0)])
# Colour pictures only (g2, c2): normal pixels g2's 64 at 0.4 + c2's 60 background; region c2 (0.4).
COLOUR_PRO = _pro([(0, 0), (64 / 124, 1.0)])


def _block(**kw: Any) -> dict[str, Any]:
    return kw


EXPECTED = {
    "model_id": "fake-0001",
    "cargo_type": "bulk_ore",
    "threshold": 0.5,
    "hold_threshold": 0.75,
    "threshold_method": "miss_rate_on_validation",
    "target_miss_rate": 0.01,
    "counts": {
        "images": 8,
        "good": 4,
        "anomalous": 4,
        "failed": 1,
        "non_finite": 0,
        "with_mask": 3,
        "empty_masks": 0,
    },  # fmt: skip
    "empty_masks": [],
    "release_rate": 0.75,  # g1, g2, g4 released; g3 reviewed remotely
    "miss_rate": 0.25,  # c2
    # pairs: 0.8, 0.902, 0.753 beat all 4 good; 0.4 beats 2, ties 1 -> 14.5 / 16
    "image_auroc": 14.5 / 16,
    "per_signal": {},  # the fake reports no signals unless asked (test_each_signal_alone)
    # recall steps of 1/4 at precision 1, 1, 1, then 2/3 (0.4 tie: 4 anomalous of 6 flagged)
    "image_aupr": 0.75 + 0.25 * 4 / 6,
    "tnr_at_fnr_1pct": 0.5,  # released below the lowest anomaly 0.4: g1, g4
    "detection_rate_at_fpr_1pct": 0.75,  # flagged above the highest good 0.6: c1, h1, s1
    "confusion": {"true_positive": 3, "false_positive": 1, "true_negative": 3, "false_negative": 1},
    "bands": {
        "good": {"release": 0.75, "remote_review": 0.25, "hold": 0.0},
        "anomalous": {"release": 0.25, "remote_review": 0.0, "hold": 0.75},
    },
    "pixel_auroc": (8 * 436 + 4 * 340) / (12 * 436),
    "pro": OVERALL_PRO,
    "undefined": {},
    # train/good/t0.png is no test image's copy (test_training_copies_are_named_and_left_out)
    "duplicates": {
        "checked": True,
        "training_images": 1,
        "training_and_test": 0,
        "examples": [],
        "without_copies": None,
    },
    "type_accuracy": 1 / 3,  # flagged c1, h1, s1 are all typed "hole"
    "per_type": {
        "crack": {
            "counts": {"images": 6, "good": 4, "anomalous": 2, "with_mask": 2},
            "release_rate": 0.75,
            "miss_rate": 0.5,
            "image_auroc": 6.5 / 8,
            "image_aupr": 0.5 + 0.5 * 0.5,
            "tnr_at_fnr_1pct": 0.5,
            "detection_rate_at_fpr_1pct": 0.5,
            "confusion": {"true_positive": 1, "false_positive": 1, "true_negative": 3, "false_negative": 1},
            "bands": {
                "good": {"release": 0.75, "remote_review": 0.25, "hold": 0.0},
                "anomalous": {"release": 0.5, "remote_review": 0.0, "hold": 0.5},
            },
            "pixel_auroc": (4 * 376 + 4 * 280) / (8 * 376),
            "pro": CRACK_PRO,
            "undefined": {},
            "type_accuracy": 0.0,
        },
        "hole": {
            "counts": {"images": 5, "good": 4, "anomalous": 1, "with_mask": 1},
            "release_rate": 0.75,
            "miss_rate": 0.0,
            "image_auroc": 1.0,
            "image_aupr": 1.0,
            "tnr_at_fnr_1pct": 1.0,
            "detection_rate_at_fpr_1pct": 1.0,
            "confusion": {"true_positive": 1, "false_positive": 1, "true_negative": 3, "false_negative": 0},
            "bands": {
                "good": {"release": 0.75, "remote_review": 0.25, "hold": 0.0},
                "anomalous": {"release": 0.0, "remote_review": 0.0, "hold": 1.0},
            },
            "pixel_auroc": 1.0,
            "pro": 1.0,
            "undefined": {},
            "type_accuracy": 1.0,
        },
        "stain": {
            "counts": {"images": 5, "good": 4, "anomalous": 1, "with_mask": 0},
            "release_rate": 0.75,
            "miss_rate": 0.0,
            "image_auroc": 1.0,
            "image_aupr": 1.0,
            "tnr_at_fnr_1pct": 1.0,
            "detection_rate_at_fpr_1pct": 1.0,
            "confusion": {"true_positive": 1, "false_positive": 1, "true_negative": 3, "false_negative": 0},
            "bands": {
                "good": {"release": 0.75, "remote_review": 0.25, "hold": 0.0},
                "anomalous": {"release": 0.0, "remote_review": 0.0, "hold": 1.0},
            },
            "pixel_auroc": None,
            "pro": None,
            "undefined": {
                "pixel_auroc": "no ground-truth masks for these anomalous images",
                "pro": "no ground-truth masks for these anomalous images",
            },
            "type_accuracy": 0.0,
        },
    },
    "per_image_kind": {
        "colour": {  # g2 (0.4) and c2 (0.4): a tie
            "counts": {"images": 2, "good": 1, "anomalous": 1},
            "release_rate": 1.0,
            "miss_rate": 1.0,
            "image_auroc": 0.5,
            "image_aupr": 0.5,
            "tnr_at_fnr_1pct": 0.0,  # nothing clean scores below the anomaly
            "detection_rate_at_fpr_1pct": 0.0,
            "confusion": {"true_positive": 0, "false_positive": 0, "true_negative": 1, "false_negative": 1},
            "bands": {
                "good": {"release": 1.0, "remote_review": 0.0, "hold": 0.0},
                "anomalous": {"release": 1.0, "remote_review": 0.0, "hold": 0.0},
            },
            # c2's 4 pixels beat its 60 background pixels and tie g2's 64
            "pixel_auroc": (4 * 60 + 0.5 * 4 * 64) / (4 * 124),
            "pro": COLOUR_PRO,
            "undefined": {},
        },
        "grayscale": {  # g1, g3, g4 against c1, h1, s1: every anomaly above every clean picture
            "counts": {"images": 6, "good": 3, "anomalous": 3},
            "release_rate": 2 / 3,
            "miss_rate": 0.0,
            "image_auroc": 1.0,
            "image_aupr": 1.0,
            "tnr_at_fnr_1pct": 1.0,
            "detection_rate_at_fpr_1pct": 1.0,
            "confusion": {"true_positive": 3, "false_positive": 1, "true_negative": 2, "false_negative": 0},
            "bands": {
                "good": {"release": 2 / 3, "remote_review": 1 / 3, "hold": 0.0},
                "anomalous": {"release": 0.0, "remote_review": 0.0, "hold": 1.0},
            },
            "pixel_auroc": 1.0,  # c1's and h1's pixels above g3's 0.6
            "pro": 1.0,
            "undefined": {},
        },
    },
}


def _assert_close(got: Any, expected: Any, where: str = "metrics") -> None:
    """Exact structure and strings; floats to 1e-9 (histogram bins of 1e-4 leave the ranks intact)."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and sorted(got) == sorted(expected), where
        for key in expected:
            _assert_close(got[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, abs=1e-9), where
    else:
        assert got == expected, where


@pytest.fixture()
def dataset(tmp_path: Path) -> Dataset:
    ds = write_dataset(tmp_path / "ore")
    broken = ds.root / "test" / "good" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return Dataset(ds.root, (*ds.items, Item(broken, GOOD, None, None, "test")))


def test_fake_satisfies_the_protocol() -> None:
    assert isinstance(FakePredictor(), Predictor)


def test_metrics_of_a_constructed_case(dataset: Dataset) -> None:
    predictor = FakePredictor()
    calls: list[tuple[int, int]] = []
    result = evaluate(
        predictor, dataset, batch_size=3, progress=lambda done, total: calls.append((done, total))
    )
    metrics = dict(result.metrics)
    assert metrics.pop("data_root") == str(dataset.root)
    assert metrics.pop("evaluated_at") == result.evaluated_at
    for block in (metrics, *metrics["per_type"].values(), *metrics["per_image_kind"].values()):
        block.pop("intervals")  # checked in test_intervals_of_a_constructed_case
    for key in ("threshold_promise", "interval_confidence", "intervals_method"):
        metrics.pop(key)
    _assert_close(metrics, EXPECTED)
    # 9 test items in batches of 3; the broken image never reaches the model
    assert predictor.batches == [3, 3, 2]
    assert calls == [(3, 9), (6, 9), (9, 9)]


# Clopper-Pearson ends from the beta quantiles (R: qbeta(c(.025, .975), k + c(0, 1), n - k + c(1, 0)))
@pytest.mark.parametrize(
    ("block", "release", "miss"),
    [
        ("overall", [0.194120, 0.993690], [0.006309, 0.805880]),  # 3 of 4 clean released; 1 of 4 missed
        ("crack", [0.194120, 0.993690], [0.012579, 0.987421]),  # 1 of 2 missed
        ("hole", [0.194120, 0.993690], [0.0, 0.975]),  # 0 of 1 missed: 1 - 0.025 ** (1 / 1)
    ],
)
def test_intervals_of_a_constructed_case(
    dataset: Dataset, block: str, release: list[float], miss: list[float]
) -> None:
    metrics = evaluate(FakePredictor(), dataset).metrics
    got = metrics if block == "overall" else metrics["per_type"][block]
    assert got["intervals"]["release_rate"] == pytest.approx(release, abs=1e-5)
    assert got["intervals"]["miss_rate"] == pytest.approx(miss, abs=1e-5)
    low, high = got["intervals"]["image_auroc"]
    assert 0.0 <= low <= got["image_auroc"] <= high <= 1.0
    # a handful of images: the 1 % cuts are the samples' extremes, which a bootstrap does not bound
    assert got["intervals"]["tnr_at_fnr_1pct"] is got["intervals"]["detection_rate_at_fpr_1pct"] is None
    if block == "hole":  # one anomaly above every clean image: no resample can rank it lower
        assert got["intervals"]["image_auroc"] == [1.0, 1.0]
    assert metrics["interval_confidence"] == 0.95
    assert "Clopper-Pearson" in metrics["intervals_method"]["miss_rate"]
    # the fake's card does not count validation anomalies: no promise can be given
    assert metrics["threshold_promise"]["miss_rate_bound"] is None


# Without g1 (0.2) and h1 (0.902): clean g2 0.4, g3 0.6, g4 0.098; anomalous c1 0.8, c2 0.4, s1 0.753.
# AUROC: c1 and s1 beat all 3, c2 beats g4 and ties g2 -> 7.5 / 9; below the lowest anomaly (0.4): g4.
WITHOUT_G1_H1 = {
    "counts": {"images": 6, "good": 3, "anomalous": 3},
    "release_rate": 2 / 3,  # g2, g4 below 0.5
    "miss_rate": 1 / 3,  # c2
    "image_auroc": 7.5 / 9,
    "tnr_at_fnr_1pct": 1 / 3,
    "undefined": {},
}


@pytest.mark.parametrize(
    ("copied", "train", "expected"),
    [
        ([], True, {"checked": True, "training_images": 1, "training_and_test": 0, "examples": [],
                    "without_copies": None}),
        (["good/g1", "hole/h1"], True, {
            "checked": True,
            "training_images": 3,
            "training_and_test": 2,
            "examples": [["train/good/g1_copy.png", "test/good/g1.png"],
                         ["train/hole/h1_copy.png", "test/hole/h1.png"]],
            "without_copies": WITHOUT_G1_H1,
        }),
        # a held-out batch without train/: nothing to compare with, and said so
        ([], False, {"checked": False, "training_and_test": None,
                     "reason": "the dataset has no train/ folder: the test images were not compared "
                     "with training images"}),
    ],
    ids=["no-copies", "two-copies", "no-training-images"],
)  # fmt: skip
def test_training_copies_are_named_and_left_out(
    dataset: Dataset, copied: list[str], train: bool, expected: dict[str, Any]
) -> None:
    """A test image with a training image's bytes (under another name) flattered every figure, unsaid."""
    items = list(dataset.items if train else (i for i in dataset.items if i.split == "test"))
    for name in copied:
        kind, stem = name.split("/")
        copy = dataset.root / "train" / kind / f"{stem}_copy.png"
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes((dataset.root / "test" / kind / f"{stem}.png").read_bytes())
        items.append(Item(copy, GOOD if kind == GOOD else "anomalous", None, None, "train"))
    metrics = evaluate(FakePredictor(), Dataset(dataset.root, tuple(items))).metrics
    _assert_close(metrics["duplicates"], expected, "duplicates")
    assert metrics["image_auroc"] == 14.5 / 16  # the figures on every image are still given


def test_intervals_are_reproducible(dataset: Dataset) -> None:
    first = evaluate(FakePredictor(), dataset).metrics["intervals"]
    assert evaluate(FakePredictor(), dataset).metrics["intervals"] == first


@pytest.mark.parametrize(
    ("detector", "rule", "co_located"),
    [
        ({}, "max", False),  # a card written before either was recorded
        ({"fusion": "sum"}, "sum", False),
        ({"fusion": "sum", "co_located": True}, "sum", True),
    ],
)
def test_the_fusion_rule_and_the_one_spot_reading_come_from_the_card(
    dataset: Dataset, detector: dict[str, Any], rule: str, co_located: bool
) -> None:
    predictor = FakePredictor()
    predictor.card = {"detector": detector}
    result = evaluate(predictor, dataset)
    assert (result.fusion_rule, result.co_located) == (rule, co_located)


@pytest.mark.parametrize(
    ("training", "said"),
    [({}, ""), ({"deep_features": "sharp (auto for vacuum_pack)"}, "sharp (auto for vacuum_pack)")],
)
def test_how_the_patch_features_read_the_deeper_maps_comes_from_the_card(
    dataset: Dataset, training: dict[str, Any], said: str
) -> None:
    predictor = FakePredictor()
    predictor.card = {"training": training}
    assert evaluate(predictor, dataset).deep_features == said


PSEUDO = ["synthetic_blob", "synthetic_cutpaste"]


@pytest.mark.parametrize(
    ("card", "overall", "per_type"),
    [
        ({}, 1 / 3, {"crack": 0.0, "hole": 1.0, "stain": 0.0}),  # a card without class names
        # stain is no class of the model's (held out of its training): n/a, not 0 %, and the overall
        # figure counts the flagged crack and hole alone (s1, typed "hole", could never be right)
        (
            {"detector": {"class_names": [GOOD, "crack", "hole"]}, "training": {"pseudo_types": []}},
            1 / 2,
            {"crack": 0.0, "hole": 1.0, "stain": None},
        ),
        # trained on pseudo-anomalies alone: every flagged anomaly is typed "unknown", and 0.0 % read as
        # a model that types them wrong
        (
            {"detector": {"class_names": [GOOD, *PSEUDO]}, "training": {"pseudo_types": PSEUDO}},
            None,
            {"crack": None, "hole": None, "stain": None},
        ),
    ],
    ids=["no-class-names", "knows-types", "pseudo-types-only"],
)
def test_type_accuracy_is_not_measured_for_a_model_that_knows_no_type(
    dataset: Dataset, card: dict[str, Any], overall: float | None, per_type: dict[str, float | None]
) -> None:
    predictor = FakePredictor()
    predictor.card = card
    metrics = evaluate(predictor, dataset).metrics
    assert metrics["type_accuracy"] == pytest.approx(overall)
    assert {k: b["type_accuracy"] for k, b in metrics["per_type"].items()} == pytest.approx(per_type)
    reason = (
        "the model knows no anomaly type (trained without labelled anomalies): it types every anomaly it "
    )
    reason += "flags 'unknown'"
    said = [b["undefined"].get("type_accuracy") for b in (metrics, *metrics["per_type"].values())]
    if overall is None:
        assert said == [reason] * 4
    elif "class_names" in card.get("detector", {}):
        held_out = "not a type the model was trained on (held out of its training): it cannot name it"
        assert said == [None, None, None, held_out]  # overall, crack, hole, stain
    else:
        assert said == [None] * 4


def test_a_blank_mask_is_left_out_of_the_pixel_metrics_and_named(dataset: Dataset) -> None:
    # c1's mask blanked: its defect pixels would count as normal ones. The figures must be those of
    # the same data with c1 given no mask at all.
    c1 = next(item for item in dataset.items if item.path.stem == "c1")
    assert c1.mask_path is not None
    unmasked = Dataset(
        dataset.root, tuple(i._replace(mask_path=None) if i is c1 else i for i in dataset.items)
    )
    without = evaluate(FakePredictor(), unmasked).metrics
    cv2.imwrite(str(c1.mask_path), np.zeros((8, 8), np.uint8))
    blank = evaluate(FakePredictor(), dataset).metrics
    assert blank["empty_masks"] == ["ground_truth/crack/c1_mask.png"]
    assert blank["counts"]["empty_masks"] == 1
    assert blank["counts"]["with_mask"] == without["counts"]["with_mask"] == 2
    for block in ("pixel_auroc", "pro"):
        assert blank[block] == without[block]
        assert blank["per_type"]["crack"][block] == without["per_type"]["crack"][block]
    assert blank["pixel_auroc"] != EXPECTED["pixel_auroc"]  # c1's pixels did count before


@pytest.mark.parametrize(
    ("dtype", "high", "colour"),
    [
        (np.uint8, 1, False),  # a 0/1 label map
        (np.uint16, 1, False),  # 16-bit: an 8-bit grayscale read scaled these to 0, every mask blank
        (np.uint16, 255, False),
        (np.uint16, 65535, False),
        (np.uint8, 255, True),  # a colour mask drawn in green (cv2 writes BGR)
    ],
    ids=["8bit-0-1", "16bit-0-1", "16bit-0-255", "16bit-0-65535", "colour-green"],
)
def test_masks_mark_the_same_defect_however_they_are_stored(
    dataset: Dataset, dtype: type, high: int, colour: bool
) -> None:
    """Any nonzero pixel is defect, as training reads masks: the figures are those of 0/255 8-bit masks."""
    expected = evaluate(FakePredictor(), dataset).metrics
    for item in dataset.items:
        if item.mask_path is not None:
            mask = (cv2.imread(str(item.mask_path), cv2.IMREAD_UNCHANGED) != 0).astype(dtype) * dtype(high)
            cv2.imwrite(str(item.mask_path), np.dstack([0 * mask, mask, 0 * mask]) if colour else mask)
    metrics = evaluate(FakePredictor(), dataset).metrics
    assert metrics["empty_masks"] == []
    for block in ("pixel_auroc", "pro"):
        assert metrics[block] == expected[block] is not None
        for kind in ("crack", "hole"):
            assert metrics["per_type"][kind][block] == expected["per_type"][kind][block]


@pytest.mark.parametrize(
    ("predictor", "error"),
    [
        (FakePredictor(nan_at=204 / 255), "a non-finite score (nan)"),
        # a finite score with a NaN in its map: the pixel histograms failed with "'list' argument
        # must have no negative elements", and no figure came out
        (FakePredictor(nan_map_at=204 / 255), "an anomaly map with 1 non-finite value(s)"),
    ],
)
def test_a_non_finite_output_is_named_and_the_rest_evaluated(
    dataset: Dataset, predictor: FakePredictor, error: str
) -> None:
    whole = evaluate(FakePredictor(), dataset).metrics
    result = evaluate(predictor, dataset)  # c1, a crack with a mask, is the broken one
    c1 = next(r for r in result.records if r.path.endswith("c1.png"))
    assert c1.score is None and c1.error == f"model fake-0001 gave {error} for this image"
    counts = result.metrics["counts"]
    assert counts["failed"] == 2  # with the unreadable image
    assert counts["non_finite"] == 1
    assert counts["anomalous"] == 3 and result.metrics["image_auroc"] is not None
    # c1's mask never reached the pixel metrics, so it is not counted as resting under them
    assert counts["with_mask"] == whole["counts"]["with_mask"] - 1
    crack = result.metrics["per_type"]["crack"]["counts"]["with_mask"]
    assert crack == whole["per_type"]["crack"]["counts"]["with_mask"] - 1
    assert result.metrics["pixel_auroc"] is not None


def test_gallery_keeps_the_worst(dataset: Dataset) -> None:
    result = evaluate(FakePredictor(), dataset, batch_size=4, gallery_size=2)
    assert [g.record.path for g in result.worst_misses] == ["test/crack/c2.png", "test/stain/s1.png"]
    assert [g.record.path for g in result.worst_false_alarms] == ["test/good/g3.png", "test/good/g2.png"]
    miss = result.worst_misses[0]
    assert miss.image.shape == (8, 8, 3) and miss.anomaly_map.shape == (8, 8)
    assert miss.mask is not None and int(miss.mask.sum()) == 4
    assert result.worst_misses[1].mask is None


def test_write_outputs(dataset: Dataset, tmp_path: Path) -> None:
    result: EvaluationResult = evaluate(FakePredictor(), dataset, batch_size=16)
    metrics_path, scores_path = write_outputs(result, tmp_path / "report")
    assert json.loads(metrics_path.read_text(encoding="utf-8")) == result.metrics
    with scores_path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == [
        "path", "label", "type", "score", "predicted_label", "predicted_type", "error", "image_kind",
        "one_class_log_odds", "type_head_log_odds", "patch_head_log_odds",
    ]  # fmt: skip
    by_path = {row[0]: row for row in rows[1:]}
    assert len(rows) == 10
    assert by_path["test/crack/c1.png"] == [
        "test/crack/c1.png",
        "anomalous",
        "crack",
        repr(float(np.float32(204) / np.float32(255))),  # full precision, as scored
        "anomalous",
        "hole",
        "",
        "grayscale",
        "",
        "",
        "",
    ]
    assert by_path["test/good/g1.png"] == [
        "test/good/g1.png", "good", "good", repr(float(np.float32(51) / np.float32(255))), "good", "", "",
        "grayscale", "", "", "",
    ]  # fmt: skip
    assert by_path["test/good/g2.png"][7] == "colour"
    broken = by_path["test/good/broken.png"]
    assert broken[:6] == ["test/good/broken.png", "good", "good", "", "", ""]
    assert "broken.png" in broken[6]
    assert broken[7] == ""  # no kind for a picture that could not be read


def test_outputs_that_cannot_be_written_leave_the_earlier_ones_whole(
    dataset: Dataset, tmp_path: Path
) -> None:
    """A path that is not UTF-8 (bytes read back as surrogates) could not be encoded: metrics.json
    had been replaced and scores.csv was cut off at its row."""
    result: EvaluationResult = evaluate(FakePredictor(), dataset, batch_size=16)
    result.records[-1] = result.records[-1]._replace(path="test/good/bad\udcff.png")
    out = tmp_path / "report"
    out.mkdir()
    for name in ("metrics.json", "scores.csv"):
        (out / name).write_text(f"earlier {name}\n", encoding="utf-8")
    with pytest.raises(UnicodeEncodeError):
        write_outputs(result, out)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "scores.csv"]
    assert [(out / n).read_text(encoding="utf-8") for n in ("metrics.json", "scores.csv")] == [
        "earlier metrics.json\n",
        "earlier scores.csv\n",
    ]


def test_a_link_that_loops_is_an_unreadable_image_left_out(tmp_path: Path) -> None:
    """test/good/loop.png -> loop.png stopped the evaluation ("unexpected OSError: [Errno 40]", then
    RuntimeError from Path.resolve), where a dangling link is left out and counted."""
    root = write_dataset(tmp_path / "ore").root
    os.symlink("loop.png", root / "test" / "good" / "loop.png")
    result = evaluate(FakePredictor(), read_mvtec(root))
    loop = next(r for r in result.records if r.path == "test/good/loop.png")
    assert loop.score is None
    assert (
        loop.error
        == f"{root.resolve()}/test/good/loop.png: cannot read file (Too many levels of symbolic links)"
    )
    assert result.metrics["counts"]["failed"] == 1


def test_each_signal_alone(dataset: Dataset, tmp_path: Path) -> None:
    result = evaluate(FakePredictor(signals=True), dataset)
    per_signal = result.metrics["per_signal"]
    # only the signals the model reports; the one-class signal ranks every pair the other way round
    assert set(per_signal) == {"one_class", "patch_head"}
    assert per_signal["patch_head"]["image_auroc"] == pytest.approx(14.5 / 16)
    assert per_signal["one_class"]["image_auroc"] == pytest.approx(1.5 / 16)
    for block in per_signal.values():
        low, high = block["image_auroc_interval"]
        assert low <= block["image_auroc"] <= high and block["images"] == 8
    _, scores_path = write_outputs(result, tmp_path / "report")
    with scores_path.open(newline="", encoding="utf-8") as fh:
        row = next(r for r in csv.DictReader(fh) if r["path"] == "test/crack/c1.png")
    assert (row["one_class_log_odds"], row["type_head_log_odds"], row["patch_head_log_odds"]) == (
        "-0.8000",
        "",
        "1.6000",
    )


def test_only_good_images_give_reasons_not_crashes(tmp_path: Path) -> None:
    ds = write_dataset(tmp_path / "ore")
    good_only = Dataset(ds.root, tuple(i for i in ds.items if i.label == GOOD))
    metrics = evaluate(FakePredictor(), good_only).metrics
    assert metrics["image_auroc"] is None
    assert metrics["release_rate"] == 0.75
    assert metrics["undefined"] == {
        "miss_rate": "no anomalous images",
        "image_auroc": "only good images (4); the metric needs anomalous ones too",
        "image_aupr": "only good images (4); the metric needs anomalous ones too",
        "tnr_at_fnr_1pct": "only good images (4); the metric needs anomalous ones too",
        "detection_rate_at_fpr_1pct": "only good images (4); the metric needs anomalous ones too",
        "pixel_auroc": "no ground-truth masks for these anomalous images",
        "pro": "no ground-truth masks for these anomalous images",
    }
    assert metrics["per_type"] == {}


FAILURES = [
    # id, predictor, dataset filter, error type, message fragment
    (
        "model_raises",
        FakePredictor(fail=True),
        "test",
        ModelError,
        "model fake-0001 failed on the batch starting at",
    ),
    (
        "wrong_count",
        FakePredictor(drop_one=True),
        "test",
        ModelError,
        "model fake-0001 returned 7 predictions for 8 images",
    ),
    ("no_test_split", FakePredictor(), "train", DatasetFormatError, "has no test images"),
]


@pytest.mark.parametrize(
    ("predictor", "split", "error", "fragment"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES]
)
def test_failures_are_typed(
    tmp_path: Path, predictor: FakePredictor, split: str, error: type[Exception], fragment: str
) -> None:
    ds = write_dataset(tmp_path / "ore")
    subset = Dataset(ds.root, tuple(i for i in ds.items if i.split == split))
    with pytest.raises(error, match=fragment):
        evaluate(predictor, subset, batch_size=8)


@pytest.mark.parametrize("contents", [[b""], [b"", b"not a picture", b"\x89PNG\r\n\x1a\n truncated"]])
def test_no_readable_test_image_is_refused_not_reported(tmp_path: Path, contents: list[bytes]) -> None:
    """Every test image unreadable gave an all-n/a result, which the CLI wrote as a report and passed."""
    ds = write_dataset(tmp_path / "ore")
    tests = [i for i in ds.items if i.split == "test"][: len(contents)]
    for item, content in zip(tests, contents, strict=True):
        item.path.write_bytes(content)
    predictor = FakePredictor()
    with pytest.raises(DatasetFormatError) as info:
        evaluate(predictor, Dataset(ds.root, tuple(tests)), batch_size=2)
    first = tests[0].path
    assert str(info.value) == (
        f"no test image could be read ({len(contents)} unreadable, e.g. {first}: empty file (0 bytes))"
    )
    assert predictor.batches == []


@pytest.mark.parametrize(
    ("card", "method", "bound", "n"),
    [
        ({"validation": {"n_anomalous": 6}}, "miss_rate_on_validation", 1 / 7, 6),
        ({"validation": {"n_anomalous": 6}}, "normal_bound_few_anomalies", 1 / 7, 6),
        # a card that records its cut's rule: two misses allowed of 300
        ({"validation": {"n_anomalous": 300, "misses_allowed": 2}}, "miss_rate_on_validation", 3 / 301, 300),
        # a card written before the rule was recorded allowed floor(0.01 * n) misses
        ({"validation": {"n_anomalous": 300}}, "miss_rate_on_validation", 4 / 301, 300),
        ({"validation": {"n_anomalous": 150}}, "miss_rate_on_validation", 2 / 151, 150),
        ({"validation": {"n_anomalous": 150, "misses_allowed": 0}}, "miss_rate_on_validation", 1 / 151, 150),
        # a nonsense rule is not believed: the old one is assumed
        (
            {"validation": {"n_anomalous": 150, "misses_allowed": 150}},
            "miss_rate_on_validation",
            2 / 151,
            150,
        ),
        # pseudo-anomalies were counted, but the cut came from clean images only
        ({"validation": {"n_anomalous": 6}}, "normal_quantile_fallback", None, 0),
        ({}, "miss_rate_on_validation", None, 0),  # a card that does not count them
    ],
)
def test_threshold_promise_from_the_card(
    card: dict[str, Any], method: str, bound: float | None, n: int
) -> None:
    promise = threshold_promise(card, Thresholds(0.3, 0.6, 0.01, method))
    assert promise["miss_rate_bound"] == pytest.approx(bound)
    assert promise["validation_anomalies"] == n
    assert promise["anomalies_for_target"] == 99
