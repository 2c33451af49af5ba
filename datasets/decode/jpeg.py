"""JPEG: refusing a file cut short before it is decoded (its scans walked marker by marker), and
decoding it with Pillow's decoder fed by hand, so that a scan cut short is refused, not made up."""

from __future__ import annotations

import re
import struct
from typing import NamedTuple

from PIL import Image, ImageFile

from datasets.decode.limits import ceil_div
from datasets.errors import ImageDecodeError


def check_jpeg_complete(data: bytes, source: str) -> _JpegLayout:
    """Refuse a JPEG cut short, which decoders would otherwise pad with grey; its main image's layout
    (with the offset of its end-of-image marker).

    The main image is walked marker by marker from its start (:func:`_jpeg_layout`). It may hold at
    most :data:`MAX_JPEG_SCANS` scans, each of which the decoder passes over the whole image, and
    :data:`MAX_JPEG_MARKERS` markers, segments and fill bytes in all, each read one by one. It must reach
    its end-of-image marker, and its scans must make up the whole image: every restart marker its
    size calls for, and every component (in a progressive file: its DC coefficients, and every
    coefficient whose successive approximation is begun, to full precision; see
    :func:`_jpeg_unfinished`). Whatever follows the marker (a phone's "motion photo" video, an
    appended preview) is not the image's business. A scan cut short and then given an end-of-image
    marker passes these checks; decoding (:func:`load_jpeg`) refuses it.
    """
    if b"\xff\xda" not in data:
        raise ImageDecodeError(
            "truncated or corrupt JPEG: no image data (start-of-scan marker)", source=source
        )
    layout = _jpeg_layout(data)
    if layout.too_many_scans:
        raise ImageDecodeError(
            f"JPEG with too many scans: at least {MAX_JPEG_SCANS + 1}, where at most {MAX_JPEG_SCANS} "
            "are accepted (each is decoded over the whole image; encoders write a few dozen at most, "
            "libjpeg's progressive script 10 for colour and 6 for grey); re-save it",
            source=source,
        )
    if layout.too_many_markers:
        raise ImageDecodeError(
            f"JPEG with too many markers: more than {MAX_JPEG_MARKERS:,} markers, segments and fill "
            f"bytes, where at most {MAX_JPEG_MARKERS:,} are accepted (each is read one by one; "
            "encoders write a few dozen markers and no fill); re-save it",
            source=source,
        )
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

MAX_JPEG_SCANS = 100
"""Most scans a JPEG's main image may hold. The decoder passes over the whole image for each scan
of a progressive file: a 2048 x 2048 file of 0.45 MB, its last scan repeated 12,000 times, kept a
core busy for tens of seconds, and at 64 MiB of such scans for hours; walking the scans alone took
23 s at 64 MiB of empty ones. Encoders write far fewer: libjpeg's progressive script (Pillow's,
OpenCV's) 10 for YCbCr, 6 for grey, 18 for CMYK (2 + 4 a component), one a component sequential."""

MAX_JPEG_MARKERS = 10_000
"""Most markers, segments and fill bytes (0xFF before a marker) a JPEG's main image may hold, up to
its end-of-image marker, scans among them. Each is a step of the walk, and before the first scan of
Pillow's header reader, in Python: 60 MiB of empty comment segments, TEM markers or fill between
two scans took 5-15 s of a core to walk, and 8 MiB of fill before the first took Pillow 5 s. Encoders
write a few dozen (a progressive file's scans with their tables, an ICC profile in at most 255
segments) and no fill; a run of fill is skipped at once, each byte counted."""

# Frame (SOF) markers; those of sequential and progressive DCT images, whose scans are checked for
# covering the image (lossless and hierarchical files are left to the decoder).
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_DCT_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC9, 0xCA})
_PROGRESSIVE_FRAMES = frozenset({0xC2, 0xCA})
ARITHMETIC_FRAMES = frozenset({0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
# The end of a scan's entropy-coded data: a 0xFF that is neither stuffed (FF 00) nor a restart marker.
_SCAN_DATA_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_RESTART_MARKERS = tuple(bytes((0xFF, marker)) for marker in range(0xD0, 0xD8))
_FILL = re.compile(rb"\xff+")


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
    too_many_scans: bool  # the walk stopped at a scan past MAX_JPEG_SCANS (eoi is then None)
    too_many_markers: bool  # the walk stopped past MAX_JPEG_MARKERS (eoi is then None)


def _jpeg_layout(data: bytes) -> _JpegLayout:
    """The main image's frame and scans, walked marker by marker from its start: header segments by
    their lengths, each scan's entropy-coded data up to the next marker (a 0xFF there is stuffed as
    0xFF00 or is a restart marker). The walk stops at the end-of-image marker. An EXIF thumbnail
    lies inside a header segment and is skipped with it. Header fields the walk cannot read are left
    out; the decoder refuses such a file. The walk stops at a scan past :data:`MAX_JPEG_SCANS`
    (``too_many_scans``): a file of millions of empty scans took tens of seconds to walk whole; and
    past :data:`MAX_JPEG_MARKERS` markers, segments and fill bytes (``too_many_markers``), of which
    millions took as long."""
    pos, n = 2, len(data)  # after the start-of-image marker (checked by the sniffer)
    frame, width, height, interval, walked, steps = 0, 0, 0, 0, 0, 0
    sampling: dict[int, tuple[int, int]] = {}
    scans: list[_JpegScan] = []

    def layout(eoi: int | None) -> _JpegLayout:
        return _JpegLayout(
            eoi,
            frame,
            width,
            height,
            sampling,
            tuple(scans),
            walked > MAX_JPEG_SCANS,
            steps > MAX_JPEG_MARKERS,
        )

    while pos + 1 < n:
        if data[pos] != 0xFF:
            return layout(None)  # not at a marker: corrupt or cut
        marker = data[pos + 1]
        if marker == 0xFF:  # fill before a marker: skipped to its last byte, the marker's own
            # looked at no further than the bound: a run of millions is refused as soon
            run = _FILL.match(data, pos, min(n, pos + MAX_JPEG_MARKERS + 2))
            assert run is not None  # data[pos] is 0xFF
            steps += run.end() - 1 - pos
            pos = run.end() - 1
            if steps > MAX_JPEG_MARKERS:
                return layout(None)
            continue
        steps += 1
        if steps > MAX_JPEG_MARKERS:
            return layout(None)
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
            walked += 1  # every scan, read or not: the decoder passes over the image for each
            if walked > MAX_JPEG_SCANS:
                return layout(None)
            at, search = None, pos
            while at is None:
                end = _SCAN_DATA_END.search(data, search)
                if end is None:
                    return layout(None)
                if data[end.start() + 1] != 0xFF:
                    at = end.start()  # the next marker
                    break
                # fill (0xFF bytes the standard allows before any marker): before a restart marker
                # it lies inside the scan's data, which goes on; before another marker the scan
                # ends where the fill begins. A valid file padded before its restarts was refused
                # as cut short. Looked at no further than the bound, each byte counted
                run = _FILL.match(data, end.start(), min(n, end.start() + MAX_JPEG_MARKERS + 2))
                assert run is not None  # data[end.start()] is 0xFF
                steps += run.end() - 1 - end.start()
                if steps > MAX_JPEG_MARKERS:
                    return layout(None)
                if run.end() < n and (data[run.end()] == 0x00 or 0xD0 <= data[run.end()] <= 0xD7):
                    search = run.end() + 1
                else:
                    at = end.start()
            count = segment[0] if segment else 0
            if len(segment) >= 4 + 2 * count:
                ss, se, approximation = segment[1 + 2 * count : 4 + 2 * count]
                restarts = sum(data.count(rst, pos, at) for rst in _RESTART_MARKERS) if interval else 0
                scans.append(
                    _JpegScan(
                        components=tuple(segment[1 : 1 + 2 * count : 2]),
                        coefficients=range(ss, se + 1),
                        final_bits=approximation & 0x0F == 0,
                        restart_interval=interval,
                        restarts=restarts,
                    )
                )
            pos = at
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
            mcus = ceil_div(layout.width, 8 * h_max) * ceil_div(layout.height, 8 * v_max)
        else:  # one component: MCUs of one block of its own (subsampled) plane
            h, v = layout.sampling[scan.components[0]]
            mcus = ceil_div(ceil_div(layout.width * h, h_max), 8) * ceil_div(
                ceil_div(layout.height * v, v_max), 8
            )
        expected = ceil_div(mcus, scan.restart_interval) - 1
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


def load_jpeg(im: ImageFile.ImageFile, image: bytes, source: str, *, arithmetic: bool = False) -> None:
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
    if status < 0 and arithmetic:
        # Not decoded again to tell a cut from corrupt data: that doubled the work of every such
        # file under the lock all decodes share, only to word the refusal.
        raise ImageDecodeError(
            f"{_JPEG_ENDS_EARLY}, or it is corrupt (its arithmetic-coded last scan needs more than "
            f"{len(filler)} zero bytes after its data to finish, as one cut short does; a whole file "
            "written so is refused too: re-save it with Huffman coding)",
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
