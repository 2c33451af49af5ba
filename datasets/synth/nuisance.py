"""Nuisance variation that is not anomalous: camera pose, lighting, white balance, blur, noise, JPEG.

It is applied to every image after the anomaly is drawn, with parameters drawn from their own random
stream, so that normal and anomalous images share the same image statistics and no border, format or
compression detail tells them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from datasets.errors import ClearsightError
from datasets.synth.texture import random_polygon

__all__ = ["Nuisance", "jpeg_roundtrip", "photometric", "sample_nuisance", "to_gray", "warp"]


@dataclass(frozen=True)
class Nuisance:
    """One image's nuisance parameters (all drawn up front, whatever the image's label)."""

    matrix: np.ndarray  # (2, 3) affine from the render canvas to the output image
    gradient: tuple[float, float, float]  # direction angle, strength, vignette strength
    gains: tuple[float, float, float]  # white balance per RGB channel
    shadow: np.ndarray | None  # int32 (N, 2) polygon of a cast shadow in output pixels
    shadow_depth: float
    blur_sigma: float  # 0 for none
    noise_sigma: float
    jpeg_quality: int  # 0 for no JPEG round trip


def sample_nuisance(rng: np.random.Generator, size: int, canvas: int, *, lit: bool = True) -> Nuisance:
    """Draw the nuisance for an output of ``size`` px rendered on a ``canvas`` px square.

    ``lit=False`` is for a transmission X-ray: its brightness is what passes through the cargo, not
    reflected light, so a structure outside the view casts no shadow on it. The shadow is still
    drawn, so that the rest of the nuisance (and every lit image of a seed) stays the same.
    """
    angle = rng.uniform(-8, 8)
    scale = rng.uniform(0.92, 1.12)
    centre = (canvas / 2, canvas / 2)
    m = cv2.getRotationMatrix2D(centre, angle, scale)
    shift = rng.uniform(-0.03, 0.03, 2) * size
    m[:, 2] += (size / 2 - canvas / 2) + shift
    shadow = None
    if rng.uniform() < 0.2:
        # A structure (gantry, crane, person) outside the view casts a soft shadow across it.
        corner = rng.uniform(0, size, 2)
        shadow = random_polygon(
            rng, (float(corner[0]), float(corner[1])), size * rng.uniform(0.3, 0.6), vertices=(4, 6)
        )
    if not lit:
        shadow = None
    return Nuisance(
        matrix=m.astype(np.float64),
        gradient=(rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.35), rng.uniform(0, 0.3)),
        gains=tuple(float(g) for g in rng.uniform(0.9, 1.1, 3)),  # type: ignore[arg-type]
        shadow=shadow,
        shadow_depth=rng.uniform(0.55, 0.85),
        blur_sigma=rng.uniform(0.3, 1.3) if rng.uniform() < 0.5 else 0.0,
        noise_sigma=rng.uniform(0.003, 0.025),
        jpeg_quality=int(rng.integers(60, 96)) if rng.uniform() < 0.6 else 0,
    )


def warp(img: np.ndarray, nuisance: Nuisance, size: int) -> np.ndarray:
    """Rotate, scale and crop a canvas image (H, W) or (H, W, C) to the (size, size[, C]) output."""
    return cv2.warpAffine(
        img, nuisance.matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )


def to_gray(img: np.ndarray) -> np.ndarray:
    """float32 (H, W, 3) RGB -> (H, W) luminance (Rec. 601 weights, as a mono camera roughly sees)."""
    return (img[..., 0] * 0.299 + img[..., 1] * 0.587 + img[..., 2] * 0.114).astype(np.float32)


def photometric(img: np.ndarray, nuisance: Nuisance, rng: np.random.Generator) -> np.ndarray:
    """Lighting gradient, vignette, white balance (colour only), cast shadow, blur and sensor noise.

    Args:
        img: float32 (H, W) or (H, W, 3) in [0, 1].

    Returns:
        float32, same shape, in [0, 1].
    """
    h, w = img.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    direction, strength, vignette = nuisance.gradient
    ramp = ((xx / w - 0.5) * np.cos(direction) + (yy / h - 0.5) * np.sin(direction)) * 2 * strength
    r2 = ((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2) * 2
    gain = (1 + ramp) * (1 - vignette * r2)
    if nuisance.shadow is not None:
        mask = np.zeros((h, w), np.float32)
        cv2.fillPoly(mask, [nuisance.shadow], 1.0)
        mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, w * 0.02))
        gain = gain * (1 - (1 - nuisance.shadow_depth) * mask)
    out = img * (gain[..., None] if img.ndim == 3 else gain)
    if img.ndim == 3:
        out = out * np.asarray(nuisance.gains, np.float32)
    if nuisance.blur_sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), nuisance.blur_sigma)
    # Read noise plus shot noise that grows with the signal.
    noise = rng.standard_normal(out.shape).astype(np.float32)
    out = out + noise * (nuisance.noise_sigma * (0.5 + 0.5 * np.sqrt(np.clip(out, 0, 1))))
    return np.clip(out, 0, 1).astype(np.float32)


def jpeg_roundtrip(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode uint8 (H, W) or RGB (H, W, 3) as JPEG in memory, keeping its artefacts."""
    bgr = img[..., ::-1] if img.ndim == 3 else img
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(bgr), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ClearsightError(
            f"OpenCV could not JPEG-encode an image of shape {img.shape} at quality {quality}"
        )
    flag = cv2.IMREAD_COLOR if img.ndim == 3 else cv2.IMREAD_GRAYSCALE
    out = cv2.imdecode(buf, flag)
    return np.ascontiguousarray(out[..., ::-1]) if img.ndim == 3 else out
