"""Threat-image projection (TIP): paste photographed objects into clean cargo photographs.

Cargo image systems are tested by inserting real objects into real clean images (Rogers et al.,
"Automated X-ray image analysis for cargo security", 2017); it is how labelled anomalies are made on
real backgrounds. :func:`project` pastes one :class:`ObjectPatch` (an RGB cut-out with an alpha mask)
at a random scale, rotation and position, roughly matching the object's brightness to the spot it
lands on, and returns the new image with the pasted object's mask as ground truth.

Only compositing lives here; where object cut-outs come from (e.g. public-domain photographs) is the
caller's business.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

from datasets.errors import InputError

__all__ = ["ObjectPatch", "Projection", "TipConfig", "project"]


class ObjectPatch(NamedTuple):
    """An object cut out of a photograph.

    Attributes:
        name: what the object is, for reports (e.g. ``"coin-3"``).
        rgb: (h, w, 3) uint8 RGB pixels.
        alpha: (h, w) float32 in [0, 1]; 1 inside the object, soft at its edge, 0 outside.
    """

    name: str
    rgb: np.ndarray
    alpha: np.ndarray


class Projection(NamedTuple):
    """A background with one object pasted in.

    Attributes:
        image: (H, W, 3) uint8 RGB, the background's size.
        mask: (H, W) bool, True where the pasted object's alpha is at least 0.5.
        box: (x0, y0, x1, y1) pixel box of the pasted object's footprint, exclusive end.
        scale: the object's longest side after pasting, as a fraction of ``min(H, W)``.
        angle_deg: the rotation applied, degrees counter-clockwise.
    """

    image: np.ndarray
    mask: np.ndarray
    box: tuple[int, int, int, int]
    scale: float
    angle_deg: float


@dataclass(frozen=True)
class TipConfig:
    """How objects are placed.

    Attributes:
        scale_range: the pasted object's longest side as a fraction of the background's shorter side,
            drawn uniformly from this (low, high) range; 0 < low <= high <= 1.
        max_rotation_deg: rotation drawn uniformly from [-max, +max] degrees.
        brightness_match: 0 keeps the object's own brightness, 1 scales its mean luminance to that of
            the spot it covers; in between moves part of the way (geometric interpolation).
        max_gain: the brightness gain is clipped to [1 / max_gain, max_gain] so that a dark object on a
            bright belt is not washed out into a grey blob.
    """

    scale_range: tuple[float, float] = (0.15, 0.35)
    max_rotation_deg: float = 180.0
    brightness_match: float = 0.5
    max_gain: float = 2.0

    def __post_init__(self) -> None:
        low, high = self.scale_range
        if not 0.0 < low <= high <= 1.0:
            raise InputError(f"scale_range must satisfy 0 < low <= high <= 1, got {self.scale_range!r}")
        if not 0.0 <= self.max_rotation_deg <= 180.0:
            raise InputError(f"max_rotation_deg must be in [0, 180], got {self.max_rotation_deg!r}")
        if not 0.0 <= self.brightness_match <= 1.0:
            raise InputError(f"brightness_match must be in [0, 1], got {self.brightness_match!r}")
        if self.max_gain < 1.0:
            raise InputError(f"max_gain must be >= 1, got {self.max_gain!r}")


_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _check_inputs(background: np.ndarray, patch: ObjectPatch) -> None:
    if background.dtype != np.uint8 or background.ndim != 3 or background.shape[2] != 3:
        raise InputError(
            f"background must be an (H, W, 3) uint8 RGB array, "
            f"got shape {background.shape} {background.dtype}"
        )
    rgb, alpha = patch.rgb, patch.alpha
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"object {patch.name!r}: rgb must be (h, w, 3) uint8, got {rgb.shape} {rgb.dtype}")
    if alpha.shape != rgb.shape[:2]:
        raise InputError(
            f"object {patch.name!r}: alpha shape {alpha.shape} does not match rgb {rgb.shape[:2]}"
        )
    if not np.any(alpha >= 0.5):
        raise InputError(f"object {patch.name!r}: alpha has no pixel >= 0.5; nothing to paste")


def project(
    background: np.ndarray,
    patch: ObjectPatch,
    *,
    rng: np.random.Generator,
    config: TipConfig | None = None,
) -> Projection:
    """Paste ``patch`` into a copy of ``background`` at a random scale, rotation and position.

    Args:
        background: (H, W, 3) uint8 RGB clean image; not modified.
        patch: the object to paste.
        rng: source of the random placement (pass a seeded generator for reproducible benchmarks).
        config: placement ranges; defaults to :class:`TipConfig()`.

    Returns:
        The composited image, the object's mask and placement. The object always lies wholly inside
        the image: if its rotated footprint would not fit, it is shrunk until it does.

    Raises:
        InputError: a background or patch of the wrong shape or dtype, or an empty alpha.
    """
    cfg = config or TipConfig()
    _check_inputs(background, patch)
    height, width = background.shape[:2]
    obj_h, obj_w = patch.alpha.shape

    scale = float(rng.uniform(*cfg.scale_range))
    angle = float(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg))
    factor = scale * min(height, width) / max(obj_h, obj_w)
    cos, sin = abs(math.cos(math.radians(angle))), abs(math.sin(math.radians(angle)))
    out_w = obj_w * factor * cos + obj_h * factor * sin
    out_h = obj_w * factor * sin + obj_h * factor * cos
    # Shrink (rarely) so that the rotated footprint fits inside the background.
    shrink = min(1.0, (width - 1) / out_w, (height - 1) / out_h)
    factor, out_w, out_h = factor * shrink, out_w * shrink, out_h * shrink
    box_w, box_h = max(1, math.ceil(out_w)), max(1, math.ceil(out_h))

    # OpenCV puts pixel centres at integer coordinates, so an image's centre is at (size - 1) / 2.
    matrix = cv2.getRotationMatrix2D(((obj_w - 1) / 2.0, (obj_h - 1) / 2.0), angle, factor)
    matrix[0, 2] += (box_w - obj_w) / 2.0
    matrix[1, 2] += (box_h - obj_h) / 2.0
    # Colours are edge-replicated, not padded with black: the soft alpha edge then fades the object's
    # own colour into the background instead of drawing a dark halo.
    rgb = cv2.warpAffine(
        patch.rgb, matrix, (box_w, box_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    ).astype(np.float32)
    alpha = cv2.warpAffine(
        patch.alpha.astype(np.float32),
        matrix,
        (box_w, box_h),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )
    alpha = np.clip(alpha, 0.0, 1.0)

    x0 = int(rng.integers(0, width - box_w + 1))
    y0 = int(rng.integers(0, height - box_h + 1))
    region = background[y0 : y0 + box_h, x0 : x0 + box_w].astype(np.float32)

    weight = float(alpha.sum())
    if weight > 0.0 and cfg.brightness_match > 0.0:
        obj_luma = float((rgb @ _LUMA * alpha).sum() / weight)
        bg_luma = float((region @ _LUMA * alpha).sum() / weight)
        gain = (max(bg_luma, 1.0) / max(obj_luma, 1.0)) ** cfg.brightness_match
        rgb = rgb * float(np.clip(gain, 1.0 / cfg.max_gain, cfg.max_gain))

    blended = alpha[..., None] * rgb + (1.0 - alpha[..., None]) * region
    image = background.copy()
    image[y0 : y0 + box_h, x0 : x0 + box_w] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    mask = np.zeros((height, width), dtype=bool)
    mask[y0 : y0 + box_h, x0 : x0 + box_w] = alpha >= 0.5
    return Projection(
        image=image,
        mask=mask,
        box=(x0, y0, x0 + box_w, y0 + box_h),
        scale=scale * shrink,
        angle_deg=angle,
    )
