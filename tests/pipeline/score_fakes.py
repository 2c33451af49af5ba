"""Fakes shared by the batch-scorer tests (``test_score*.py``), imported by putting this folder on
``sys.path`` (pytest's importlib mode does not), and by the kill-test helper in a subprocess.

The fake predictor's score is the image's mean pixel / 255, so expected rows are computable by hand.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from models.inference import GOOD, Prediction, Thresholds

THRESHOLDS = Thresholds(release=0.5, hold=0.8, target_miss_rate=0.01, method="fixed_for_tests")
POISON = 13
"""An image whose pixels all equal this value makes :class:`FakePredictor` raise (a model error)."""


class FakePredictor:
    """Deterministic predictor: score = mean pixel / 255; raises on :data:`POISON` images.

    Attributes:
        batch_sizes: the size of every ``predict`` call, in order (to check batching and retries).
    """

    def __init__(
        self, cargo_type: str = "bulk_ore", model_id: str | None = None, *, trained_side: int | None = None
    ) -> None:
        self._cargo_type = cargo_type
        self.trained_side = trained_side  # as if trained on images of this longer side (scale_vs_training)
        self._model_id = model_id or f"fake-{cargo_type}"
        self.batch_sizes: list[int] = []
        self._lock = threading.Lock()

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def cargo_type(self) -> str:
        return self._cargo_type

    @property
    def thresholds(self) -> Thresholds:
        return THRESHOLDS

    @property
    def card(self) -> Mapping[str, Any]:
        return {"model_id": self._model_id, "cargo_type": self._cargo_type}

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        with self._lock:
            self.batch_sizes.append(len(images))
        if any(int(np.asarray(im).max()) == POISON and int(np.asarray(im).min()) == POISON for im in images):
            raise ValueError("poisoned image")
        return [self._one(np.asarray(im)) for im in images]

    def _one(self, image: np.ndarray) -> Prediction:
        score = expected_score(image)
        anomalous = score >= THRESHOLDS.release
        gray = image.reshape(image.shape[0], image.shape[1], -1).mean(axis=2)
        return Prediction(
            score=score,
            label="anomalous" if anomalous else GOOD,
            anomaly_type="foreign_object" if anomalous else None,
            type_probabilities={GOOD: 1.0 - score, "foreign_object": score},
            anomaly_map=(gray / 255.0).astype(np.float32),
            thresholds=THRESHOLDS,
            model_id=self._model_id,
            scale_vs_training=None if self.trained_side is None else self.trained_side / max(gray.shape),
        )


def expected_score(image: np.ndarray) -> float:
    """The fake's score of an image: mean pixel / 255."""
    return float(np.asarray(image, dtype=np.float64).mean() / 255.0)


def fake_factory() -> list[FakePredictor]:
    """A predictor factory (for the Ray engine): one bulk-ore and one vacuum-pack model."""
    return [FakePredictor("bulk_ore"), FakePredictor("vacuum_pack")]


def write_png(path: Path, value: int, *, size: int = 8) -> Path:
    """A flat (size, size, 3) PNG of ``value`` everywhere; its fake score is ``value / 255``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), np.full((size, size, 3), value, np.uint8)):
        raise OSError(f"could not write {path}")
    return path


def write_images(folder: Path, values: Sequence[int], *, prefix: str = "img") -> list[Path]:
    """One flat PNG per value, named ``{prefix}{index:04d}.png``."""
    return [write_png(folder / f"{prefix}{i:04d}.png", v) for i, v in enumerate(values)]


def tiny_model_dir(
    root: Path, cargo_type: str = "bulk_ore", *, seed: int = 0, trained_side: int | None = None
) -> Path:
    """A real (untrained) artifact for ``cargo_type``: a Lite0-structured detector at 32 px with
    timm's random initialisation (no weights file read) and a bank of random-image patches. With
    ``trained_side`` its card says it was trained on images of that longer side."""
    import torch

    from models.artifact import save_artifact
    from models.detector import DetectorConfig, build_detector

    torch.manual_seed(seed)
    config = DetectorConfig(
        backbone="lite0",
        input_size=32,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        proj_dim=16,
        bank_size=32,
        class_names=("good", "foreign_object"),
        chunk=32,
    )
    det = build_detector(config)
    with torch.no_grad():
        patches, _ = det.embed(torch.rand(2, 3, 32, 32) - 0.5)
        flat = patches.permute(0, 2, 3, 1).reshape(-1, patches.shape[1])
        bank = flat[torch.randperm(flat.shape[0])[:32]]
        det.bank.bank.copy_(bank)
        det.bank.bank_sq.copy_(bank.pow(2).sum(1))
        det.map_span.fill_(5.0)
        det.attn_temp.fill_(2.0)
    card = {
        "cargo_type": cargo_type,
        "preprocessing": {"tiling": {"tile_size": 0, "overlap": 0}},
        "thresholds": {"release": 0.4, "hold": 0.8, "target_miss_rate": 0.01, "method": "test"},
    }
    if trained_side is not None:
        card["preprocessing"]["source_resolution"] = {
            "longest_side_px": {"min": trained_side, "median": trained_side, "max": trained_side},
            "downscale": trained_side / config.input_size,
            "warning": None,
        }
    return save_artifact(root / cargo_type, det.eval(), card)
