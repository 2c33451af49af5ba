"""What the review page shows of a stored upload: its own bytes, where a browser shows them as they
were decoded for scoring, else a display PNG of the decoded, upright pixels.

A browser shows no TIFF (Chromium draws a broken 0x0 image) and shows a 16-bit PNG cut to its top 8
bits (a 12-bit X-ray nearly black); it applies a picture's EXIF orientation for some formats and not
others (Chromium leaves a WebP's, and a PNG's written after its pixel data, unapplied: the picture on
its side beside its upright heatmap). So a TIFF, a 16-bit picture and any picture stored turned are
decoded as scoring decodes them and drawn by :func:`pipeline.heatmap.display_png`, the picture under
the heatmap's heat: the same size, the same stretch of 16-bit values. A JPEG, an 8-bit PNG, a BMP or
a WebP stored upright is shown as it came (checked in Chromium: the same pixels).

A display PNG is made on the picture's first view, not at upload: most shipments are released and
never looked at. It is kept in the store (``display/<sha256>.png``), so a page viewed again costs a
file read, not a decode; the cost is its bytes on disk, at most :data:`~pipeline.heatmap.MAX_SIDE`
pixels a side (about as large as the picture's heatmap). Making it is held to scoring's bounds: the
header read first under the byte and pixel limits, the format allow-list and the request's pixel
limit, the pixels reserved in the server's budget while they are decoded.
"""

from __future__ import annotations

import logging
import mmap
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from datasets.decode import DecodeLimits, ImageHeader, decode_image, read_image_header
from pipeline.heatmap import display_png
from pipeline.settings import decode_limits
from serve.deps import Services
from serve.errors import NotFoundError
from serve.scoring import refuse_format, refuse_request_pixels
from serve.storage import ImageStore

__all__ = ["BROWSER_FORMATS", "late_png_exif", "shown_as_is", "shown_picture"]

log = logging.getLogger("clearsight.serve")

BROWSER_FORMATS = frozenset({"jpeg", "png", "bmp", "webp"})
"""The accepted formats a browser draws; any other (TIFF) is always shown as a display PNG."""


def shown_as_is(header: ImageHeader) -> bool:
    """Whether a browser shows a file of this header as :func:`~datasets.decode.decode_image`
    decodes it: a format it draws, 8 bits a sample, stored upright (a PNG's eXIf chunk after its
    pixel data, which the header does not see, is :func:`late_png_exif`'s to find)."""
    return header.format in BROWSER_FORMATS and header.sample_bytes == 1 and header.orientation == 1


def late_png_exif(path: Path) -> bool:
    """Whether the PNG at ``path`` may hold an eXIf chunk after its image data: decoding turns the
    picture by it, browsers do not, and its header reads as upright. Looked for as bytes ("eXIf"
    anywhere after the first "IDAT"), at the speed of a search, never chunk by chunk: a file of a
    million tiny chunks costs no more; one found in compressed data only costs a display PNG."""
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        image_data = data.find(b"IDAT")
        return image_data >= 0 and data.find(b"eXIf", image_data) >= 0


async def shown_picture(
    services: Services, sha256: str, *, gone: Callable[[], Awaitable[bool]] | None = None
) -> tuple[Path, str] | bytes:
    """The picture the review page shows of the stored upload with this hash: ``(path, media
    type)`` of a stored file to send (the upload itself, or its display PNG kept before), or the
    display PNG's bytes, made now and kept. ``gone``: the request's ``is_disconnected``, for its
    wait in line for the pixel budget.

    Raises:
        NotFoundError: no stored upload of this hash (or a malformed hash).
        ImageTooLargeError / RequestTooLargeError / ImageDecodeError: over a limit scoring holds
            uploads to (lowered since it was stored), a format no longer accepted, or not decodable.
        OverloadedError: the budget of pixels in flight is full (503, retry later).
    """
    store = services.store
    path, media_type = store.find("images", sha256)  # only a stored upload's picture is shown
    try:
        return store.find("display", sha256)
    except NotFoundError:
        pass
    settings = services.settings
    limits = decode_limits(settings)
    name = f"stored image {sha256[:12]}"  # never the server's path, which a problem's detail would show
    header = await run_in_threadpool(read_image_header, path, limits=limits, name=name)
    if shown_as_is(header) and not (header.format == "png" and await run_in_threadpool(late_png_exif, path)):
        return path, media_type
    refuse_format(services, header, name)
    refuse_request_pixels(services, [header])
    async with services.pixels.hold(
        header.budget_pixels,
        retry_after_s=settings.retry_after_s,
        wait_s=settings.max_pixel_wait_s,
        gone=gone,
    ):
        return await run_in_threadpool(_draw, store, path, sha256, limits, name)


def _draw(store: ImageStore, path: Path, sha256: str, limits: DecodeLimits, name: str) -> bytes:
    png = display_png(decode_image(path, limits=limits, name=name).pixels)
    try:
        store.save_display(sha256, png)
    except OSError as exc:  # shown all the same; the next view makes it again
        log.warning("display PNG of image %s not kept: %s", sha256, exc)
    return png
