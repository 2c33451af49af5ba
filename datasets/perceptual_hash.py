"""A picture's perceptual hash: what stays of it when it is re-encoded, resized or retouched.

A content hash (sha256) tells the same bytes again; one byte changed, or the picture saved again as
JPEG, gives another. The perceptual hash here is the DCT hash (pHash): the picture in grey, shrunk to
32 x 32, and the signs of its 8 x 8 lowest-frequency DCT coefficients against their median, 64 bits
written as 16 hex digits. Copies of one picture land a few bits apart and different pictures about
32 (``bench/bench_near_copies.py`` measures both on synthetic and real images).

It is not robust to crops, rotations of more than a degree or two, or mirroring: a near-copy is the
same framing of the same scene. Grey is the plain mean of the channels, so that RGB and BGR pixels
of one picture give one hash.

The audit store finds hashes within ``MAX_BITS`` of each other by cutting them into ``BANDS`` bands
and looking each band up exactly: two hashes at most ``BANDS - 1`` bits apart agree on at least one
band (pigeonhole), so no near-copy within that distance is missed.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["BANDS", "MAX_BITS", "band_values", "hamming", "perceptual_hash"]

_SIDE = 32
_LOW = 8
BANDS = 5
"""Bands a hash is cut into for lookup (13, 13, 13, 13 and 12 bits)."""
MAX_BITS = BANDS - 1
"""The largest distance the band lookup is certain to find."""
_BAND_WIDTHS = (13, 13, 13, 13, 12)
_FLAT = 1.0
"""A thumbnail whose grey levels vary by less than this (standard deviation, 8-bit units) is flat."""


def perceptual_hash(pixels: np.ndarray) -> str | None:
    """The 64-bit DCT hash of an image (H, W) or (H, W, C), 8- or 16-bit, as 16 lowercase hex digits;
    None for a flat picture (blank, a lens cap, all white), which has no layout to hash: every such
    picture would hash alike, so that only its bytes can tell a copy.

    Raises:
        ValueError: an image with no pixels, or of another shape.
    """
    if pixels.ndim not in (2, 3) or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"perceptual hash of an image of shape {pixels.shape}: expected (H, W) or (H, W, C)")
    if pixels.ndim == 3 and pixels.shape[2] > 3:
        pixels = pixels[..., :3]  # an alpha channel is no part of the picture
    # shrunk before anything else, so that a large picture is never copied whole as floats
    small = cv2.resize(np.ascontiguousarray(pixels), (_SIDE, _SIDE), interpolation=cv2.INTER_AREA)
    grey = small.astype(np.float32)
    if grey.ndim == 3:
        grey = grey.mean(axis=2)
    if grey.std() < _FLAT * (257 if pixels.dtype == np.uint16 else 1):
        return None
    low = cv2.dct(grey)[:_LOW, :_LOW].ravel()
    bits = low > np.median(low[1:])  # the DC term is the mean brightness, not the layout
    return bytes(np.packbits(bits)).hex()


def hamming(a: str, b: str) -> int:
    """Bits in which two hex hashes differ."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def band_values(phash: str) -> tuple[int, ...]:
    """The hash cut into ``BANDS`` integers, most significant bits first."""
    value, out, shift = int(phash, 16), [], 64
    for width in _BAND_WIDTHS:
        shift -= width
        out.append((value >> shift) & ((1 << width) - 1))
    return tuple(out)
