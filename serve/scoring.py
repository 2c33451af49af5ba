"""From multipart uploads to predictions: read, bound, decode, batch-score, draw heatmaps.

Shared by ``POST /v1/score`` and ``POST /v1/shipments``. CPU-heavy steps (decoding, heatmap PNGs)
run in the thread pool and inference in the cargo type's batcher thread, so the event loop only
waits.
"""

from __future__ import annotations

import base64
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from fastapi import Request, UploadFile
from starlette.concurrency import run_in_threadpool

from datasets.decode import ImageHeader, decode_image, read_image_header
from datasets.errors import CargoTypeError, ImageDecodeError, InputError
from models.inference import Prediction
from pipeline.heatmap import overlay_png
from pipeline.settings import decode_limits
from serve.batching import MicroBatcher
from serve.deps import Services
from serve.errors import RequestTooLargeError

__all__ = [
    "Upload",
    "batcher_for",
    "decoded_uploads",
    "heatmap_base64",
    "predict",
    "refuse_format",
    "refuse_repeated_fields",
    "refuse_request_pixels",
    "safe_label",
]


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


async def refuse_repeated_fields(request: Request, *names: str) -> None:
    """Refuse a form that gives one of the fields ``names`` more than once: the route would see the
    last only, so a declaration with a radiation alarm followed by one without was decided on the
    second, silently. Reads the form FastAPI has already parsed for the route.

    Raises:
        InputError: naming the field and how many times it came.
    """
    form = await request.form()
    for name in names:
        count = len(form.getlist(name))
        if count > 1:
            raise InputError(f"form field {name!r} was sent {count} times; send it once")


class _Received(NamedTuple):
    name: str
    data: bytes
    header: ImageHeader


async def _receive(services: Services, files: list[UploadFile]) -> list[_Received]:
    """Read the uploads and check everything their headers tell before any pixel is decoded."""
    settings = services.settings
    if len(files) > settings.max_images_per_request:
        raise RequestTooLargeError(
            f"{len(files)} images in one request; the limit is {settings.max_images_per_request}"
        )
    limits = decode_limits(settings)
    received: list[_Received] = []
    for index, file in enumerate(files):
        name = safe_label(file.filename, index)
        data = await file.read()
        header = await run_in_threadpool(read_image_header, data, limits=limits, name=name)
        refuse_format(services, header, name)
        received.append(_Received(name, data, header))
    refuse_request_pixels(services, [r.header for r in received])
    return received


def refuse_format(services: Services, header: ImageHeader, name: str) -> None:
    """Refuse an image of a format the service does not accept (``allowed_formats``).

    Raises:
        ImageDecodeError: naming the format and those accepted.
    """
    allowed = services.settings.allowed_formats
    if header.format not in allowed:
        raise ImageDecodeError(
            f"format {header.format!r} is not accepted; accepted: {', '.join(allowed)}", source=name
        )


def refuse_request_pixels(services: Services, headers: list[ImageHeader]) -> None:
    """Refuse images of more pixels in all than one request may decode (``max_request_pixels``).

    Raises:
        RequestTooLargeError: naming the count, the pixels and the limit.
    """
    limit = services.settings.max_request_pixels
    total = sum(h.budget_pixels for h in headers)
    if total > limit:
        deep = " (a 16-bit pixel counted twice)" if any(h.sample_bytes > 1 for h in headers) else ""
        raise RequestTooLargeError(
            f"{len(headers)} images of {total:,} pixels in all{deep}; the limit is "
            f"{limit:,} pixels per request (max_request_pixels); send fewer or smaller images"
        )


@asynccontextmanager
async def decoded_uploads(
    services: Services, files: list[UploadFile], *, gone: Callable[[], Awaitable[bool]] | None = None
) -> AsyncIterator[list[Upload]]:
    """Read, check and decode a request's uploads, holding their pixels in the server's budget
    (:class:`~serve.pixel_budget.PixelBudget`) until the block ends.

    Every bound is checked on the headers first: the image count, each image's bytes and pixels,
    the format allow-list and the request's total pixels; then the budget is reserved (waiting in
    line, where ``gone``, the request's ``is_disconnected``, lets a request whose client left give
    up its place); only then is anything decoded.

    Raises:
        RequestTooLargeError: more images than ``max_images_per_request``, or more pixels in all
            than ``max_request_pixels``.
        ImageDecodeError / ImageTooLargeError: an upload that is not an accepted, decodable image.
        OverloadedError: the requests in flight already hold too many pixels (503, retry later).
    """
    received = await _receive(services, files)
    pixels = sum(r.header.budget_pixels for r in received)
    settings = services.settings
    limits = decode_limits(settings)
    async with services.pixels.hold(
        pixels, retry_after_s=settings.retry_after_s, wait_s=settings.max_pixel_wait_s, gone=gone
    ):
        decoded: list[Upload] = []
        for item in received:
            image = await run_in_threadpool(decode_image, item.data, limits=limits, name=item.name)
            decoded.append(
                Upload(
                    filename=item.name,
                    data=item.data,
                    pixels=image.pixels,
                    sha256=image.sha256,
                    image_format=image.format,
                )
            )
        yield decoded


def batcher_for(services: Services, cargo_type: str) -> MicroBatcher:
    """The batcher of the cargo type's model.

    Raises:
        CargoTypeError: no model is loaded for ``cargo_type``.
    """
    batcher = services.batchers.get(cargo_type)
    if batcher is None:
        known = ", ".join(sorted(services.batchers)) or "none loaded"
        raise CargoTypeError(f"no model for cargo type {cargo_type!r}; accepted: {known}")
    return batcher


async def predict(
    services: Services, cargo_type: str, uploads: list[Upload], *, observe: bool = True
) -> list[Prediction]:
    """Score the uploads with the cargo type's model through its batcher; ``observe`` counts their
    scores in the metrics (not when a decision's heatmaps are made again: scored once already).

    Raises:
        CargoTypeError: no model is loaded for ``cargo_type``.
        OverloadedError / ScoringTimeoutError / ModelError: from the batcher.
    """
    batcher = batcher_for(services, cargo_type)
    predictions = await batcher.predict(
        [u.pixels for u in uploads], timeout_s=services.settings.request_timeout_s
    )
    for prediction in predictions if observe else ():
        services.metrics.scores.labels(cargo_type).observe(float(prediction.score))
    return predictions


def _overlay(pixels: np.ndarray, anomaly_map: np.ndarray) -> bytes:
    return overlay_png(pixels, anomaly_map)


async def heatmap_png(upload: Upload, prediction: Prediction) -> bytes:
    """The heatmap overlay PNG of one scored upload (drawn in the thread pool)."""
    return await run_in_threadpool(_overlay, upload.pixels, prediction.anomaly_map)


def heatmap_base64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")
