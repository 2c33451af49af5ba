"""The decoder's entry points: :func:`decode_image` (a file or an upload to pixels),
:func:`read_image_header` and :func:`read_image_size` (format and size, nothing decoded),
:func:`lossy_compression` (whether the pixels were stored lossily, nothing decoded) and
:func:`to_float_rgb` (pixels to model input), with what they return."""

from __future__ import annotations

import hashlib
import io
import os
from typing import NamedTuple

import numpy as np

from datasets.decode.header import check_one_page, open_header, pillow_quiet, sample_bytes_of, stored_size
from datasets.decode.jpeg import ARITHMETIC_FRAMES, check_jpeg_complete
from datasets.decode.limits import DecodeLimits, check_pixels
from datasets.decode.orientation import apply_orientation, last_png_exif, orientation_of
from datasets.decode.pixels import file_mode, is_16bit_colour, load_16bit_colour, load_with_pillow
from datasets.decode.source import read_source, sniff, stat_file
from datasets.decode.tiff import (
    check_16bit_colour_layout,
    check_tile,
    counted_up_from_black,
    counting_up_from_black,
    ifd0_shorts,
    tiff_tile,
)
from datasets.errors import ImageDecodeError


class DecodedImage(NamedTuple):
    """A decoded image and what the audit trail needs to know about it.

    Attributes:
        pixels: (H, W, C) array, C = 1 (grayscale) or 3 (RGB order); dtype uint8 or uint16;
            C-contiguous and writable. Alpha is dropped, unless asked for (``keep_alpha``: C = 2 or
            4 where the file has alpha, gray or RGB and then alpha); EXIF orientation is already
            applied, so H and W are the upright image's.
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
    keep_alpha: bool = False,
) -> DecodedImage:
    """Decode one image file or upload into pixels.

    Args:
        source: a file path, or the encoded bytes (``bytearray``/``memoryview`` also accepted).
        limits: byte and pixel bounds; ``DecodeLimits()`` when ``None``.
        name: what to call the image in errors and in :attr:`DecodedImage.source` (e.g. the
            upload's file name); defaults to the path, or ``"<bytes>"``.
        keep_alpha: keep the alpha channel of a file that has one, as the last channel (a
            ground-truth mask's transparent background is no defect, whatever colour it hides).

    Returns:
        The :class:`DecodedImage`; ``pixels`` is (H, W, 1) or (H, W, 3), uint8 or uint16; with
        ``keep_alpha``, (H, W, 2) or (H, W, 4) where the file has alpha (a palette file's
        transparency, and a grey or RGB PNG's colour key, tRNS, included: alpha 0 where the key is).

    Raises:
        ImageTooLargeError: over ``limits.max_bytes`` or ``limits.max_pixels``.
        ImageDecodeError: missing, empty, truncated or corrupt file, not an image, or an
            unsupported format or mode.
    """
    limits = limits or DecodeLimits()
    data, label = read_source(source, limits=limits, name=name)
    digest = hashlib.sha256(data).hexdigest()
    try:
        fmt = sniff(data, label)
        pixels, mode = _decode_bytes(data, fmt, label, limits, keep_alpha=keep_alpha)
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


def _decode_bytes(
    data: bytes, fmt: str, label: str, limits: DecodeLimits, *, keep_alpha: bool
) -> tuple[np.ndarray, str]:
    """The upright pixels of ``data`` (a ``fmt`` file), alpha last where kept, and the file's Pillow
    mode."""
    # The main image of a JPEG: its bytes up to its end-of-image marker, which decoding feeds by hand.
    jpeg = check_jpeg_complete(data, label) if fmt == "jpeg" else None
    inverted = False
    if fmt == "tiff":
        data, inverted = counting_up_from_black(data)
    with pillow_quiet():
        im = open_header(io.BytesIO(data), fmt, label, limits)
        check_one_page(im, data, fmt, label)
        header_orientation = orientation_of(im)
        stored = stored_size(im)
        check_pixels(*stored, limits, label)
        check_tile(tiff_tile(im), *stored, limits, label)
        mode = file_mode(im)
        if is_16bit_colour(im):
            check_16bit_colour_layout(im, label)
            if fmt == "png" and (late := last_png_exif(data)) is not None:
                # Pillow loads nothing on this path, so it never meets an eXIf after the image data;
                # its loader, on the 8-bit path, keeps the last one: so do we
                im.info["exif"] = late
                header_orientation = orientation_of(im)
            pixels = None
        else:
            pixels = load_with_pillow(
                im,
                fmt,
                label,
                jpeg_image=None if jpeg is None else data[: jpeg.eoi],
                arithmetic=jpeg is not None and jpeg.frame in ARITHMETIC_FRAMES,
                keep_alpha=keep_alpha,
            )
            # Pillow turns TIFFs upright itself (and drops the tag); a PNG may carry its eXIf
            # chunk after the image data: so the orientation still to apply is read after loading.
            orientation = orientation_of(im)
    if pixels is None:
        # OpenCV hands over the samples as stored, not upright.
        pixels = load_16bit_colour(data, mode=mode, size=stored, fmt=fmt, source=label, keep_alpha=keep_alpha)
        orientation = header_orientation
    if inverted and pixels.dtype == np.uint16:
        pixels = counted_up_from_black(pixels, im, label)
    return apply_orientation(pixels, orientation), mode


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
        data, label = read_source(source, limits=limits, name=name)
        fmt = sniff(data, label)
        if fmt == "tiff":
            data, _ = counting_up_from_black(data)
        with pillow_quiet():
            im = open_header(io.BytesIO(data), fmt, label, limits)
            width, height = stored_size(im)
            tile = tiff_tile(im)
            orientation = orientation_of(im)
            sample_bytes = sample_bytes_of(im)
    else:
        label = name or os.fspath(source)
        stat_file(os.fspath(source), limits, label)
        fmt = None
        try:
            with open(source, "rb") as fp, pillow_quiet():
                fmt = sniff(fp.read(32), label)
                fp.seek(0)
                im = open_header(fp, fmt, label, limits)
                width, height = stored_size(im)
                tile = tiff_tile(im)
                orientation = orientation_of(im)
                sample_bytes = sample_bytes_of(im)
        except OSError as exc:
            raise ImageDecodeError(f"cannot read file ({exc.strerror or exc})", source=label) from exc
        except ImageDecodeError as exc:
            if fmt != "tiff" or "unknown pixel mode" not in str(exc):
                raise
            # perhaps a big-endian grey TIFF counting down from white: read whole, bounded, as
            # decoding does
            data, _ = read_source(source, limits=limits, name=label)
            return read_image_header(data, limits=limits, name=label)
    check_pixels(width, height, limits, label)
    check_tile(tile, width, height, limits, label)
    if orientation >= 5:
        width, height = height, width
    return ImageHeader(fmt, width, height, sample_bytes)


def read_image_size(
    source: str | os.PathLike[str] | bytes, *, limits: DecodeLimits | None = None
) -> tuple[int, int]:
    """The upright ``(width, height)`` of an image, from its header only (:func:`read_image_header`)."""
    header = read_image_header(source, limits=limits)
    return header.width, header.height


_TIFF_COMPRESSION = 259
_JPEG_TIFF_COMPRESSIONS = frozenset({6, 7})  # old-style and new-style JPEG in TIFF


def lossy_compression(
    source: str | os.PathLike[str] | bytes, *, limits: DecodeLimits | None = None
) -> str | None:
    """The lossy compression an image's pixels are stored with, named (``"JPEG"``, ``"lossy WebP
    (VP8)"``, ``"JPEG-compressed TIFF"``), or None where they are stored losslessly. Read from the
    bytes, not the file's name: a check of the extension passed ``.jfif``, ``.jpe``, a lossy
    ``.webp`` and JPEG bytes named ``.png``. Nothing is decoded.

    Raises:
        ImageTooLargeError, ImageDecodeError: over the byte limit, unreadable, or not an image.
    """
    limits = limits or DecodeLimits()
    data, label = read_source(source, limits=limits, name=None)
    fmt = sniff(data, label)
    if fmt == "jpeg":
        return "JPEG"
    if fmt == "webp" and _webp_is_lossy(data):
        return "lossy WebP (VP8)"
    if fmt == "tiff":
        compression = ifd0_shorts(data, _TIFF_COMPRESSION).get(_TIFF_COMPRESSION, (1, -1))[0]
        if compression in _JPEG_TIFF_COMPRESSIONS:
            return "JPEG-compressed TIFF"
    return None


def _webp_is_lossy(data: bytes) -> bool:
    """Whether a WebP's picture is a lossy VP8 frame rather than a lossless VP8L one: the first of
    the two its chunks hold (the extended format puts VP8X, ICCP, ALPH... before it, and an
    animation's frame holds it inside ANMF)."""
    offset = 12  # after "RIFF", the size and "WEBP"
    while offset + 8 <= len(data):
        fourcc, size = data[offset : offset + 4], int.from_bytes(data[offset + 4 : offset + 8], "little")
        if fourcc == b"VP8 ":
            return True
        if fourcc == b"VP8L":
            return False
        # an ANMF chunk's payload is a 16-byte frame header, then the frame's own chunks
        offset += 8 + 16 if fourcc == b"ANMF" else 8 + size + (size & 1)
    return False


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
