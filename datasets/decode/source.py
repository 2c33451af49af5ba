"""Reading the bytes, bounded (a file's size is checked by ``stat`` before it is read), and
identifying their format by its magic bytes, never by a file's extension."""

from __future__ import annotations

import os
import stat

from datasets.decode.limits import DecodeLimits
from datasets.errors import ImageDecodeError, ImageTooLargeError

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


def stripped_spelling(path: str) -> str | None:
    """``path`` with the spaces (any whitespace) at the ends of each of its names stripped, where that
    differs from it and names a file; None otherwise.

    A manifest cell typed ``"photo.png "`` names no file where only ``photo.png`` is there: its
    picture is not found (and never taken for the other file, another container's picture, say),
    and the error says which file the stripped spelling names, so that the typo can be seen."""
    names = path.split(os.sep)
    stripped = [name.strip() for name in names]
    if stripped == names or "" in stripped[1:]:
        return None
    other = os.sep.join(stripped)
    return other if os.path.isfile(other) else None


def stat_file(path: str, limits: DecodeLimits, label: str | None = None) -> int:
    """Size of the file at ``path``, checked against the byte limit before anything is read; its
    errors name the file ``label`` (the name a caller gave it), else ``path``."""
    label = label or path
    try:
        info = os.stat(path)
    except FileNotFoundError as exc:
        other = stripped_spelling(path)
        said = "" if other is None else f" (the path has spaces at its ends; without them it names {other})"
        raise ImageDecodeError(f"file not found{said}", source=label) from exc
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file ({exc.strerror or exc})", source=label) from exc
    if stat.S_ISDIR(info.st_mode):
        raise ImageDecodeError("is a directory, not an image file", source=label)
    if not stat.S_ISREG(info.st_mode):
        raise ImageDecodeError("is not a regular file", source=label)
    if info.st_size == 0:
        raise ImageDecodeError("empty file (0 bytes)", source=label)
    if info.st_size > limits.max_bytes:
        raise ImageTooLargeError(
            f"file is {info.st_size} bytes, over the limit of {limits.max_bytes} bytes", source=label
        )
    return info.st_size


def read_source(
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
    stat_file(path, limits, label)
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


def sniff(head: bytes, source: str) -> str:
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
