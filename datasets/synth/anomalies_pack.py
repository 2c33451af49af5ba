"""Anomalies of vacuum-packed cargo, drawn into a :class:`~datasets.synth.vacuum.PackScene`'s layers.

Each function edits the scene in place and returns a short description of what it drew.
``severity`` in [0, 1] runs from subtle to obvious. The caller composes the edited layers the same
way as a normal pack (camera or X-ray), so an anomaly differs from normal only in itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from datasets.synth.texture import blob_alpha, lerp, random_polygon, value_noise
from datasets.synth.vacuum import PackScene

__all__ = ["PACK_ANOMALIES"]


def _pick(rng: np.random.Generator, where: np.ndarray) -> tuple[float, float]:
    ys, xs = np.nonzero(where)
    k = int(rng.integers(len(xs)))
    return float(xs[k]), float(ys[k])


def _inner(scene: PackScene) -> np.ndarray:
    return (scene.pack > 0.5) & (scene.seal < 0.5)


def air_pocket(scene: PackScene, rng: np.random.Generator, severity: float) -> str:
    """Loss of vacuum: slack film stands off the product, wrinkles relax, the outline blurs."""
    size = scene.pack.shape[0]
    edge = cv2.morphologyEx(scene.product, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    where = edge & _inner(scene)
    centre = _pick(rng, where if where.any() else _inner(scene))
    a = blob_alpha(rng, scene.pack.shape, centre, size * lerp(0.1, 0.2, severity), softness=0.4)
    a *= _inner(scene)
    sigma = lerp(3.0, 6.0, severity) * size / 256
    for layer in (scene.product, scene.product_height, scene.product_density):
        layer[:] = layer * (1 - a) + cv2.GaussianBlur(layer, (0, 0), sigma) * a
    scene.product_albedo[:] = (
        scene.product_albedo * (1 - a[..., None])
        + cv2.GaussianBlur(scene.product_albedo, (0, 0), sigma) * a[..., None]
    )
    # The pocket is a smooth bulge instead of tight wrinkles; it scatters more light (haze).
    bulge = cv2.GaussianBlur(a, (0, 0), size * 0.02) * lerp(7.0, 12.0, severity)
    scene.wrinkles[:] = scene.wrinkles * (1 - a) + bulge
    scene.haze[:] = scene.haze + a * lerp(0.25, 0.4, severity)
    return "slack_film"


def seal_defect(scene: PackScene, rng: np.random.Generator, severity: float) -> str:
    """An open, wrinkled or contaminated stretch of the seal seam.

    Even the subtlest covers a stretch of seam several times its width, so that an inspector can
    point at it; a defect narrower than the normal film wrinkles would be indistinguishable from them.
    """
    size = scene.pack.shape[0]
    kind = str(rng.choice(["open", "wrinkled", "contaminated"]))
    centre = _pick(rng, scene.seal > 0.5)
    length = size * lerp(0.18, 0.32, severity)
    seg = np.zeros_like(scene.seal)
    cv2.circle(seg, (int(centre[0]), int(centre[1])), int(length / 2), 1.0, -1)
    # The seam plus a little of the film beside it, where an unfused or creased seam pulls the film.
    seg *= cv2.dilate(scene.seal, np.ones((3, 3), np.uint8), iterations=max(1, size // 150))
    seg *= scene.pack
    if kind == "open":
        # The film layers are not fused: no ribbing, crinkled film and a dark gap where air gets in.
        scene.seal_ribs[:] = scene.seal_ribs * (1 - seg)
        scene.seal[:] = scene.seal * (1 - seg)
        crinkle = value_noise(rng, scene.pack.shape, max(2.0, size / 80), octaves=2)
        scene.wrinkles[:] = scene.wrinkles + seg * (3.0 * crinkle - 2.0)
        gap = cv2.erode(seg, np.ones((3, 3), np.uint8), iterations=max(1, size // 300))
        scene.label_albedo[gap > 0] = (0.08, 0.08, 0.09)
        scene.label[:] = np.maximum(scene.label, gap * 0.7)
    elif kind == "wrinkled":
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        angle = rng.uniform(0, np.pi)
        folds = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * (2 * np.pi / (size * 0.025)))
        scene.wrinkles[:] = scene.wrinkles + seg * folds * lerp(5.0, 8.0, severity)
        scene.seal_ribs[:] = scene.seal_ribs * (1 - seg) + folds * seg
        # Creased film is pleated over itself: darker and denser along the folds.
        scene.label_albedo[(seg > 0) & (folds < -0.3)] = (0.2, 0.2, 0.22)
        pleats = seg * (folds < -0.3)
        scene.label[:] = np.maximum(scene.label, pleats * 0.5)
        # Several film layers stacked in each pleat: denser in the X-ray.
        scene.product_density[:] = scene.product_density + pleats * 0.5
    else:
        noise = value_noise(rng, scene.pack.shape, max(2.0, size * 0.012), octaves=2)
        spots = (noise > lerp(-0.2, -0.6, severity)).astype(np.float32) * seg
        if spots.sum() < 0.3 * seg.sum():
            spots = seg * (noise > np.quantile(noise[seg > 0], 0.6)).astype(np.float32)
        dirt = np.array([0.35, 0.27, 0.18], np.float32) * rng.uniform(0.6, 1.1)
        scene.label_albedo[spots > 0] = dirt
        scene.label[:] = np.maximum(scene.label, spots * 0.9)
        scene.product_density[:] = scene.product_density + spots * 0.9
    return kind


def puncture(scene: PackScene, rng: np.random.Generator, severity: float) -> str:
    """A hole or tear in the film: the film is missing there, its torn edge whitened and curled.

    The subtlest hole is still several pixels across at 256 px with a bright stretched rim, so that
    it cannot be mistaken for an ordinary wrinkle highlight.
    """
    size = scene.pack.shape[0]
    kind = str(rng.choice(["hole", "tear"]))
    centre = _pick(rng, _inner(scene))
    hole = np.zeros_like(scene.pack)
    r = size * lerp(0.045, 0.08, severity)
    if kind == "hole":
        cv2.fillPoly(hole, [random_polygon(rng, centre, r, vertices=(5, 9), irregularity=0.45)], 1.0)
    else:
        angle = rng.uniform(0, np.pi)
        pts = [np.array(centre)]
        for _ in range(6):
            pts.append(
                pts[-1]
                + r * 0.8 * np.array([math.cos(angle), math.sin(angle)])
                + rng.uniform(-r * 0.3, r * 0.3, 2)
            )
        width = max(3, int(r * 0.5))
        cv2.polylines(hole, [np.round(np.array(pts)).astype(np.int32)], False, 1.0, width)
    hole *= _inner(scene)
    rim = cv2.dilate(hole, np.ones((3, 3), np.uint8), iterations=max(2, int(size / 100))) - hole
    slack = cv2.GaussianBlur(cv2.dilate(hole, np.ones((3, 3), np.uint8), iterations=int(r)), (0, 0), r * 0.5)
    scene.wrinkles[:] = scene.wrinkles * (1 - 0.7 * slack) + 6.0 * rim
    # Stretched, torn plastic whitens (stress whitening): an opaque pale rim around the hole.
    scene.label_albedo[rim > 0] = (0.93, 0.93, 0.9)
    scene.label[:] = np.maximum(scene.label, rim * 0.8)
    # The curled edge is film folded over itself: denser in the X-ray.
    scene.product_density[:] = scene.product_density + 0.35 * rim
    scene.haze[:] = scene.haze * (1 - hole)
    scene.pack[:] = scene.pack * (1 - hole)
    return kind


def foreign_object(scene: PackScene, rng: np.random.Generator, severity: float) -> str:
    """An item sealed inside the pack that does not belong there (screw, shard, fibre, loose chip)."""
    size = scene.pack.shape[0]
    kind = str(rng.choice(["screw", "metal_shard", "fibre", "loose_chip", "desiccant"]))
    centre = _pick(rng, _inner(scene))
    L = size * lerp(0.12, 0.18, severity)
    m = np.zeros_like(scene.pack)
    angle = rng.uniform(0, 180)
    if kind in ("screw", "loose_chip", "desiccant"):
        dims = {"screw": (L, L * 0.25), "loose_chip": (L * 0.6, L * 0.6), "desiccant": (L * 1.2, L * 0.8)}[
            kind
        ]
        box = np.round(cv2.boxPoints(((centre[0], centre[1]), dims, angle))).astype(np.int32)
        cv2.fillPoly(m, [box], 1.0)
    elif kind == "metal_shard":
        cv2.fillPoly(
            m, [random_polygon(rng, centre, L * 0.4, vertices=(3, 5), irregularity=0.5, elongation=1.5)], 1.0
        )
    else:
        pts = [np.array(centre)]
        heading = math.radians(angle)
        for _ in range(10):
            heading += rng.uniform(-0.6, 0.6)
            pts.append(pts[-1] + L * 0.15 * np.array([math.cos(heading), math.sin(heading)]))
        cv2.polylines(m, [np.round(np.array(pts)).astype(np.int32)], False, 1.0, max(2, int(size / 90)))
    m *= _inner(scene)
    albedo, height, density = {
        "screw": ((0.75, 0.75, 0.78), 4.0, 2.0),
        "metal_shard": ((0.72, 0.73, 0.78), 3.0, 1.8),
        "fibre": ((0.12, 0.1, 0.08), 2.0, 1.0),
        "loose_chip": ((0.1, 0.1, 0.11), 3.0, 1.4),
        "desiccant": ((0.9, 0.9, 0.88), 4.0, 1.0),
    }[kind]
    if m.any():
        # An object the colour of what it lies on would only show by its relief: a dark fibre on a
        # black tray is seen as a pale one would be, so keep its brightness opposite to its bed.
        bed = scene.product_albedo * scene.product[..., None] + scene.bench * (1 - scene.product[..., None])
        bed_luma = float((bed[m > 0] @ np.array([0.299, 0.587, 0.114], np.float32)).mean())
        luma = 0.299 * albedo[0] + 0.587 * albedo[1] + 0.114 * albedo[2]
        if abs(luma - bed_luma) < 0.35:
            albedo = (0.92, 0.9, 0.86) if bed_luma < 0.5 else (0.06, 0.06, 0.07)
    if kind == "screw":
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        a = math.radians(angle)
        thread = np.sin((xx * math.cos(a) + yy * math.sin(a)) * (2 * np.pi / max(2.0, L * 0.12)))
        scene.product_albedo[m > 0] = np.asarray(albedo, np.float32) * (1 + 0.2 * thread[m > 0])[:, None]
    else:
        scene.product_albedo[m > 0] = albedo
    # The item lies on whatever is below it; the film then drapes over both.
    scene.product_height[:] = scene.product_height + m * height
    scene.product_density[:] = scene.product_density + m * density
    scene.product[:] = np.maximum(scene.product, m)
    return kind


PACK_ANOMALIES: dict[str, Callable[[PackScene, np.random.Generator, float], str]] = {
    "air_pocket": air_pocket,
    "seal_defect": seal_defect,
    "puncture": puncture,
    "foreign_object": foreign_object,
}
"""Anomaly type name -> function drawing it into a pack scene."""
