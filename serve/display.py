"""What the review page shows of a stored upload: a display PNG of its decoded, upright pixels, for
every format, drawn by :func:`pipeline.heatmap.display_png` as the picture under the heatmap's heat:
the same size, the same stretch of 16-bit values. The picture shown is the picture scored.

A browser shows an upload as it came with other pixels than scoring decoded, and not only for a TIFF
(Chromium draws a broken 0x0 image) or a 16-bit PNG (its top 8 bits: a 12-bit X-ray nearly black):
it applies a picture's EXIF orientation for some formats and not others (a WebP's, a PNG's written
after its pixel data, a PNG's XMP orientation: the picture on its side beside its upright heatmap),
draws the page through a transparent pixel where decoding keeps the colour stored under it (an RGBA
PNG or WebP, a palette PNG's transparent index: black scored, white shown), and applies a PNG's gAMA
chunk (a grey 100 drawn 168). Picking from the header the uploads a browser draws as decoded missed
each of these in turn, so none is sent as it came (the upload as received stays a download); the
display PNG carries none of them: 8-bit, opaque, upright, no gAMA chunk.

A display PNG is made on the picture's first view, not at upload: most shipments are released and
never looked at. It is kept in the store (``display/<sha256>.png``), so a page viewed again costs a
file read, not a decode; the cost is its bytes on disk, at most :data:`~pipeline.heatmap.MAX_SIDE`
pixels a side (about as large as the picture's heatmap). Making it is held to scoring's bounds: the
header read first under the byte and pixel limits, the format allow-list and the request's pixel
limit, the pixels reserved in the server's budget while they are decoded.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from datasets.decode import DecodeLimits, decode_image, read_image_header
from pipeline.heatmap import display_png
from pipeline.settings import decode_limits
from serve.deps import Services
from serve.errors import NotFoundError
from serve.scoring import refuse_format, refuse_request_pixels
from serve.storage import ImageStore

__all__ = ["shown_picture"]

log = logging.getLogger("clearsight.serve")


async def shown_picture(
    services: Services, sha256: str, *, gone: Callable[[], Awaitable[bool]] | None = None
) -> tuple[Path, str] | bytes:
    """The picture the review page shows of the stored upload with this hash: ``(path, media
    type)`` of its display PNG kept before, or the display PNG's bytes, made now and kept.
    ``gone``: the request's ``is_disconnected``, for its wait in line for the pixel budget.

    Raises:
        NotFoundError: no stored upload of this hash (or a malformed hash).
        ImageTooLargeError / RequestTooLargeError / ImageDecodeError: over a limit scoring holds
            uploads to (lowered since it was stored), a format no longer accepted, or not decodable.
        OverloadedError: the budget of pixels in flight is full (503, retry later).
    """
    store = services.store
    path, _ = store.find("images", sha256)  # only a stored upload's picture is shown
    try:
        return store.find("display", sha256)
    except NotFoundError:
        pass
    settings = services.settings
    limits = decode_limits(settings)
    name = f"stored image {sha256[:12]}"  # never the server's path, which a problem's detail would show
    header = await run_in_threadpool(read_image_header, path, limits=limits, name=name)
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
