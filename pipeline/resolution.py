"""How much of the training images' own resolution reaches the model, and a warning when too little.

A view (the whole image, or a tile) is resized to the model input, so an image captured larger than
the input loses the fine detail that thin defects live in. Keeping the pixels is no free cure
though: at a larger input (or in tiles) each patch sees less of the image around it. On synthetic
vacuum packs rendered at 512 px, a 512 px input instead of a downscaled 256 px one moved image
AUROC 0.804 -> 0.860 and 0.737 -> 0.772 on development seeds 11 and 12 (open and wrinkled seals
0.58 -> 0.83 and 0.60 -> 0.82 on seed 11), but 0.841 -> 0.725 on fresh seed 6262, where slack-film
air pockets, the largest defects, fell 0.997 -> 0.602. So training says what it costs and names the
remedies, and the user measures them on their own images.

Scoring checks the other side: an image whose content reaches the model at a very different scale
from the training images' along its height or its width (``Prediction.scale_vs_training``, the one
of the two that is farther off, outside [1/:data:`SCALE_TOLERANCE`, :data:`SCALE_TOLERANCE`]) has a
score that validation never vouched for, so ``clearsight score`` warns and the decision layer never
releases it on that score (``fail_closed.off_training_scale``). Both sides count because every view
is resized to a square: a 64 x 3 strip reaches a model trained on 64 px squares at their scale
along its width and 21x enlarged along its height.

One rule decides what the training scale is, in training and in scoring: the median training view
along its shorter and its longer side (``downscale_short_long``), shorter side against shorter and
longer against longer, so that landscape and portrait images of one resolution are at one scale.
Training refuses images more than :data:`SCALE_TOLERANCE` off it (:func:`off_scale_images`),
naming them, and scoring flags them. Each side of a view is also compared with the span of scales
the training views had along it (``downscale_hw_range``): a model trained on landscape images alone
never saw one turned on its side. The span alone was the rule before, and it is only as good as its
ends: one training image 2x off the others moved an end 2x, a thumbnail 4x off the others then
scored 2.0 and was released, and a model trained on 16 x 64 and 64 x 16 strips took both 16 px and
64 px squares for its training scale. Cards written before the median was recorded keep the span
rule.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, TypeGuard

import numpy as np

from models.tiling import TilingConfig, default_overlap, view_count, view_downscale, view_downscale_hw

__all__ = [
    "MAX_IMAGE_SIZE",
    "SCALE_TOLERANCE",
    "WARN_DOWNSCALE",
    "card_resolution",
    "describe_resize",
    "describe_scale",
    "off_scale_images",
    "off_training_scale",
    "source_resolution",
]

MAX_IMAGE_SIZE = 1024
"""The largest model input ``TrainConfig`` accepts; beyond it only tiling keeps the pixels."""

WARN_DOWNSCALE = 2.0
"""Median downscale at or above which training warns: a 2 px seal gap becomes 1 px or less."""


SCALE_TOLERANCE = 2.0
"""How far (either way) an image's scale may be from the training images' before its score is not
trusted: a defect half or twice the size it had in training is a defect the model never saw."""


def off_training_scale(scale: float | None) -> TypeGuard[float]:
    """True when ``scale`` (``Prediction.scale_vs_training``: along the side of the image that is
    farther off) is more than :data:`SCALE_TOLERANCE` off 1 either way; False for ``None`` (a model
    that does not record its training scale)."""
    return scale is not None and not 1.0 / SCALE_TOLERANCE <= scale <= SCALE_TOLERANCE


def off_scale_images(
    shapes: Sequence[tuple[int, int]], *, size: int, tiling: TilingConfig
) -> list[tuple[int, float]]:
    """The training images whose views reach the model more than :data:`SCALE_TOLERANCE` off the
    others' scale, as ``(index into shapes, scale against the others)``; empty where none is.

    Each view's downscale (:func:`~models.tiling.view_downscale_hw`) is taken along its shorter and
    its longer side, and compared with the median of each over the images: a portrait image among
    landscape ones of the same resolution is at their scale, side for side. Scoring flags an image
    by this rule against the same median (the card's ``downscale_short_long``), so no image training
    took is off the training scale, and every image it would refuse is. The scale given is the
    farther off of the two ratios, image over median (above 1: shrunk more for the model than the
    others; below 1: enlarged more), the inverse of ``scale_vs_training``.

    Args:
        shapes: (height, width) of each training image.
        size: the model input side in pixels.
        tiling: the model's tiling.
    """
    if not shapes:
        return []
    sides = _view_sides(shapes, size=size, tiling=tiling)
    ratios = sides / np.median(sides, axis=0)
    off = []
    for n, (shorter, longer) in enumerate(ratios):
        farther = max(float(shorter), float(longer), key=lambda r: abs(math.log(r)))
        if off_training_scale(farther):
            off.append((n, farther))
    return off


def _view_sides(shapes: Sequence[tuple[int, int]], *, size: int, tiling: TilingConfig) -> np.ndarray:
    """Each image's view downscale along its shorter and its longer side, (N, 2): what
    :func:`off_scale_images` and the card's ``downscale_short_long`` (which scoring compares with)
    both take their median of, so that the two apply one rule."""
    return np.array([sorted(view_downscale_hw(h, w, size=size, tiling=tiling)) for h, w in shapes])


def describe_scale(scale: float) -> str:
    """``scale_vs_training`` in words, with the two readings pixel counts cannot tell apart."""
    if scale >= 1.0:
        return (
            f"resized for the model {scale:.3g}x larger than its training images were "
            "(less detail than they had, or a closer view)"
        )
    return (
        f"resized for the model {1 / scale:.3g}x smaller than its training images were "
        "(a wider view with smaller objects, or the same view at a higher resolution)"
    )


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
        per input pixel along a view's longer side), ``warning`` (text, or None below
        :data:`WARN_DOWNSCALE`), and ``downscale_hw``, the median along a view's height and along
        its width, only where that is not ``[downscale, downscale]``: square views need no more,
        and a card without it is read as square (cards written before it was recorded too).
        ``downscale_hw_range`` (``[[least, most] along the height, [least, most] along the
        width]``, rounded outwards to 6 places) and ``downscale_short_long`` (the median along a
        view's shorter and along its longer side, as :func:`off_scale_images` takes it) are recorded
        only where the views differ along a side: scoring flags an image more than
        :data:`SCALE_TOLERANCE` off that median, or off the span along a side by more than it; a
        card without them is read by the medians alone (one shape of view: span and medians are
        that view's), and a card with the span alone (written before the median was recorded) by
        the span.
    """
    if not shapes:
        raise ValueError("source_resolution needs at least one image shape")
    sides = np.array([max(h, w) for h, w in shapes])
    median_side = int(np.median(sides))
    factor = float(np.median([view_downscale(h, w, size=size, tiling=tiling) for h, w in shapes]))
    per_axis = np.array([view_downscale_hw(h, w, size=size, tiling=tiling) for h, w in shapes])
    hw = [round(float(np.median(per_axis[:, 0])), 3), round(float(np.median(per_axis[:, 1])), 3)]
    lows, highs = per_axis.min(0), per_axis.max(0)
    # rounded outwards, so that no training view falls outside it; 6 places keep a 1 px view of a
    # 1024 px input (0.000977) above 0
    span = [
        [math.floor(lo * 1e6) / 1e6, math.ceil(hi * 1e6) / 1e6] for lo, hi in zip(lows, highs, strict=True)
    ]
    warning = None
    if factor >= WARN_DOWNSCALE:
        native = math.ceil(size * factor / 32) * 32
        larger = f"--image-size {native} or " if native <= MAX_IMAGE_SIZE else ""
        # the tiles as training would cut them: overlapping by default, so their maps blend seamlessly
        tiles = TilingConfig(size, default_overlap(size))
        views = float(np.median([view_count(h, w, tiles) for h, w in shapes]))
        warning = (
            f"the training images ({median_side} px, median longer side) are shrunk "
            f"{factor:.1f}x to the {size} px model input, so defects a few pixels wide may vanish; "
            f"{larger}--tile-size {size} keeps their pixels (tiles overlapping by "
            f"{tiles.overlap} px, about {views:.0f}x the compute) but shows each patch less of its "
            "surroundings, which can cost large defects: compare with the default using "
            "`clearsight evaluate` on your own images"
        )
    summary: dict[str, Any] = {
        "longest_side_px": {
            "min": int(sides.min()),
            "median": median_side,
            "max": int(sides.max()),
        },
        "downscale": round(factor, 3),
        "warning": warning,
    }
    if hw != [summary["downscale"]] * 2:
        summary["downscale_hw"] = hw
    if (lows != highs).any():  # one shape of view: the medians say it all
        summary["downscale_hw_range"] = span
        # not rounded: scoring compares images with it as training compared its own images, and a
        # rounded median would flag an image training took (or take one training refused) at the
        # tolerance's edge
        medians = np.median(_view_sides(shapes, size=size, tiling=tiling), axis=0)
        summary["downscale_short_long"] = [float(medians[0]), float(medians[1])]
    return summary


def describe_resize(downscale: float) -> str:
    """``source_resolution``'s downscale in words: "downscaled 2x", "enlarged 1.3x", "not resized"."""
    if downscale > 1.005:
        return f"downscaled {downscale:.3g}x"
    if downscale < 0.995:
        return f"enlarged {1 / downscale:.3g}x"
    return "not resized"


def card_resolution(card: Mapping[str, Any]) -> dict[str, Any] | None:
    """The card's model input size with its ``preprocessing.source_resolution``; None for a card written
    before training recorded the training images' resolution."""
    pre = card.get("preprocessing", {})
    source = pre.get("source_resolution")
    return None if source is None else {"input_size": pre.get("input_size"), **source}
