"""Tiny-image builders shared by the datasets tests.

Every builder returns encoded bytes (or writes a file) made on the spot with Pillow, OpenCV or, for
what neither writes (16-bit RGB TIFF with an orientation tag, a decompression-bomb PNG), by hand.

The test modules build their parametrize tables from these at collection time, so they import them
(``from datasets_test_images import encode``): pytest's importlib mode gives a conftest no importable
name, so this one registers itself under that name.
"""

from __future__ import annotations

import io
import struct
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

sys.modules.setdefault("datasets_test_images", sys.modules[__name__])

REAL_ORE = Path(__file__).resolve().parents[1] / "fixtures" / "real_ore"


def quadrants(height: int = 40, width: int = 60) -> np.ndarray:
    """(H, W, 3) uint8 with four flat colours, so that every flip and turn is told apart even after JPEG."""
    img = np.zeros((height, width, 3), np.uint8)
    h2, w2 = height // 2, width // 2
    img[:h2, :w2] = (230, 20, 20)
    img[:h2, w2:] = (20, 230, 20)
    img[h2:, :w2] = (20, 20, 230)
    img[h2:, w2:] = (230, 230, 230)
    return img


def ramp16(height: int = 12, width: int = 20, channels: int = 3) -> np.ndarray:
    """(H, W, C) uint16 whose values need all 16 bits (low bytes differ from the high ones)."""
    values = np.arange(height * width * channels, dtype=np.uint32) * 977 + 12345
    return (values % 65536).astype(np.uint16).reshape(height, width, channels)


def encode(image: Image.Image | np.ndarray, fmt: str, **save_kw: object) -> bytes:
    """Encode with Pillow (``fmt`` as Pillow names it: PNG, JPEG, BMP, TIFF, WEBP)."""
    im = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    im.save(buf, fmt, **save_kw)
    return buf.getvalue()


def encode_cv2(array: np.ndarray, ext: str) -> bytes:
    """Encode with OpenCV (which writes 16-bit colour); ``array`` is RGB, written as BGR."""
    bgr = array[:, :, ::-1] if array.ndim == 3 and array.shape[2] == 3 else array
    ok, buf = cv2.imencode(ext, np.ascontiguousarray(bgr))
    assert ok
    return buf.tobytes()


def exif_orientation(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def tiff_uncompressed(
    array: np.ndarray,
    *,
    orientation: int = 1,
    photometric: int | None = None,
    planar: int = 1,
    byteorder: str = "<",
    max_sample: int | None = None,
) -> bytes:
    """A baseline TIFF (header and IFD before the data), ordered-endian unless ``byteorder`` is ">".

    ``array`` is (H, W), (H, W, 2) (grey and a sample Pillow has no mode for) or (H, W, 3), uint8 or
    uint16. Pillow cannot write 48-bit RGB and OpenCV
    cannot write an orientation tag, hence this writer. ``photometric`` defaults to RGB or
    MinIsBlack; ``planar=2`` stores each colour as its own strip (separate planes); ``max_sample``
    writes a MaxSampleValue tag.
    """
    arr = array if array.ndim == 3 else array[:, :, None]
    height, width, channels = arr.shape
    bits = arr.dtype.itemsize * 8
    e = byteorder
    ordered = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder(e)))
    strips = (
        [np.ascontiguousarray(ordered[:, :, c]).tobytes() for c in range(channels)]
        if planar == 2
        else [ordered.tobytes()]
    )
    entries = 11 + (max_sample is not None)
    ifd_offset = 8
    extra_offset = ifd_offset + 2 + entries * 12 + 4
    extra = struct.pack(e + "HHHH", bits, bits, bits, 0)  # BitsPerSample of three samples
    offsets_at, counts_at = extra_offset + len(extra), extra_offset + len(extra) + 4 * len(strips)
    data_offset = counts_at + 4 * len(strips)
    starts = [data_offset + sum(len(s) for s in strips[:k]) for k in range(len(strips))]
    if len(strips) > 1:
        extra += struct.pack(e + f"{len(strips)}I", *starts) + struct.pack(
            e + f"{len(strips)}I", *map(len, strips)
        )
    else:
        data_offset = offsets_at
        starts = [data_offset]
    photo = photometric if photometric is not None else (2 if channels == 3 else 1)

    def one_or_at(values: list[int], at: int) -> bytes:
        return struct.pack(e + "I", values[0] if len(values) == 1 else at)

    bits_value = (
        struct.pack(e + "I", extra_offset)
        if channels == 3
        else struct.pack(e + "HH", bits, bits * (channels == 2))
    )
    tags = [
        (256, 4, 1, struct.pack(e + "I", width)),
        (257, 4, 1, struct.pack(e + "I", height)),
        (258, 3, channels, bits_value),
        (259, 3, 1, struct.pack(e + "HH", 1, 0)),
        (262, 3, 1, struct.pack(e + "HH", photo, 0)),
        (273, 4, len(strips), one_or_at(starts, offsets_at)),
        (274, 3, 1, struct.pack(e + "HH", orientation, 0)),
        (277, 3, 1, struct.pack(e + "HH", channels, 0)),
        (278, 4, 1, struct.pack(e + "I", height)),
        (279, 4, len(strips), one_or_at([len(s) for s in strips], counts_at)),
        *([(281, 3, 1, struct.pack(e + "HH", max_sample, 0))] if max_sample is not None else []),
        (284, 3, 1, struct.pack(e + "HH", planar, 0)),
    ]
    out = bytearray(
        (b"II*\x00" if e == "<" else b"MM\x00*")
        + struct.pack(e + "I", ifd_offset)
        + struct.pack(e + "H", entries)
    )
    for tag, kind, count, value in tags:
        out += struct.pack(e + "HHI", tag, kind, count) + value
    out += struct.pack(e + "I", 0)
    out += extra[:8] if len(strips) == 1 else extra
    assert len(out) == data_offset
    return bytes(out) + b"".join(strips)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def bomb_png(width: int, height: int) -> bytes:
    """A valid-looking PNG declaring ``width`` x ``height`` gray pixels in a few dozen bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    # A few rows' worth of zeros: the file is tiny whatever the declared size.
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + _png_chunk(b"IEND", b"")
    )


@pytest.fixture
def write(tmp_path: Path):
    """Write bytes to ``tmp_path / name`` (parents created) and return the path."""

    def _write(name: str, data: bytes) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    return _write
