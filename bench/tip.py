"""Object cut-outs for threat-image projection, from public-domain photographs shipped by scikit-image.

Each source's licence is taken from its ``skimage.data`` docstring (scikit-image 0.26):

================  ===========================================================================
``coins``         "No known copyright restrictions." (Greek coins, Walters Art Museum)
``coffee``        "No copyright restrictions. CC0 by the photographer (Rachel Michetti)."
``chelsea``       "No copyright restrictions. CC0 by the photographer (Stefan van der Walt)."
``astronaut``     "No known copyright restrictions, released into the public domain." (NASA)
``rocket``        "captured by SpaceX and released in the public domain"
================  ===========================================================================

What they stand for on an ore belt: coins = scrap metal, the coffee cup = ceramic/household waste,
the helmet = a plastic object, the rocket = a metal pipe/rod, the cat's face = organic material.
Masks are simple on purpose (Otsu threshold, ellipses, a brightness threshold in a box), with a soft
edge, so that the cut-outs are reproducible without hand-drawn annotations.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage import data as skdata

from datasets.tip import ObjectPatch

__all__ = ["object_library"]

_FEATHER_SIGMA = 1.5  # px: soft alpha edge, so a pasted object has no one-pixel halo


def _soften(mask: np.ndarray) -> np.ndarray:
    """(h, w) bool -> (h, w) float32 alpha in [0, 1] with a slightly blurred edge."""
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), _FEATHER_SIGMA)
    return np.clip(alpha, 0.0, 1.0)


def _crop(name: str, rgb: np.ndarray, mask: np.ndarray) -> ObjectPatch:
    """Crop to the mask's bounding box plus a small margin for the soft edge."""
    ys, xs = np.nonzero(mask)
    pad = 3
    y0, y1 = max(0, ys.min() - pad), min(mask.shape[0], ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(mask.shape[1], xs.max() + pad + 1)
    alpha = _soften(mask)[y0:y1, x0:x1]
    return ObjectPatch(name=name, rgb=np.ascontiguousarray(rgb[y0:y1, x0:x1]), alpha=alpha)


def _ellipse(shape: tuple[int, int], center: tuple[int, int], axes: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=np.uint8)
    cv2.ellipse(mask, center, axes, 0.0, 0.0, 360.0, 1, thickness=-1)
    return mask.astype(bool)


def _coins(count: int) -> list[ObjectPatch]:
    """The ``count`` largest coins: Otsu threshold, then connected components."""
    gray = skdata.coins()
    smooth = cv2.GaussianBlur(gray, (0, 0), 2.0)
    _, binary = cv2.threshold(smooth, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    binary = cv2.morphologyEx(binary, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(binary)
    width, height = stats[:, cv2.CC_STAT_WIDTH], stats[:, cv2.CC_STAT_HEIGHT]
    # Coins are round: drop the background label and blobs of merged coins along the border.
    round_ = (np.minimum(width, height) / np.maximum(width, height) > 0.75) & (np.arange(n_labels) > 0)
    candidates = np.flatnonzero(round_)
    order = candidates[np.argsort(-stats[candidates, cv2.CC_STAT_AREA], kind="stable")][:count]
    rgb = np.repeat(gray[..., None], 3, axis=2)
    patches = []
    for rank, label in enumerate(order):
        mask = labels == label
        # Fill holes so that dark engravings inside a coin stay part of it.
        filled = mask.astype(np.uint8)
        contours, _ = cv2.findContours(filled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(filled, contours, -1, 1, thickness=-1)
        patches.append(_crop(f"coin-{rank}", rgb, filled.astype(bool)))
    return patches


def _rocket() -> ObjectPatch:
    """The white rocket body: bright pixels inside a box around it (dark night sky behind)."""
    rgb = skdata.rocket()
    box = np.zeros(rgb.shape[:2], dtype=bool)
    box[120:380, 305:341] = True
    luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    mask = box & (luma > 110)
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8)).astype(bool)
    return _crop("rocket", rgb, mask)


def object_library(*, coins: int = 6) -> list[ObjectPatch]:
    """All cut-outs: ``coins`` coins, the coffee cup on its saucer, the cup alone, the astronaut's
    helmet, the cat's face and the rocket.

    Returns:
        ObjectPatch list, fixed order, deterministic (no randomness in the masks).
    """
    coffee = skdata.coffee()  # (400, 600, 3)
    chelsea = skdata.chelsea()  # (300, 451, 3)
    astronaut = skdata.astronaut()  # (512, 512, 3)
    return [
        *_coins(coins),
        _crop("coffee-saucer", coffee, _ellipse(coffee.shape[:2], (258, 230), (220, 163))),
        _crop("coffee-cup", coffee, _ellipse(coffee.shape[:2], (290, 130), (120, 112))),
        _crop("helmet", astronaut, _ellipse(astronaut.shape[:2], (398, 449), (112, 112))),
        _crop("cat-face", chelsea, _ellipse(chelsea.shape[:2], (211, 150), (187, 150))),
        _rocket(),
    ]
