"""Decoding the pixels: Pillow's strict loader, or OpenCV for 16-bit colour, which Pillow can only
hand over truncated to 8 bits; either way an (H, W, 1|3) uint8 or uint16 array the caller owns."""

from __future__ import annotations

import struct

import cv2
import numpy as np
from PIL import Image, ImageFile, TiffImagePlugin

from datasets.decode.jpeg import load_jpeg
from datasets.decode.orientation import ifd0_orientation
from datasets.decode.tiff import counted_up_from_black, white_is_zero
from datasets.errors import ImageDecodeError, ImageTooLargeError

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
# Modes whose transparency is a colour key (a PNG's tRNS chunk, ``im.info["transparency"]``), and the
# mode that turns the key into alpha.
_KEYED_MODES = {"1": "LA", "L": "LA", "RGB": "RGBA"}
ACCEPTED_MODES_TEXT = "accepted modes: 1, L, LA, P, PA, RGB, RGBA, RGBX, CMYK, YCbCr, I;16, 16-bit RGB/RGBA"


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


def file_mode(im: ImageFile.ImageFile) -> str:
    """The file's Pillow mode, as :attr:`DecodedImage.mode` reports it: Pillow opens a 16-bit
    grey+alpha PNG (raw layout "LA;16B") as "RGBA", though the file holds one grey channel."""
    if im.format == "PNG" and _rawmode(im).startswith("LA;16"):
        return "LA"
    return im.mode


def is_16bit_colour(im: ImageFile.ImageFile) -> bool:
    """Whether Pillow would truncate this file's samples to 8 bits (48/64-bit colour, 32-bit LA)."""
    if im.mode not in ("RGB", "RGBA", "RGBX", "LA"):
        return False
    if im.format == "TIFF":
        bits = im.tag_v2.get(TiffImagePlugin.BITSPERSAMPLE)  # type: ignore[attr-defined]
        bits = bits if isinstance(bits, tuple) else (bits,)
        return any(b == 16 for b in bits if isinstance(b, int))
    # Only PNG: a 16-bit BMP ("BGR;16") is 5-6-5 packed, 8 bits a channel once unpacked.
    return im.format == "PNG" and ";16" in _rawmode(im)


def load_with_pillow(
    im: ImageFile.ImageFile,
    fmt: str,
    source: str,
    *,
    jpeg_image: bytes | None = None,
    arithmetic: bool = False,
    keep_alpha: bool = False,
) -> np.ndarray:
    """Decode with Pillow's strict loader (a JPEG's main image, ``jpeg_image``, with
    :func:`load_jpeg`; ``arithmetic`` where its frame is arithmetic-coded); (H, W, 1|3) uint8 or
    uint16 RGB/gray, or with ``keep_alpha`` (H, W, 2|4) gray/RGB and alpha where the file has alpha
    (a palette's transparency or a colour key included)."""
    raw = _rawmode(im)  # read before loading, which clears the tiles it is read from
    try:
        if jpeg_image is None:
            im.load()
        else:
            load_jpeg(im, jpeg_image, source, arithmetic=arithmetic)
        mode = im.mode
        # A colour key is alpha, kept where alpha is asked for: dropped, a mask of black ink on a key
        # transparent white read inverted (as PNG optimisers store an RGBA export with a bare alpha).
        keyed = keep_alpha and im.info.get("transparency") is not None
        low_bits = {"L;2": 2, "L;4": 4}.get(raw) if keyed and mode == "L" else None
        if low_bits is not None:
            # Pillow scales a 2- or 4-bit grey's samples to 0-255 but not its key (3 stays 3 where
            # white is 255), so converting matched nothing and the key was dropped; a key past the
            # depth's range (Pillow's own writer stores one scaled) is matched as it is
            top, key = (1 << low_bits) - 1, int(im.info["transparency"])
            grey = np.asarray(im)
            alpha = np.where(grey == (key * 255 // top if key <= top else key), 0, 255).astype(np.uint8)
            converted, mode = Image.fromarray(np.dstack([grey, alpha]), "LA"), "LA"
        elif keyed and mode in _KEYED_MODES:
            converted: Image.Image = im.convert(_KEYED_MODES[mode])
            mode = converted.mode
        elif mode in _CONVERT_MODES:
            # P -> RGBA rather than RGB: it keeps transparency out of Pillow's lossy warning path.
            converted = im.convert(_CONVERT_MODES[mode])
            mode = converted.mode
        else:
            converted = im
        if mode in _GRAY16_MODES:
            arr = np.asarray(converted).astype(np.uint16)[:, :, None]
            # Pillow converts no 16-bit grey to grey+alpha without truncating it to 8 bits. The key
            # is a stored sample, so it is matched before any inversion.
            key = arr == im.info["transparency"] if keyed else None
            if white_is_zero(im):
                arr = counted_up_from_black(arr, im, source)
            if key is not None:
                arr = np.concatenate([arr, np.where(key, 0, 65535).astype(np.uint16)], axis=2)
        elif mode == "L":
            arr = np.asarray(converted)[:, :, None]
        elif mode == "LA":
            arr = np.asarray(converted)[:, :, : 2 if keep_alpha else 1]
        elif mode in ("RGB", "RGBA", "RGBX"):
            arr = np.asarray(converted)[:, :, : 4 if keep_alpha and mode == "RGBA" else 3]
        else:
            raise ImageDecodeError(
                f"unsupported image mode {im.mode!r} ({ACCEPTED_MODES_TEXT})", source=source
            )
    except ImageDecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"refused by the decoder's size guard ({exc})", source=source) from exc
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError, struct.error) as exc:
        raise ImageDecodeError(f"truncated or corrupt {fmt.upper()} data ({exc})", source=source) from exc
    return _own(arr)


def load_16bit_colour(
    data: bytes, *, mode: str, size: tuple[int, int], fmt: str, source: str, keep_alpha: bool = False
) -> np.ndarray:
    """Decode 16-bit colour with OpenCV, which keeps all 16 bits; (H, W, 1|3) uint16, or with
    ``keep_alpha`` (H, W, 2|4) where the file has alpha."""
    if fmt == "tiff":
        # OpenCV turns TIFFs upright itself, whatever the flags (4.x-5.0); reset the tag so that it
        # hands over the samples as stored and the one orientation step below stays ours.
        value, value_at = ifd0_orientation(data)
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
        arr = arr[:, :, [0, 3]] if keep_alpha else arr[:, :, :1]
    elif keep_alpha and arr.shape[2] == 4:
        arr = arr[:, :, [2, 1, 0, 3]]  # BGRA -> RGBA
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
