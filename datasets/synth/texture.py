"""Procedural building blocks shared by the ore and pack renderers: noise fields, shapes, shading.

Every function takes its randomness from an explicit ``numpy.random.Generator`` so that a scene is
a pure function of its seed. Images are float32 in [0, 1]; heights are in pixels.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = [
    "blob_alpha",
    "lerp",
    "random_polygon",
    "shade_height",
    "value_noise",
]


def lerp(a: float, b: float, t: float) -> float:
    """Linear interpolation ``a + (b - a) * t``."""
    return a + (b - a) * t


def value_noise(
    rng: np.random.Generator,
    shape: tuple[int, int],
    cell: float,
    *,
    octaves: int = 3,
    persistence: float = 0.5,
) -> np.ndarray:
    """Multi-octave smooth noise.

    Args:
        shape: (H, W) of the field.
        cell: size in pixels of the coarsest octave's features.

    Returns:
        float32 (H, W), zero mean and unit standard deviation (up to sampling).
    """
    h, w = shape
    out = np.zeros((h, w), np.float32)
    amp = 1.0
    for octave in range(octaves):
        c = max(1.0, cell / (2**octave))
        gh, gw = math.ceil(h / c) + 2, math.ceil(w / c) + 2
        grid = rng.standard_normal((gh, gw)).astype(np.float32)
        up = cv2.resize(grid, (math.ceil(gw * c), math.ceil(gh * c)), interpolation=cv2.INTER_CUBIC)
        # A random sub-pixel offset hides the grid alignment of every octave.
        oy, ox = int(rng.integers(0, max(1, int(c)))), int(rng.integers(0, max(1, int(c))))
        out += amp * up[oy : oy + h, ox : ox + w]
        amp *= persistence
    std = float(out.std())
    return out / std if std > 1e-6 else out


def random_polygon(
    rng: np.random.Generator,
    centre: tuple[float, float],
    radius: float,
    *,
    vertices: tuple[int, int] = (5, 10),
    irregularity: float = 0.35,
    elongation: float = 0.35,
) -> np.ndarray:
    """An irregular convex-ish polygon, the outline of a crushed rock or a torn sheet.

    Returns:
        int32 (N, 2) vertex coordinates (x, y), ready for ``cv2.fillPoly``.
    """
    n = int(rng.integers(vertices[0], vertices[1] + 1))
    step = 2 * np.pi / n
    angles = (
        np.linspace(0, 2 * np.pi, n, endpoint=False)
        + rng.uniform(-0.35, 0.35, n) * step
        + rng.uniform(0, step)
    )
    radii = radius * (1 + irregularity * rng.uniform(-1, 1, n))
    aspect = 1 + elongation * rng.uniform(0, 1)
    rot = rng.uniform(0, np.pi)
    x = radii * np.cos(angles) * aspect
    y = radii * np.sin(angles) / aspect
    xr = x * math.cos(rot) - y * math.sin(rot) + centre[0]
    yr = x * math.sin(rot) + y * math.cos(rot) + centre[1]
    return np.round(np.stack([xr, yr], axis=1)).astype(np.int32)


def blob_alpha(
    rng: np.random.Generator,
    shape: tuple[int, int],
    centre: tuple[float, float],
    radius: float,
    *,
    roughness: float = 0.35,
    softness: float = 0.0,
) -> np.ndarray:
    """An irregular blob (a slurry patch, a region of other material, an air pocket).

    Args:
        softness: width of the soft edge as a fraction of ``radius`` (0 gives a hard 0/1 edge).

    Returns:
        float32 (H, W) alpha in [0, 1], 1 inside the blob.
    """
    h, w = shape
    aspect = rng.uniform(0.65, 1.5)
    rot = rng.uniform(0, np.pi)
    noise = value_noise(rng, shape, max(4.0, radius * 0.6), octaves=3)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dx, dy = xx - centre[0], yy - centre[1]
    u = (dx * math.cos(rot) + dy * math.sin(rot)) / (radius * aspect)
    v = (-dx * math.sin(rot) + dy * math.cos(rot)) * aspect / radius
    field = 1 - np.sqrt(u * u + v * v) + roughness * 0.35 * noise
    if softness <= 0:
        return (field > 0).astype(np.float32)
    return np.clip(field / softness + 0.5, 0, 1).astype(np.float32)


def shade_height(
    height: np.ndarray, light: np.ndarray, *, shininess: float = 24.0
) -> tuple[np.ndarray, np.ndarray]:
    """Lambertian and Blinn-Phong terms of a height field seen from straight above.

    Args:
        height: float32 (H, W) in pixels.
        light: unit vector (3,) pointing towards the light (z up, towards the camera).

    Returns:
        ``(diffuse, specular)``, each float32 (H, W) in [0, 1].
    """
    gx = cv2.Sobel(height, cv2.CV_32F, 1, 0, ksize=3) / 8.0
    gy = cv2.Sobel(height, cv2.CV_32F, 0, 1, ksize=3) / 8.0
    norm = np.sqrt(gx * gx + gy * gy + 1.0)
    nx, ny, nz = -gx / norm, -gy / norm, 1.0 / norm
    diffuse = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0, 1)
    half = light + np.array([0.0, 0.0, 1.0])
    half = half / np.linalg.norm(half)
    spec = np.clip(nx * half[0] + ny * half[1] + nz * half[2], 0, 1) ** shininess
    return diffuse.astype(np.float32), spec.astype(np.float32)
