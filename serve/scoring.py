"""From multipart uploads to predictions: read, bound, decode, batch-score, draw heatmaps.

Shared by ``POST /v1/score`` and ``POST /v1/shipments``. CPU-heavy steps (decoding, heatmap PNGs)
run in the thread pool and inference in the cargo type's batcher thread, so the event loop only
waits.
"""

from __future__ import annotations

import base64
import unicodedata
from dataclasses import dataclass

import numpy as np
from fastapi import UploadFile
from starlette.concurrency import run_in_threadpool

from datasets.decode import DecodeLimits, decode_image
from datasets.errors import CargoTypeError, ImageDecodeError
from models.inference import Prediction
from pipeline.heatmap import overlay_png
from serve.deps import Services
from serve.errors import RequestTooLargeError

__all__ = ["Upload", "decode_uploads", "heatmap_base64", "predict", "safe_label"]


@dataclass(frozen=True)
class Upload:
    """A decoded upload: its display name, raw bytes, pixels (H, W[, C]) and content hash."""

    filename: str
    data: bytes
    pixels: np.ndarray
    sha256: str
    image_format: str


def safe_label(name: str | None, index: int) -> str:
    """A client file name made safe to show and log: no control characters, no folders, <= 128 chars."""
    raw = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    cleaned = "".join(ch for ch in raw if unicodedata.category(ch)[0] != "C").strip()
    return cleaned[:128] or f"image-{index + 1}"


async def decode_uploads(services: Services, uploads: list[UploadFile]) -> list[Upload]:
    """Read and decode every upload, enforcing the per-request image count and the format allow-list.

    Raises:
        RequestTooLargeError: more images than ``max_images_per_request``.
        ImageDecodeError / ImageTooLargeError: an upload that is not an accepted, decodable image.
    """
    settings = services.settings
    if len(uploads) > settings.max_images_per_request:
        raise RequestTooLargeError(
            f"{len(uploads)} images in one request; the limit is {settings.max_images_per_request}"
        )
    limits = DecodeLimits(max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels)
    decoded: list[Upload] = []
    for index, upload in enumerate(uploads):
        name = safe_label(upload.filename, index)
        data = await upload.read()
        image = await run_in_threadpool(decode_image, data, limits=limits, name=name)
        fmt = str(image.format).lower()
        if fmt not in settings.allowed_formats:
            raise ImageDecodeError(
                f"format {fmt!r} is not accepted; accepted: {', '.join(settings.allowed_formats)}",
                source=name,
            )
        decoded.append(
            Upload(filename=name, data=data, pixels=image.pixels, sha256=image.sha256, image_format=fmt)
        )
    return decoded


async def predict(services: Services, cargo_type: str, uploads: list[Upload]) -> list[Prediction]:
    """Score the uploads with the cargo type's model through its batcher.

    Raises:
        CargoTypeError: no model is loaded for ``cargo_type``.
        OverloadedError / ScoringTimeoutError / ModelError: from the batcher.
    """
    batcher = services.batchers.get(cargo_type)
    if batcher is None:
        known = ", ".join(sorted(services.batchers)) or "none loaded"
        raise CargoTypeError(f"no model for cargo type {cargo_type!r}; accepted: {known}")
    predictions = await batcher.predict(
        [u.pixels for u in uploads], timeout_s=services.settings.request_timeout_s
    )
    for prediction in predictions:
        services.metrics.scores.labels(cargo_type).observe(float(prediction.score))
    return predictions


def _overlay(pixels: np.ndarray, anomaly_map: np.ndarray) -> bytes:
    return overlay_png(pixels, anomaly_map)


async def heatmap_png(upload: Upload, prediction: Prediction) -> bytes:
    """The heatmap overlay PNG of one scored upload (drawn in the thread pool)."""
    return await run_in_threadpool(_overlay, upload.pixels, prediction.anomaly_map)


def heatmap_base64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")
