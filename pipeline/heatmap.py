"""Heatmap overlays: the anomaly map drawn over the image, as a PNG a person can look at."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["MAX_SIDE", "display_png", "fit_within", "legend_svg", "overlay", "overlay_png"]


DISPLAY_PERCENTILE = 99.9
"""A 16-bit image is shown stretched so that this percentile of its values is white."""


def _to_rgb8(image: np.ndarray) -> np.ndarray:
    """(H, W[, C]) uint8/uint16/float image -> (H, W, 3) uint8 RGB, for people to look at.

    A 16-bit image is stretched from 0 to its :data:`DISPLAY_PERCENTILE` value, as an X-ray viewer's
    window does: detectors write 12 or 14 bits into 16-bit files, and a 12-bit X-ray divided by 257
    showed as black (values 3-16). An image that fills the 16 bits shows as before.
    """
    img = np.asarray(image)
    if img.dtype == np.uint16:
        # never stretched beyond 8-bit values shown as they are: a dark picture's noise stays dark
        top = max(float(np.percentile(img, DISPLAY_PERCENTILE)), 255.0) if img.size else 255.0
        img = np.clip(img * (255.0 / top), 0.0, 255.0).round().astype(np.uint8)
    elif img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def overlay(image: np.ndarray, anomaly_map: np.ndarray, *, alpha: float = 0.45) -> np.ndarray:
    """Blend a JET-coloured anomaly map over the image.

    Args:
        image: (H, W), (H, W, 1) or (H, W, 3) RGB, uint8, uint16 or float in [0, 1].
        anomaly_map: (h, w) float in [0, 1]; resized to (H, W) if needed.
        alpha: weight of the heatmap; where the map is near 0 the image shows through untouched.

    Returns:
        (H, W, 3) uint8 RGB.
    """
    rgb = _to_rgb8(image)
    h, w = rgb.shape[:2]
    amap = np.clip(np.asarray(anomaly_map, dtype=np.float32), 0.0, 1.0)
    if amap.shape != (h, w):
        amap = cv2.resize(amap, (w, h), interpolation=cv2.INTER_LINEAR)
    heat = cv2.applyColorMap((amap * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    weight = (alpha * np.clip(amap * 1.5, 0.0, 1.0))[:, :, None]
    out = rgb.astype(np.float32) * (1.0 - weight) + heat.astype(np.float32) * weight
    return out.round().astype(np.uint8)


MAX_SIDE = 2048
"""The longest side a heatmap PNG is drawn at. Drawing costs about 45 bytes a pixel (the blend is
done in float), which no pixel budget counted: a 49-megapixel upload took 2.2 GB to draw, at full
size, a heatmap nobody views at full size; the anomaly map itself is far coarser."""


def fit_within(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` shrunk (area-averaged) so that its longer side is at most ``max_side``; as it is
    when it already fits."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    if image.dtype not in (np.uint8, np.uint16, np.float32, np.float64):
        image = _to_rgb8(image)  # what OpenCV cannot resize (float16, int32, bool), made 8-bit first
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    shrunk = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    return shrunk[:, :, None] if image.ndim == 3 and shrunk.ndim == 2 else shrunk


def overlay_png(
    image: np.ndarray, anomaly_map: np.ndarray, *, alpha: float = 0.45, max_side: int = MAX_SIDE
) -> bytes:
    """:func:`overlay`, encoded as PNG bytes, drawn with its longer side at most ``max_side``."""
    ok, buf = cv2.imencode(".png", overlay(fit_within(image, max_side), anomaly_map, alpha=alpha)[:, :, ::-1])
    if not ok:  # pragma: no cover - cv2 only fails here on an empty image
        raise ValueError("could not encode the heatmap overlay as PNG")
    return buf.tobytes()


def display_png(image: np.ndarray, *, max_side: int = MAX_SIDE) -> bytes:
    """The picture alone, as :func:`overlay_png` draws it under the heat (the same shrink, the same
    16-bit stretch), encoded as a PNG a browser shows: for the review page, where a TIFF showed as a
    broken image and a 12-bit X-ray in a 16-bit PNG nearly black. A grey picture stays grey (one
    channel: a third of the bytes to keep)."""
    rgb = _to_rgb8(fit_within(image, max_side))
    grey = image.ndim == 2 or image.shape[2] == 1
    ok, buf = cv2.imencode(".png", rgb[:, :, 0] if grey else rgb[:, :, ::-1])
    if not ok:  # pragma: no cover - cv2 only fails here on an empty image
        raise ValueError("could not encode the display picture as PNG")
    return buf.tobytes()


def legend_svg(*, width: int = 420) -> str:
    """The heatmap's colour scale as an inline SVG, its stops taken from the same colour map as
    :func:`overlay`, with what the map's values mean: training scales every model's map so that a
    clean validation image's hottest spots sit near 0.5 and a defect reaches 1."""
    jet = cv2.applyColorMap(np.linspace(0, 255, 9).astype(np.uint8)[:, None], cv2.COLORMAP_JET)
    stops = "".join(
        f'<stop offset="{i / 8:.3f}" stop-color="#{r:02x}{g:02x}{b:02x}"/>'
        for i, (r, g, b) in enumerate(jet[:, 0, ::-1])
    )
    bar, left = width - 20, 10
    labels = "".join(
        f'<text x="{left + at * bar:.0f}" y="34" text-anchor="{anchor}">{words}</text>'
        for at, anchor, words in (
            (0.0, "start", "0: like clean cargo"),
            (0.5, "middle", "0.5: hottest clean spots"),
            (1.0, "end", "1: a defect"),
        )
    )
    return (
        '<svg class="heatmap-legend" role="img" aria-label="Heatmap colour scale: blue is like clean '
        f'cargo, red a defect" width="{width}" height="40" viewBox="0 0 {width} 40" font-size="11" '
        # a page's `svg { width: 100% }` stretched it 2.5 times, its labels 33 px tall
        f'style="width: {width}px; max-width: 100%; height: auto" '
        'xmlns="http://www.w3.org/2000/svg">'
        f'<defs><linearGradient id="heat-scale">{stops}</linearGradient></defs>'
        f'<rect x="{left}" y="6" width="{bar}" height="14" fill="url(#heat-scale)" stroke="#495057" '
        f'stroke-width="0.5"/>{labels}</svg>'
    )
