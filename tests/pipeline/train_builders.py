"""Tiny training data for CLI tests of `clearsight train`."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_noise_normals(category: Path, count: int, *, side: int = 32) -> Path:
    """Write ``count`` random-pixel colour PNGs under ``category/train/good``; returns ``category``.

    Noise trains as fast as anything does and needs no generator: enough for tests of what the command
    prints and writes, not of what the model learns."""
    rng = np.random.default_rng(0)
    good = category / "train" / "good"
    good.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        cv2.imwrite(str(good / f"{i}.png"), (rng.random((side, side, 3)) * 255).astype(np.uint8))
    return category
