"""Vacuum-sealed packs of high-tech goods on a bench or pallet, as a camera or an X-ray sees them.

A scene is kept as layers (bench, product, film, seal, label) and composed by :func:`compose_photo`
or :func:`compose_xray`; an anomaly (``anomalies_pack``) edits the layers, so the film drapes over an
object inside the pack and an air pocket relaxes the wrinkles the film would otherwise have.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from datasets.synth.texture import shade_height, value_noise

__all__ = ["PackScene", "compose_photo", "compose_xray", "render_pack_scene"]


@dataclass
class PackScene:
    """Layers of one pack scene.

    Attributes:
        bench: float32 (H, W, 3) albedo of the surface the pack lies on.
        bench_density: float32 (H, W) X-ray attenuation of the bench (0 for air).
        pack: float32 (H, W) in [0, 1], where the film is.
        seal: float32 (H, W) in [0, 1], the heat-sealed seam band.
        seal_ribs: float32 (H, W) in [-1, 1], the ribbed pattern the sealing jaw presses in.
        product: float32 (H, W) in [0, 1], coverage of the product(s).
        product_albedo: float32 (H, W, 3).
        product_height: float32 (H, W) in pixels (the film drapes over it).
        product_density: float32 (H, W) X-ray attenuation (material x thickness).
        wrinkles: float32 (H, W) height of the film's wrinkles in pixels.
        haze: float32 (H, W) in [0, 1], how much the film veils what is under it.
        label: float32 (H, W) in [0, 1], the shipping label's coverage.
        label_albedo: float32 (H, W, 3).
        light: (3,) unit vector towards the light.
    """

    bench: np.ndarray
    bench_density: np.ndarray
    pack: np.ndarray
    seal: np.ndarray
    seal_ribs: np.ndarray
    product: np.ndarray
    product_albedo: np.ndarray
    product_height: np.ndarray
    product_density: np.ndarray
    wrinkles: np.ndarray
    haze: np.ndarray
    label: np.ndarray
    label_albedo: np.ndarray
    light: np.ndarray

    def copy(self) -> PackScene:
        return PackScene(**{k: np.array(v, copy=True) for k, v in self.__dict__.items()})


def _rounded_rect(shape: tuple[int, int], x0: float, y0: float, x1: float, y1: float, r: float) -> np.ndarray:
    """float32 (H, W) 0/1 mask of a rounded rectangle."""
    img = np.zeros(shape, np.uint8)
    r = int(max(1, r))
    p0, p1 = (int(x0), int(y0)), (int(x1), int(y1))
    cv2.rectangle(img, (p0[0] + r, p0[1]), (p1[0] - r, p1[1]), 1, -1)
    cv2.rectangle(img, (p0[0], p0[1] + r), (p1[0], p1[1] - r), 1, -1)
    for cx, cy in (
        (p0[0] + r, p0[1] + r),
        (p1[0] - r, p0[1] + r),
        (p0[0] + r, p1[1] - r),
        (p1[0] - r, p1[1] - r),
    ):
        cv2.circle(img, (cx, cy), r, 1, -1)
    return img.astype(np.float32)


def _bench(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    shape = (size, size)
    kind = rng.choice(["steel", "pallet", "esd_mat"])
    n = value_noise(rng, shape, size / 6, octaves=4)
    if kind == "steel":
        brushed = cv2.resize(value_noise(rng, (size, 6), 3, octaves=1), (size, size))
        base = np.array([0.55, 0.56, 0.58], np.float32) * rng.uniform(0.8, 1.1)
        return base * (1 + 0.04 * n[..., None] + 0.05 * brushed[..., None]), np.full(shape, 0.4, np.float32)
    if kind == "esd_mat":
        base = np.array(
            [[0.2, 0.35, 0.55], [0.25, 0.45, 0.3], [0.35, 0.35, 0.37]][int(rng.integers(3))], np.float32
        )
        return base * (1 + 0.05 * n[..., None]), np.full(shape, 0.1, np.float32)
    # Pallet: wooden boards with dark gaps, grain along the boards.
    boards = int(rng.integers(3, 6))
    yy = np.arange(size, dtype=np.float32)[:, None] / size * boards
    gap = (np.abs((yy % 1.0) - 0.5) > 0.46).astype(np.float32) * np.ones((1, size), np.float32)
    grain = cv2.resize(value_noise(rng, (24, size), 8, octaves=2), (size, size))
    wood = np.array([0.62, 0.46, 0.3], np.float32) * rng.uniform(0.85, 1.1)
    img = wood * (1 + 0.08 * grain[..., None] + 0.04 * n[..., None]) * (1 - 0.5 * gap[..., None])
    if rng.uniform() < 0.5:
        img = np.ascontiguousarray(np.rot90(img))
        gap = np.ascontiguousarray(np.rot90(gap))
    return img.astype(np.float32), (0.25 * (1 - gap)).astype(np.float32)


def _draw_products(rng: np.random.Generator, scene: PackScene, box: tuple[int, int, int, int]) -> str:
    """Fill the product layers inside ``box`` (x0, y0, x1, y1); returns the product kind."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    shape = scene.product.shape
    kind = str(rng.choice(["wafer", "board", "parts", "tray"]))
    m = np.zeros(shape, np.uint8)
    if kind == "wafer":
        r = min(w, h) // 2
        c = (x0 + w // 2, y0 + h // 2)
        cv2.circle(m, c, r, 1, -1)
        cv2.rectangle(m, (c[0] - r // 8, c[1] + r - 3), (c[0] + r // 8, c[1] + r + 1), 0, -1)  # the notch
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
        pitch = max(4.0, r / rng.uniform(5, 9))
        grid = (np.abs(((xx - c[0]) / pitch) % 1 - 0.5) > 0.45) | (
            np.abs(((yy - c[1]) / pitch) % 1 - 0.5) > 0.45
        )
        sheen = 0.5 + 0.5 * np.sin((xx + yy) / (r * 0.6) + rng.uniform(0, 6))
        col = np.stack([0.22 + 0.2 * sheen, 0.2 + 0.1 * sheen, 0.35 + 0.15 * (1 - sheen)], -1)
        col = np.where(grid[..., None], col * 0.7, col)
        scene.product_albedo[:] = np.where(m[..., None] > 0, col, scene.product_albedo)
        scene.product_height[m > 0] = 2.0
        scene.product_density[m > 0] = 0.35 + 0.2 * grid[m > 0]
    elif kind == "board":
        cv2.rectangle(m, (x0, y0), (x1, y1), 1, -1)
        scene.product_albedo[m > 0] = np.array([0.1, 0.33, 0.16], np.float32) * rng.uniform(0.8, 1.2)
        scene.product_height[m > 0] = 3.0
        scene.product_density[m > 0] = 0.3
        for _ in range(int(rng.integers(4, 12))):
            cw, ch = int(w * rng.uniform(0.08, 0.25)), int(h * rng.uniform(0.08, 0.25))
            cx, cy = int(rng.integers(x0, max(x0 + 1, x1 - cw))), int(rng.integers(y0, max(y0 + 1, y1 - ch)))
            dark = rng.uniform() < 0.7
            colour = (0.06, 0.06, 0.07) if dark else (0.7, 0.7, 0.72)
            cv2.rectangle(scene.product_albedo, (cx, cy), (cx + cw, cy + ch), colour, -1)
            cv2.rectangle(scene.product_height, (cx, cy), (cx + cw, cy + ch), 3.0 + rng.uniform(2, 6), -1)
            cv2.rectangle(scene.product_density, (cx, cy), (cx + cw, cy + ch), 1.2 if not dark else 0.8, -1)
            cv2.rectangle(scene.product_density, (cx + 2, cy + 2), (cx + cw - 2, cy + ch - 2), 0.6, 1)
        strip = (x0, y1 - max(3, h // 12), x1, y1)
        cv2.rectangle(scene.product_albedo, strip[:2], strip[2:], (0.8, 0.62, 0.2), -1)
        cv2.rectangle(scene.product_density, strip[:2], strip[2:], 1.0, -1)
    elif kind == "parts":
        count = int(rng.integers(1, 5))
        cols = np.linspace(x0, x1, count + 1).astype(int)
        for i in range(count):
            # a 3 px gap between parts, where a column has room for it (tiny renders do not)
            gap = 3 if cols[i + 1] - cols[i] >= 6 else 0
            px0, px1 = cols[i] + gap, cols[i + 1] - gap
            part = np.zeros(shape, np.uint8)
            if rng.uniform() < 0.5:
                cv2.rectangle(
                    part,
                    (px0, y0 + int(h * rng.uniform(0, 0.2))),
                    (px1, y1 - int(h * rng.uniform(0, 0.2))),
                    1,
                    -1,
                )
            else:
                cv2.ellipse(
                    part, ((px0 + px1) // 2, (y0 + y1) // 2), ((px1 - px0) // 2, h // 2), 0, 0, 360, 1, -1
                )
            hole = max(2, (px1 - px0) // 6)
            cv2.circle(part, ((px0 + px1) // 2, (y0 + y1) // 2), hole, 0, -1)
            m |= part
            metal = np.array([0.62, 0.63, 0.66], np.float32) * rng.uniform(0.8, 1.15)
            scene.product_albedo[part > 0] = metal
            scene.product_height[part > 0] = rng.uniform(4, 9)
            scene.product_density[part > 0] = 1.8
    else:
        cv2.rectangle(m, (x0, y0), (x1, y1), 1, -1)
        scene.product_albedo[m > 0] = (0.08, 0.08, 0.09)
        scene.product_height[m > 0] = 4.0
        scene.product_density[m > 0] = 0.25
        nx, ny = int(rng.integers(2, 5)), int(rng.integers(2, 5))
        for i in range(nx):
            for j in range(ny):
                cx = int(x0 + (i + 0.5) * w / nx)
                cy = int(y0 + (j + 0.5) * h / ny)
                s = int(min(w / nx, h / ny) * 0.3)
                cv2.rectangle(
                    scene.product_albedo, (cx - s, cy - s), (cx + s, cy + s), (0.25, 0.25, 0.27), -1
                )
                cv2.rectangle(scene.product_density, (cx - s, cy - s), (cx + s, cy + s), 0.9, -1)
                cv2.rectangle(scene.product_height, (cx - s, cy - s), (cx + s, cy + s), 5.0, -1)
    scene.product[:] = m.astype(np.float32)
    return kind


def render_pack_scene(rng: np.random.Generator, size: int) -> PackScene:
    """Render the layers of a normal, well-sealed pack of ``size`` x ``size`` pixels.

    The pack is centred in the canvas so that the caller's crop keeps all of it in view.
    """
    shape = (size, size)
    bench, bench_density = _bench(rng, size)
    light = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 1.0])
    light /= np.linalg.norm(light)
    half_w, half_h = size * rng.uniform(0.22, 0.28), size * rng.uniform(0.19, 0.27)
    c = size / 2 + rng.uniform(-0.03, 0.03, 2) * size
    px0, py0, px1, py1 = c[0] - half_w, c[1] - half_h, c[0] + half_w, c[1] + half_h
    pack = _rounded_rect(shape, px0, py0, px1, py1, size * 0.02)
    seal_w = max(3.0, size * rng.uniform(0.025, 0.04))
    inner = _rounded_rect(shape, px0 + seal_w, py0 + seal_w, px1 - seal_w, py1 - seal_w, size * 0.015)
    seal = np.clip(pack - inner, 0, 1)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    ribs = np.sin((xx + yy) * (2 * np.pi / max(2.5, size / 90)))
    scene = PackScene(
        bench=bench,
        bench_density=bench_density,
        pack=pack,
        seal=seal,
        seal_ribs=ribs.astype(np.float32),
        product=np.zeros(shape, np.float32),
        product_albedo=np.zeros((size, size, 3), np.float32),
        product_height=np.zeros(shape, np.float32),
        product_density=np.zeros(shape, np.float32),
        wrinkles=np.zeros(shape, np.float32),
        haze=np.zeros(shape, np.float32),
        label=np.zeros(shape, np.float32),
        label_albedo=np.ones((size, size, 3), np.float32) * 0.92,
        light=light,
    )
    margin = seal_w + size * rng.uniform(0.04, 0.08)
    box = (int(px0 + margin), int(py0 + margin), int(px1 - margin), int(py1 - margin))
    _draw_products(rng, scene, box)
    # Film wrinkles: ridges parallel to the product outline that fade towards the seal, plus a few
    # creases running from the product to the seal, where the film gathers when it is drawn tight.
    outside = ((scene.product < 0.5) & (inner > 0.5)).astype(np.uint8)
    dist = cv2.distanceTransform(outside, cv2.DIST_L2, 3)
    phase = value_noise(rng, shape, size / 8, octaves=2)
    period = size * rng.uniform(0.025, 0.045)
    ridges = np.sin(dist * 2 * np.pi / period + 2.5 * phase) * np.exp(-dist / (size * 0.12))
    creases = np.zeros(shape, np.float32)
    corners = [(box[0], box[1]), (box[2], box[1]), (box[0], box[3]), (box[2], box[3])]
    pack_corners = [(px0, py0), (px1, py0), (px0, py1), (px1, py1)]
    for (bx, by), (qx, qy) in zip(corners, pack_corners, strict=True):
        if rng.uniform() < 0.8:
            end = (int(qx + rng.uniform(-0.05, 0.05) * size), int(qy + rng.uniform(-0.05, 0.05) * size))
            cv2.line(creases, (bx, by), end, 1.0, max(1, int(size * 0.008)))
    creases = cv2.GaussianBlur(creases, (0, 0), max(1.0, size * 0.006))
    # Drawn tight, the film has only shallow ridges: deep folds, holes and slack belong to anomalies.
    scene.wrinkles[:] = (0.6 * ridges * outside + 2.0 * creases * outside) * (inner > 0.5)
    scene.haze[:] = pack * rng.uniform(0.08, 0.2)
    if rng.uniform() < 0.8:
        # Shipping label with a barcode, stuck on the film.
        lw, lh = int(size * rng.uniform(0.14, 0.22)), int(size * rng.uniform(0.08, 0.12))
        lx = int(rng.uniform(px0 + seal_w + 2, max(px0 + seal_w + 3, px1 - seal_w - lw - 2)))
        ly = int(rng.uniform(py0 + seal_w + 2, max(py0 + seal_w + 3, py1 - seal_w - lh - 2)))
        cv2.rectangle(scene.label, (lx, ly), (lx + lw, ly + lh), 1.0, -1)
        x = lx + 3
        while x < lx + lw - 3:
            bw = int(rng.integers(1, 3))
            if rng.uniform() < 0.55:
                cv2.rectangle(
                    scene.label_albedo, (x, ly + 3), (x + bw - 1, ly + int(lh * 0.6)), (0.05, 0.05, 0.05), -1
                )
            x += bw
        for k in range(2):
            ty = ly + int(lh * (0.72 + 0.14 * k))
            cv2.line(
                scene.label_albedo,
                (lx + 3, ty),
                (lx + int(lw * rng.uniform(0.4, 0.9)), ty),
                (0.2, 0.2, 0.2),
                1,
            )
    return scene


def _film_height(scene: PackScene) -> np.ndarray:
    """The film's surface: the product it is drawn over, softened, plus its wrinkles."""
    sigma = max(1.0, scene.pack.shape[0] * 0.006)
    return cv2.GaussianBlur(scene.product_height, (0, 0), sigma) + scene.wrinkles + 2.0 * scene.pack


def compose_photo(scene: PackScene) -> np.ndarray:
    """Compose the camera view.

    Returns:
        float32 (H, W, 3) RGB in [0, 1].
    """
    film_h = _film_height(scene)
    diffuse, spec = shade_height(film_h * 1.5, scene.light, shininess=40.0)
    bench_diff, _ = shade_height(scene.product_height, scene.light)
    under = scene.bench * (0.55 + 0.45 * scene.light[2])
    # The pack's shadow on the bench, offset away from the light.
    shift = np.float32([[1, 0, -scene.light[0] * 6], [0, 1, -scene.light[1] * 6]])
    drop = cv2.warpAffine(scene.pack, shift, scene.pack.shape[::-1], borderMode=cv2.BORDER_CONSTANT)
    under = under * (1 - 0.35 * cv2.GaussianBlur(drop, (0, 0), 3)[..., None] * (1 - scene.pack[..., None]))
    p = scene.product[..., None]
    under = under * (1 - p) + scene.product_albedo * p * (0.6 + 0.4 * bench_diff[..., None])
    haze = scene.haze[..., None]
    film = under * (1 - haze) + haze * 0.85
    film = film * (0.8 + 0.25 * diffuse[..., None]) + 0.55 * spec[..., None] * scene.pack[..., None]
    seal = scene.seal[..., None]
    seal_look = film * 0.85 + 0.1 + 0.05 * scene.seal_ribs[..., None]
    film = film * (1 - seal) + seal_look * seal
    label = scene.label[..., None]
    film = film * (1 - label) + scene.label_albedo * label * (0.85 + 0.15 * diffuse[..., None])
    pack = scene.pack[..., None]
    return np.clip(under * (1 - pack) + film * pack, 0, 1).astype(np.float32)


def compose_xray(scene: PackScene) -> np.ndarray:
    """Compose a transmission X-ray view: dense material dark, air bright; the goods show through.

    Returns:
        float32 (H, W) in [0, 1].
    """
    # A barrier laminate (PET / aluminium / PE) attenuates noticeably, more where it folds and most in
    # the fused seam (layers pressed together), so a hole, a slack fold or an unfused seam shows in
    # the X-ray as well.
    film = scene.pack * (0.15 + 0.015 * np.abs(scene.wrinkles)) + 0.25 * scene.seal * (
        1 + 0.3 * scene.seal_ribs
    )
    attenuation = scene.bench_density * 0.5 + scene.product_density + film + 0.08 * scene.label
    img = np.exp(-1.6 * attenuation)
    # Scatter softens edges a little, as in a real detector.
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.7)
    return np.clip(img * 0.95 + 0.02, 0, 1).astype(np.float32)
