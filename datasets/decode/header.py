"""Reading an image's header with Pillow, one accepted format's plugin at a time: the size as
stored, the bytes a sample takes, and whether the file holds one picture. Pillow runs here with the
warnings it gives about a file silenced and one decode at a time."""

from __future__ import annotations

import re
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from PIL import BmpImagePlugin, Image, ImageFile, JpegImagePlugin, PngImagePlugin, TiffImagePlugin

from datasets.decode.limits import DecodeLimits, check_pixels
from datasets.decode.pixels import ACCEPTED_MODES_TEXT, is_16bit_colour
from datasets.decode.tiff import (
    COMPRESSION,
    check_compression,
    compression_of,
    only_previews_after_the_first,
)
from datasets.errors import ImageDecodeError, ImageTooLargeError

# Pillow emits recoverable problems of a file as warnings: a corrupt EXIF tag (orientation is read
# from it), an invalid APNG chunk, and its decompression-bomb warning when a TIFF above ~89 Mpx loads,
# a size our limits checked already (``max_pixels`` may be set above Pillow's). A decode either
# succeeds or raises ours, so those warnings are silenced: by filters on their categories, messages
# and Pillow's modules, not by ``warnings.catch_warnings`` and ``simplefilter("ignore")``, whose
# filters are the process's: while one thread decoded, every other thread's warnings were dropped too
# (the scorer's once-per-run warning about a model's 16-bit depth was lost 15 times in 20 while
# another upload decoded, and never said again). The filters stay, so they are the process's too: an
# application's own Pillow code no longer sees these warnings after a first decode, its own
# DecompressionBombWarning included, but sees every other (a filter on all of PIL's modules hid them
# all, a ``-W error`` run's included). They are put back in front at each decode, where a test
# runner's or a caller's own filters (``error``) may have been put before them or have replaced the list.
_PILLOW_MODULES = r"PIL(\.|$)"
_PILLOW_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (Image.DecompressionBombWarning, ""),
    (
        UserWarning,
        # TiffImagePlugin's (an EXIF block is a TIFF directory), Image.Exif's, PngImagePlugin's
        "Corrupt EXIF data|Possibly corrupt EXIF|Tag data larger than file|Tag offset too large|"
        "Metadata Warning|Invalid APNG",
    ),
)
"""The warnings silenced: (category, the start of the message, a regular expression; "" for any)."""
_PILLOW_FILTERS = [
    ("ignore", re.compile(message, re.I) if message else None, category, re.compile(_PILLOW_MODULES), 0)
    for category, message in _PILLOW_WARNINGS
]
"""The entries ``warnings.filterwarnings("ignore", message, category, _PILLOW_MODULES)`` puts in
``warnings.filters`` for ``_PILLOW_WARNINGS``, in their order."""
# Decodes take turns: a WebP's open swaps Pillow's own pixel limit, a module global (``open_header``).
_PILLOW_LOCK = threading.Lock()


@contextmanager
def pillow_quiet() -> Iterator[None]:
    """Run Pillow with the warnings it gives about a file silenced (``_PILLOW_WARNINGS``), one decode
    at a time; other warnings, Pillow's included, in this thread or another, are left as they are.

    The filters that silence them are the process's, and stay after the decode (a filter put in place
    for the decode alone silenced other threads' warnings meanwhile): from the first decode on, an
    application's own Pillow code does not see those warnings either.
    """
    with _PILLOW_LOCK:
        # left alone when in front already: any change empties the warning registries, and
        # warnings said once per place would be said again after each decode
        if warnings.filters[: len(_PILLOW_FILTERS)] != _PILLOW_FILTERS:
            for category, message in reversed(_PILLOW_WARNINGS):  # each in front: the first ends first
                warnings.filterwarnings("ignore", message, category, _PILLOW_MODULES)
        yield


def open_header(fp: IO[bytes], fmt: str, source: str, limits: DecodeLimits) -> ImageFile.ImageFile:
    """Parse the header with the one Pillow plugin for ``fmt``; the caller holds ``_PILLOW_LOCK``.

    The plugin classes are used directly instead of ``Image.open`` so that only the five accepted
    formats can ever be parsed and Pillow's own decompression-bomb check (a warning, or an error at
    twice its fixed limit) does not preempt ours, which uses the configured limit. The WebP plugin
    runs that check itself while opening (libwebp allocates the canvas then): a WebP's size is read
    and checked against ``limits`` first, and Pillow's check is off while it opens.
    """
    try:
        if fmt == "png":
            return PngImagePlugin.PngImageFile(fp)
        if fmt == "jpeg":
            # Not jpeg_factory: a JPEG that is also an MPO is read as its first (JPEG) frame.
            return JpegImagePlugin.JpegImageFile(fp)
        if fmt == "bmp":
            return BmpImagePlugin.BmpImageFile(fp)
        if fmt == "tiff":
            start = fp.tell()
            try:
                tiff = TiffImagePlugin.TiffImageFile(fp)
            except (
                OSError,
                SyntaxError,
                ValueError,
                EOFError,
                IndexError,
                KeyError,
                TypeError,
                struct.error,
            ):
                # Pillow refuses a compression it knows not as a broken header ("(34712)"): so is it
                # named, where the first IFD says which it is (read on the error path alone)
                fp.seek(start)
                check_compression(compression_of(fp.read()), source)
                raise
            check_compression(tiff.tag_v2.get(COMPRESSION), source, sixteen_bit_colour=is_16bit_colour(tiff))
            return tiff
        from PIL import WebPImagePlugin  # imported late: it loads libwebp

        start = fp.tell()
        canvas = _webp_canvas(fp.read(30))
        fp.seek(start)
        if canvas is not None:
            check_pixels(*canvas, limits, source)
        pillows_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            return WebPImagePlugin.WebPImageFile(fp)
        finally:
            Image.MAX_IMAGE_PIXELS = pillows_limit
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"refused by the decoder's size guard ({exc})", source=source) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error) as exc:
        if "unknown pixel mode" in str(exc):  # a well-formed header of a layout Pillow has no mode for
            raise ImageDecodeError(
                f"unsupported {fmt.upper()} sample layout ({exc}: no mode for its samples per pixel "
                f"and bits); {ACCEPTED_MODES_TEXT}",
                source=source,
            ) from exc
        raise ImageDecodeError(f"truncated or corrupt {fmt.upper()} header ({exc})", source=source) from exc
    except ImportError as exc:
        raise ImageDecodeError(f"this Pillow build cannot read {fmt.upper()} ({exc})", source=source) from exc


def _webp_canvas(head: bytes) -> tuple[int, int] | None:
    """A WebP's (width, height) from the header of its first chunk (a lossy VP8 frame, a lossless
    VP8L one, or the extended format's VP8X canvas): the file's first 30 bytes. None where that
    header cannot be read; the plugin then reads no size either, and libwebp refuses the file."""
    chunk = head[12:16]
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":  # the frame's start code
        return (
            int.from_bytes(head[26:28], "little") & 0x3FFF,  # the top 2 bits are a scaling hint
            int.from_bytes(head[28:30], "little") & 0x3FFF,
        )
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:  # the lossless signature
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X" and len(head) >= 30:
        return int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1
    return None


def check_one_page(im: ImageFile.ImageFile, data: bytes, fmt: str, source: str) -> None:
    """Refuse a file of several pictures: a multi-page TIFF holding several views or energies of
    one scan, an animated PNG or WebP. Scoring the first alone would pass the others unseen. A TIFF
    whose further pages are all reduced-resolution previews or masks (NewSubfileType) holds one
    picture. Pages are never counted (counting walks them all, which a file of a few megabytes of
    empty pages makes last minutes): at most ``_PAGES_LOOKED_AT`` (:mod:`.tiff`) are read, on a
    second reader of the bytes, so that the picture to score stays on its first page."""
    if fmt == "jpeg" or not getattr(im, "is_animated", False):  # an MPO's frames are previews
        return
    if fmt == "tiff" and only_previews_after_the_first(data):
        return
    raise ImageDecodeError(
        f"a {fmt.upper()} of several pages or frames; one picture per file is scored (save each page as "
        "its own file, so that none goes unseen)",
        source=source,
    )


def sample_bytes_of(im: ImageFile.ImageFile) -> int:
    """Bytes a decoded sample takes: 2 for 16-bit data (a PNG's raw mode, a TIFF's BitsPerSample)."""
    if isinstance(im, TiffImagePlugin.TiffImageFile):
        bits = im.tag_v2.get(TiffImagePlugin.BITSPERSAMPLE, 8)
        return 2 if max(bits if isinstance(bits, tuple) else (bits,)) > 8 else 1
    raw = im.tile[0][3] if im.tile else im.mode
    raw = raw[0] if isinstance(raw, tuple) else raw
    return 2 if "16" in str(raw) or im.mode.startswith("I") else 1


def stored_size(im: ImageFile.ImageFile) -> tuple[int, int]:
    """(width, height) as stored, before EXIF orientation.

    Pillow reports some TIFFs' size already upright (it turns them while loading), so a TIFF's
    stored size is read from its own tags.
    """
    if isinstance(im, TiffImagePlugin.TiffImageFile):
        width = im.tag_v2.get(TiffImagePlugin.IMAGEWIDTH)
        height = im.tag_v2.get(TiffImagePlugin.IMAGELENGTH)
        if isinstance(width, int) and isinstance(height, int):
            return width, height
    return im.size
