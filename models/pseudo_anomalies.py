"""Synthetic anomalies pasted into normal images, for training and validating without labels.

Three kinds, in the spirit of CutPaste (Li et al., CVPR 2021) and DRAEM (Zavrtanik et al., ICCV 2021):

* ``cutpaste``: a patch of the image itself, flipped/rotated and colour-jittered, pasted elsewhere
  (local texture or structure out of place: lumps, wrinkles);
* ``noise``: a smooth random texture blended into an irregular region (foreign material, slurry);
* ``blob``: an irregular region of a flat, off-palette colour (plastic, wet patch, wrong material).

Every function takes an explicit ``numpy.random.Generator``, so pseudo-anomalies are reproducible.
"""

from __future__ import annotations

import cv2
import numpy as np

from models.tiling import is_grey

__all__ = ["PSEUDO_KINDS", "host_key", "make_pseudo_anomaly", "transplant_defect"]

PSEUDO_KINDS = ("cutpaste", "noise", "blob")


def _radius_cap(side: int) -> float:
    """The largest radius of a blob that fits along ``side`` pixels with a pixel to spare."""
    return max(0.5, side / 2 - 1)


def _region_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """An irregular blob covering roughly 1-6 % of the image: (H, W) float32 in [0, 1]."""
    area = rng.uniform(0.01, 0.06) * h * w
    # Sized from the area, the blob of a wide or tall image (a 384x64 line scan) outgrows its short
    # side and no centre fits; each radius is capped to fit, which binds only from about 4:1 on, so
    # ordinary images draw the same blobs as before.
    ry = min(np.sqrt(area / np.pi) * rng.uniform(0.6, 1.6), _radius_cap(h))
    rx = min(area / (np.pi * ry), _radius_cap(w))
    cy, cx = rng.uniform(ry, h - ry), rng.uniform(rx, w - rx)
    angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
    radius = rng.uniform(0.7, 1.3, size=16)
    pts = np.stack([cx + rx * radius * np.cos(angles), cy + ry * radius * np.sin(angles)], axis=1)
    mask = np.zeros((h, w), dtype=np.uint8)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigmaX=max(0.8, min(h, w) / 200))
    return np.clip(soft, 0.0, 1.0)


def _smooth_noise(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32 smooth colour noise in [0, 1] (a few octaves of upsampled noise)."""
    out = np.zeros((h, w, 3), dtype=np.float32)
    for octave in (4, 8, 16, 32):
        small = rng.random((octave, octave, 3)).astype(np.float32)
        up = np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), dtype=np.float32)
        out += up / octave**0.5
    out -= out.min()
    return out / max(float(out.max()), 1e-6)


def make_pseudo_anomaly(
    image: np.ndarray, rng: np.random.Generator, *, kind: str | None = None
) -> tuple[np.ndarray, np.ndarray, str]:
    """Paste one synthetic anomaly into a normal image.

    Args:
        image: (H, W, 3) float32 RGB in [0, 1] (see :func:`models.tiling.to_rgb_float`).
        rng: random generator (seeded by the caller).
        kind: one of :data:`PSEUDO_KINDS`; ``None`` picks one at random.

    Returns:
        (anomalous image (H, W, 3) float32 in [0, 1], mask (H, W) bool, kind).
    """
    if kind is None:
        kind = PSEUDO_KINDS[int(rng.integers(len(PSEUDO_KINDS)))]
    if kind not in PSEUDO_KINDS:
        raise ValueError(f"pseudo-anomaly kind {kind!r} not in {PSEUDO_KINDS}")
    h, w = image.shape[:2]
    alpha = _region_mask(h, w, rng)
    if kind == "cutpaste":
        # Source patch from a random offset; flips/rotation make it look out of place.
        dy, dx = int(rng.integers(-h // 2, h // 2)), int(rng.integers(-w // 2, w // 2))
        source = np.roll(image, (dy, dx), axis=(0, 1))
        if rng.random() < 0.5:
            source = source[::-1]
        source = np.rot90(source, int(rng.integers(1, 4))) if h == w else source[:, ::-1]
        gain = rng.uniform(0.6, 1.4, size=3).astype(np.float32)
        fill = np.clip(np.ascontiguousarray(source) * gain, 0.0, 1.0)
    elif kind == "noise":
        fill = _smooth_noise(h, w, rng)
    else:
        colour = rng.random(3).astype(np.float32)
        mean = image.reshape(-1, 3).mean(0)
        # Push the colour away from the image's mean colour, so it is off-palette.
        if np.abs(colour - mean).sum() < 0.6:
            colour = 1.0 - mean
        shade = 1.0 + 0.1 * (_smooth_noise(h, w, rng)[:, :, :1] - 0.5)
        fill = np.clip(np.broadcast_to(colour, (h, w, 3)) * shade, 0.0, 1.0)
    a = alpha[:, :, None]
    out = (image * (1.0 - a) + fill.astype(np.float32) * a).astype(np.float32)
    return out, alpha > 0.5, kind


def host_key(image: np.ndarray) -> tuple[tuple[int, ...], bool]:
    """(shape, grey or not). A defect may be transplanted only between images with equal keys: the
    same size, and both grey or both colour (an X-ray's defect in a colour photo would teach its
    greyness, not the defect). One key per image keeps matching defects to many normals cheap."""
    return tuple(image.shape), is_grey(image)


def transplant_defect(
    source: np.ndarray, mask: np.ndarray, target: np.ndarray, rng: np.random.Generator, *, shift: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Move a labelled defect into another normal image: copy-paste of a real defect, not a made-up one.

    The defect's pixels and a two-pixel fringe of its surroundings (blended softly, so that no seam is
    drawn) are pasted into ``target`` at the same place, moved by up to ``shift`` of the image side
    in each direction, so that a screw on one tray is also seen on another pack, bench and light.

    Args:
        source: (H, W, 3) float32 in [0, 1], a labelled anomalous image.
        mask: (H, W) its defect mask; values > 0.5 are the defect.
        target: (H, W, 3) float32 in [0, 1], a normal image of the same size.
        rng: random generator (the shift).
        shift: largest move as a share of the image side, in [0, 1).

    Returns:
        (target with the defect pasted in (H, W, 3) float32, its defect mask (H, W) float32 in {0, 1}).

    Raises:
        ValueError: shapes that differ, or ``shift`` outside [0, 1).
    """
    if source.shape != target.shape or mask.shape != source.shape[:2]:
        raise ValueError(
            f"transplant needs images of one size and a matching mask; got source {source.shape}, "
            f"target {target.shape}, mask {mask.shape}"
        )
    if not 0.0 <= shift < 1.0:
        raise ValueError(f"transplant shift {shift} must be in [0, 1)")
    h, w = mask.shape
    defect = (mask > 0.5).astype(np.float32)
    dy, dx = (int(round(rng.uniform(-shift, shift) * side)) for side in (h, w))
    move = np.array([[1, 0, dx], [0, 1, dy]], dtype=np.float32)

    def moved(arr: np.ndarray) -> np.ndarray:
        return np.asarray(cv2.warpAffine(arr, move, (w, h), flags=cv2.INTER_NEAREST, borderValue=0))

    defect = moved(defect)
    fringe = cv2.dilate(defect, np.ones((5, 5), np.uint8))
    alpha = np.maximum(cv2.GaussianBlur(fringe, (0, 0), 1.0), defect)[:, :, None]
    out = target * (1.0 - alpha) + moved(np.ascontiguousarray(source)) * alpha
    return out.astype(np.float32), defect
