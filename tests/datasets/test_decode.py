"""decode_image / read_image_size / to_float_rgb: every format x mode, orientation, limits, failures."""

from __future__ import annotations

import hashlib
import io
import re
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from datasets_test_images import (
    REAL_ORE,
    _png_chunk,
    bomb_png,
    encode,
    encode_cv2,
    exif_orientation,
    quadrants,
    ramp16,
    tiff_uncompressed,
)
from PIL import Image, ImageOps

from datasets.decode import (
    DecodedImage,
    DecodeLimits,
    ImageHeader,
    decode_image,
    read_image_header,
    read_image_size,
    to_float_rgb,
)
from datasets.decode.header import _PILLOW_FILTERS, pillow_quiet
from datasets.decode.tiff import ifd0_shorts
from datasets.errors import ImageDecodeError, ImageTooLargeError

RNG = np.random.default_rng(7)
RGB8 = RNG.integers(0, 256, (9, 13, 3), dtype=np.uint8)
GRAY8 = RNG.integers(0, 256, (9, 13), dtype=np.uint8)
GRAY16 = ramp16(9, 13, 1)[:, :, 0]
ALPHA8 = RNG.integers(0, 256, (9, 13), dtype=np.uint8)


def _palette_image(transparency: bool) -> Image.Image:
    im = Image.fromarray(RGB8).quantize(colors=16)
    if transparency:
        im.info["transparency"] = 3
    return im


# --------------------------------------------------------------------------------------------------
# Lossless formats x modes: exact pixels


def _lossless_cases() -> list[tuple[str, bytes, np.ndarray, str, str, int]]:
    rgba = np.dstack([RGB8, ALPHA8])
    la = Image.fromarray(np.dstack([GRAY8, ALPHA8]), "LA")
    pal = _palette_image(False)
    pal_t = _palette_image(True)
    pal_rgb = np.asarray(pal.convert("RGB"))
    cases = []
    for fmt, name in (("PNG", "png"), ("TIFF", "tiff"), ("BMP", "bmp"), ("WEBP", "webp")):
        kw = {"lossless": True} if fmt == "WEBP" else {}
        cases.append((f"{name}-rgb", encode(RGB8, fmt, **kw), RGB8, name, "RGB", 8))
        # Pillow writes 32-bit BMP without an alpha mask, so it reads back as RGB.
        cases.append(
            (f"{name}-rgba", encode(rgba, fmt, **kw), RGB8, name, "RGB" if fmt == "BMP" else "RGBA", 8)
        )
    for fmt, name in (("PNG", "png"), ("TIFF", "tiff"), ("BMP", "bmp")):
        cases.append((f"{name}-gray8", encode(GRAY8, fmt), GRAY8[:, :, None], name, "L", 8))
        cases.append((f"{name}-palette", encode(pal, fmt), pal_rgb, name, "P", 8))
    cases += [
        ("png-la", encode(la, "PNG"), GRAY8[:, :, None], "png", "LA", 8),
        ("tiff-la", encode(la, "TIFF"), GRAY8[:, :, None], "tiff", "LA", 8),
        ("png-palette-transparency", encode(pal_t, "PNG", transparency=3), pal_rgb, "png", "P", 8),
        (
            "png-bilevel",
            encode(Image.fromarray(GRAY8 > 127), "PNG"),
            (GRAY8[:, :, None] > 127) * np.uint8(255),
            "png",
            "1",
            8,
        ),
        ("png-gray16", encode_cv2(GRAY16, ".png"), GRAY16[:, :, None], "png", "I;16", 16),
        ("tiff-gray16", encode_cv2(GRAY16, ".tiff"), GRAY16[:, :, None], "tiff", "I;16", 16),
        ("png-rgb16", encode_cv2(ramp16(), ".png"), ramp16(), "png", "RGB", 16),
        ("tiff-rgb16", encode_cv2(ramp16(), ".tiff"), ramp16(), "tiff", "RGB", 16),
        ("tiff-rgb16-handwritten", tiff_uncompressed(ramp16()), ramp16(), "tiff", "RGB", 16),
        (
            "png-rgba16",
            encode_cv2(ramp16(channels=4)[:, :, [2, 1, 0, 3]], ".png"),
            ramp16(channels=4)[:, :, :3],
            "png",
            "RGBA",
            16,
        ),
    ]
    return cases


LOSSLESS = _lossless_cases()


@pytest.mark.parametrize(
    ("data", "expected", "fmt", "mode", "bits"), [c[1:] for c in LOSSLESS], ids=[c[0] for c in LOSSLESS]
)
def test_lossless_formats_and_modes_decode_exactly(
    data: bytes, expected: np.ndarray, fmt: str, mode: str, bits: int
) -> None:
    out = decode_image(data)
    assert (out.format, out.mode, out.bit_depth) == (fmt, mode, bits)
    assert out.pixels.dtype == (np.uint16 if bits == 16 else np.uint8)
    assert out.pixels.flags.c_contiguous and out.pixels.flags.writeable
    np.testing.assert_array_equal(out.pixels, expected)


def test_palette_conversion_is_warning_free_with_byte_transparency() -> None:
    # A tRNS table (bytes) is the case Pillow warns about when converting P -> RGB.
    im = _palette_image(False)
    data = encode(im, "PNG", transparency=bytes([0] * 4 + [255] * 12))
    out = decode_image(data)
    np.testing.assert_array_equal(out.pixels, np.asarray(im.convert("RGB")))


def _with_trns(png: bytes, key: bytes) -> bytes:
    """``png`` with a tRNS chunk (its colour key) right after IHDR, as a PNG optimiser writes one."""
    return png[:33] + _png_chunk(b"tRNS", key) + png[33:]


_KEYED_ROW = np.array([[255, 0, 255, 255]], np.uint8)  # white keyed transparent, black ink
_KEYED_ROW16 = np.array([[0x1234, 0, 0x1234, 0xFFFF]], np.uint16)  # key 0x1234: byte order matters


@pytest.mark.parametrize(
    ("data", "colour", "alpha"),
    [
        (encode(Image.fromarray(_KEYED_ROW, "L"), "PNG", transparency=255), _KEYED_ROW, [0, 255, 0, 0]),
        (
            encode(Image.fromarray(_KEYED_ROW, "L").convert("1"), "PNG", transparency=1),
            _KEYED_ROW,
            [0, 255, 0, 0],
        ),
        (
            encode(Image.fromarray(_KEYED_ROW, "L"), "PNG", transparency=255, bits=2),
            _KEYED_ROW,
            [0, 255, 0, 0],
        ),
        # the key as the PNG spec has it at 2 and 4 bits (libpng's, an optimiser's): 3 and 15, not 255
        (
            _with_trns(encode(Image.fromarray(_KEYED_ROW, "L"), "PNG", bits=2), b"\x00\x03"),
            _KEYED_ROW,
            [0, 255, 0, 0],
        ),
        (
            _with_trns(encode(Image.fromarray(_KEYED_ROW, "L"), "PNG", bits=4), b"\x00\x0f"),
            _KEYED_ROW,
            [0, 255, 0, 0],
        ),
        (
            encode(np.dstack([_KEYED_ROW] * 3), "PNG", transparency=(255, 255, 255)),
            np.dstack([_KEYED_ROW] * 3),
            [0, 255, 0, 0],
        ),
        (
            _with_trns(encode_cv2(_KEYED_ROW16, ".png"), b"\x12\x34"),
            _KEYED_ROW16,
            [0, 65535, 0, 65535],
        ),
        (
            _with_trns(encode_cv2(np.dstack([_KEYED_ROW16] * 3), ".png"), b"\x12\x34" * 3),
            np.dstack([_KEYED_ROW16] * 3),
            [0, 65535, 0, 65535],
        ),
    ],
    ids=[
        "grey",
        "grey-1bit",
        "grey-2bit",
        "grey-2bit-spec",
        "grey-4bit-spec",
        "rgb",
        "grey-16bit",
        "rgb-16bit",
    ],
)
def test_a_colour_key_is_kept_as_alpha_where_alpha_is_asked_for(
    data: bytes, colour: np.ndarray, alpha: list[int]
) -> None:
    """A grey or RGB PNG whose transparency is a colour key (tRNS) lost it with ``keep_alpha``: a mask
    of black ink on key-transparent white read inverted. Without ``keep_alpha`` (scoring) the pixels
    are as before, the key's colour and no alpha."""
    pixels = colour.reshape(1, 4, -1)
    kept = decode_image(data, keep_alpha=True).pixels
    np.testing.assert_array_equal(kept, np.dstack([pixels, np.array([alpha], pixels.dtype)]))
    np.testing.assert_array_equal(decode_image(data).pixels, pixels)


def test_a_decode_silences_pillows_warnings_alone_not_another_threads() -> None:
    """Decoding silenced every warning of the process while it ran: the scorer's once-per-run warning,
    given in another thread while an upload decoded, was lost, and never said again."""
    inside, done = threading.Event(), threading.Event()

    def decoding() -> None:
        with pillow_quiet():
            inside.set()
            done.wait(10)

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        thread = threading.Thread(target=decoding)
        thread.start()
        try:
            assert inside.wait(10)
            warnings.warn("the scorer's warning", UserWarning, stacklevel=1)
            warnings.warn_explicit(
                "Corrupt EXIF data", UserWarning, "TiffImagePlugin.py", 1, "PIL.TiffImagePlugin"
            )
        finally:
            done.set()
            thread.join()
    assert [str(w.message) for w in said] == ["the scorer's warning"]


def _palette_bytes_transparency() -> Image.Image:
    im = _palette_image(False)
    im.info["transparency"] = bytes([0] * 4 + [255] * 12)
    return im


def _pillows_own(message: str, category: type[Warning], module: str) -> Callable[[], None]:
    return lambda: warnings.warn_explicit(message, category, f"{module.split('.')[-1]}.py", 1, module)


@pytest.mark.parametrize(
    ("said", "shown"),
    [
        # the application's own Pillow code, after a decode: not a warning a decode gives
        (lambda: _palette_bytes_transparency().convert("RGB"), "Palette images with Transparency"),
        (_pillows_own("a deprecation", DeprecationWarning, "PIL.Image"), "a deprecation"),
        (_pillows_own("a malformed MPO file", UserWarning, "PIL.JpegImagePlugin"), "a malformed MPO file"),
        # those a decode gives are silenced from then on, whoever gives them
        (_pillows_own("Corrupt EXIF data.  Expecting", UserWarning, "PIL.TiffImagePlugin"), None),
        (_pillows_own("Invalid APNG, will use default", UserWarning, "PIL.PngImagePlugin"), None),
        (_pillows_own("Image size (1 pixels) exceeds", Image.DecompressionBombWarning, "PIL.Image"), None),
    ],
    ids=["palette", "deprecation", "mpo", "exif", "apng", "bomb"],
)
def test_after_a_decode_pillows_other_warnings_are_still_shown(
    said: Callable[[], object], shown: str | None
) -> None:
    """The filter that silenced Pillow's warnings while decoding stays, and it covered all of PIL's
    modules: an application embedding Clearsight saw none of Pillow's warnings again, even under
    ``-W error``. It covers the warnings a decode gives alone."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        decode_image(encode(quadrants(), "PNG"))
        said()
    assert [str(w.message)[: len(shown)] for w in caught] == ([shown] if shown else [])


@pytest.mark.parametrize(
    ("fmt", "kw"), [("JPEG", {"quality": 95}), ("WEBP", {"quality": 95})], ids=["jpeg", "webp-lossy"]
)
@pytest.mark.parametrize("gray", [False, True], ids=["rgb", "gray"])
def test_lossy_formats_decode_close(fmt: str, kw: dict[str, int], gray: bool) -> None:
    src = quadrants()
    if gray:
        src = src[:, :, 0]
    out = decode_image(encode(src, fmt, **kw))
    # WebP has no grayscale: a gray WebP comes back RGB with equal channels.
    expected = src[:, :, None] if gray and fmt == "JPEG" else (np.dstack([src] * 3) if gray else src)
    assert out.pixels.shape == expected.shape
    assert np.abs(out.pixels.astype(int) - expected).mean() < 6.0


def test_cmyk_jpeg_comes_back_rgb() -> None:
    data = encode(Image.fromarray(quadrants()).convert("CMYK"), "JPEG", quality=95)
    out = decode_image(data)
    assert (out.mode, out.pixels.shape) == ("CMYK", (40, 60, 3))
    assert np.abs(out.pixels.astype(int) - quadrants()).mean() < 4.0


# --------------------------------------------------------------------------------------------------
# EXIF orientation


def _oriented(fmt: str, orientation: int) -> bytes:
    src = quadrants()
    if fmt == "PNG-late-exif":
        # eXIf after IDAT is legal PNG; only visible once the image data is read.
        plain = encode(src, "PNG")
        end = plain.index(b"IEND") - 4
        return plain[:end] + _png_chunk(b"eXIf", exif_orientation(orientation)[6:]) + plain[end:]
    if fmt == "TIFF":
        exif = Image.Exif()
        exif[0x0112] = orientation
        return encode(src, "TIFF", exif=exif)
    kw = {"lossless": True} if fmt == "WEBP" else {}
    return encode(src, fmt, exif=exif_orientation(orientation), **kw)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF", "PNG-late-exif"])
def test_exif_orientation_matches_pillow_exif_transpose(fmt: str, orientation: int) -> None:
    data = _oriented(fmt, orientation)
    out = decode_image(data)
    with Image.open(io.BytesIO(data)) as im:
        reference = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    np.testing.assert_array_equal(out.pixels, reference)
    height, width = (60, 40) if orientation >= 5 else (40, 60)
    assert out.pixels.shape[:2] == (height, width)
    if fmt != "PNG-late-exif":
        assert read_image_size(data) == (width, height)
        header = read_image_header(data, name="upload.bin")
        assert header == ImageHeader(out.format, width, height)


# Where the red quadrant (top-left in the stored image) ends up once upright, per EXIF spec.
RED_CORNER = {1: (0, 0), 2: (0, -1), 3: (-1, -1), 4: (-1, 0), 5: (0, 0), 6: (0, -1), 7: (-1, -1), 8: (-1, 0)}


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_orientation_puts_the_stored_top_left_where_exif_says(orientation: int) -> None:
    out = decode_image(encode(quadrants(), "JPEG", quality=95, exif=exif_orientation(orientation)))
    y, x = RED_CORNER[orientation]
    r, g, b = out.pixels[y, x].astype(int)
    assert r > 180 and g < 70 and b < 70


@pytest.mark.parametrize("orientation", range(1, 9))
def test_16bit_rgb_tiff_orientation_keeps_all_16_bits(orientation: int) -> None:
    src = ramp16()
    out16 = decode_image(tiff_uncompressed(src, orientation=orientation))
    out8 = decode_image(tiff_uncompressed((src >> 8).astype(np.uint8), orientation=orientation))
    assert out16.bit_depth == 16
    np.testing.assert_array_equal(out16.pixels >> 8, out8.pixels)
    assert out16.pixels.shape[:2] == ((20, 12) if orientation >= 5 else (12, 20))
    assert sorted(np.unique(out16.pixels).tolist()) == sorted(np.unique(src).tolist())


@pytest.mark.parametrize("orientation", [3, 6])
def test_16bit_png_orientation_from_exif_chunk(orientation: int) -> None:
    plain = encode_cv2(ramp16(), ".png")
    idat = plain.index(b"IDAT") - 4
    data = plain[:idat] + _png_chunk(b"eXIf", exif_orientation(orientation)[6:]) + plain[idat:]
    out = decode_image(data)
    expected = ramp16()[::-1, ::-1] if orientation == 3 else np.rot90(ramp16(), k=-1)
    np.testing.assert_array_equal(out.pixels, expected)


@pytest.mark.parametrize("orientation", [3, 6])
def test_16bit_png_orientation_from_an_exif_chunk_after_the_image_data(orientation: int) -> None:
    """Pillow reads a late eXIf only when it loads the pixels, which it never does for 16-bit colour:
    such a picture was scored sideways, while the same file in 8 bits was turned upright."""
    plain = encode_cv2(ramp16(), ".png")
    end = plain.index(b"IEND") - 4
    data = plain[:end] + _png_chunk(b"eXIf", exif_orientation(orientation)[6:]) + plain[end:]
    expected = ramp16()[::-1, ::-1] if orientation == 3 else np.rot90(ramp16(), k=-1)
    np.testing.assert_array_equal(decode_image(data).pixels, expected)


@pytest.mark.parametrize(("early", "late"), [(1, 6), (6, 1), (None, 6), (6, None)])
def test_two_exif_chunks_turn_16bit_colour_as_they_turn_8bit(early: int | None, late: int | None) -> None:
    """Against the PNG spec, but sent: Pillow's 8-bit loader keeps the last eXIf; the 16-bit path took
    the first."""

    def exif(orientation: int | None) -> bytes:
        block = Image.Exif()
        if orientation is not None:
            block[0x0112] = orientation
        else:
            block[0x010F] = "camera"  # a block without an orientation
        return block.tobytes()[6:]

    shapes = []
    for image in (ramp16(), (ramp16() >> 8).astype(np.uint8)):
        plain = encode_cv2(image, ".png")
        idat, end = plain.index(b"IDAT") - 4, plain.index(b"IEND") - 4
        data = (
            plain[:idat] + _png_chunk(b"eXIf", exif(early)) + plain[idat:end]
            + _png_chunk(b"eXIf", exif(late)) + plain[end:]
        )  # fmt: skip
        shapes.append(decode_image(data).pixels.shape)
    assert shapes[0] == shapes[1]


@pytest.mark.parametrize("byteorder", ["<", ">"], ids=["little-endian", "big-endian"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_a_grey_tiff_that_counts_down_from_white_is_inverted(dtype: type, byteorder: str) -> None:
    """PhotometricInterpretation 0 (MinIsWhite), as some X-ray detectors write: Pillow inverts 8-bit
    samples itself, and 16-bit ones reached the model as a negative, or, big-endian, were refused
    (Pillow has no mode for them)."""
    top = np.iinfo(dtype).max
    stored = np.array([[0, top // 3, top], [7, 8, 9]], dtype)
    out = decode_image(tiff_uncompressed(stored, photometric=0, byteorder=byteorder, orientation=3))
    assert out.pixels[::-1, ::-1, 0].tolist() == (top - stored).tolist()  # inverted, then turned
    plain = decode_image(tiff_uncompressed(stored, photometric=1, byteorder=byteorder)).pixels
    assert plain[:, :, 0].tolist() == stored.tolist()


_DARK_BEYOND_12_BITS = [[0, 1365, 4095], [7, 5000, 65535]]


@pytest.mark.parametrize("byteorder", ["<", ">"], ids=["little-endian", "big-endian"])
@pytest.mark.parametrize(
    ("stored", "max_sample", "expected"),
    [
        # a 12-bit detector's black declared
        ([[0, 1365, 4095], [7, 8, 9]], 4095, [[4095, 2730, 0], [4088, 4087, 4086]]),
        (_DARK_BEYOND_12_BITS, 65535, [[65535, 64170, 61440], [65528, 60535, 0]]),
        # nothing declared, samples no 14-bit detector writes: 16 bits, the standard's reading
        (_DARK_BEYOND_12_BITS, None, [[65535, 64170, 61440], [65528, 60535, 0]]),
        # nothing declared, 12-bit samples: black is 65535 or 4095, which cannot be told
        ([[0, 1365, 4095]], None, None),
    ],
)
def test_a_grey_tiff_counting_down_from_white_is_inverted_against_the_black_it_declares(
    stored: list[list[int]], max_sample: int | None, expected: list[list[int]] | None, byteorder: str
) -> None:
    """Inverted against 65535, a 12-bit MinIsWhite file read 61440..65535: its set measured 16 bits and
    reached the model with a sixteenth of its contrast."""
    data = tiff_uncompressed(
        np.array(stored, np.uint16), photometric=0, byteorder=byteorder, max_sample=max_sample
    )
    if expected is None:
        with pytest.raises(
            ImageDecodeError,
            match=r"x\.tif: .* without MaxSampleValue, and its largest sample 4095 is below 16384",
        ):
            decode_image(data, name="x.tif")
    else:
        assert decode_image(data).pixels[:, :, 0].tolist() == expected


@pytest.mark.parametrize("byteorder", ["<", ">"], ids=["little-endian", "big-endian"])
@pytest.mark.parametrize(
    ("declared", "largest"),
    [(1023, 4095), (4095, 5000), (4095, 65535), (255, 4095)],
)
def test_a_grey_tiff_counting_down_from_white_with_samples_above_its_black_is_refused(
    declared: int, largest: int, byteorder: str
) -> None:
    """A sample above the MaxSampleValue a MinIsWhite file declares read as black: a 12-bit picture
    declaring 1023 came out three quarters black, without a word."""
    stored = np.array([[0, 1000, declared], [7, 8, largest]], np.uint16)
    data = tiff_uncompressed(stored, photometric=0, byteorder=byteorder, max_sample=declared)
    expected = (
        rf"^x\.tif: 16-bit grey TIFF that counts down from white \(PhotometricInterpretation 0, MinIsWhite\) "
        rf"declares MaxSampleValue {declared}, its black, but holds samples up to {largest}: those above it "
        r"would read as black, and the tag contradicts them; .* counting up from black \(MinIsBlack\)$"
    )
    with pytest.raises(ImageDecodeError, match=expected):
        decode_image(data, name="x.tif")


def test_the_header_of_a_file_that_is_no_image_names_it(tmp_path: Path) -> None:
    """The big-endian fallback read its format before it had one: an UnboundLocalError stopped a
    whole batch at one stray file."""
    (tmp_path / "notes.png").write_bytes(b"this is not a picture")
    with pytest.raises(ImageDecodeError, match="notes.png: not a recognised image"):
        read_image_header(tmp_path / "notes.png")


def test_the_header_of_a_big_endian_grey_tiff_counting_down_from_white_reads(tmp_path: Path) -> None:
    """The service checks every upload's header before decoding: Pillow has no mode for it."""
    data = tiff_uncompressed(np.zeros((5, 7), np.uint16), photometric=0, byteorder=">")
    (tmp_path / "x.tif").write_bytes(data)
    expected = ImageHeader("tiff", 7, 5, 2)
    assert read_image_header(data) == expected and read_image_header(tmp_path / "x.tif") == expected


def test_16bit_colour_tiff_with_separate_planes_is_refused_not_scrambled() -> None:
    """OpenCV reads a 48-bit TIFF whose colours are stored as separate planes into scrambled pixels of
    the right shape; 8-bit planar files Pillow reads exactly."""
    rng = np.random.default_rng(3)
    rgb8 = rng.integers(0, 255, (5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(tiff_uncompressed(rgb8, planar=2)).pixels, rgb8)
    with pytest.raises(ImageDecodeError, match=r"separate colour planes \(PlanarConfiguration 2\)"):
        decode_image(tiff_uncompressed(rgb8.astype(np.uint16) * 257, planar=2))


def _compressed_as(data: bytes, compression: int) -> bytes:
    """An uncompressed TIFF whose Compression tag says ``compression``: what a decoder sees first."""
    ((_, at),) = ifd0_shorts(data, 259).values()
    return data[:at] + struct.pack("<H", compression) + data[at + 2 :]


_ACCEPTED_TEXT = (
    "none (1), CCITT RLE (2), CCITT Group 3 fax (3), CCITT Group 4 fax (4), LZW (5), JPEG (7), "
    "Deflate (8 or 32946), PackBits (32773), LZMA (34925), Zstandard (50000)"
)


@pytest.mark.parametrize(
    ("sixteen_bit_colour", "compression", "said"),
    [
        (False, 34712, f"TIFF compression 34712 (JPEG 2000) is not supported; accepted: {_ACCEPTED_TEXT}"),
        (False, 50002, f"TIFF compression 50002 (JPEG XL) is not supported; accepted: {_ACCEPTED_TEXT}"),
        (False, 50001, f"TIFF compression 50001 (WebP) is not supported; accepted: {_ACCEPTED_TEXT}"),
        (False, 40000, f"TIFF compression 40000 (unknown) is not supported; accepted: {_ACCEPTED_TEXT}"),
        (  # OpenCV's libtiff, which decodes 16-bit colour, has no LZMA
            True,
            34925,
            "16-bit colour TIFF compression 34925 (LZMA) is not supported; accepted: none (1), LZW (5), "
            "Deflate (8 or 32946), PackBits (32773)",
        ),
    ],
)
def test_a_tiff_of_a_compression_not_decoded_here_is_named(
    tmp_path: Path, sixteen_bit_colour: bool, compression: int, said: str
) -> None:
    """Refused as a "truncated or corrupt TIFF header (34712)" or "data (decoder error -2)": a valid
    file read as broken, and nothing said of what to send instead."""
    rgb = np.random.default_rng(5).integers(0, 255, (5, 7, 3), dtype=np.uint8)
    data = _compressed_as(
        tiff_uncompressed(rgb.astype(np.uint16) * 257 if sixteen_bit_colour else rgb), compression
    )
    (tmp_path / "x.tif").write_bytes(data)
    for read in (decode_image, read_image_header):
        for given in (data, tmp_path / "x.tif"):
            with pytest.raises(ImageDecodeError, match=re.escape(said) + "$"):
                read(given)


@pytest.mark.parametrize("compression", ["tiff_lzw", "tiff_adobe_deflate", "packbits", "lzma", "zstd"])
def test_a_tiff_of_a_compression_accepted_decodes(compression: str) -> None:
    grey = np.random.default_rng(6).integers(0, 255, (5, 7), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(grey).save(out, "TIFF", compression=compression)
    np.testing.assert_array_equal(decode_image(out.getvalue()).pixels[:, :, 0], grey)


# --------------------------------------------------------------------------------------------------
# Sources, hashes, real fixtures


def test_path_and_bytes_give_the_same_image_and_hash(write) -> None:
    data = encode(RGB8, "PNG")
    path = write("a/b.png", data)
    from_path, from_bytes, named = (
        decode_image(path),
        decode_image(data),
        decode_image(data, name="upload.png"),
    )
    np.testing.assert_array_equal(from_path.pixels, from_bytes.pixels)
    assert from_path.sha256 == from_bytes.sha256 == hashlib.sha256(data).hexdigest()
    assert (from_path.source, from_bytes.source, named.source) == (str(path), "<bytes>", "upload.png")
    assert decode_image(str(path)).source == str(path)
    assert decode_image(bytearray(data)).sha256 == from_path.sha256


REAL_TILES = sorted(REAL_ORE.rglob("*.png"))


def test_real_fixture_set_is_complete() -> None:
    assert [p.parent.name for p in REAL_TILES].count("full_ore") == 3
    assert [p.parent.name for p in REAL_TILES].count("partial_edge") == 3
    assert [p.parent.name for p in REAL_TILES].count("empty_belt") == 2
    assert sum(p.stat().st_size for p in REAL_ORE.rglob("*")) < 2 * 1024 * 1024


@pytest.mark.parametrize("path", REAL_TILES, ids=[f"{p.parent.name}/{p.name}" for p in REAL_TILES])
def test_real_rgba_tiles_decode_to_rgb(path: Path) -> None:
    out = decode_image(path)
    assert (out.format, out.mode, out.bit_depth, out.pixels.shape) == ("png", "RGBA", 8, (250, 250, 3))
    with Image.open(path) as im:
        np.testing.assert_array_equal(out.pixels, np.asarray(im.convert("RGB")))
    assert read_image_size(path) == (250, 250)


@pytest.mark.parametrize(
    ("fmt", "kw"), [("JPEG", {"quality": 90}), ("WEBP", {"lossless": True}), ("BMP", {}), ("TIFF", {})]
)
def test_real_tile_roundtrips_through_other_formats(fmt: str, kw: dict[str, object]) -> None:
    reference = decode_image(REAL_TILES[0]).pixels
    data = encode(reference, fmt, **kw)
    out = decode_image(data)
    with Image.open(io.BytesIO(data)) as im:
        np.testing.assert_array_equal(out.pixels, np.asarray(im.convert("RGB")))
    if fmt != "JPEG":
        np.testing.assert_array_equal(out.pixels, reference)


# --------------------------------------------------------------------------------------------------
# Failures: each its own typed error and message


def _truncated(fmt: str) -> bytes:
    data = encode(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8), fmt)
    return data[: len(data) // 2]


FAILURES = [
    (
        "garbage",
        b"this is plainly text, not pixels",
        ImageDecodeError,
        "<bytes>: not a recognised image: data starts with b'this is ' "
        "(accepted formats: JPEG, PNG, BMP, TIFF, WebP)",
    ),
    (
        "gif",
        encode(RGB8, "GIF"),
        ImageDecodeError,
        "<bytes>: GIF files are not accepted (accepted formats: JPEG, PNG, BMP, TIFF, WebP)",
    ),
    (
        "pdf",
        b"%PDF-1.7\n...",
        ImageDecodeError,
        "<bytes>: PDF files are not accepted (accepted formats: JPEG, PNG, BMP, TIFF, WebP)",
    ),
    ("empty", b"", ImageDecodeError, "<bytes>: empty data (0 bytes)"),
    (
        "jpeg-truncated",
        _truncated("JPEG"),
        ImageDecodeError,
        "<bytes>: truncated JPEG: no end-of-image marker after the image data",
    ),
    (
        "jpeg-header-only",
        encode(RGB8, "JPEG")[:20],
        ImageDecodeError,
        "<bytes>: truncated or corrupt JPEG: no image data (start-of-scan marker)",
    ),
    (
        "png-truncated",
        _truncated("PNG"),
        ImageDecodeError,
        "<bytes>: truncated or corrupt PNG data (image file is truncated)",
    ),
    (
        "png-header-cut",
        encode(RGB8, "PNG")[:30],
        ImageDecodeError,
        "<bytes>: truncated or corrupt PNG header",
    ),
    (
        "bmp-truncated",
        _truncated("BMP"),
        ImageDecodeError,
        "<bytes>: truncated or corrupt BMP data (image file is truncated",
    ),
    (
        "tiff-truncated",
        _truncated("TIFF"),
        ImageDecodeError,
        "<bytes>: truncated or corrupt TIFF data (image file is truncated",
    ),
    ("webp-truncated", _truncated("WEBP"), ImageDecodeError, "<bytes>: truncated or corrupt WEBP header"),
    (
        "png16-truncated",
        encode_cv2(ramp16(32, 32), ".png")[:800],
        ImageDecodeError,
        "<bytes>: truncated or corrupt PNG data (16-bit colour)",
    ),
    (
        "tiff16-truncated",
        tiff_uncompressed(ramp16())[:-50],
        ImageDecodeError,
        "<bytes>: truncated or corrupt TIFF data (16-bit colour)",
    ),
    (
        "float-tiff",
        encode(Image.fromarray(RNG.random((4, 4), dtype=np.float32)), "TIFF"),
        ImageDecodeError,
        "<bytes>: unsupported image mode 'F' "
        "(accepted modes: 1, L, LA, P, PA, RGB, RGBA, RGBX, CMYK, YCbCr, I;16, 16-bit RGB/RGBA)",
    ),
    (  # a well-formed file was called corrupt
        "tiff-two-samples",
        tiff_uncompressed(np.zeros((4, 6, 2), np.uint16)),
        ImageDecodeError,
        "<bytes>: unsupported TIFF sample layout (unknown pixel mode: no mode for its samples per pixel "
        "and bits); accepted modes: 1, L, LA, P",
    ),
    (
        "bomb",
        bomb_png(200_000, 200_000),
        ImageTooLargeError,
        "<bytes>: image is 200000x200000 = 40000000000 pixels, over the limit of 50000000 pixels",
    ),
    (
        "tiny-bomb-data",
        bomb_png(64, 64),
        ImageDecodeError,
        "<bytes>: truncated or corrupt PNG data (image file is truncated",
    ),
]


@pytest.mark.parametrize(
    ("data", "error", "message"), [f[1:] for f in FAILURES], ids=[f[0] for f in FAILURES]
)
def test_bad_data_raises_typed_error_naming_source_and_reason(
    data: bytes, error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        decode_image(data)
    assert type(info.value) is error
    assert str(info.value).startswith(message)
    assert info.value.source == "<bytes>"  # type: ignore[attr-defined]


def test_corrupt_png_crc_is_refused() -> None:
    data = bytearray(encode(RNG.integers(0, 256, (32, 32, 3), dtype=np.uint8), "PNG"))
    data[60] ^= 0xFF  # inside IDAT
    with pytest.raises(
        ImageDecodeError, match=r"^<bytes>: truncated or corrupt PNG data \(broken data stream"
    ):
        decode_image(bytes(data))


@pytest.mark.parametrize("fmt", ["TIFF", "PNG", "WEBP"])
def test_a_file_of_several_pages_is_refused(fmt: str) -> None:
    """A TIFF holding two views or energies of one scan: scoring the first alone passed the other
    unseen. Animated PNG and WebP likewise."""
    first, second = (Image.fromarray(np.full((40, 60), v, np.uint8)) for v in (0, 200))
    buf = io.BytesIO()
    first.save(buf, format=fmt, save_all=True, append_images=[second])
    with pytest.raises(ImageDecodeError, match=rf"^<bytes>: a {fmt} of several pages or frames; one picture"):
        decode_image(buf.getvalue())


def _tiff(*pages: tuple[np.ndarray, int | None]) -> bytes:
    """A TIFF of these pages, each (pixels, NewSubfileType or None for none written)."""
    from PIL import TiffImagePlugin

    buf = io.BytesIO()
    with TiffImagePlugin.AppendingTiffWriter(buf) as tiff:
        for pixels, kind in pages:
            Image.fromarray(pixels).save(
                tiff, format="TIFF", tiffinfo={254: kind} if kind is not None else {}
            )
            tiff.newFrame()
    assert Image.open(io.BytesIO(buf.getvalue())).n_frames == len(pages)
    return buf.getvalue()


_PICTURE = np.arange(40 * 60, dtype=np.uint16).reshape(40, 60)


@pytest.mark.parametrize(
    ("pages", "one_picture"),
    [
        ([(_PICTURE, None), (_PICTURE[::2, ::2], 1)], True),  # a reduced-resolution preview
        ([(_PICTURE, None), (_PICTURE[::2, ::2], 1), (_PICTURE[::4, ::4], 1)], True),  # a pyramid
        ([(_PICTURE, None), (_PICTURE, None)], False),  # two views
        (
            [(_PICTURE, None), (_PICTURE[::2, ::2], 1), (_PICTURE + 7, None)],
            False,
        ),  # a thumbnail, then a view
    ],
    ids=["preview", "pyramid", "two-views", "thumbnail-then-view"],
)
def test_a_tiff_is_one_picture_when_every_further_page_is_a_preview(pages, one_picture: bool) -> None:
    data = _tiff(*pages)
    if one_picture:
        assert np.array_equal(decode_image(data).pixels[..., 0], _PICTURE)  # its first page
        return
    with pytest.raises(ImageDecodeError, match="of several pages or frames"):
        decode_image(data)


def test_third_party_exception_is_chained() -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(_truncated("PNG"), name="cam3.png")
    assert isinstance(info.value.__cause__, OSError)
    assert str(info.value).startswith("cam3.png: truncated or corrupt PNG data")


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(tmp_path / "nope.png")
    assert str(info.value) == f"{tmp_path / 'nope.png'}: file not found"
    with pytest.raises(ImageDecodeError) as info:
        decode_image(tmp_path)
    assert str(info.value) == f"{tmp_path}: is a directory, not an image file"


def test_empty_file(write) -> None:
    path = write("empty.png", b"")
    with pytest.raises(ImageDecodeError) as info:
        decode_image(path)
    assert str(info.value) == f"{path}: empty file (0 bytes)"


def test_wrong_extension_is_sniffed_not_trusted(write) -> None:
    path = write("really_a_png.jpg", encode(RGB8, "PNG"))
    assert decode_image(path).format == "png"


# --------------------------------------------------------------------------------------------------
# Limits


def test_byte_limit_is_checked_by_stat_before_reading(write, monkeypatch: pytest.MonkeyPatch) -> None:
    data = encode(RGB8, "PNG")
    path = write("big.png", data)

    def no_reading(*args: object, **kwargs: object) -> None:
        raise AssertionError("file was opened despite being over the byte limit")

    monkeypatch.setattr("builtins.open", no_reading)
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(path, limits=DecodeLimits(max_bytes=len(data) - 1))
    assert str(info.value) == f"{path}: file is {len(data)} bytes, over the limit of {len(data) - 1} bytes"


@pytest.mark.parametrize("read", [decode_image, read_image_header])
@pytest.mark.parametrize(
    ("setup", "limits", "error", "words"),
    [
        (lambda path: path.write_bytes(encode(RGB8, "PNG")), DecodeLimits(max_bytes=100), ImageTooLargeError,
         "over the limit of 100 bytes"),
        (lambda path: path.write_bytes(b""), None, ImageDecodeError, "empty file (0 bytes)"),
        (lambda path: path.mkdir(), None, ImageDecodeError, "is a directory"),
        (lambda path: None, None, ImageDecodeError, "file not found"),
    ],
    ids=["over-the-byte-limit", "empty", "a-folder", "missing"],
)  # fmt: skip
def test_a_file_read_under_a_name_is_named_so_where_its_size_is_refused(
    tmp_path: Path, read: Callable, setup: Callable, limits: DecodeLimits | None, error: type, words: str
) -> None:
    """The service reads a stored upload under a name of its own: these errors named the server's
    path instead, which a client's problem answer then showed."""
    path = tmp_path / "store" / ("ab" * 32 + ".png")
    path.parent.mkdir()
    setup(path)
    with pytest.raises(error) as info:
        read(path, limits=limits, name="stored image abab")
    assert str(info.value).startswith("stored image abab: ") and words in str(info.value)
    assert str(tmp_path) not in str(info.value)


def test_byte_limit_on_bytes() -> None:
    data = encode(RGB8, "PNG")
    with pytest.raises(
        ImageTooLargeError, match=rf"^<bytes>: data is {len(data)} bytes, over the limit of 100 bytes$"
    ):
        decode_image(data, limits=DecodeLimits(max_bytes=100))
    assert decode_image(data, limits=DecodeLimits(max_bytes=len(data))).pixels.shape == (9, 13, 3)


@pytest.mark.parametrize(("max_pixels", "ok"), [(9 * 13, True), (9 * 13 - 1, False)])
def test_pixel_limit_boundary(max_pixels: int, ok: bool) -> None:
    data = encode(RGB8, "PNG")
    if ok:
        assert decode_image(data, limits=DecodeLimits(max_pixels=max_pixels)).pixels.shape == (9, 13, 3)
    else:
        with pytest.raises(
            ImageTooLargeError,
            match=rf"^<bytes>: image is 13x9 = 117 pixels, over the limit of {max_pixels} pixels$",
        ) as info:
            decode_image(data, limits=DecodeLimits(max_pixels=max_pixels))
        assert info.value.sha256 == hashlib.sha256(data).hexdigest()  # read whole, so named


def test_a_file_that_does_not_decode_is_named_by_its_bytes_where_they_were_read() -> None:
    """A batch row for a corrupt file keeps its hash: the record of the hold names what was sent."""
    broken = encode(RGB8, "PNG")[:40]
    with pytest.raises(ImageDecodeError) as info:
        decode_image(broken)
    assert info.value.sha256 == hashlib.sha256(broken).hexdigest()
    with pytest.raises(ImageTooLargeError) as too_big:  # refused before its bytes were read
        decode_image(broken, limits=DecodeLimits(max_bytes=10))
    assert too_big.value.sha256 is None


def test_bomb_is_refused_from_the_header_without_decoding(write) -> None:
    # 100k x 100k declared, a few dozen bytes on disk: refused before any pixel buffer exists.
    path = write("bomb.png", bomb_png(100_000, 100_000))
    assert path.stat().st_size < 200
    start = time.perf_counter()
    with pytest.raises(ImageTooLargeError):
        decode_image(path)
    with pytest.raises(ImageTooLargeError):
        read_image_size(path)
    assert time.perf_counter() - start < 0.5


def test_limit_above_pillows_own_bomb_threshold_raises_no_pillow_warning() -> None:
    # Pillow warns (DecompressionBombWarning) above ~89 Mpx; under filterwarnings=error any warning
    # would fail this test. 10000 x 9000 = 90 Mpx declared, a few bytes of data.
    data = bomb_png(10_000, 9_000)
    limits = DecodeLimits(max_pixels=100_000_000)
    assert read_image_size(data, limits=limits) == (10_000, 9_000)
    with pytest.raises(
        ImageDecodeError, match=r"^<bytes>: truncated or corrupt PNG data \(image file is truncated"
    ):
        decode_image(data, limits=limits)
    with pytest.raises(
        ImageTooLargeError,
        match=r"^<bytes>: image is 10000x9000 = 90000000 pixels, over the limit of 50000000 pixels$",
    ):
        decode_image(data)


@pytest.mark.parametrize("bad", [0, -1, True, 2.5])
def test_limits_validate(bad: object) -> None:
    with pytest.raises(ValueError, match="DecodeLimits.max_pixels must be a positive int"):
        DecodeLimits(max_pixels=bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# to_float_rgb, speed, threads


@pytest.mark.parametrize(
    ("pixels", "expected"),
    [
        (np.array([[0, 255]], np.uint8), np.array([[[0.0] * 3, [1.0] * 3]], np.float32)),
        (np.array([[[0], [65535]]], np.uint16), np.array([[[0.0] * 3, [1.0] * 3]], np.float32)),
        (np.array([[[51, 102, 255]]], np.uint8), np.array([[[0.2, 0.4, 1.0]]], np.float32)),
        (np.array([[[0.25, 0.5, 0.75]]], np.float64), np.array([[[0.25, 0.5, 0.75]]], np.float32)),
    ],
    ids=["gray8", "gray16", "rgb8", "float"],
)
def test_to_float_rgb(pixels: np.ndarray, expected: np.ndarray) -> None:
    out = to_float_rgb(pixels)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-7)


@pytest.mark.parametrize(
    ("pixels", "message"),
    [
        (np.zeros((2, 2, 4), np.uint8), r"pixel array of shape \(2, 2, 4\) is not an image"),
        (
            np.zeros((2, 2), np.int32),
            r"pixel dtype int32 is not accepted \(accepted: uint8, uint16, float in \[0, 1\]\)",
        ),
    ],
)
def test_to_float_rgb_refuses(pixels: np.ndarray, message: str) -> None:
    with pytest.raises(ImageDecodeError, match=message):
        to_float_rgb(pixels)


@pytest.mark.parametrize(
    ("data", "pillow_decoders", "opencv_decodes"),
    [
        (encode(quadrants(), "PNG"), 1, 0),
        (encode(quadrants(), "JPEG"), 1, 0),
        (encode_cv2(ramp16(), ".png"), 0, 1),
    ],
    ids=["png", "jpeg", "png-rgb16"],
)
def test_each_image_is_decoded_once(
    monkeypatch: pytest.MonkeyPatch, data: bytes, pillow_decoders: int, opencv_decodes: int
) -> None:
    import cv2

    calls = {"pillow": 0, "opencv": 0}
    real_getdecoder, real_imdecode = Image._getdecoder, cv2.imdecode

    def counting_getdecoder(*args: object, **kwargs: object) -> object:
        calls["pillow"] += 1
        return real_getdecoder(*args, **kwargs)  # type: ignore[arg-type]

    def counting_imdecode(*args: object, **kwargs: object) -> object:
        calls["opencv"] += 1
        return real_imdecode(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(Image, "_getdecoder", counting_getdecoder)
    monkeypatch.setattr(cv2, "imdecode", counting_imdecode)
    decode_image(data)
    assert calls == {"pillow": pillow_decoders, "opencv": opencv_decodes}


def test_concurrent_decodes_agree_and_leave_only_the_filter_on_pillows_warnings() -> None:
    data = encode(quadrants(), "PNG")
    before = list(warnings.filters)
    results: list[DecodedImage] = []

    def work() -> None:
        for _ in range(10):
            results.append(decode_image(data))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 40
    assert all(np.array_equal(r.pixels, quadrants()) for r in results)
    # those on Pillow's warnings, in front, and nothing else: overlapping decodes left a catch-all
    # "ignore" behind
    assert warnings.filters == [*_PILLOW_FILTERS, *(f for f in before if f not in _PILLOW_FILTERS)]


def test_read_image_header_names_the_upload_and_checks_the_pixel_limit() -> None:
    data = encode(np.zeros((30, 40, 3), np.uint8), "PNG")
    with pytest.raises(ImageTooLargeError, match=r"^scan-7\.png: ") as info:
        read_image_header(data, limits=DecodeLimits(max_pixels=1000), name="scan-7.png")
    assert "1200" in str(info.value)
    with pytest.raises(ImageDecodeError, match=r"^scan-8\.png: "):
        read_image_header(b"GIF89a" + bytes(40), name="scan-8.png")


@pytest.mark.parametrize(
    ("pixels", "ext", "sample_bytes"),
    [
        (np.zeros((6, 5, 3), np.uint16), ".png", 2),
        (np.zeros((6, 5), np.uint16), ".png", 2),
        (np.zeros((6, 5, 3), np.uint8), ".png", 1),
        (np.zeros((6, 5, 3), np.uint16), ".tiff", 2),
        (np.zeros((6, 5), np.uint8), ".tiff", 1),
        (np.zeros((6, 5, 3), np.uint8), ".jpg", 1),
    ],
    ids=["png-rgb16", "png-grey16", "png-rgb8", "tiff-rgb16", "tiff-grey8", "jpeg"],
)
def test_the_header_says_how_many_bytes_a_decoded_sample_takes(
    pixels: np.ndarray, ext: str, sample_bytes: int
) -> None:
    """A server bounds decoded memory from the headers: a 16-bit picture holds twice the bytes."""
    import cv2

    ok, buf = cv2.imencode(ext, pixels)
    assert ok
    header = read_image_header(buf.tobytes())
    assert (header.width, header.height, header.sample_bytes) == (5, 6, sample_bytes)
    assert decode_image(buf.tobytes()).pixels.dtype.itemsize == sample_bytes


@pytest.mark.parametrize("progressive", [False, True], ids=["baseline", "progressive"])
@pytest.mark.parametrize(
    "trailer",
    [b"", bytes(range(256)) * 64, b"\xff\xda\x00\x08junk-after-the-image"],
    ids=["none", "bytes", "markers"],
)
def test_a_complete_jpeg_with_data_after_it_is_decoded(trailer: bytes, progressive: bool) -> None:
    """A phone's motion photo appends a video after the image; only a JPEG cut short is refused."""
    rng = np.random.default_rng(3)
    jpeg = encode(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8), "JPEG", progressive=progressive)
    assert decode_image(jpeg + trailer).pixels.shape == (40, 60, 3)
    with pytest.raises(ImageDecodeError, match="truncated JPEG: no end-of-image marker"):
        decode_image(jpeg[: len(jpeg) // 2])


def _cv2_jpeg(rgb: np.ndarray, *params: int) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), list(params))
    assert ok
    return buf.tobytes()


def _cut_short(data: bytes, keep: float | None) -> bytes:
    """``data`` cut to the first ``keep`` of its bytes (None: just before its last scan, which a
    progressive file's scans leave unrefined), then given an end-of-image marker again."""
    end = data.rfind(b"\xff\xda") if keep is None else int(len(data) * keep)
    return data[:end] + b"\xff\xd9"


ORE = np.asarray(Image.open(REAL_TILES[0]).convert("RGB"))[:64, :64]
ORE_JPEGS = {
    "baseline": encode(ORE, "JPEG", quality=90),
    "progressive": encode(ORE, "JPEG", quality=90, progressive=True),
    "grey": encode(ORE[:, :, 0], "JPEG", quality=90),
    "grey-progressive": encode(ORE[:, :, 0], "JPEG", quality=90, progressive=True),
    "cmyk": encode(Image.fromarray(ORE).convert("CMYK"), "JPEG", quality=90),
    "4:4:4-optimized": encode(ORE, "JPEG", quality=100, subsampling=0, optimize=True),
    "restarts": _cv2_jpeg(ORE, cv2.IMWRITE_JPEG_RST_INTERVAL, 1),
    "restarts-progressive": _cv2_jpeg(ORE, cv2.IMWRITE_JPEG_RST_INTERVAL, 2, cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
    "opencv-quality-30": _cv2_jpeg(ORE, cv2.IMWRITE_JPEG_QUALITY, 30),
}


@pytest.mark.parametrize("name", list(ORE_JPEGS))
def test_a_whole_jpeg_decodes_as_pillow_decodes_it(name: str) -> None:
    data = ORE_JPEGS[name]
    with Image.open(io.BytesIO(data)) as im:
        expected = np.asarray(im.convert("L" if im.mode == "L" else "RGB"))
    np.testing.assert_array_equal(decode_image(data).pixels, expected.reshape(64, 64, -1))


_ENDS_EARLY = "truncated JPEG: the image data ends before the image does ("
_UNFINISHED = "truncated or unfinished progressive JPEG: its scans never bring coefficients "


CUTS = [
    ("baseline", 0.5, _ENDS_EARLY + "its last scan is cut short"),
    ("baseline", 0.97, _ENDS_EARLY + "its last scan is cut short"),
    ("progressive", 0.95, _ENDS_EARLY + "its last scan is cut short"),
    ("progressive", 0.5, _UNFINISHED + "0-63 of component 1 of 3 to full precision"),
    ("progressive", None, _UNFINISHED + "1-63 of component 1 of 3 to full precision"),
    ("grey", 0.5, _ENDS_EARLY + "its last scan is cut short"),
    ("grey-progressive", 0.9, _ENDS_EARLY + "its last scan is cut short"),
    ("grey-progressive", None, _UNFINISHED + "1-63 of component 1 of 1 to full precision"),
    ("cmyk", 0.5, _ENDS_EARLY + "its last scan is cut short"),
    ("4:4:4-optimized", 0.5, _ENDS_EARLY + "its last scan is cut short"),
    ("restarts", 0.5, _ENDS_EARLY + "scan 1 of 1 holds "),
    ("restarts-progressive", 0.5, _ENDS_EARLY + "scan 6 of 6 holds "),
]


@pytest.mark.parametrize(("name", "keep", "reason"), CUTS, ids=[f"{name}-{keep}" for name, keep, _ in CUTS])
def test_a_jpeg_cut_short_and_given_an_end_marker_again_is_refused(
    name: str, keep: float | None, reason: str
) -> None:
    """libjpeg makes up a scan's missing bits, as grey, and only warns where an end-of-image marker
    follows the cut: such a file was decoded, its lost part grey, and scored."""
    with pytest.raises(ImageDecodeError) as info:
        decode_image(_cut_short(ORE_JPEGS[name], keep), name="cut.jpg")
    assert str(info.value).startswith(f"cut.jpg: {reason}")


SCAN_SCRIPTS = REAL_ORE.parent / "jpeg_scan_scripts"  # made by jpegtran -scans: see its README


@pytest.mark.parametrize("name", ["luma-to-40.jpg", "chroma-dc-only.jpg"])
def test_a_progressive_jpeg_whose_scans_leave_coefficients_out_decodes(name: str) -> None:
    """The standard asks a progressive file for every component's DC coefficients only: files
    whose scans send no more (libjpeg writes and reads them without a warning) were refused as
    truncated."""
    data = (SCAN_SCRIPTS / name).read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        expected = np.asarray(im)
    np.testing.assert_array_equal(decode_image(data).pixels, expected)


def test_a_progressive_jpeg_whose_successive_approximation_is_unfinished_is_refused_so() -> None:
    """Its luma is sent short of its last bit, as in a file of libjpeg's progression cut before its
    last scan: the two are one to the decoder, and the refusal says both."""
    with pytest.raises(ImageDecodeError) as info:
        decode_image(SCAN_SCRIPTS / "luma-last-bit-unsent.jpg", name="x.jpg")
    assert str(info.value) == (
        f"x.jpg: {_UNFINISHED}1-63 of component 1 of 3 to full precision (their successive "
        "approximation is begun, its last pass never sent), as in a file cut short and given an "
        "end-of-image marker, or one written so; re-save it whole"
    )


def test_a_progressive_jpeg_never_sending_a_components_dc_coefficients_is_refused() -> None:
    data = (SCAN_SCRIPTS / "luma-to-40.jpg").read_bytes()
    first, second = [m.start() for m in re.finditer(b"\xff\xda", data)][:2]
    dht = data.rindex(b"\xff\xc4", first, second)
    without_dc = data[:first] + data[dht:]  # the first scan, of every component's DC, taken out
    with pytest.raises(ImageDecodeError) as info:
        decode_image(without_dc, name="x.jpg")
    assert str(info.value) == (
        f"x.jpg: {_ENDS_EARLY}its scans never send the DC coefficients of component 1 of 3, as "
        "every progressive JPEG does)"
    )


def _scans_repeated(data: bytes, scans: int) -> bytes:
    """A progressive JPEG of Pillow's with its last scan (and the Huffman tables before it) repeated
    until it holds ``scans`` scans: decodable, each repeat one more pass over the whole image."""
    last = data.rfind(b"\xff\xda")
    tables = data.rfind(b"\xff\xc4", 0, last)
    start = tables if tables != -1 and data.find(b"\xff\xda", tables) == last else last
    return data[:-2] + data[start:-2] * (scans - data.count(b"\xff\xda")) + b"\xff\xd9"


def test_a_jpeg_of_more_scans_than_encoders_write_is_refused_before_decoding() -> None:
    """A progressive JPEG's last scan repeated 12,000 times (0.45 MB at 2048 x 2048) kept a core
    busy for tens of seconds, and at the 64 MiB a request may hold for hours: the decoder passes
    over the whole image for each scan."""
    # flat: no AC coefficients, so that the last scan (a refinement) decodes alike when repeated
    progressive = encode(np.full((64, 64, 3), (90, 140, 200), np.uint8), "JPEG", progressive=True)
    assert progressive.count(b"\xff\xda") == 10  # libjpeg's script for colour
    at_limit = _scans_repeated(progressive, 100)
    np.testing.assert_array_equal(decode_image(at_limit).pixels, decode_image(progressive).pixels)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(_scans_repeated(progressive, 101), name="scans.jpg")
    assert str(info.value) == (
        "scans.jpg: JPEG with too many scans: at least 101, where at most 100 are accepted (each is "
        "decoded over the whole image; encoders write a few dozen at most, libjpeg's progressive "
        "script 10 for colour and 6 for grey); re-save it"
    )
    # nor are a million empty scans walked to the end: walking them took tens of seconds
    last = progressive.rfind(b"\xff\xda")
    empty_scan = progressive[last : last + 2 + struct.unpack_from(">H", progressive, last + 2)[0]]
    started = time.perf_counter()
    with pytest.raises(ImageDecodeError, match=r"^x\.jpg: JPEG with too many scans: at least 101,"):
        decode_image(progressive[:-2] + empty_scan * 1_000_000 + b"\xff\xd9", name="x.jpg")
    assert time.perf_counter() - started < 1.0


_MANY_MARKERS = "JPEG with too many markers: more than 10,000 markers, segments and fill bytes"
_FLOODS = {"empty COM segments": b"\xff\xfe\x00\x02", "TEM markers": b"\xff\x01", "fill bytes": b"\xff"}


def _flooded(data: bytes, unit: bytes, count: int, *, before_scan: int) -> bytes:
    """``data`` with ``count`` times ``unit`` before its scan number ``before_scan`` (1: the first)."""
    at = -1
    for _ in range(before_scan):
        at = data.index(b"\xff\xda", at + 1)
    return data[:at] + unit * count + data[at:]


@pytest.mark.parametrize(
    ("flood", "before_scan"),
    # a TEM marker before the first scan is refused by Pillow's header reader, one or many
    [
        ("empty COM segments", 1),
        ("empty COM segments", 2),
        ("TEM markers", 2),
        ("fill bytes", 1),
        ("fill bytes", 2),
    ],
)
def test_a_jpeg_of_more_markers_than_encoders_write_is_refused_before_decoding(
    flood: str, before_scan: int
) -> None:
    """The walk stepped through markers (and fill bytes) one at a time with no bound: 60 MiB of
    empty COM segments, TEM markers or 0xFF fill between two scans took 5-15 s of a core each and
    were accepted; before the first scan, Pillow's header reader steps through them one by one too
    (5 s for 8 MiB of fill)."""
    unit = _FLOODS[flood]
    progressive = encode(np.full((64, 64, 3), (90, 140, 200), np.uint8), "JPEG", progressive=True)
    # a few thousand are walked, and decode as the file without them
    some = _flooded(progressive, unit, 9_000, before_scan=before_scan)
    np.testing.assert_array_equal(decode_image(some).pixels, decode_image(progressive).pixels)
    with pytest.raises(ImageDecodeError) as info:
        decode_image(_flooded(progressive, unit, 10_001, before_scan=before_scan), name="m.jpg")
    assert str(info.value) == (
        f"m.jpg: {_MANY_MARKERS}, where at most 10,000 are accepted (each is read one by one; "
        "encoders write a few dozen markers and no fill); re-save it"
    )
    # the walk stops at the bound: a million take no longer to refuse
    started = time.perf_counter()
    with pytest.raises(ImageDecodeError, match=rf"^x\.jpg: {_MANY_MARKERS},"):
        decode_image(_flooded(progressive, unit, 1_000_000, before_scan=before_scan), name="x.jpg")
    assert time.perf_counter() - started < 0.5


ARITHMETIC = REAL_ORE.parent / "jpeg_arithmetic"  # made by libjpeg-turbo's tools: see its README


@pytest.mark.parametrize("name", ["grey.jpg", "progressive.jpg", "restarts-progressive.jpg"])
def test_a_whole_arithmetic_coded_jpeg_decodes_as_libjpeg_decodes_it(name: str) -> None:
    """0xFF filler fed after the last scan was read as data by the arithmetic decoder, which reads
    zeros after a marker: the last blocks of whole, valid files came out wrong."""
    data = (ARITHMETIC / name).read_bytes()
    with Image.open(io.BytesIO(data)) as im:  # given whole (under Pillow's 64 KB reads): libjpeg's pixels
        expected = np.asarray(im)
    np.testing.assert_array_equal(decode_image(data).pixels, expected.reshape(48, 64, -1))


@pytest.mark.parametrize(
    ("name", "keep", "reason"),
    [
        ("grey.jpg", 0.5, "its arithmetic-coded last scan needs more than 64 zero bytes after its data"),
        ("grey.jpg", 0.9, "its arithmetic-coded last scan needs more than 64 zero bytes after its data"),
        ("progressive.jpg", 0.9, "its arithmetic-coded last scan needs more than 64 zero bytes"),
        ("restarts-progressive.jpg", 0.5, "scan 6 of 6 holds 4 of the 5 restart markers"),
    ],
)
def test_an_arithmetic_coded_jpeg_cut_short_and_given_an_end_marker_again_is_refused(
    name: str, keep: float, reason: str
) -> None:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(_cut_short((ARITHMETIC / name).read_bytes(), keep), name="cut.jpg")
    message = str(info.value)
    assert message.startswith("cut.jpg: truncated JPEG: the image data ends before the image does")
    assert reason in message


def test_an_arithmetic_coded_jpeg_cut_short_is_refused_after_one_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A second decode only worded the refusal, doubling the work of such a file (and the wait of
    every other decode behind the decoders' lock)."""
    runs = []
    real_getdecoder = Image._getdecoder

    def counting_getdecoder(*args: object, **kwargs: object) -> object:
        runs.append(args)
        return real_getdecoder(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Image, "_getdecoder", counting_getdecoder)
    with pytest.raises(ImageDecodeError, match="needs more than 64 zero bytes"):
        decode_image(_cut_short((ARITHMETIC / "grey.jpg").read_bytes(), 0.5))
    assert len(runs) == 1


def test_an_arithmetic_coded_jpeg_needing_more_zeros_than_a_cut_may_is_refused_as_cut() -> None:
    """The bound on the zeros given after the data is what tells a cut: a whole file needing more
    (a repeating pattern ending a progressive file) is refused so, and decodes with them written."""
    data = (ARITHMETIC / "stripes-progressive.jpg").read_bytes()
    with pytest.raises(
        ImageDecodeError,
        match=r"^<bytes>: truncated JPEG: the image data ends before the image does, or it is "
        r"corrupt \(its arithmetic-coded last scan needs more than 64 zero bytes after its data",
    ):
        decode_image(data)
    end = data.rindex(b"\xff\xd9")
    with Image.open(io.BytesIO(data)) as im:
        expected = np.asarray(im)
    written_out = data[:end] + bytes(101) + data[end:]
    np.testing.assert_array_equal(decode_image(written_out).pixels[:, :, 0], expected)


def _tiled_tiff(
    pixels: np.ndarray, tile: tuple[int, int], *, rows_per_strip: int | None = None, bomb: bool = False
) -> bytes:
    """A deflate grey TIFF of ``pixels`` (H, W uint8) in ``tile`` (width, length) tiles, padded with
    zeros past the image as tiles are; or, with ``rows_per_strip``, one strip declaring that many
    rows (Pillow writes neither a tile nor a RowsPerStrip past the image). A ``bomb``'s tiles hold a
    byte each: it is to be refused before any is decoded."""
    height, width = pixels.shape
    if rows_per_strip is not None:
        chunks = [zlib.compress(pixels.tobytes())]
        layout = [(278, 4, [rows_per_strip]), (273, 4, None), (279, 4, [len(chunks[0])])]
    else:
        tile_width, tile_length = tile
        rows, columns = -(-height // tile_length), -(-width // tile_width)
        if bomb:
            chunks = [zlib.compress(b"\0")] * (rows * columns)
        else:
            padded = np.zeros((rows * tile_length, columns * tile_width), np.uint8)
            padded[:height, :width] = pixels
            chunks = [
                zlib.compress(padded[y : y + tile_length, x : x + tile_width].tobytes())
                for y in range(0, padded.shape[0], tile_length)
                for x in range(0, padded.shape[1], tile_width)
            ]
        layout = [
            (322, 4, [tile_width]),
            (323, 4, [tile_length]),
            (324, 4, None),
            (325, 4, [len(c) for c in chunks]),
        ]
    entries = [
        (256, 4, [width]),
        (257, 4, [height]),
        (258, 3, [8]),
        (259, 3, [8]),
        (262, 3, [1]),
        (277, 3, [1]),
    ]
    entries = sorted(entries + layout)
    ifd_size = 2 + 12 * len(entries) + 4
    arrays_at = 8 + ifd_size
    arrays = b""
    data_at = arrays_at + 8 * len(chunks)  # room for the offset and count arrays
    offsets = [data_at + sum(len(c) for c in chunks[:i]) for i in range(len(chunks))]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, values in entries:
        values = offsets if values is None else values
        packed = struct.pack("<" + ("I" if kind == 4 else "H") * len(values), *values)
        if len(packed) > 4:
            ifd += struct.pack("<HHI", tag, kind, len(values)) + struct.pack("<I", arrays_at + len(arrays))
            arrays += packed
        else:
            ifd += struct.pack("<HHI", tag, kind, len(values)) + packed.ljust(4, b"\0")
    arrays = arrays.ljust(data_at - arrays_at, b"\0")
    return b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + arrays + b"".join(chunks)


GREY_100x60 = RNG.integers(0, 256, (60, 100), dtype=np.uint8)


@pytest.mark.parametrize(
    ("tile", "rows_per_strip", "max_pixels"),
    [
        ((16, 16), None, 50_000_000),
        ((256, 256), None, 50_000_000),  # an ordinary tile, larger than a small image
        ((256, 256), None, 256 * 256),
        ((112, 64), None, 100 * 60),  # the image rounded up to 16: never refused
        ((192, 32), None, 100 * 60),  # wider than the image, 192x64 decoded: within 4x its pixels
        ((512, 512), None, 512 * 512),  # larger than the image, within the pixel limit
        (None, 2**32 - 1, 100 * 60),  # TIFF's "one strip": libtiff holds it to the image's height
        (None, 1000, 100 * 60),
    ],
    ids=[
        "tiles-16",
        "tile-256",
        "tile-256-at-the-limit",
        "tile-rounded-up",
        "tile-wider-within-4x",
        "tile-512-within-the-limit",
        "strip-unbounded",
        "strip-past-the-image",
    ],
)
def test_tiled_and_striped_tiffs_decode(
    tile: tuple[int, int] | None, rows_per_strip: int | None, max_pixels: int
) -> None:
    data = _tiled_tiff(GREY_100x60, tile or (0, 0), rows_per_strip=rows_per_strip)
    limits = DecodeLimits(max_pixels=max_pixels)
    assert read_image_header(data, limits=limits) == ImageHeader("tiff", 100, 60, 1)
    np.testing.assert_array_equal(decode_image(data, limits=limits).pixels[:, :, 0], GREY_100x60)


TALL_16 = RNG.integers(0, 256, (512, 16), dtype=np.uint8)


@pytest.mark.parametrize(
    ("pixels", "tile", "max_pixels", "message"),
    [
        (
            GREY_100x60[:16, :16],
            (32768, 32768),
            50_000_000,
            "TIFF tiles of 32768x32768 cover the 16x16 image with 1x1 tiles = 1073741824 pixels "
            "decoded, over the limit of 50000000 pixels",
        ),
        (
            GREY_100x60,
            (256, 256),
            256 * 256 - 1,
            "TIFF tiles of 256x256 cover the 100x60 image with 1x1 tiles = 65536 pixels decoded, over "
            "the limit of 65535 pixels",
        ),
        (
            GREY_100x60,
            (4096, 16),
            100 * 60,
            "TIFF tiles of 4096x16 cover the 100x60 image with 1x4 tiles = 262144 pixels decoded, over "
            "the limit of 24000 pixels (the larger of the pixel limit and 4 times the image's pixels",
        ),
        (  # each tile within the limit, one decoded per 16 rows: 6 s for this 49 KB file
            TALL_16,
            (3_124_992, 16),
            50_000_000,
            "TIFF tiles of 3124992x16 cover the 16x512 image with 1x32 tiles = 1599995904 pixels "
            "decoded, over the limit of 50000000 pixels",
        ),
        (
            TALL_16[:64],
            (2048, 16),
            40_000,
            "TIFF tiles of 2048x16 cover the 16x64 image with 1x4 tiles = 131072 pixels decoded, over "
            "the limit of 40000 pixels",
        ),
    ],
    ids=[
        "tile-bomb",
        "tile-over-a-low-limit",
        "tile-wider-than-the-image",
        "tiles-each-under-the-limit",
        "tiles-each-under-a-low-limit",
    ],
)
def test_tiff_tiles_decoding_more_than_the_limit_are_refused_before_decoding(
    write, pixels: np.ndarray, tile: tuple[int, int], max_pixels: int, message: str
) -> None:
    """libtiff decodes a tile whole, padding and all: a 16x16 image in one 32768x32768 tile took
    1 GB and 6 s, and tiles each under the limit were decoded once per row of tiles."""
    path = write("tiles.tif", _tiled_tiff(pixels, tile, bomb=True))
    limits = DecodeLimits(max_pixels=max_pixels)
    for read in (decode_image, read_image_header):
        for source in (path, path.read_bytes()):
            start = time.perf_counter()
            with pytest.raises(ImageTooLargeError, match="each tile is decoded whole") as info:
                read(source, limits=limits, name="tiles.tif")
            assert str(info.value).startswith(f"tiles.tif: {message}")
            assert time.perf_counter() - start < 0.5


WEBPS = {
    "lossy": encode(RGB8, "WEBP", quality=80),
    "lossless": encode(RGB8, "WEBP", lossless=True),
    "extended": encode(np.dstack([RGB8, ALPHA8]), "WEBP", quality=80),  # alpha: the VP8X layout
}


@pytest.mark.parametrize(
    ("kind", "chunk"), [("lossy", b"VP8 "), ("lossless", b"VP8L"), ("extended", b"VP8X")]
)
def test_the_configured_pixel_limit_governs_webp_not_pillows(
    write, monkeypatch: pytest.MonkeyPatch, kind: str, chunk: bytes
) -> None:
    """Pillow checks a WebP's size against its own fixed limit while opening it: that check fired
    first, naming Pillow's number, and a raised max_pixels still refused a big WebP."""
    data = WEBPS[kind]
    assert data[12:16] == chunk
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # Pillow's own guard, far below 13 x 9
    path = write("scan.webp", data)
    for source in (data, path):
        assert read_image_header(source) == ImageHeader("webp", 13, 9, 1)
        assert decode_image(source).pixels.shape == (9, 13, 3)
        for read in (decode_image, read_image_header):
            with pytest.raises(
                ImageTooLargeError,
                match=r"^scan\.webp: image is 13x9 = 117 pixels, over the limit of 116 pixels$",
            ):
                read(source, limits=DecodeLimits(max_pixels=116), name="scan.webp")
    assert Image.MAX_IMAGE_PIXELS == 10


def test_a_16bit_grey_alpha_png_reads_as_grey() -> None:
    """Pillow opens 16-bit grey+alpha (raw LA;16B) as "RGBA": it came back as three equal channels
    with mode "RGBA"."""
    alpha = (ALPHA8.astype(np.uint16) * 257)[:, :, None]
    samples = np.dstack([GRAY16[:, :, None], alpha]).astype(">u2")
    rows = b"".join(b"\0" + row.tobytes() for row in samples)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 13, 9, 16, 4, 0, 0, 0))  # colour type 4: grey+alpha
        + _png_chunk(b"IDAT", zlib.compress(rows))
        + _png_chunk(b"IEND", b"")
    )
    out = decode_image(data)
    assert (out.mode, out.bit_depth, out.pixels.shape) == ("LA", 16, (9, 13, 1))
    np.testing.assert_array_equal(out.pixels[:, :, 0], GRAY16)
    assert read_image_header(data) == ImageHeader("png", 13, 9, 2)


@pytest.mark.parametrize("name", ["restarts", "restarts-progressive"])
def test_a_jpeg_with_fill_before_its_restart_markers_decodes(name: str) -> None:
    """The standard allows fill (0xFF bytes) before any marker, restart markers inside a scan's data
    too: the walk took the fill for the scan's end and the file, which OpenCV and Pillow decode, was
    refused as cut short. A run of fill there is bounded as fill elsewhere is."""
    data = ORE_JPEGS[name]
    sos = data.index(b"\xff\xda")
    filled = data[:sos] + re.sub(rb"\xff([\xd0-\xd7])", lambda m: b"\xff" + m.group(0), data[sos:])
    assert filled != data
    np.testing.assert_array_equal(decode_image(filled).pixels, decode_image(data).pixels)
    first = sos + re.search(rb"\xff[\xd0-\xd7]", data[sos:]).start()  # type: ignore[union-attr]
    flooded = data[:first] + b"\xff" * 1_000_000 + data[first:]
    started = time.perf_counter()
    with pytest.raises(ImageDecodeError, match=rf"^x\.jpg: {_MANY_MARKERS},"):
        decode_image(flooded, name="x.jpg")
    assert time.perf_counter() - started < 0.5
