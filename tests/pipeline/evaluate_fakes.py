"""Fakes shared by the evaluation and report tests: a predictor and a tiny MVTec-layout folder.

Imported by putting this folder on ``sys.path`` (pytest's importlib mode does not).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np

from models.inference import GOOD, Prediction, Thresholds

THRESHOLDS = Thresholds(release=0.5, hold=0.75, target_miss_rate=0.01, method="miss_rate_on_validation")

# A model card's account of its fusion (what training writes under "validation"): the type head
# switched off by its gate, the patch head kept by its own.
CARD_VALIDATION = {
    "calibration": "Platt scaling on the validation split",
    "head_in_fusion": False,
    "head_gate": "head AUROC 0.633 (least 0.9); fused 0.706, one-class 0.694 "
    "(on 36 validation and 138 out-of-fold training images)",
    "patch_head_in_fusion": True,
    "patch_head_gate": "patch head AUROC 0.858; fused 0.834 > without it 0.721 "
    "(on 36 validation and 138 out-of-fold training images)",
}


class FakePredictor:
    """Score = brightest pixel / 255; the anomaly map is the image's first channel / 255.

    Every flagged image is typed "hole", so type accuracy is computable by hand. With ``signals`` it
    reports two signals' log-odds: a one-class signal that ranks the images the other way round
    (``-score``) and a patch head that ranks them as the score does (``2 * score``).
    """

    model_id = "fake-0001"
    cargo_type = "bulk_ore"
    thresholds = THRESHOLDS
    card: Mapping[str, Any] = {}

    def __init__(
        self,
        *,
        fail: bool = False,
        drop_one: bool = False,
        signals: bool = False,
        nan_at: float | None = None,
        nan_map_at: float | None = None,
    ) -> None:
        self.batches: list[int] = []
        self.fail = fail
        self.drop_one = drop_one
        self.signals = signals
        self.nan_at = nan_at  # an image whose brightest pixel is this scores NaN (a broken model)
        self.nan_map_at = nan_map_at  # ... or gets a finite score and a map with a NaN pixel

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        self.batches.append(len(images))
        if self.fail:
            raise RuntimeError("out of memory")
        out = []
        for image in images:
            amap = np.asarray(image)[:, :, 0].astype(np.float32) / 255.0
            score = float(amap.max())
            if self.nan_at is not None and abs(score - self.nan_at) < 1e-6:
                score = float("nan")
            if self.nan_map_at is not None and abs(score - self.nan_map_at) < 1e-6:
                amap[0, 0] = np.nan
            anomalous = score >= self.thresholds.release
            out.append(
                Prediction(
                    score=score,
                    label="anomalous" if anomalous else GOOD,
                    anomaly_type="hole" if anomalous else None,
                    type_probabilities={GOOD: 1.0 - score, "hole": score},
                    anomaly_map=amap,
                    thresholds=self.thresholds,
                    model_id=self.model_id,
                    signal_log_odds={"one_class": -score, "patch_head": 2 * score} if self.signals else None,
                )
            )
        return out[:-1] if self.drop_one else out


class Item(NamedTuple):  # the shape of datasets.mvtec.DatasetItem
    path: Path
    label: str
    anomaly_type: str | None
    mask_path: Path | None
    split: str


class Dataset(NamedTuple):  # the shape of datasets.mvtec.MvtecDataset
    root: Path
    items: tuple[Item, ...]


# name, type, background, square value (2x2 at rows/cols 2-3), has mask, colour (else grayscale)
IMAGES = [
    ("g1", GOOD, 51, None, False, False),  # 0.2
    ("g2", GOOD, 102, None, False, True),  # 0.4
    ("g3", GOOD, 153, None, False, False),  # 0.6: a false alarm, in the remote-review band
    ("g4", GOOD, 25, None, False, False),  # 25/255
    ("c1", "crack", 0, 204, True, False),  # 0.8, flagged but typed "hole"
    ("c2", "crack", 0, 102, True, True),  # 0.4, missed, tied with g2
    ("h1", "hole", 0, 230, True, False),  # 230/255
    ("s1", "stain", 0, 192, False, False),  # 192/255 >= hold, no ground-truth mask
]


def write_dataset(root: Path) -> Dataset:
    (root / "train" / "good").mkdir(parents=True)
    cv2.imwrite(str(root / "train" / "good" / "t0.png"), np.full((8, 8), 40, np.uint8))
    items = [Item(root / "train" / "good" / "t0.png", GOOD, None, None, "train")]
    for name, kind, background, square, has_mask, colour in IMAGES:
        folder = root / "test" / kind
        folder.mkdir(parents=True, exist_ok=True)
        image = np.full((8, 8), background, np.uint8)
        mask = np.zeros((8, 8), np.uint8)
        if square is not None:
            image[2:4, 2:4] = square
            mask[2:4, 2:4] = 255
        path = folder / f"{name}.png"
        # a colour picture: red (what the fake scores) is the grey value, green differs (cv2 writes BGR)
        cv2.imwrite(str(path), np.dstack([image, image // 2, image]) if colour else image)
        mask_path = None
        if has_mask:
            mask_path = root / "ground_truth" / kind / f"{name}_mask.png"
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(mask_path), mask)
        label = GOOD if kind == GOOD else "anomalous"
        items.append(Item(path, label, None if kind == GOOD else kind, mask_path, "test"))
    return Dataset(root, tuple(items))
