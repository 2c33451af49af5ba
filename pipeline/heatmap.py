"""Heatmap overlays: the anomaly map drawn over the image, as a PNG a person can look at."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["overlay", "overlay_png"]


def _to_rgb8(image: np.ndarray) -> np.ndarray:
    """(H, W[, C]) uint8/uint16/float image -> (H, W, 3) uint8 RGB."""
    img = np.asarray(image)
    if img.dtype == np.uint16:
        img = (img / 257.0).round().astype(np.uint8)
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


def overlay_png(image: np.ndarray, anomaly_map: np.ndarray, *, alpha: float = 0.45) -> bytes:
    """:func:`overlay`, encoded as PNG bytes."""
    ok, buf = cv2.imencode(".png", overlay(image, anomaly_map, alpha=alpha)[:, :, ::-1])
    if not ok:  # pragma: no cover - cv2 only fails here on an empty image
        raise ValueError("could not encode the heatmap overlay as PNG")
    return buf.tobytes()
