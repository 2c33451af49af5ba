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
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
import struct
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, NamedTuple

import cv2
import numpy as np
from PIL import BmpImagePlugin, Image, ImageFile, JpegImagePlugin, PngImagePlugin, TiffImagePlugin

from datasets.errors import ImageDecodeError, ImageTooLargeError

__all__ = [
    "ACCEPTED_FORMATS",
    "DecodeLimits",
    "DecodedImage",
    "ImageHeader",
    "decode_image",
    "read_image_header",
    "read_image_size",
    "to_float_rgb",
]

ACCEPTED_FORMATS: tuple[str, ...] = ("jpeg", "png", "bmp", "tiff", "webp")
"""The formats :func:`decode_image` accepts, as they appear in :attr:`DecodedImage.format`."""

_ACCEPTED_TEXT = "accepted formats: JPEG, PNG, BMP, TIFF, WebP"

# Formats people do send, named so that the refusal says what the file is rather than "unknown".
_KNOWN_REFUSED: tuple[tuple[bytes, str], ...] = (
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"%PDF", "PDF"),
    (b"PK\x03\x04", "ZIP archive"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
    (b"\xff\x4f\xff\x51", "JPEG 2000"),
)

_ORIENTATION_TAG = 0x0112
_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(?:="|>)([1-8])')

# Pillow modes decoded as they are, and the ones converted first; everything else is refused.
_GRAY16_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
_CONVERT_MODES = {
    "1": "L",
    "P": "RGBA",
    "PA": "RGBA",
    "CMYK": "RGB",
    "YCbCr": "RGB",
    "RGBa": "RGBA",
    "La": "LA",
}
_ACCEPTED_MODES_TEXT = "accepted modes: 1, L, LA, P, PA, RGB, RGBA, RGBX, CMYK, YCbCr, I;16, 16-bit RGB/RGBA"

# Pillow emits recoverable metadata problems (a corrupt EXIF tag, an odd APNG chunk, its own
# decompression-bomb warning for sizes we have already checked) as warnings. A decode either succeeds
# or raises ours, so they are silenced inside the decoder. ``warnings.catch_warnings`` edits
# process-wide state, so concurrent decodes take turns: two overlapping catch_warnings blocks could
# otherwise restore each other's filters and leave warnings silenced for the whole process.
_PILLOW_LOCK = threading.Lock()


@dataclass(frozen=True, kw_only=True)
class DecodeLimits:
    """Bounds checked before an image is decoded.

    Attributes:
        max_bytes: largest encoded size accepted (file size from ``stat``, or ``len(bytes)``).
        max_pixels: largest ``width * height`` accepted, read from the header before decoding, so
            that a tiny file declaring a huge canvas (a decompression bomb) costs nothing.
    """

    max_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 50_000_000

    def __post_init__(self) -> None:
        for name in ("max_bytes", "max_pixels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"DecodeLimits.{name} must be a positive int, got {value!r}")


class DecodedImage(NamedTuple):
    """A decoded image and what the audit trail needs to know about it.

    Attributes:
        pixels: (H, W, C) array, C = 1 (grayscale) or 3 (RGB order); dtype uint8 or uint16;
            C-contiguous and writable. Alpha is dropped; EXIF orientation is already applied, so
            H and W are the upright image's.
        source: the file path, the ``name`` given with bytes, or ``"<bytes>"``.
        sha256: hex SHA-256 of the raw encoded bytes.
        format: ``"png"``, ``"jpeg"``, ``"bmp"``, ``"tiff"`` or ``"webp"``.
        bit_depth: 8 or 16 (the dtype's bits).
        mode: the file's Pillow mode before conversion, e.g. ``"L"``, ``"RGB"``, ``"RGBA"``,
            ``"I;16"``, ``"LA"``, ``"P"``. 16-bit colour files read as ``"RGB"``/``"RGBA"``/``"LA"``
            with ``bit_depth`` 16.
    """

    pixels: np.ndarray
    source: str
    sha256: str
    format: str
    bit_depth: int
    mode: str


def decode_image(
    source: str | os.PathLike[str] | bytes,
    *,
    limits: DecodeLimits | None = None,
    name: str | None = None,
) -> DecodedImage:
    """Decode one image file or upload into pixels.

    Args:
        source: a file path, or the encoded bytes (``bytearray``/``memoryview`` also accepted).
        limits: byte and pixel bounds; ``DecodeLimits()`` when ``None``.
        name: what to call the image in errors and in :attr:`DecodedImage.source` (e.g. the
            upload's file name); defaults to the path, or ``"<bytes>"``.

    Returns:
        The :class:`DecodedImage`; ``pixels`` is (H, W, 1) or (H, W, 3), uint8 or uint16.

    Raises:
        ImageTooLargeError: over ``limits.max_bytes`` or ``limits.max_pixels``.
        ImageDecodeError: missing, empty, truncated or corrupt file, not an image, or an
            unsupported format or mode.
    """
    limits = limits or DecodeLimits()
    data, label = _read_source(source, limits=limits, name=name)
    digest = hashlib.sha256(data).hexdigest()
    try:
        fmt = _sniff(data, label)
        pixels, mode = _decode_bytes(data, fmt, label, limits)
    except ImageDecodeError as exc:
        exc.sha256 = digest  # a batch's row for a file that would not decode still names its bytes
        raise
    return DecodedImage(
        pixels=pixels,
        source=label,
        sha256=digest,
        format=fmt,
        bit_depth=16 if pixels.dtype == np.uint16 else 8,
        mode=mode,
    )


def _decode_bytes(data: bytes, fmt: str, label: str, limits: DecodeLimits) -> tuple[np.ndarray, str]:
    """The upright pixels of ``data`` (a ``fmt`` file) and the file's Pillow mode."""
    # The main image of a JPEG: its bytes up to its end-of-image marker, which decoding feeds by hand.
    jpeg = _check_jpeg_complete(data, label) if fmt == "jpeg" else None
    inverted = False
    if fmt == "tiff":
        data, inverted = _counting_up_from_black(data)
    with _pillow_quiet():
        im = _open_header(io.BytesIO(data), fmt, label, limits)
        _check_one_page(im, data, fmt, label)
        header_orientation = _orientation(im)
        stored = _stored_size(im)
        _check_pixels(*stored, limits, label)
        _check_tile(_tiff_tile(im), *stored, limits, label)
        mode = _file_mode(im)
        if _is_16bit_colour(im):
            _check_16bit_colour_layout(im, label)
            if fmt == "png" and (late := _last_png_exif(data)) is not None:
                # Pillow loads nothing on this path, so it never meets an eXIf after the image data;
                # its loader, on the 8-bit path, keeps the last one: so do we
                im.info["exif"] = late
                header_orientation = _orientation(im)
            pixels = None
        else:
            pixels = _load_with_pillow(
                im,
                fmt,
                label,
                jpeg_image=None if jpeg is None else data[: jpeg.eoi],
                arithmetic=jpeg is not None and jpeg.frame in _ARITHMETIC_FRAMES,
            )
            # Pillow turns TIFFs upright itself (and drops the tag); a PNG may carry its eXIf
            # chunk after the image data: so the orientation still to apply is read after loading.
            orientation = _orientation(im)
    if pixels is None:
        # OpenCV hands over the samples as stored, not upright.
        pixels = _load_16bit_colour(data, mode=mode, size=stored, fmt=fmt, source=label)
        orientation = header_orientation
    if inverted and pixels.dtype == np.uint16:
        pixels = np.iinfo(np.uint16).max - pixels
    return _apply_orientation(pixels, orientation), mode


class ImageHeader(NamedTuple):
    """What an image's header says: its format, upright ``width`` and ``height`` in pixels, and the
    bytes of each decoded sample (2 for a 16-bit PNG or TIFF, else 1)."""

    format: str
    width: int
    height: int
    sample_bytes: int = 1

    @property
    def budget_pixels(self) -> int:
        """Pixels as memory limits count them: a 16-bit image holds twice the bytes decoded."""
        return self.width * self.height * self.sample_bytes


def read_image_header(
    source: str | os.PathLike[str] | bytes,
    *,
    limits: DecodeLimits | None = None,
    name: str | None = None,
) -> ImageHeader:
    """An image's format and upright size, from its header only (nothing is decoded).

    EXIF orientations 5-8 (a quarter turn) swap width and height, as :func:`decode_image` does.
    Files are opened, not read whole, so checking a folder of masks is fast; a server checks a
    request's formats and total pixels with it before decoding any image. A PNG whose eXIf chunk
    sits after the image data (legal, rare) is only seen upright by :func:`decode_image`.

    Raises:
        ImageTooLargeError, ImageDecodeError: as :func:`decode_image`, except that truncated pixel
            data is not noticed.
    """
    limits = limits or DecodeLimits()
    if isinstance(source, (bytes, bytearray, memoryview)):
        data, label = _read_source(source, limits=limits, name=name)
        fmt = _sniff(data, label)
        if fmt == "tiff":
            data, _ = _counting_up_from_black(data)
        with _pillow_quiet():
            im = _open_header(io.BytesIO(data), fmt, label, limits)
            width, height = _stored_size(im)
            tile = _tiff_tile(im)
            orientation = _orientation(im)
            sample_bytes = _sample_bytes(im)
    else:
        label = name or os.fspath(source)
        _stat_file(os.fspath(source), limits)
        fmt = None
        try:
            with open(source, "rb") as fp, _pillow_quiet():
                fmt = _sniff(fp.read(32), label)
                fp.seek(0)
                im = _open_header(fp, fmt, label, limits)
                width, height = _stored_size(im)
                tile = _tiff_tile(im)
                orientation = _orientation(im)
                sample_bytes = _sample_bytes(im)
        except OSError as exc:
            raise ImageDecodeError(f"cannot read file ({exc.strerror or exc})", source=label) from exc
        except ImageDecodeError as exc:
            if fmt != "tiff" or "unknown pixel mode" not in str(exc):
                raise
            # perhaps a big-endian grey TIFF counting down from white: read whole, bounded, as
            # decoding does
            data, _ = _read_source(source, limits=limits, name=label)
            return read_image_header(data, limits=limits, name=label)
    _check_pixels(width, height, limits, label)
    _check_tile(tile, width, height, limits, label)
    if orientation >= 5:
        width, height = height, width
    return ImageHeader(fmt, width, height, sample_bytes)


def read_image_size(
    source: str | os.PathLike[str] | bytes, *, limits: DecodeLimits | None = None
) -> tuple[int, int]:
    """The upright ``(width, height)`` of an image, from its header only (:func:`read_image_header`)."""
    header = read_image_header(source, limits=limits)
    return header.width, header.height


def to_float_rgb(pixels: np.ndarray) -> np.ndarray:
    """Model input from decoded pixels.

    Args:
        pixels: (H, W), (H, W, 1) or (H, W, 3); uint8 (divided by 255), uint16 (divided by
            65535) or floating point already in [0, 1] (cast only).

    Returns:
        (H, W, 3) float32 in [0, 1], C-contiguous; grayscale is replicated to three channels.
    """
    arr = np.asarray(pixels)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3):
        raise ImageDecodeError(
            f"pixel array of shape {arr.shape} is not an image (accepted: (H, W), (H, W, 1), (H, W, 3))",
            source="<array>",
        )
    if arr.dtype == np.uint8:
        out = arr.astype(np.float32) / np.float32(255.0)
    elif arr.dtype == np.uint16:
        out = arr.astype(np.float32) / np.float32(65535.0)
    elif np.issubdtype(arr.dtype, np.floating):
        out = arr.astype(np.float32)
    else:
        raise ImageDecodeError(
            f"pixel dtype {arr.dtype} is not accepted (accepted: uint8, uint16, float in [0, 1])",
            source="<array>",
        )
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out)


# --------------------------------------------------------------------------------------------------
# Reading and identifying the bytes


def _stat_file(path: str, limits: DecodeLimits) -> int:
    """Size of the file at ``path``, checked against the byte limit before anything is read."""
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        raise ImageDecodeError("file not found", source=path) from exc
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file ({exc.strerror or exc})", source=path) from exc
    if stat.S_ISDIR(info.st_mode):
        raise ImageDecodeError("is a directory, not an image file", source=path)
    if not stat.S_ISREG(info.st_mode):
        raise ImageDecodeError("is not a regular file", source=path)
    if info.st_size == 0:
        raise ImageDecodeError("empty file (0 bytes)", source=path)
    if info.st_size > limits.max_bytes:
        raise ImageTooLargeError(
            f"file is {info.st_size} bytes, over the limit of {limits.max_bytes} bytes", source=path
        )
    return info.st_size


def _read_source(
    source: str | os.PathLike[str] | bytes | bytearray | memoryview,
    *,
    limits: DecodeLimits,
    name: str | None,
) -> tuple[bytes, str]:
    """The encoded bytes and the label used in errors, byte limit enforced."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        label = name or "<bytes>"
        if not data:
            raise ImageDecodeError("empty data (0 bytes)", source=label)
        if len(data) > limits.max_bytes:
            raise ImageTooLargeError(
                f"data is {len(data)} bytes, over the limit of {limits.max_bytes} bytes", source=label
            )
        return data, label
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"decode_image takes a path or bytes, got {type(source).__name__}")
    path = os.fspath(source)
    label = name or path
    _stat_file(path, limits)
    try:
        with open(path, "rb") as fp:
            # One byte over the limit tells a file that grew since stat() from one that fits.
            data = fp.read(limits.max_bytes + 1)
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file ({exc.strerror or exc})", source=label) from exc
    if not data:
        raise ImageDecodeError("empty file (0 bytes)", source=label)
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(f"file is over the limit of {limits.max_bytes} bytes", source=label)
    return data, label


def _sniff(head: bytes, source: str) -> str:
    """The format named by the file's magic bytes; extensions are not trusted."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"BM"):
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "tiff"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    for magic, what in _KNOWN_REFUSED:
        if head.startswith(magic):
            raise ImageDecodeError(f"{what} files are not accepted ({_ACCEPTED_TEXT})", source=source)
    raise ImageDecodeError(
        f"not a recognised image: data starts with {head[:8]!r} ({_ACCEPTED_TEXT})", source=source
    )


def _check_jpeg_complete(data: bytes, source: str) -> _JpegLayout:
    """Refuse a JPEG cut short, which decoders would otherwise pad with grey; its main image's layout
    (with the offset of its end-of-image marker).

    The main image is walked marker by marker from its start (:func:`_jpeg_layout`). It must reach
    its end-of-image marker, and its scans must make up the whole image: every restart marker its
    size calls for, and every component (in a progressive file: its DC coefficients, and every
    coefficient whose successive approximation is begun, to full precision; see
    :func:`_jpeg_unfinished`). Whatever follows the marker (a phone's "motion photo" video, an
    appended preview) is not the image's business. A scan cut short and then given an end-of-image
    marker passes these checks; decoding (:func:`_load_jpeg`) refuses it.
    """
    if b"\xff\xda" not in data:
        raise ImageDecodeError(
            "truncated or corrupt JPEG: no image data (start-of-scan marker)", source=source
        )
    layout = _jpeg_layout(data)
    if layout.eoi is None:
        raise ImageDecodeError("truncated JPEG: no end-of-image marker after the image data", source=source)
    shortfall = _jpeg_shortfall(layout)
    if shortfall:
        raise ImageDecodeError(f"{_JPEG_ENDS_EARLY} ({shortfall})", source=source)
    unfinished = _jpeg_unfinished(layout)
    if unfinished:
        raise ImageDecodeError(unfinished, source=source)
    return layout


_JPEG_ENDS_EARLY = "truncated JPEG: the image data ends before the image does"

# Frame (SOF) markers; those of sequential and progressive DCT images, whose scans are checked for
# covering the image (lossless and hierarchical files are left to the decoder).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_DCT_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC9, 0xCA})
_PROGRESSIVE_FRAMES = frozenset({0xC2, 0xCA})
_ARITHMETIC_FRAMES = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# The end of a scan's entropy-coded data: a 0xFF that is neither stuffed (FF 00) nor a restart marker.
_SCAN_DATA_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_RESTART_MARKERS = tuple(bytes((0xFF, marker)) for marker in range(0xD0, 0xD8))


class _JpegScan(NamedTuple):
    components: tuple[int, ...]
    coefficients: range  # spectral selection Ss..Se
    final_bits: bool  # successive approximation Al == 0: the coefficients reach full precision
    restart_interval: int  # MCUs between restart markers, 0 for none
    restarts: int  # restart markers in its entropy-coded data


class _JpegLayout(NamedTuple):
    eoi: int | None  # offset of the main image's end-of-image marker; None when the data ends first
    frame: int  # the SOF marker (0 when none was read)
    width: int
    height: int
    sampling: dict[int, tuple[int, int]]  # component id -> (horizontal, vertical) sampling factors
    scans: tuple[_JpegScan, ...]


def _jpeg_layout(data: bytes) -> _JpegLayout:
    """The main image's frame and scans, walked marker by marker from its start: header segments by
    their lengths, each scan's entropy-coded data up to the next marker (a 0xFF there is stuffed as
    0xFF00 or is a restart marker). The walk stops at the end-of-image marker. An EXIF thumbnail
    lies inside a header segment and is skipped with it. Header fields the walk cannot read are left
    out; the decoder refuses such a file."""
    pos, n = 2, len(data)  # after the start-of-image marker (checked by the sniffer)
    frame, width, height, interval = 0, 0, 0, 0
    sampling: dict[int, tuple[int, int]] = {}
    scans: list[_JpegScan] = []

    def layout(eoi: int | None) -> _JpegLayout:
        return _JpegLayout(eoi, frame, width, height, sampling, tuple(scans))

    while pos + 1 < n:
        if data[pos] != 0xFF:
            return layout(None)  # not at a marker: corrupt or cut
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0xD9:
            return layout(pos)
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if pos + 3 >= n:
            break
        length = (data[pos + 2] << 8) | data[pos + 3]
        segment = data[pos + 4 : pos + 2 + length]
        pos += 2 + length
        if marker in _SOF_MARKERS and not frame:
            frame = marker
            if len(segment) >= 6 and len(segment) >= 6 + 3 * segment[5]:
                height, width = struct.unpack_from(">HH", segment, 1)
                for at in range(6, 6 + 3 * segment[5], 3):
                    sampling[segment[at]] = (segment[at + 1] >> 4, segment[at + 1] & 0x0F)
        elif marker == 0xDD and len(segment) >= 2:  # define restart interval: holds for later scans
            interval = (segment[0] << 8) | segment[1]
        elif marker == 0xDA:  # start of scan: entropy-coded data follows, up to the next real marker
            end = _SCAN_DATA_END.search(data, pos)
            if end is None:
                break
            count = segment[0] if segment else 0
            if len(segment) >= 4 + 2 * count:
                ss, se, approximation = segment[1 + 2 * count : 4 + 2 * count]
                restarts = (
                    sum(data.count(rst, pos, end.start()) for rst in _RESTART_MARKERS) if interval else 0
                )
                scans.append(
                    _JpegScan(
                        components=tuple(segment[1 : 1 + 2 * count : 2]),
                        coefficients=range(ss, se + 1),
                        final_bits=approximation & 0x0F == 0,
                        restart_interval=interval,
                        restarts=restarts,
                    )
                )
            pos = end.start()
    return layout(None)


def _jpeg_shortfall(layout: _JpegLayout) -> str | None:
    """What of the image its scans leave out (None when they make it up whole): a scan holding fewer
    restart markers than its size calls for lost the intervals after its last one; a component never
    scanned (in a progressive image: whose DC coefficients no scan sends) lost the scans after its
    last one. Either is what a file cut short at that point and given an end-of-image marker looks
    like; no encoder writes it (the standard, and libjpeg's encoder, call for every component's DC
    coefficients). A progressive image need not send every AC coefficient, nor every bit of one."""
    if not (layout.width and layout.height and layout.sampling):
        return None  # a frame the walk could not read (or a height set later, by a DNL marker)
    h_max = max(h for h, _ in layout.sampling.values())
    v_max = max(v for _, v in layout.sampling.values())
    if not (h_max and v_max):
        return None  # sampling factors of 0: the decoder refuses the frame
    for number, scan in enumerate(layout.scans, start=1):
        if not scan.restart_interval or any(c not in layout.sampling for c in scan.components):
            continue
        if len(scan.components) > 1:  # interleaved: MCUs of h_max x v_max blocks
            mcus = _ceil_div(layout.width, 8 * h_max) * _ceil_div(layout.height, 8 * v_max)
        else:  # one component: MCUs of one block of its own (subsampled) plane
            h, v = layout.sampling[scan.components[0]]
            mcus = _ceil_div(_ceil_div(layout.width * h, h_max), 8) * _ceil_div(
                _ceil_div(layout.height * v, v_max), 8
            )
        expected = _ceil_div(mcus, scan.restart_interval) - 1
        if scan.restarts < expected:
            return (
                f"scan {number} of {len(layout.scans)} holds {scan.restarts} of the {expected} restart "
                "markers its size calls for"
            )
    if layout.frame not in _DCT_FRAMES:
        return None
    for index, component in enumerate(layout.sampling, start=1):
        scans = [s for s in layout.scans if component in s.components]
        if layout.frame in _PROGRESSIVE_FRAMES and not any(0 in s.coefficients for s in scans):
            return (
                f"its scans never send the DC coefficients of component {index} of "
                f"{len(layout.sampling)}, as every progressive JPEG does"
            )
        if not scans:
            return f"its scans stop before component {index} of {len(layout.sampling)} is complete"
    return None


def _jpeg_unfinished(layout: _JpegLayout) -> str | None:
    """The refusal of a progressive image whose successive approximation is begun and never finished
    (None for any other): some coefficients are sent short of their last bits, and no later scan
    refines them to full precision.

    That is what a file of libjpeg's progression (Pillow's, OpenCV's) cut short at the end of any of
    its scans but the last, and given an end-of-image marker, looks like: its first scans send
    coefficients short of their last bits, its last ones bring them to full precision. Such a file
    holds only the cut's picture: blocks of flat colour after the first scan, coarse detail later.
    A scan script may also leave them so on purpose (libjpeg decodes it without a warning); the two
    are one to the decoder and are both refused, naming what is missing. Coefficients that no scan
    sends at all (a script that stops at coefficient 40, or sends a component's DC alone) are a
    scan script's choice, and pass: a cut at the end of a scan that leaves only those out passes too.
    """
    if layout.frame not in _PROGRESSIVE_FRAMES:
        return None
    for index, component in enumerate(layout.sampling, start=1):
        scans = [s for s in layout.scans if component in s.components]
        begun = {k for s in scans for k in s.coefficients}
        finished = {k for s in scans if s.final_bits for k in s.coefficients}
        if begun - finished:
            return (
                "truncated or unfinished progressive JPEG: its scans never bring coefficients "
                f"{_spans(begun - finished)} of component {index} of {len(layout.sampling)} to full "
                "precision (their successive approximation is begun, its last pass never sent), as "
                "in a file cut short and given an end-of-image marker, or one written so; re-save it "
                "whole"
            )
    return None


def _spans(numbers: set[int]) -> str:
    """``{1, 2, 3, 7}`` as ``"1-3, 7"``."""
    spans: list[list[int]] = []
    for n in sorted(numbers):
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@contextmanager
def _pillow_quiet() -> Iterator[None]:
    """Run Pillow with its warnings silenced, one decode at a time (see ``_PILLOW_LOCK``)."""
    with _PILLOW_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _open_header(fp: IO[bytes], fmt: str, source: str, limits: DecodeLimits) -> ImageFile.ImageFile:
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
            return TiffImagePlugin.TiffImageFile(fp)
        from PIL import WebPImagePlugin  # imported late: it loads libwebp

        start = fp.tell()
        canvas = _webp_canvas(fp.read(30))
        fp.seek(start)
        if canvas is not None:
            _check_pixels(*canvas, limits, source)
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
                f"and bits); {_ACCEPTED_MODES_TEXT}",
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


def _check_one_page(im: ImageFile.ImageFile, data: bytes, fmt: str, source: str) -> None:
    """Refuse a file of several pictures: a multi-page TIFF holding several views or energies of
    one scan, an animated PNG or WebP. Scoring the first alone would pass the others unseen. A TIFF
    whose further pages are all reduced-resolution previews or masks (NewSubfileType) holds one
    picture. Pages are never counted (counting walks them all, which a file of a few megabytes of
    empty pages makes last minutes): at most ``_PAGES_LOOKED_AT`` are read, on a second reader of
    the bytes, so that the picture to score stays on its first page."""
    if fmt == "jpeg" or not getattr(im, "is_animated", False):  # an MPO's frames are previews
        return
    if fmt == "tiff" and _only_previews_after_the_first(data):
        return
    raise ImageDecodeError(
        f"a {fmt.upper()} of several pages or frames; one picture per file is scored (save each page as "
        "its own file, so that none goes unseen)",
        source=source,
    )


def _only_previews_after_the_first(data: bytes) -> bool:
    """Whether every page of a TIFF after its first is a reduced-resolution preview or a mask (False
    where a page cannot be read, or there are more than ``_PAGES_LOOKED_AT``)."""
    try:
        probe = TiffImagePlugin.TiffImageFile(io.BytesIO(data))
        for page in range(1, _PAGES_LOOKED_AT + 1):
            try:
                probe.seek(page)
            except EOFError:
                return True
            if not int(probe.tag_v2.get(_NEW_SUBFILE_TYPE, 0)) & (_REDUCED_RESOLUTION | _TRANSPARENCY_MASK):
                return False
    except Exception:  # noqa: BLE001 - any page the decoder cannot read is no preview it can vouch for
        return False
    return False


_PAGES_LOOKED_AT = 16
_NEW_SUBFILE_TYPE = 254
_REDUCED_RESOLUTION = 1
_TRANSPARENCY_MASK = 4


def _sample_bytes(im: ImageFile.ImageFile) -> int:
    """Bytes a decoded sample takes: 2 for 16-bit data (a PNG's raw mode, a TIFF's BitsPerSample)."""
    if isinstance(im, TiffImagePlugin.TiffImageFile):
        bits = im.tag_v2.get(TiffImagePlugin.BITSPERSAMPLE, 8)
        return 2 if max(bits if isinstance(bits, tuple) else (bits,)) > 8 else 1
    raw = im.tile[0][3] if im.tile else im.mode
    raw = raw[0] if isinstance(raw, tuple) else raw
    return 2 if "16" in str(raw) or im.mode.startswith("I") else 1


def _stored_size(im: ImageFile.ImageFile) -> tuple[int, int]:
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


def _tiff_tile(im: ImageFile.ImageFile) -> tuple[int, int] | None:
    """A tiled TIFF's (TileWidth, TileLength); None for any other image."""
    if not isinstance(im, TiffImagePlugin.TiffImageFile):
        return None
    width = im.tag_v2.get(TiffImagePlugin.TILEWIDTH)
    length = im.tag_v2.get(TiffImagePlugin.TILELENGTH)
    return (width, length) if isinstance(width, int) and isinstance(length, int) else None


def _check_tile(
    tile: tuple[int, int] | None, width: int, height: int, limits: DecodeLimits, source: str
) -> None:
    """Refuse a tiled TIFF whose tiles make the decoder's work a bomb however small the image.

    libtiff decodes every tile whole, padding included, into a buffer of its own: the work is
    tiles across x tiles down x TileWidth x TileLength pixels, whatever the image's size. A 16x16
    image in one 32768x32768 tile (a 1 MB file) took 1 GB and 6 s; a 16-pixel-wide image in
    3124992x16 tiles, each just under the pixel limit, decoded one such tile per 16 rows: 6 s for
    16x512 from a 49 KB file, holding ``_PILLOW_LOCK`` throughout.

    The rule: that work may be at most the pixel limit, or four times the image's own pixels where
    that is more. Tiles no larger than the image cover it with under twice its width and twice its
    height, so they always pass. An ordinary 256x256 or 512x512 tile on an image narrower (or
    lower) than the tile costs under 512 x (the image's other side + 512) pixels: within the
    default limit for such an image up to 97,000 pixels long, and at any length where the image is
    at least half a tile wide. (A strip needs no such check: libtiff holds RowsPerStrip to the
    image's height.)"""
    if tile is None:
        return
    tile_width, tile_length = tile
    if tile_width <= 0 or tile_length <= 0:
        return  # no tiles to decode: the decoder refuses the file
    across, down = _ceil_div(width, tile_width), _ceil_div(height, tile_length)
    work = across * down * tile_width * tile_length
    budget = max(limits.max_pixels, _TILE_WORK_PER_PIXEL * width * height)
    if work > budget:
        raise ImageTooLargeError(
            f"TIFF tiles of {tile_width}x{tile_length} cover the {width}x{height} image with "
            f"{across}x{down} tiles = {work} pixels decoded, over the limit of {budget} pixels (the "
            f"larger of the pixel limit and {_TILE_WORK_PER_PIXEL} times the image's pixels; each "
            "tile is decoded whole, whatever the image's size)",
            source=source,
        )


# Tiles pad the image to whole tiles: under twice its width and twice its height where a tile is no
# larger than the image.
_TILE_WORK_PER_PIXEL = 4


def _check_pixels(width: int, height: int, limits: DecodeLimits, source: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})", source=source)
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{limits.max_pixels} pixels",
            source=source,
        )


# --------------------------------------------------------------------------------------------------
# Decoding


def _rawmode(im: ImageFile.ImageFile) -> str:
    """The raw pixel layout of the first tile, e.g. ``"RGB;16B"`` (``""`` when unknown)."""
    if not im.tile:
        return ""
    args = im.tile[0].args
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return ""


def _file_mode(im: ImageFile.ImageFile) -> str:
    """The file's Pillow mode, as :attr:`DecodedImage.mode` reports it: Pillow opens a 16-bit
    grey+alpha PNG (raw layout "LA;16B") as "RGBA", though the file holds one grey channel."""
    if im.format == "PNG" and _rawmode(im).startswith("LA;16"):
        return "LA"
    return im.mode


def _is_16bit_colour(im: ImageFile.ImageFile) -> bool:
    """Whether Pillow would truncate this file's samples to 8 bits (48/64-bit colour, 32-bit LA)."""
    if im.mode not in ("RGB", "RGBA", "RGBX", "LA"):
        return False
    if im.format == "TIFF":
        bits = im.tag_v2.get(TiffImagePlugin.BITSPERSAMPLE)  # type: ignore[attr-defined]
        bits = bits if isinstance(bits, tuple) else (bits,)
        return any(b == 16 for b in bits if isinstance(b, int))
    # Only PNG: a 16-bit BMP ("BGR;16") is 5-6-5 packed, 8 bits a channel once unpacked.
    return im.format == "PNG" and ";16" in _rawmode(im)


def _counting_up_from_black(data: bytes) -> tuple[bytes, bool]:
    """A big-endian 16-bit grey TIFF that counts down from white (MinIsWhite), for which Pillow has
    no mode, as one counting up from black, and whether its samples are to be inverted after
    decoding; any other file as it is. (Pillow reads the little-endian one, inverted by
    :func:`_white_is_zero`.)"""
    if data[:2] != b"MM":
        return data, False
    photo_tag, bits_tag, samples_tag = (
        TiffImagePlugin.PHOTOMETRIC_INTERPRETATION,
        TiffImagePlugin.BITSPERSAMPLE,
        TiffImagePlugin.SAMPLESPERPIXEL,
    )
    tags = _ifd0_shorts(data, photo_tag, bits_tag, samples_tag)
    photometric, value_at = tags.get(photo_tag, (None, -1))
    samples = tags.get(samples_tag, (1, -1))[0]
    if photometric != 0 or tags.get(bits_tag, (None, -1))[0] != 16 or samples != 1:
        return data, False
    patched = bytearray(data)
    patched[value_at : value_at + 2] = (1).to_bytes(2, "big")
    return bytes(patched), True


def _check_16bit_colour_layout(im: ImageFile.ImageFile, source: str) -> None:
    """Refuse 16-bit colour OpenCV would misread: a TIFF with its colour planes stored apart
    (PlanarConfiguration 2) came out as scrambled pixels of the right shape."""
    if im.format == "TIFF" and im.tag_v2.get(TiffImagePlugin.PLANAR_CONFIGURATION, 1) == 2:  # type: ignore[attr-defined]
        raise ImageDecodeError(
            "16-bit colour TIFF with separate colour planes (PlanarConfiguration 2) is not supported; "
            "save it with interleaved samples (PlanarConfiguration 1), as 16-bit grey, or as 8-bit",
            source=source,
        )


def _white_is_zero(im: ImageFile.ImageFile) -> bool:
    """A TIFF whose grey samples count down from white (PhotometricInterpretation 0, MinIsWhite, as
    some X-ray detectors write): Pillow inverts 8-bit ones itself, 16-bit ones not."""
    return im.format == "TIFF" and im.tag_v2.get(TiffImagePlugin.PHOTOMETRIC_INTERPRETATION) == 0  # type: ignore[attr-defined]


def _load_with_pillow(
    im: ImageFile.ImageFile,
    fmt: str,
    source: str,
    *,
    jpeg_image: bytes | None = None,
    arithmetic: bool = False,
) -> np.ndarray:
    """Decode with Pillow's strict loader (a JPEG's main image, ``jpeg_image``, with
    :func:`_load_jpeg`; ``arithmetic`` where its frame is arithmetic-coded); (H, W, 1|3) uint8 or
    uint16 RGB/gray."""
    try:
        if jpeg_image is None:
            im.load()
        else:
            _load_jpeg(im, jpeg_image, source, arithmetic=arithmetic)
        mode = im.mode
        if mode in _CONVERT_MODES:
            # P -> RGBA rather than RGB: it keeps transparency out of Pillow's lossy warning path.
            converted: Image.Image = im.convert(_CONVERT_MODES[mode])
            mode = converted.mode
        else:
            converted = im
        if mode in _GRAY16_MODES:
            arr = np.asarray(converted).astype(np.uint16)[:, :, None]
            if _white_is_zero(im):
                arr = np.iinfo(np.uint16).max - arr
        elif mode == "L":
            arr = np.asarray(converted)[:, :, None]
        elif mode == "LA":
            arr = np.asarray(converted)[:, :, :1]
        elif mode in ("RGB", "RGBA", "RGBX"):
            arr = np.asarray(converted)[:, :, :3]
        else:
            raise ImageDecodeError(
                f"unsupported image mode {im.mode!r} ({_ACCEPTED_MODES_TEXT})", source=source
            )
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"refused by the decoder's size guard ({exc})", source=source) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error) as exc:
        raise ImageDecodeError(f"truncated or corrupt {fmt.upper()} data ({exc})", source=source) from exc
    return _own(arr)


# What the decoder is given after a JPEG's last scan in place of its end-of-image marker. libjpeg
# reads ahead of the bits it needs (57 bits at most, on 64-bit builds); where a marker stops it, it
# makes up the bits a scan still lacks as zeros, only warning (Pillow does not pass warnings on):
# that is the grey of a file cut short and given back its end marker. Where the input runs out
# instead, it waits for more. Stuffed 0xFF bytes (FF 00) are bits to a scan and, between segments,
# filler that is skipped; eight of them cover the read-ahead.
#
# An arithmetic-coded frame is given zeros instead: they are what libjpeg's arithmetic decoder reads
# after a marker, and its encoder leaves out the zero bytes that end a scan, so a whole file may need
# some past its data (libjpeg's own files ending in black: 13 bytes at 512x600, 35 at 8000x6250, 51
# at 12000x8000); 0xFF filler changed such a file's last blocks. The decoder cannot wait for more
# input: a scan needing more zeros than it is given fails. A file cut short needs zeros for what it
# lost, about a byte per byte lost, so the zeros are bounded, to 64 bytes and 2 more a megapixel
# (four times and more what those files need): a cut losing no more than that passes, its last few
# blocks made up from zeros, and a whole file needing more is refused as one cut short. Only a
# pattern repeated to the end of a progressive file was seen to need more (101 bytes at 256x256 for
# 8-pixel stripes, 15 KB at 2000x2000: its last refinement bits are all zeros). To the decoder a cut
# and a whole file are the same, data followed by zeros: no bound tells them apart better.
_ARITHMETIC_FILLER_BASE = 64
_ARITHMETIC_FILLER_PIXELS_PER_BYTE = 1 << 19
_JPEG_FILLER_PAIR = b"\xff\x00"
_JPEG_FILLER = _JPEG_FILLER_PAIR * 8
_JPEG_END = b"\xff\xd9"


def _load_jpeg(im: ImageFile.ImageFile, image: bytes, source: str, *, arithmetic: bool = False) -> None:
    """Load a JPEG with Pillow's decoder fed by hand: ``image`` (the main image's bytes, up to its
    end-of-image marker) and the filler (zeros for an ``arithmetic``-coded frame, see
    ``_JPEG_FILLER``), and the marker only where no scan is still waiting for data.

    A file of one scan is decoded before its end marker is needed. One of several (progressive) is
    only decoded at its end marker, and may be waiting for it only after its last scan, where the
    filler, and one more pair of it, is skipped and consumed whole; inside a scan the decoder keeps
    back the bytes of the blocks it could not finish (Huffman coding), or fails (arithmetic coding).
    A cut that loses no more than the filler makes up for passes, those bits wrong: the last block
    or two of a scan, or the last bit of up to 64 coefficients of a refinement scan, for Huffman
    coding; for arithmetic coding, where the filler is longer, the last few blocks.
    """
    im.load_prepare()
    if arithmetic:
        filler, pair = bytes(_arithmetic_filler_bytes(*im.size)), b"\0\0"
    else:
        filler, pair = _JPEG_FILLER, _JPEG_FILLER_PAIR
    status = _feed_jpeg(im, image.rstrip(b"\xff") + filler, pair, source)
    if status < 0 and arithmetic and _feed_jpeg(im, image + _JPEG_END, None, source) >= 0:
        # whole once given every zero it asks for: cut short, or written needing that many
        raise ImageDecodeError(
            f"{_JPEG_ENDS_EARLY} (its arithmetic-coded last scan needs more than {len(filler)} zero "
            "bytes after its data to finish, as one cut short does; a whole file written so is "
            "refused too: re-save it with Huffman coding)",
            source=source,
        )
    im.tile = []
    im.readonly = 0
    if status < 0:
        raise OSError(ImageFile.ERRORS.get(status, f"decoder error {status}"))


def _feed_jpeg(im: ImageFile.ImageFile, fed: bytes, pair: bytes | None, source: str) -> int:
    """Decode ``fed`` into ``im`` with a fresh Pillow decoder: then, where it waits for more input
    after the last scan (and ``pair`` is given), one more ``pair`` of filler and the end-of-image
    marker. Pillow's status: negative where the decoder failed."""
    (codec, extents, _offset, args), *more = im.tile
    if more:
        raise ValueError(f"{1 + len(more)} tiles in a JPEG")
    # Image._getdecoder is how Pillow's own loader and its incremental Parser make a decoder.
    decoder = Image._getdecoder(im.mode, codec, args, im.decoderconfig)
    try:
        decoder.setimage(im.im, extents)
        consumed, status = decoder.decode(fed)
        if consumed >= 0 and pair is not None:  # waiting for more input
            if consumed != len(fed) or decoder.decode(pair)[0] != len(pair):
                raise ImageDecodeError(
                    f"{_JPEG_ENDS_EARLY} (its last scan is cut short, and an end-of-image marker "
                    "follows the cut)",
                    source=source,
                )
            consumed, status = decoder.decode(_JPEG_END)
        if consumed >= 0:
            raise OSError("the decoder did not stop at the end-of-image marker")
    finally:
        decoder.cleanup()
    return status


def _arithmetic_filler_bytes(width: int, height: int) -> int:
    """Zero bytes an arithmetic-coded JPEG of ``width`` x ``height`` is given after its data."""
    return _ARITHMETIC_FILLER_BASE + width * height // _ARITHMETIC_FILLER_PIXELS_PER_BYTE


def _load_16bit_colour(data: bytes, *, mode: str, size: tuple[int, int], fmt: str, source: str) -> np.ndarray:
    """Decode 16-bit colour with OpenCV, which keeps all 16 bits; (H, W, 1|3) uint16."""
    if fmt == "tiff":
        # OpenCV turns TIFFs upright itself, whatever the flags (4.x-5.0); reset the tag so that it
        # hands over the samples as stored and the one orientation step below stays ours.
        value, value_at = _ifd0_orientation(data)
        if value > 1:
            patched = bytearray(data)
            patched[value_at : value_at + 2] = (1).to_bytes(2, "little" if data[:1] == b"I" else "big")
            data = bytes(patched)
    try:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:
        raise ImageDecodeError(f"truncated or corrupt {fmt.upper()} data ({exc})", source=source) from exc
    width, height = size
    if arr is None or arr.shape[:2] != (height, width):
        raise ImageDecodeError(f"truncated or corrupt {fmt.upper()} data (16-bit colour)", source=source)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif mode == "LA":
        # OpenCV expands gray+alpha to BGRA; the three colour channels are equal.
        arr = arr[:, :, :1]
    else:
        arr = arr[:, :, 2::-1]  # BGR(A) -> RGB, alpha dropped
    return _own(arr)


def _own(arr: np.ndarray) -> np.ndarray:
    """A C-contiguous, writable, native-endian array (Pillow hands out read-only views)."""
    if arr.dtype.byteorder not in ("=", "|"):
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if not arr.flags.writeable or not arr.flags.c_contiguous:
        arr = np.array(arr, order="C", copy=True)
    return arr


# --------------------------------------------------------------------------------------------------
# EXIF orientation


def _orientation(im: ImageFile.ImageFile) -> int:
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


def _last_png_exif(data: bytes) -> bytes | None:
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
    return _ifd0_orientation(raw[6:] if raw.startswith(b"Exif\x00\x00") else raw)[0]


def _ifd0_orientation(tiff: bytes) -> tuple[int, int]:
    """``(orientation, offset of its value)`` in a TIFF structure's first IFD; ``(0, -1)`` if none."""
    value, value_at = _ifd0_shorts(tiff, _ORIENTATION_TAG).get(_ORIENTATION_TAG, (0, -1))
    return (value, value_at) if 1 <= value <= 8 else (0, -1)


def _ifd0_shorts(tiff: bytes, *wanted: int) -> dict[int, tuple[int, int]]:
    """``{tag: (value, offset of the value)}`` of the ``wanted`` tags holding a SHORT in a TIFF
    structure's first IFD, read in one walk; a tag absent, or of another type, is left out.

    Handles classic TIFF and BigTIFF, either byte order. Malformed structures read as "none".
    """
    head = tiff[:4]
    if head in (b"II*\x00", b"II+\x00"):
        endian = "<"
    elif head in (b"MM\x00*", b"MM\x00+"):
        endian = ">"
    else:
        return {}
    big = head[2:] in (b"+\x00", b"\x00+")
    offset_fmt, count_fmt, entry_size = ("Q", "Q", 20) if big else ("I", "H", 12)
    found: dict[int, tuple[int, int]] = {}
    try:
        (ifd,) = struct.unpack_from(endian + offset_fmt, tiff, 8 if big else 4)
        (count,) = struct.unpack_from(endian + count_fmt, tiff, ifd)
        first = ifd + struct.calcsize(count_fmt)
        for i in range(min(count, 1024)):
            entry = first + entry_size * i
            tag, kind, n = struct.unpack_from(endian + "HH" + offset_fmt, tiff, entry)
            if tag in wanted and kind == 3 and n >= 1:
                value_at = entry + (12 if big else 8)
                found[tag] = (struct.unpack_from(endian + "H", tiff, value_at)[0], value_at)
    except struct.error:
        return {}
    return found


def _apply_orientation(pixels: np.ndarray, orientation: int) -> np.ndarray:
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
