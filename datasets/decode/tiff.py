"""TIFF: the bounds on a tiled file's decoding work, grey that counts down from white, 16-bit
colour layouts OpenCV misreads, pages that are previews, and reading tags from a TIFF structure's
first IFD (EXIF blocks are TIFF structures too)."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import ImageFile, TiffImagePlugin

from datasets.decode.limits import DecodeLimits, ceil_div
from datasets.errors import ImageDecodeError, ImageTooLargeError


def only_previews_after_the_first(data: bytes) -> bool:
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


def tiff_tile(im: ImageFile.ImageFile) -> tuple[int, int] | None:
    """A tiled TIFF's (TileWidth, TileLength); None for any other image."""
    if not isinstance(im, TiffImagePlugin.TiffImageFile):
        return None
    width = im.tag_v2.get(TiffImagePlugin.TILEWIDTH)
    length = im.tag_v2.get(TiffImagePlugin.TILELENGTH)
    return (width, length) if isinstance(width, int) and isinstance(length, int) else None


def check_tile(
    tile: tuple[int, int] | None, width: int, height: int, limits: DecodeLimits, source: str
) -> None:
    """Refuse a tiled TIFF whose tiles make the decoder's work a bomb however small the image.

    libtiff decodes every tile whole, padding included, into a buffer of its own: the work is
    tiles across x tiles down x TileWidth x TileLength pixels, whatever the image's size. A 16x16
    image in one 32768x32768 tile (a 1 MB file) took 1 GB and 6 s; a 16-pixel-wide image in
    3124992x16 tiles, each just under the pixel limit, decoded one such tile per 16 rows: 6 s for
    16x512 from a 49 KB file, holding Pillow's lock (:mod:`.header`) throughout.

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
    across, down = ceil_div(width, tile_width), ceil_div(height, tile_length)
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


def counting_up_from_black(data: bytes) -> tuple[bytes, bool]:
    """A big-endian 16-bit grey TIFF that counts down from white (MinIsWhite), for which Pillow has
    no mode, as one counting up from black, and whether its samples are to be inverted after
    decoding; any other file as it is. (Pillow reads the little-endian one, inverted by
    :func:`white_is_zero`.)"""
    if data[:2] != b"MM":
        return data, False
    photo_tag, bits_tag, samples_tag = (
        TiffImagePlugin.PHOTOMETRIC_INTERPRETATION,
        TiffImagePlugin.BITSPERSAMPLE,
        TiffImagePlugin.SAMPLESPERPIXEL,
    )
    tags = ifd0_shorts(data, photo_tag, bits_tag, samples_tag)
    photometric, value_at = tags.get(photo_tag, (None, -1))
    samples = tags.get(samples_tag, (1, -1))[0]
    if photometric != 0 or tags.get(bits_tag, (None, -1))[0] != 16 or samples != 1:
        return data, False
    patched = bytearray(data)
    patched[value_at : value_at + 2] = (1).to_bytes(2, "big")
    return bytes(patched), True


def check_16bit_colour_layout(im: ImageFile.ImageFile, source: str) -> None:
    """Refuse 16-bit colour OpenCV would misread: a TIFF with its colour planes stored apart
    (PlanarConfiguration 2) came out as scrambled pixels of the right shape."""
    if im.format == "TIFF" and im.tag_v2.get(TiffImagePlugin.PLANAR_CONFIGURATION, 1) == 2:  # type: ignore[attr-defined]
        raise ImageDecodeError(
            "16-bit colour TIFF with separate colour planes (PlanarConfiguration 2) is not supported; "
            "save it with interleaved samples (PlanarConfiguration 1), as 16-bit grey, or as 8-bit",
            source=source,
        )


def counted_up_from_black(pixels: np.ndarray, im: ImageFile.ImageFile, source: str) -> np.ndarray:
    """The 16-bit samples of a TIFF that counts down from white, inverted to count up from black.

    Black is the file's MaxSampleValue where it has one, else 65535. A sample above the declared
    MaxSampleValue (TIFF 6.0: the largest sample the file uses) says the tag is wrong: read against
    it, such samples all came out black, three quarters of a 12-bit picture declaring 1023, without a
    word; the file is refused, naming both.

    Inverted against 65535 as the standard reads it, a 10-, 12- or 14-bit detector's file left every
    sample in the top quarter of the range or less: a 12-bit set measured 16 bits
    (:func:`models.tiling.sixteen_bit_depth`) and was read with a sixteenth of its contrast. Such a
    file without MaxSampleValue, every sample below 2**14, cannot be told from a light 16-bit one:
    refused, not read wrong (the bits training measures come after decoding, and a batch is decoded
    before any model is at hand)."""
    declared = im.tag_v2.get(_MAX_SAMPLE_VALUE)  # type: ignore[attr-defined]
    if isinstance(declared, tuple):
        declared = max(declared, default=None)
    largest = int(pixels.max(initial=0))
    if isinstance(declared, int) and 0 < declared <= _SIXTEEN_BIT_BLACK:
        if largest > declared:
            raise ImageDecodeError(
                "16-bit grey TIFF that counts down from white (PhotometricInterpretation 0, MinIsWhite) "
                f"declares MaxSampleValue {declared}, its black, but holds samples up to {largest}: "
                "those above it would read as black, and the tag contradicts them; write MaxSampleValue "
                "(tag 281) as the detector's black (4095 for 12 bits), or save it counting up from "
                "black (MinIsBlack)",
                source=source,
            )
        black = declared
    elif largest >> _FEWEST_SIXTEEN_BIT_BLACK_BITS:
        black = _SIXTEEN_BIT_BLACK  # samples no 14-bit detector writes: the full 16 bits
    else:
        raise ImageDecodeError(
            "16-bit grey TIFF that counts down from white (PhotometricInterpretation 0, MinIsWhite) "
            f"without MaxSampleValue, and its largest sample {largest} is below "
            f"{2**_FEWEST_SIXTEEN_BIT_BLACK_BITS}: black may be 65535 (16 bits) or 2**b - 1 for a "
            "b-bit detector, and which cannot be told; write MaxSampleValue (tag 281) as the "
            "detector's black (4095 for 12 bits), or save it counting up from black (MinIsBlack)",
            source=source,
        )
    return (black - np.minimum(pixels, black)).astype(np.uint16)


_MAX_SAMPLE_VALUE = 281
_SIXTEEN_BIT_BLACK = 65535
# A sample of 2**14 or more needs more bits than the deepest sensor below 16 bits holds.
_FEWEST_SIXTEEN_BIT_BLACK_BITS = 14


def white_is_zero(im: ImageFile.ImageFile) -> bool:
    """A TIFF whose grey samples count down from white (PhotometricInterpretation 0, MinIsWhite, as
    some X-ray detectors write): Pillow inverts 8-bit ones itself, 16-bit ones not."""
    return im.format == "TIFF" and im.tag_v2.get(TiffImagePlugin.PHOTOMETRIC_INTERPRETATION) == 0  # type: ignore[attr-defined]


def ifd0_shorts(tiff: bytes, *wanted: int) -> dict[int, tuple[int, int]]:
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


COMPRESSION = 259
"""The Compression tag."""
_COMPRESSION_NAMES = {
    1: "none",
    2: "CCITT RLE",
    3: "CCITT Group 3 fax",
    4: "CCITT Group 4 fax",
    5: "LZW",
    6: "old-style JPEG",
    7: "JPEG",
    8: "Deflate",
    32771: "CCITT RLE word-aligned",
    32773: "PackBits",
    32809: "ThunderScan",
    32946: "Deflate",
    34676: "SGI LogLuv",
    34677: "SGI LogLuv 24-bit",
    34712: "JPEG 2000",
    34887: "LERC",
    34925: "LZMA",
    34933: "PNG",
    34934: "JPEG XR",
    50000: "Zstandard",
    50001: "WebP",
    50002: "JPEG XL",
}
"""What each Compression value is called, those refused included, to name them in a refusal."""
ACCEPTED_COMPRESSIONS = (1, 2, 3, 4, 5, 7, 8, 32773, 32946, 34925, 50000)
"""The compressions decoded here, each seen to decode (Pillow's libtiff). The others Pillow names
(old-style JPEG, ThunderScan, SGI LogLuv) are not taken on trust; WebP its libtiff is built without,
and JPEG 2000, JPEG XL and the rest Pillow knows not at all: each was refused as a "truncated or
corrupt TIFF header (34712)" or "data (decoder error -2)", as if the file were broken."""
ACCEPTED_16BIT_COLOUR_COMPRESSIONS = (1, 5, 8, 32773, 32946)
"""The compressions of 16-bit colour, which OpenCV decodes (:func:`.pixels.load_16bit_colour`): its
libtiff has no LZMA or Zstandard, nor fax or JPEG, which 16-bit colour cannot hold anyway."""


def _compressions_text(codes: tuple[int, ...]) -> str:
    names: dict[str, list[int]] = {}
    for code in codes:
        names.setdefault(_COMPRESSION_NAMES[code], []).append(code)
    return ", ".join(f"{name} ({' or '.join(map(str, got))})" for name, got in names.items())


def check_compression(compression: object, source: str, *, sixteen_bit_colour: bool = False) -> None:
    """Refuse a TIFF whose Compression tag names one not decoded here (for 16-bit colour, by OpenCV),
    naming it and those accepted. A tag absent (``None``: no compression) or not a number passes:
    the decoder's own errors say what is wrong with the file then.

    Raises:
        ImageDecodeError: naming the compression, and those accepted.
    """
    if not isinstance(compression, int) or isinstance(compression, bool):
        return
    accepted = ACCEPTED_16BIT_COLOUR_COMPRESSIONS if sixteen_bit_colour else ACCEPTED_COMPRESSIONS
    if compression in accepted:
        return
    name = _COMPRESSION_NAMES.get(compression, "unknown")
    what = "16-bit colour TIFF" if sixteen_bit_colour else "TIFF"
    raise ImageDecodeError(
        f"{what} compression {compression} ({name}) is not supported; "
        f"accepted: {_compressions_text(accepted)}",
        source=source,
    )


def compression_of(tiff: bytes) -> int | None:
    """The Compression of a TIFF structure's first IFD, or None where it cannot be read."""
    found = ifd0_shorts(tiff, COMPRESSION)
    return found[COMPRESSION][0] if COMPRESSION in found else None
