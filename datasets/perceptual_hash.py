"""A picture's perceptual hash: what stays of it when it is re-encoded, resized or retouched.

A content hash (sha256) tells the same bytes again; one byte changed, or the picture saved again as
JPEG, gives another. The perceptual hash here is a DCT hash (pHash) in two parts, from the picture in
grey shrunk to 32 x 32:

* **coarse**, 64 bits: the signs of the 8 x 8 lowest-frequency DCT coefficients against their median.
  It is cut into ``BANDS`` bands that a store looks up exactly: two coarse hashes at most
  ``COARSE_BITS`` apart agree on at least one band (pigeonhole), so no candidate is missed.
* **fine**, 256 bits: the same for the 16 x 16 lowest. The coarse part is the picture's layout, and
  pictures framed alike (a scanner's walls and beams in the same place) can share it; the fine part
  holds the texture inside the frame. A near-copy is a candidate by its coarse part and is judged by
  its fine part (``near_copy_bits`` of 256).

``bench/bench_near_copies.py`` measures both on synthetic, fixed-framing and real images. Either part
has exactly half its bits set (the median cut), so distances are even. The hash is not robust to
crops or turns of more than a degree or two: a near-copy is the same framing of the same scene.
:func:`perceptual_hashes` also gives the hashes of the picture mirrored and turned by quarter turns
(``TURNS``), so that a lookup finds a copy that was flipped or turned before it was sent again;
a store keeps the picture's own hash only. Grey is the plain mean of the channels, so that RGB and
BGR pixels of one picture give one hash. A picture with no layout to tell (flat, under 16 pixels a
side, or the same in every row or column) gets no hash: all such pictures would hash alike, and only
their bytes can tell a copy.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "BANDS",
    "COARSE_BITS",
    "FINE_BITS",
    "INVERSE_TURNS",
    "TURNS",
    "band_values",
    "coarse_part",
    "fine_distance",
    "hamming",
    "perceptual_hash",
    "perceptual_hashes",
]

_SIDE = 32
_COARSE = 8
_FINE = 16
FINE_BITS = _FINE * _FINE
"""Bits of the fine part: ``near_copy_bits`` counts against these."""
BANDS = 5
"""Bands the coarse part is cut into for lookup (13, 13, 13, 13 and 12 bits)."""
COARSE_BITS = BANDS - 1
"""How far apart the coarse parts of a near-copy may lie: the most the band lookup is certain to find."""
_BAND_WIDTHS = (13, 13, 13, 13, 12)
_MIN_SIDE = 16
_FLAT = 1.0
"""A thumbnail whose grey levels vary by less than this (standard deviation, in the picture's own
sample values: a 12-bit X-ray kept in 16 bits is judged on its own scale) is flat."""
_DEGENERATE = 64
"""A layout whose fine coefficients are this many times exactly nothing (one row repeated, a ramp)."""


def _bits(coefficients: np.ndarray) -> str:
    """The coefficients against the median of all but the first (the mean brightness), as hex."""
    return bytes(np.packbits(coefficients > np.median(coefficients[1:]))).hex()


TURNS = (
    "as sent",
    "mirrored left to right",
    "mirrored top to bottom",
    "turned half a turn",
    "mirrored along its diagonal",
    "turned a quarter turn clockwise",
    "turned a quarter turn anticlockwise",
    "mirrored along its other diagonal",
)
"""What each of :func:`perceptual_hashes`' hashes is of: the picture itself first, then its mirror
images and turns (the eight symmetries of a square, which the 32 x 32 thumbnail is)."""
INVERSE_TURNS = (0, 1, 2, 3, 4, 6, 5, 7)
"""The turn that undoes each of ``TURNS``, by index: where a picture turned by ``TURNS[k]`` matches
an earlier one, the picture is that one turned by ``TURNS[INVERSE_TURNS[k]]`` (every mirror image
and the half turn undo themselves; the quarter turns undo each other)."""


def perceptual_hash(pixels: np.ndarray) -> str | None:
    """The hash of an image (H, W) or (H, W, C), 8- or 16-bit: 80 lowercase hex digits, the coarse
    part's 16 then the fine part's 64; None for a picture with no layout to tell.

    Raises:
        ValueError: an array of another shape.
    """
    grey = _thumbnail(pixels)
    return None if grey is None else _hash(grey)


def perceptual_hashes(pixels: np.ndarray) -> tuple[str, ...] | None:
    """The hashes of an image and of its mirror images and turns, in the order of ``TURNS`` (the
    first is :func:`perceptual_hash`); None for a picture with no layout to tell.

    Raises:
        ValueError: an array of another shape.
    """
    grey = _thumbnail(pixels)
    if grey is None:
        return None
    # thumbnail (y, x): a turn or mirror of the picture is that of its thumbnail, to the resize's
    # rounding (a copy's hash stays within a bit or two of the turned one)
    turned = (
        grey,
        grey[:, ::-1],
        grey[::-1, :],
        grey[::-1, ::-1],
        grey.T,
        grey[::-1, :].T,
        grey[:, ::-1].T,
        grey[::-1, ::-1].T,
    )
    hashes = tuple(_hash(np.ascontiguousarray(t)) for t in turned)
    return None if None in hashes else hashes  # type: ignore[return-value]


def _thumbnail(pixels: np.ndarray) -> np.ndarray | None:
    """The picture in grey at 32 x 32 (float32), None where it is too small or flat to tell."""
    if pixels.ndim not in (2, 3):
        raise ValueError(f"perceptual hash of an image of shape {pixels.shape}: expected (H, W) or (H, W, C)")
    if min(pixels.shape[:2]) < _MIN_SIDE:
        return None
    # shrunk before anything else, so that a large picture is never copied whole
    small = cv2.resize(pixels, (_SIDE, _SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    if small.ndim == 3:
        channels = small.shape[2]
        small = small[..., : channels - 1 if channels in (2, 4) else channels]  # alpha is no picture
    grey = small.mean(axis=2) if small.ndim == 3 else small
    if grey.std() < _FLAT:
        return None
    return grey


def _hash(grey: np.ndarray) -> str | None:
    dct = cv2.dct(grey)
    fine = dct[:_FINE, :_FINE].ravel()
    if np.sum(np.abs(fine[1:]) <= 1e-4 * np.abs(fine[1:]).max()) >= _DEGENERATE:
        return None
    return _bits(dct[:_COARSE, :_COARSE].ravel()) + _bits(fine)


def coarse_part(phash: str) -> str:
    """The 16 hex digits the store's bands are cut from."""
    return phash[:16]


def fine_distance(a: str, b: str) -> int:
    """Bits in which two hashes' fine parts differ (of ``FINE_BITS``)."""
    return hamming(a[16:], b[16:])


def hamming(a: str, b: str) -> int:
    """Bits in which two hex strings differ."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def band_values(phash: str) -> tuple[int, ...]:
    """A hash's coarse part cut into ``BANDS`` integers, most significant bits first."""
    value, out, shift = int(coarse_part(phash), 16), [], 64
    for width in _BAND_WIDTHS:
        shift -= width
        out.append((value >> shift) & ((1 << width) - 1))
    return tuple(out)
