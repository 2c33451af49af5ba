"""The release and hold thresholds on the validation split's fused scores (step 5), the figures
they are judged by, and the validation anomaly the release cut sits under."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from datasets.errors import DatasetFormatError
from models.inference import Thresholds
from models.threshold import allowed_misses, pick_thresholds
from pipeline.metrics import MetricValue, image_auroc, tnr_at_fnr
from pipeline.train.calibration import FEW_NORMALS
from pipeline.train.config import TrainConfig


class Cut(NamedTuple):
    """The thresholds and the validation figures at them.

    Attributes:
        thresholds: release and hold.
        normal_scores, anomalous_scores: the validation normals' and anomalies' fused scores.
        auroc: image AUROC on the validation split; tnr: its true-negative rate at the target
            miss rate.
    """

    thresholds: Thresholds
    normal_scores: np.ndarray
    anomalous_scores: np.ndarray
    auroc: MetricValue
    tnr: MetricValue


def place_thresholds(scores: np.ndarray, y_val: np.ndarray, config: TrainConfig, *, val_pseudo: bool) -> Cut:
    """Thresholds at the target miss rate on the labelled validation anomalies (on the normals
    alone where they are pseudo-anomalies).

    Raises:
        DatasetFormatError: the validation split's scores cannot place a threshold (all equal:
            normals that are copies of one another, say), or place one that releases everything
            (:func:`_refuse_releasing_everything`).
    """
    normal_scores, anomalous_scores = scores[y_val == 0], scores[y_val == 1]
    try:
        thresholds = pick_thresholds(
            normal_scores,
            None if val_pseudo else anomalous_scores,
            target_miss_rate=config.target_miss_rate,
            hold_false_alarm_rate=config.hold_false_alarm_rate,
        )
    except ValueError as exc:
        # the scores come from the user's data, so the data is what to look at, not the code
        raise DatasetFormatError(
            f"cannot place the thresholds on the validation split ({normal_scores.size} normal, "
            f"{0 if val_pseudo else anomalous_scores.size} labelled anomalous images): {exc}. Check that "
            "its images are not copies of one another; hold out more of them (--val-fraction) or add "
            "labelled anomalies (train/<type>)"
        ) from exc
    _refuse_releasing_everything(thresholds, anomalous_scores, val_pseudo=val_pseudo)
    labels = y_val.astype(bool)
    auroc = image_auroc(scores, labels)
    tnr = tnr_at_fnr(scores, labels, config.target_miss_rate)
    return Cut(thresholds, normal_scores, anomalous_scores, auroc, tnr)


def _refuse_releasing_everything(
    thresholds: Thresholds, anomalous_scores: np.ndarray, *, val_pseudo: bool
) -> None:
    """Refuse a release cut at the top of the score scale, or one under which every validation
    anomaly (pseudo-anomalies included) scores: such a model releases all anomalous cargo.

    The fallback cut is the normals' 99.5th percentile plus a margin, capped at 1. Trained on 2
    normals (4 in train/good at --val-fraction 0.5, as training once advised), the one-class spread
    was raised to its floor, the validation normals scored 1.0 and so did the cut: training
    exited 0 with a model that released 100 % of the test anomalies. Lowering the cut instead would
    place it on nothing the data supports (the minimum-score bug of models.threshold), so refuse.

    Raises:
        DatasetFormatError: naming the cut, the share of anomalies it releases and what to add.
    """
    n_anomalous = anomalous_scores.size
    released = int(np.count_nonzero(anomalous_scores < thresholds.release))
    if thresholds.release < 1.0 and (n_anomalous == 0 or released < n_anomalous):
        return
    kind = "pseudo-anomalies (made from validation normals)" if val_pseudo else "labelled anomalies"
    where = (
        "at the top of the score scale, so every image scores below it"
        if thresholds.release >= 1.0
        else "above every validation anomaly's score"
    )
    raise DatasetFormatError(
        f"the release threshold {thresholds.release:.3f} ({thresholds.method}) is {where}: it releases "
        f"{released} of the {n_anomalous} validation {kind}, and the model would release all anomalous "
        "cargo. The training normals are too few or too alike to tell a normal score from an anomalous "
        f"one: add normal images to train/good ({FEW_NORMALS} or more left for training), or add "
        "labelled anomalies (train/<type>)"
    )


def release_setter(
    root: Path, paths: list[Path], anomalous: np.ndarray, normal: np.ndarray, target_miss_rate: float
) -> dict[str, Any]:
    """The validation anomaly the release cut sits under: its path (relative to ``root``, resolved as
    ``paths`` are), score, and the share of clean validation images scoring at or above it. A cut
    that releases little clean cargo is set by one image, often mislabelled or a defect nobody could
    see; training names it, as validation images appear in no report."""
    order = np.argsort(anomalous, kind="stable")
    n = int(order[allowed_misses(target_miss_rate, anomalous.size)])
    score = float(anomalous[n])
    path = paths[n]
    return {
        "path": str(path.relative_to(root)) if path.is_relative_to(root) else str(path),
        "score": score,
        "clean_at_or_above": float(np.mean(normal >= score)),
    }
