"""Top-down views of crushed bulk ore: a heap of shaded rock particles over a bed of fines.

A scene is kept as material maps (albedo, height, gloss) and shaded once by :func:`shade_ore`, so
that an anomaly drawn into the maps (``anomalies_ore``) is lit, shadowed and textured exactly like
the ore around it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from datasets.synth.texture import random_polygon, shade_height, value_noise

__all__ = [
    "DOMINANT",
    "MINERALS",
    "OreScene",
    "draw_particle",
    "render_ore_scene",
    "scatter_particles",
    "shade_ore",
]

MINERALS: dict[str, tuple[float, float, float]] = {
    # Albedo (R, G, B) of fresh fractures under white light, tuned by eye against belt photographs.
    "haematite": (0.68, 0.40, 0.24),
    "magnetite": (0.26, 0.26, 0.27),
    "goethite": (0.66, 0.52, 0.30),
}
"""The minerals of the declared cargo, iron ore fines: haematite dominant, the others accessory."""
DOMINANT = "haematite"
_MINERAL_GLOSS = {"haematite": 0.08, "magnetite": 0.35, "goethite": 0.05}
# Share of the particles that are accessory minerals: small, so that a detector learns "red-brown
# haematite with a few darker and yellower grains" and a region of anything else stands out.
_ACCESSORY_SHARE = {"magnetite": 0.04, "goethite": 0.06}
# The secondary rocks of real iron-ore belts (grey-green and brown gangue) keep a scene from being a
# single flat hue. None is pale: a pale rock would look, to a patch detector and in grayscale, like
# the limestone, slag or sulphur of ``wrong_material`` or a white bag.
_ACCESSORY = [(0.50, 0.50, 0.44), (0.45, 0.40, 0.36)]


@dataclass
class OreScene:
    """Material maps of one ore scene, before lighting.

    Attributes:
        albedo: float32 (H, W, 3) reflectance in [0, 1].
        height: float32 (H, W) surface height in pixels.
        gloss: float32 (H, W) specular strength in [0, 1].
        ore: bool (H, W), where ore lies (False on a belt edge or wagon wall).
        light: (3,) unit vector towards the light.
        palette: minerals of this scene, dominant first.
        r_max: radius in pixels of the largest ordinary particle.
        ore_colour: (3,) albedo of this lot's dominant mineral (tinted per scene).
    """

    albedo: np.ndarray
    height: np.ndarray
    gloss: np.ndarray
    ore: np.ndarray
    light: np.ndarray
    palette: tuple[str, ...]
    r_max: float
    ore_colour: np.ndarray

    def copy(self) -> OreScene:
        return OreScene(
            self.albedo.copy(),
            self.height.copy(),
            self.gloss.copy(),
            self.ore.copy(),
            self.light.copy(),
            self.palette,
            self.r_max,
            self.ore_colour.copy(),
        )


def draw_particle(
    scene: OreScene,
    rng: np.random.Generator,
    centre: tuple[float, float],
    radius: float,
    colour: np.ndarray,
    gloss: float,
    *,
    on_top: bool = False,
) -> None:
    """Draw one faceted rock into the scene's maps (painter's order: it covers what is there).

    The height is a distance transform of the outline, which gives the flat facets and sharp ridges
    of a crushed rock; ``on_top`` seats it on the highest point below instead of the mean.
    """
    h, w = scene.height.shape
    pad = int(radius * 1.8) + 2
    x0, y0 = max(0, int(centre[0]) - pad), max(0, int(centre[1]) - pad)
    x1, y1 = min(w, int(centre[0]) + pad), min(h, int(centre[1]) + pad)
    if x1 <= x0 or y1 <= y0:
        return
    poly = random_polygon(rng, (centre[0] - x0, centre[1] - y0), radius)
    local = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(local, [poly], 255)
    if radius > 5:
        # Crushed rock has worn, slightly rounded corners (a box filter is cheap and good enough).
        k = int(radius * 0.3) | 1
        local = np.where(cv2.blur(local, (k, k)) > 127, 255, 0).astype(np.uint8)
    inside = local > 0
    if not inside.any():
        return
    dist = cv2.distanceTransform(local, cv2.DIST_L2, 3)
    # A rounded cap with a flattish top; a little facet noise keeps it from looking like a bead.
    rc = radius * rng.uniform(0.5, 0.9)
    t = np.minimum(dist / rc, 1.0)
    dome = rc * rng.uniform(0.6, 1.0) * np.sqrt(1 - (1 - t) ** 2)
    # A random tilt: rocks rest at an angle, so one side catches more light.
    gy, gx = np.mgrid[0 : y1 - y0, 0 : x1 - x0].astype(np.float32)
    tilt = rng.uniform(-0.35, 0.35, 2)
    dome = dome + (tilt[0] * (gx - (centre[0] - x0)) + tilt[1] * (gy - (centre[1] - y0))) * t
    under = scene.height[y0:y1, x0:x1]
    base = float(under[inside].max() if on_top else under[inside].mean())
    under[inside] = base + dome[inside]
    tint = colour * rng.uniform(0.8, 1.15) * (1 + rng.uniform(-0.05, 0.05, 3))
    # A brighter fracture face on one side of many rocks, as in the belt photographs.
    face = (gx - (centre[0] - x0)) * rng.uniform(-1, 1) + (gy - (centre[1] - y0)) * rng.uniform(-1, 1)
    bright = 1 + 0.12 * np.tanh(face / max(1.0, radius * 0.5))
    scene.albedo[y0:y1, x0:x1][inside] = np.clip(tint[None, :] * bright[inside][:, None], 0, 1)
    scene.gloss[y0:y1, x0:x1][inside] = gloss


def scatter_particles(
    scene: OreScene,
    rng: np.random.Generator,
    region: np.ndarray,
    colours: list[tuple[np.ndarray, float, float]],
    *,
    r_min: float,
    r_max: float,
    coverage: float,
    max_count: int = 900,
) -> None:
    """Drop particles whose centres fall in ``region`` until their area reaches ``coverage`` x region.

    Args:
        region: bool (H, W).
        colours: (albedo (3,), gloss, weight) choices for the particles.
    """
    ys, xs = np.nonzero(region)
    if len(xs) == 0:
        return
    budget = coverage * len(xs)
    weights = np.array([c[2] for c in colours], np.float64)
    weights /= weights.sum()
    area = 0.0
    for _ in range(max_count):
        if area >= budget:
            break
        r = r_min + (r_max - r_min) * rng.uniform() ** 1.6
        k = int(rng.integers(len(xs)))
        choice = int(rng.choice(len(colours), p=weights))
        colour, gloss, _ = colours[choice]
        draw_particle(scene, rng, (float(xs[k]), float(ys[k])), r, np.asarray(colour, np.float32), gloss)
        area += math.pi * r * r


def render_ore_scene(rng: np.random.Generator, size: int) -> OreScene:
    """Render the material maps of a normal ore scene of ``size`` x ``size`` pixels."""
    # One declared cargo: a model is trained per cargo, so every normal scene is iron ore fines with
    # natural variation (tint, particle size, lighting) and never a different dominant mineral.
    dominant = DOMINANT
    palette = (dominant, *_ACCESSORY_SHARE)
    shape = (size, size)
    light = np.array([rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6), 1.0])
    light /= np.linalg.norm(light)
    r_max = size * rng.uniform(0.06, 0.095)

    # Natural variation of the ore's tint between lots (grade, oxidation, dust).
    tint = rng.uniform(0.88, 1.1) * (1 + rng.uniform(-0.04, 0.04, 3))
    base = (np.asarray(MINERALS[dominant], np.float32) * tint).astype(np.float32)
    fines = value_noise(rng, shape, size / 10, octaves=4)
    grain = value_noise(rng, shape, 2.0, octaves=1)
    albedo = base[None, None, :] * (0.72 + 0.08 * fines[..., None] + 0.06 * grain[..., None])
    height = 1.5 * value_noise(rng, shape, r_max * 0.5, octaves=2) + 0.6 * grain
    gloss = np.full(shape, _MINERAL_GLOSS[dominant] * 0.5, np.float32)
    ore = np.ones(shape, bool)

    edge_kind = rng.choice(["none", "belt", "wall"], p=[0.8, 0.13, 0.07])
    if edge_kind != "none":
        # A belt edge or wagon wall along one side: irregular boundary of the ore stream.
        side = int(rng.integers(4))
        depth = size * rng.uniform(0.12, 0.3)
        wobble = value_noise(rng, (1, size), size / 5, octaves=2)[0] * size * 0.04
        coord = np.arange(size, dtype=np.float32)
        band = coord[None, :] < (depth + wobble)[:, None]  # left side, rows = along-edge
        band = np.rot90(band, side).copy()
        if edge_kind == "belt":
            colour = np.array([0.09, 0.16, 0.11], np.float32)
            stripes = value_noise(rng, (size, 8), size / 12, octaves=2)
            stripes = cv2.resize(stripes, (size, size), interpolation=cv2.INTER_LINEAR)
            stripes = np.rot90(stripes, side % 2).copy()
            tex = colour[None, None, :] * (1 + 0.15 * stripes[..., None] + 0.05 * grain[..., None])
            albedo[band] = tex[band]
            height[band] = -r_max * 0.8
            gloss[band] = 0.25
        else:
            ribs = np.sin(np.arange(size, dtype=np.float32) / size * rng.uniform(10, 22) * np.pi)
            ribs = np.rot90(np.tile(ribs[:, None], (1, size)), side).copy()
            rust = np.array([0.42, 0.27, 0.17], np.float32) * (1 + 0.25 * fines[..., None])
            albedo[band] = rust[band]
            height[band] = r_max * 3 + ribs[band] * r_max * 0.3
            gloss[band] = 0.1
        ore = ~band

    scene = OreScene(
        albedo.astype(np.float32), height.astype(np.float32), gloss, ore, light, palette, r_max, base
    )
    colours: list[tuple[np.ndarray, float, float]] = [(base, _MINERAL_GLOSS[dominant], 0.8)]
    colours += [
        (np.asarray(MINERALS[m], np.float32), _MINERAL_GLOSS[m], share * rng.uniform(0.5, 1.5))
        for m, share in _ACCESSORY_SHARE.items()
    ]
    colours += [(np.asarray(c, np.float32), 0.1, rng.uniform(0.005, 0.015)) for c in _ACCESSORY]
    scatter_particles(
        scene, rng, ore, colours, r_min=max(1.5, r_max * 0.15), r_max=r_max, coverage=rng.uniform(1.3, 1.9)
    )
    scene.albedo *= (1 + 0.07 * grain)[..., None]
    np.clip(scene.albedo, 0, 1, out=scene.albedo)
    return scene


def shade_ore(scene: OreScene) -> np.ndarray:
    """Light the scene: Lambert + Blinn-Phong, ambient occlusion in gaps, cast shadows.

    Returns:
        float32 (H, W, 3) linear-ish RGB in [0, 1].
    """
    h = scene.height
    diffuse, spec = shade_height(h, scene.light, shininess=30.0)
    sigma = max(1.0, scene.r_max * 0.6)
    # Gaps between rocks see less sky: darken where the surface is below its neighbourhood.
    ao = np.clip(1 - 0.9 * (cv2.GaussianBlur(h, (0, 0), sigma) - h) / (scene.r_max * 0.6), 0.35, 1.0)
    # Cast shadows: a point is shadowed if the surface a few steps towards the light rises above the
    # light ray through it.
    lx, ly, lz = scene.light
    horiz = math.hypot(lx, ly) + 1e-6
    slope = lz / horiz
    shadow = np.zeros_like(h)
    for step in (2.0, 4.0, 7.0, 11.0):
        dx, dy = lx / horiz * step, ly / horiz * step
        m = np.float32([[1, 0, -dx], [0, 1, -dy]])
        shifted = cv2.warpAffine(
            h, m, (h.shape[1], h.shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )
        # warpAffine samples dst(x) = src(x + d): the surface towards the light.
        shadow = np.maximum(shadow, np.clip((shifted - h - step * slope) / 3.0, 0, 1))
    lit = 0.3 + 0.95 * diffuse * (1 - 0.7 * shadow)
    img = scene.albedo * (lit * ao)[..., None] + (scene.gloss * spec * (1 - shadow))[..., None] * 0.8
    return np.clip(img, 0, 1).astype(np.float32)
