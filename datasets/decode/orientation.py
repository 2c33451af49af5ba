"""EXIF orientation: read from the header (a TIFF's tag, an EXIF block, XMP, or a PNG's eXIf chunk
wherever it lies) and applied to the decoded pixels, as ``ImageOps.exif_transpose`` does."""

from __future__ import annotations

import re

import numpy as np
from PIL import ImageFile, TiffImagePlugin

from datasets.decode.tiff import ifd0_shorts

_ORIENTATION_TAG = 0x0112
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(?:="|>)([1-8])')


def orientation_of(im: ImageFile.ImageFile) -> int:
    """EXIF orientation 1-8 (1 when absent or invalid), from the header only.

    Parsed here rather than with ``Image.getexif``, which decodes a whole PNG to look for a late
    eXIf chunk and warns about malformed tags.
    """
    if isinstance(im, TiffImagePlugin.TiffImageFile):
        value = im.tag_v2.get(_ORIENTATION_TAG, 1)
        return value if isinstance(value, int) and 1 <= value <= 8 else 1
    raw = im.info.get("exif")
    if isinstance(raw, bytes):
        value = _exif_orientation(raw)
        if value:
            return value
    for key in ("xmp", "XML:com.adobe.xmp"):
        xmp = im.info.get(key)
        if isinstance(xmp, str):
            xmp = xmp.encode("utf-8", "replace")
        if isinstance(xmp, bytes) and (match := _XMP_ORIENTATION.search(xmp)):
            return int(match.group(1))
    return 1


def last_png_exif(data: bytes) -> bytes | None:
    """The payload of a PNG's last eXIf chunk, wherever it lies (None when it has none): the chunks
    are walked by their lengths, no pixel data is read."""
    found, at = None, 8
    while at + 8 <= len(data):
        length = int.from_bytes(data[at : at + 4], "big")
        kind = data[at + 4 : at + 8]
        if kind == b"eXIf":
            found = data[at + 8 : at + 8 + length]
        elif kind == b"IEND":
            break
        at += 12 + length
    return found


def _exif_orientation(raw: bytes) -> int:
    """The orientation tag of an EXIF block's first IFD (0 when absent or malformed)."""
    return ifd0_orientation(raw[6:] if raw.startswith(b"Exif\x00\x00") else raw)[0]


def ifd0_orientation(tiff: bytes) -> tuple[int, int]:
    """``(orientation, offset of its value)`` in a TIFF structure's first IFD; ``(0, -1)`` if none."""
    value, value_at = ifd0_shorts(tiff, _ORIENTATION_TAG).get(_ORIENTATION_TAG, (0, -1))
    return (value, value_at) if 1 <= value <= 8 else (0, -1)


def apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
    """Turn (H, W, C) pixels upright for an EXIF orientation, as ``ImageOps.exif_transpose`` does."""
    if orientation == 2:
        out = pixels[:, ::-1]
    elif orientation == 3:
        out = pixels[::-1, ::-1]
    elif orientation == 4:
        out = pixels[::-1]
    elif orientation == 5:
        out = pixels.transpose(1, 0, 2)
    elif orientation == 6:
        out = pixels.transpose(1, 0, 2)[:, ::-1]
    elif orientation == 7:
        out = pixels[::-1, ::-1].transpose(1, 0, 2)
    elif orientation == 8:
        out = pixels.transpose(1, 0, 2)[::-1]
    else:
        return pixels
    return np.ascontiguousarray(out)
