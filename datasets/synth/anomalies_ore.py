"""Anomalies of bulk ore, drawn into an :class:`~datasets.synth.ore.OreScene`'s material maps.

Each function edits the scene in place and returns a short description of what it drew (e.g.
``"cable"``). ``severity`` in [0, 1] runs from subtle (small, partly buried, close in colour) to
obvious. ``centre`` is where the anomaly goes, chosen by the caller inside the visible area.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from datasets.synth.ore import OreScene, draw_particle, scatter_particles
from datasets.synth.texture import blob_alpha, lerp, random_polygon, value_noise

__all__ = ["ORE_ANOMALIES"]

Centre = tuple[float, float]


def _paint(scene: OreScene, mask: np.ndarray, albedo: np.ndarray, height: np.ndarray, gloss: float) -> None:
    """Lay an object on the ore surface: its height sits on the local ore level."""
    if not mask.any():
        return
    level = float(np.percentile(scene.height[mask], 60))
    scene.albedo[mask] = albedo[mask]
    scene.height[mask] = level + height[mask]
    scene.gloss[mask] = gloss


def _bury(scene: OreScene, rng: np.random.Generator, mask: np.ndarray, severity: float) -> None:
    """Drop a few ore particles over the object's edge: subtle objects are more buried."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return
    colour = scene.ore_colour
    # At most a few, so that even the most buried object keeps most of its outline in view.
    for _ in range(int(lerp(3, 0, severity))):
        k = int(rng.integers(len(xs)))
        draw_particle(
            scene,
            rng,
            (float(xs[k]), float(ys[k])),
            scene.r_max * rng.uniform(0.3, 0.6),
            colour,
            0.08,
            on_top=True,
        )


def foreign_object(scene: OreScene, rng: np.random.Generator, severity: float, centre: Centre) -> str:
    """Plastic sheet, wood plank, scrap metal, a bag or a cable lying in the ore."""
    shape = scene.height.shape
    size = shape[0]
    kind = str(rng.choice(["plastic_sheet", "wood_plank", "scrap_metal", "bag", "cable"]))
    length = size * lerp(0.2, 0.34, severity)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    fine = value_noise(rng, shape, 2.0, octaves=1)
    m = np.zeros(shape, np.uint8)
    if kind == "plastic_sheet":
        cv2.fillPoly(m, [random_polygon(rng, centre, length * 0.5, vertices=(6, 11), irregularity=0.4)], 1)
        colour = np.array(
            [[0.15, 0.3, 0.7], [0.85, 0.85, 0.83], [0.92, 0.9, 0.2], [0.2, 0.6, 0.3]][int(rng.integers(4))]
        )
        folds = np.abs(value_noise(rng, shape, length * 0.25, octaves=2))
        albedo = colour[None, None, :] * (1 + 0.03 * fine[..., None]) * np.ones((*shape, 3), np.float32)
        _paint(scene, m > 0, albedo, 2.0 + 3.0 * folds, 0.55)
    elif kind == "wood_plank":
        angle = rng.uniform(0, 180)
        rect = ((centre[0], centre[1]), (length, max(4.0, length * rng.uniform(0.2, 0.3))), angle)
        cv2.fillPoly(m, [np.round(cv2.boxPoints(rect)).astype(np.int32)], 1)
        a = math.radians(angle)
        along = -(xx - centre[0]) * math.sin(a) + (yy - centre[1]) * math.cos(a)
        grain = np.sin(along * 1.3 + 2 * value_noise(rng, shape, length * 0.3, octaves=2))
        # Pale sawn timber: lighter and yellower than any ore grain.
        albedo = np.array([0.82, 0.68, 0.45], np.float32) * (
            1 + 0.12 * grain[..., None] + 0.04 * fine[..., None]
        )
        dist = cv2.distanceTransform(m, cv2.DIST_L2, 3)
        _paint(scene, m > 0, albedo, np.minimum(dist, 4.0) * 1.2 + 2.0, 0.05)
    elif kind == "scrap_metal":
        cv2.fillPoly(
            m,
            [random_polygon(rng, centre, length * 0.45, vertices=(4, 7), irregularity=0.5, elongation=1.2)],
            1,
        )
        rust = np.clip(value_noise(rng, shape, length * 0.2, octaves=3), 0, None)[..., None]
        # Bright steel with rust spots (rust alone would read as haematite).
        steel = np.array([0.72, 0.74, 0.78], np.float32)
        spots = np.clip(rust - 0.8, 0, 1) * 0.6
        albedo = steel * (1 - spots) + np.array([0.45, 0.24, 0.12], np.float32) * spots
        bend = (xx - centre[0]) * rng.uniform(-0.3, 0.3) + np.abs(yy - centre[1]) * rng.uniform(-0.3, 0.3)
        _paint(scene, m > 0, albedo * (1 + 0.03 * fine[..., None]), 3.0 + bend, 0.9)
    elif kind == "bag":
        cv2.fillPoly(
            m,
            [random_polygon(rng, centre, length * 0.5, vertices=(4, 6), irregularity=0.15, elongation=0.6)],
            1,
        )
        weave = np.sin(xx * 2.2) * np.sin(yy * 2.2)
        folds = value_noise(rng, shape, length * 0.3, octaves=2)
        albedo = np.array([0.86, 0.84, 0.78], np.float32) * (
            1 + 0.05 * weave[..., None] + 0.03 * fine[..., None]
        )
        _paint(scene, m > 0, albedo, 3.0 + 2.5 * folds, 0.15)
    else:
        pts = [np.array(centre, np.float64)]
        heading = rng.uniform(0, 2 * np.pi)
        for _ in range(12):
            heading += rng.uniform(-0.5, 0.5)
            pts.append(pts[-1] + length * 0.12 * np.array([math.cos(heading), math.sin(heading)]))
        thick = max(3, int(round(lerp(8, 12, severity) * size / 256)))
        cv2.polylines(m, [np.round(np.array(pts)).astype(np.int32)], False, 1, thick)
        colour = np.array(
            [[0.9, 0.9, 0.88], [0.95, 0.5, 0.08], [0.9, 0.82, 0.1], [0.15, 0.35, 0.8]][int(rng.integers(4))]
        )
        dist = cv2.distanceTransform(m, cv2.DIST_L2, 3)
        tube = np.sqrt(np.clip(dist * (thick - dist), 0, None))
        albedo = colour[None, None, :] * (1 + 0.03 * fine[..., None]) * np.ones((*shape, 3), np.float32)
        _paint(scene, m > 0, albedo, 2.0 + tube * 1.5, 0.5)
    _bury(scene, rng, m > 0, severity)
    return kind


def wet_patch(scene: OreScene, rng: np.random.Generator, severity: float, centre: Centre) -> str:
    """Slurry: water fills the gaps between particles, darkens the fines and makes the surface shine.

    A wet patch must read as wet, not merely dark (dark grains of magnetite are normal): the surface
    is smoothed towards a level film of slurry, darkened, and glossy with small ripples that glint.
    """
    shape = scene.height.shape
    size = shape[0]
    # Even the subtlest patch spans several particles: one wet grain would look like a dark one.
    alpha = blob_alpha(rng, shape, centre, size * lerp(0.14, 0.26, severity), softness=0.3)
    a = alpha * lerp(0.9, 1.0, severity)
    smooth = cv2.GaussianBlur(scene.height, (0, 0), scene.r_max * 1.2)
    # Slurry fills the gaps up to a level near the tops of the particles.
    level = np.maximum(smooth + scene.r_max * 0.3, scene.height)
    ripples = value_noise(rng, shape, max(2.0, size / 60), octaves=2) * 0.6
    fill = lerp(0.8, 0.95, severity)
    scene.height[:] = scene.height * (1 - a * fill) + (level + ripples) * a * fill
    # Wet fines darken strongly and turn a deeper, browner red; the slurry film evens out the grain.
    mean = cv2.GaussianBlur(scene.albedo, (0, 0), scene.r_max * 0.5)
    wet = (
        (0.5 * scene.albedo + 0.5 * mean) * lerp(0.5, 0.35, severity) * np.array([1.0, 0.9, 0.85], np.float32)
    )
    scene.albedo[:] = scene.albedo * (1 - a[..., None]) + wet * a[..., None]
    scene.gloss[:] = scene.gloss * (1 - a) + lerp(0.9, 1.2, severity) * a
    return "slurry"


_OTHER_MATERIALS: dict[str, tuple[tuple[float, float, float], float, float]] = {
    # Materials never found in the declared iron ore: albedo, gloss and particle scale (relative to
    # the ore's). Every one differs from haematite in luminance too, so it survives a mono camera.
    "copper_concentrate": ((0.22, 0.3, 0.2), 0.2, 0.0),  # a fine greenish-grey powder: no particles
    "coal": ((0.06, 0.06, 0.07), 0.6, 1.4),
    "limestone": ((0.86, 0.83, 0.76), 0.05, 1.2),
    "slag": ((0.7, 0.72, 0.74), 0.1, 0.7),
    "sulphur": ((0.92, 0.82, 0.25), 0.1, 0.5),
}


def wrong_material(scene: OreScene, rng: np.random.Generator, severity: float, centre: Centre) -> str:
    """A region of a material that is not the declared cargo (mixed cargo, misdeclaration)."""
    shape = scene.height.shape
    size = shape[0]
    names = list(_OTHER_MATERIALS)
    name = names[int(rng.integers(len(names)))]
    rgb, gloss, r_scale = _OTHER_MATERIALS[name]
    colour = np.asarray(rgb, np.float32) * rng.uniform(0.92, 1.05)
    region = blob_alpha(rng, shape, centre, size * lerp(0.14, 0.26, severity)) > 0.5
    region &= scene.ore
    # Fines of the new material first, then its particles (coarser or finer than the ore's).
    fine = value_noise(rng, shape, 2.0, octaves=1)
    scene.albedo[region] = (colour * 0.85)[None, :] * (1 + 0.06 * fine[region])[:, None]
    scene.gloss[region] = gloss
    if r_scale == 0.0:
        # A powder slumps into a smooth heap: no particle relief.
        smooth = cv2.GaussianBlur(scene.height, (0, 0), scene.r_max)
        scene.height[region] = smooth[region] + 0.5 * fine[region]
    else:
        scatter_particles(
            scene,
            rng,
            region,
            [(colour, gloss, 1.0)],
            r_min=max(1.5, scene.r_max * 0.15 * r_scale),
            r_max=scene.r_max * r_scale,
            coverage=1.6,
        )
    return name


def oversize_lump(scene: OreScene, rng: np.random.Generator, severity: float, centre: Centre) -> str:
    """One boulder or caked lump far above the declared lump size."""
    radius = scene.r_max * lerp(1.8, 3.6, severity)
    colour = scene.ore_colour * rng.uniform(0.85, 1.05)
    draw_particle(scene, rng, centre, radius, colour, 0.08, on_top=True)
    return "boulder"


ORE_ANOMALIES: dict[str, Callable[[OreScene, np.random.Generator, float, Centre], str]] = {
    "foreign_object": foreign_object,
    "wet_patch": wet_patch,
    "wrong_material": wrong_material,
    "oversize_lump": oversize_lump,
}
"""Anomaly type name -> function drawing it into an ore scene."""
