"""The images the heads learn from and validation judges: the training normals dealt into folds,
and the anomalies on each side of the split, labelled or, where a side has none, pseudo-anomalies
pasted into its normals (recorded in the card)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from models.artifact import PSEUDO_PREFIX
from models.inference import GOOD
from models.pseudo_anomalies import PSEUDO_KINDS, make_pseudo_anomaly
from pipeline.train.data import TrainingData


class TrainingSet(NamedTuple):
    """The training side, as the out-of-fold scoring and the type head see it.

    Attributes:
        goods: the training normals, (H, W, 3) float32 RGB; fold_of_good: (N_good,) their folds.
        anomalies: the labelled training anomalies, or one pseudo-anomaly per normal where there
            are none; anomaly_types: their types; fold_of_anom: (N_anom,) their folds.
        pseudo: whether the anomalies are pseudo-anomalies.
        class_names: the type head's classes, ``"good"`` first.
    """

    goods: list[np.ndarray]
    fold_of_good: np.ndarray
    anomalies: list[np.ndarray]
    anomaly_types: list[str]
    fold_of_anom: np.ndarray
    pseudo: bool
    class_names: tuple[str, ...]


class ValidationSet(NamedTuple):
    """The validation side: normals, and labelled anomalies or pseudo-anomalies made from those
    normals where it has none (``pseudo``); ``anomaly_paths`` are the labelled ones' files."""

    good: list[np.ndarray]
    anomalies: list[np.ndarray]
    anomaly_types: list[str]
    anomaly_paths: list[Path]
    pseudo: bool


def training_set(data: TrainingData, folds: int, rng: np.random.Generator) -> TrainingSet:
    """The training normals dealt into ``folds`` and the anomalies beside them (drawing on ``rng``)."""
    goods = data.train.goods
    # Fold assignment of training normals; anomalies go round-robin (pseudo ones follow their source).
    fold_of_good = rng.permutation(len(goods)) % folds
    use_pseudo = not data.train.anomalies
    if use_pseudo:
        anomalies, anomaly_types = _pseudo(goods, rng)
        fold_of_anom = fold_of_good.copy()
    else:
        anomalies = data.train.anomalies
        anomaly_types = [i.anomaly_type for i in data.train.anomaly_items]
        fold_of_anom = np.arange(len(anomalies)) % folds
    class_names = (GOOD, *sorted(set(anomaly_types)))
    return TrainingSet(goods, fold_of_good, anomalies, anomaly_types, fold_of_anom, use_pseudo, class_names)


def validation_set(data: TrainingData, rng: np.random.Generator) -> ValidationSet:
    """The validation side's images, pseudo-anomalies made (drawing on ``rng``) where it has no
    labelled anomaly."""
    val_good = data.val.goods
    val_anom = data.val.anomalies
    val_anom_types = [i.anomaly_type for i in data.val.anomaly_items]
    val_pseudo = not val_anom
    if val_pseudo:
        val_anom, val_anom_types = _pseudo(val_good, rng)
    return ValidationSet(
        val_good, val_anom, val_anom_types, [i.path for i in data.val.anomaly_items], val_pseudo
    )


def _pseudo(images: Sequence[np.ndarray], rng: np.random.Generator) -> tuple[list[np.ndarray], list[str]]:
    """One pseudo-anomaly per image, kinds cycling so each is equally represented."""
    out, kinds = [], []
    for n, img in enumerate(images):
        anomalous, _, kind = make_pseudo_anomaly(img, rng, kind=PSEUDO_KINDS[n % len(PSEUDO_KINDS)])
        out.append(anomalous)
        kinds.append(PSEUDO_PREFIX + kind)
    return out, kinds
