"""How much of the training images' own resolution reaches the model, and a warning when too little.

A view (the whole image, or a tile) is resized to the model input, so an image rendered or captured
larger than the input loses the fine detail that thin defects live in. On synthetic vacuum packs
rendered at 512 px (development seeds 11 and 12, the same files each time), image AUROC rose
0.804 -> 0.860 and 0.737 -> 0.772 when the model saw them at 512 px instead of downscaled to 256 px;
open and wrinkled seals, the thinnest defects, gained most (0.58 -> 0.83, 0.60 -> 0.82 on seed 11).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from models.tiling import TilingConfig, view_downscale

__all__ = ["MAX_IMAGE_SIZE", "WARN_DOWNSCALE", "source_resolution"]

MAX_IMAGE_SIZE = 1024
"""The largest model input ``TrainConfig`` accepts; beyond it only tiling keeps the pixels."""

WARN_DOWNSCALE = 1.5
"""Median downscale at or above which training warns: a 2 px seal gap becomes about 1 px or less."""


def source_resolution(
    shapes: Sequence[tuple[int, int]], *, size: int, tiling: TilingConfig
) -> dict[str, Any]:
    """The model card's summary of the training images' sizes against the model input.

    Args:
        shapes: (height, width) of each training image.
        size: the model input side in pixels.
        tiling: the model's tiling.

    Returns:
        ``longest_side_px`` (min, median, max over the images), ``downscale`` (median image pixels
        per input pixel along a view's longer side), and ``warning`` (text, or None below
        :data:`WARN_DOWNSCALE`).
    """
    if not shapes:
        raise ValueError("source_resolution needs at least one image shape")
    sides = np.array([max(h, w) for h, w in shapes])
    factor = float(np.median([view_downscale(h, w, size=size, tiling=tiling) for h, w in shapes]))
    warning = None
    if factor >= WARN_DOWNSCALE:
        native = math.ceil(size * factor / 32) * 32
        larger = f"--image-size {native} or " if native <= MAX_IMAGE_SIZE else ""
        warning = (
            f"the training images ({int(np.median(sides))} px, median longer side) are shrunk "
            f"{factor:.1f}x to the {size} px model input, so defects a few pixels wide may vanish; "
            f"keep their pixels with {larger}--tile-size {size} (about {factor * factor:.0f}x the compute)"
        )
    return {
        "longest_side_px": {
            "min": int(sides.min()),
            "median": int(np.median(sides)),
            "max": int(sides.max()),
        },
        "downscale": round(factor, 3),
        "warning": warning,
    }
