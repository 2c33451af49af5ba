"""Turn a file or an upload into pixels: the one decoding function every later stage uses.

:func:`decode_image` accepts JPEG, PNG, BMP, TIFF and WebP; 8- and 16-bit; grayscale (X-ray), RGB,
RGBA, gray+alpha and palette images. It is bounded (byte size, then pixel count from the header,
both before any pixel is decoded), strict (a truncated file is refused, never "recovered" with grey)
and honours EXIF orientation. Every failure is an :class:`~datasets.errors.ImageDecodeError` naming
the source and the reason.

Decoding is done by Pillow, whose loader is strict about truncation and understands every mode,
except for 16-bit colour (48/64-bit RGB/RGBA PNG or TIFF, 32-bit gray+alpha PNG), which Pillow can
only hand over truncated to 8 bits: those are decoded by OpenCV, still with Pillow reading the
header. Each file is decoded once.

The modules, in the order a decode uses them: :mod:`.source` (the bytes, bounded, and their
format), :mod:`.limits` (the bounds), :mod:`.header` (Pillow's reading of the header),
:mod:`.jpeg` and :mod:`.tiff` (what those formats need beyond it), :mod:`.pixels` (the decoding),
:mod:`.orientation` (EXIF orientation); :mod:`.decoding` holds the entry points.
"""

from __future__ import annotations

from datasets.decode.decoding import (
    DecodedImage,
    ImageHeader,
    decode_image,
    lossy_compression,
    read_image_header,
    read_image_size,
    to_float_rgb,
)
from datasets.decode.limits import DecodeLimits
from datasets.decode.source import ACCEPTED_FORMATS

__all__ = [
    "ACCEPTED_FORMATS",
    "DecodeLimits",
    "DecodedImage",
    "ImageHeader",
    "decode_image",
    "lossy_compression",
    "read_image_header",
    "read_image_size",
    "to_float_rgb",
]
