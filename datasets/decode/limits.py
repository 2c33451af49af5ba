"""The bounds every image is held to before a pixel is decoded: :class:`DecodeLimits`, and the
pixel count checked against them."""

from __future__ import annotations

from dataclasses import dataclass

from datasets.errors import ImageDecodeError, ImageTooLargeError


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


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def check_pixels(width: int, height: int, limits: DecodeLimits, source: str) -> None:
    if width <= 0 or height <= 0:
        raise ImageDecodeError(f"image has no pixels ({width}x{height})", source=source)
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of "
            f"{limits.max_pixels} pixels",
            source=source,
        )
