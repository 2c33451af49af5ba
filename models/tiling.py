"""Image preprocessing: any decoded image -> normalised model inputs, with tiling for large images.

Gray and 16-bit images are accepted: gray is replicated to three channels, uint8 is scaled by
1/255, uint16 by 1/(2**b - 1) for the model's ``sixteen_bit_depth`` b (:func:`sixteen_bit_depth`:
16, 1/65535, unless training found its 16-bit images to hold 8, 10, 12 or 14 bits). An image whose longer
side exceeds ``tile_size`` (when tiling is on) is cut into overlapping ``tile_size`` tiles, each
resized to the model input, so that a small defect in a large image keeps enough pixels to be seen;
otherwise the whole image is resized. Per-tile maps are stitched back with linear blending across
the overlaps; the image score is the max over tiles.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import cv2
import numpy as np
import torch

from datasets.errors import InputError

__all__ = [
    "BRIGHT_SAMPLES",
    "MAX_TILE_ENLARGEMENT",
    "MAX_VIEW_PIXELS",
    "SENSOR_BIT_DEPTHS",
    "SIXTEEN_BITS",
    "TilingConfig",
    "View",
    "beyond_bit_depth",
    "bright_level",
    "colour_samples",
    "default_overlap",
    "is_grey",
    "make_views",
    "max_views",
    "min_tile_size",
    "plan_views",
    "samples_beyond",
    "sixteen_bit_depth",
    "stitch_maps",
    "to_rgb_float",
    "view_count",
    "view_downscale",
    "view_downscale_hw",
]

MAX_TILE_ENLARGEMENT = 2
"""Most a tile may be enlarged to the model input: tiles keep a large image's pixels at a tile of
the input's side, and a smaller one adds no pixel, only views (4x as many per halving). Half the
input is allowed, to match training images that were themselves enlarged 2x."""
MAX_VIEW_PIXELS = 400_000_000
"""Most model-input pixels one image may become: twice what the largest image the decoder accepts
(50 MP, ``datasets.decode.DecodeLimits.max_pixels``) needs in the smallest tiles allowed (4x its
pixels), room for overlaps of about a third of a tile. About 4.8 GB of float32 views at the cap."""


def min_tile_size(input_size: int) -> int:
    """The smallest ``tile_size`` other than 0 for a model of ``input_size``: see
    :data:`MAX_TILE_ENLARGEMENT`."""
    return -(-input_size // MAX_TILE_ENLARGEMENT)


def default_overlap(tile_size: int) -> int:
    """The overlap training gives tiles of ``tile_size`` unless told otherwise: a quarter of a tile.

    Each tile is scored on its own, so two neighbours' maps disagree where they meet (each patch
    there sees a different surrounding, and the padding beyond the tile's edge); tiles that only
    abut leave that step in the stitched map as a straight seam. On clean 384 px ore in 128 px tiles
    the map's mean step across tile borders was 21-30x its median step elsewhere, and the brightest
    point of a clean image's map often lay on a border; 32 px of overlap, blended linearly
    (:func:`stitch_maps`), brought it to 1.0-1.3x. A quarter costs about (4/3)^2 = 1.8x the views,
    within what :data:`MAX_VIEW_PIXELS` allows for.
    """
    return max(tile_size, 0) // 4


def max_views(input_size: int) -> int:
    """The most views one image may become for a model of ``input_size``: see :data:`MAX_VIEW_PIXELS`."""
    return max(1, MAX_VIEW_PIXELS // (input_size * input_size))


@dataclasses.dataclass(frozen=True)
class TilingConfig:
    """When and how to tile.

    Attributes:
        tile_size: side of a tile in the image's own pixels; 0 never tiles. An image is tiled when
            its longer side exceeds ``tile_size``.
        overlap: pixels shared by neighbouring tiles (< tile_size).
    """

    tile_size: int = 0
    overlap: int = 0

    def __post_init__(self) -> None:
        if self.tile_size < 0 or self.overlap < 0 or (self.tile_size and self.overlap >= self.tile_size):
            raise ValueError(
                f"tiling needs tile_size >= 0 and 0 <= overlap < tile_size; got tile_size={self.tile_size}, "
                f"overlap={self.overlap}"
            )


@dataclasses.dataclass(frozen=True)
class View:
    """A rectangle of the image (y, x, height, width) that becomes one model input."""

    y: int
    x: int
    h: int
    w: int


SIXTEEN_BITS = 16
"""The depth a 16-bit image is read at unless its model's card says otherwise (cards written before
training measured it, and models trained on no 16-bit image): the full uint16 range."""
SENSOR_BIT_DEPTHS = (8, 10, 12, 14, SIXTEEN_BITS)
"""The depths a 16-bit file's samples are read as holding: what cameras store (8: an 8-bit image
stored wide). A measured depth is rounded up to one of them, never to a 9, 11, 13 or 15 no sensor has:
a dark full-range training set (brightest 31,872) measured 15 bits, and brighter clean images of the
same camera were clipped and 9 of 10 held."""
BRIGHT_SAMPLES = 8
"""The rank, from the top, of the colour sample a 16-bit training image is measured by
(:func:`bright_level`): up to seven stuck samples (two stuck colour pixels) are passed over, while a
bright object of two by two colour pixels, or eight grey ones, counts."""


def colour_samples(image: np.ndarray) -> np.ndarray:
    """The samples :func:`to_rgb_float` reads: all but an alpha channel (often 65535 throughout)."""
    arr = np.asarray(image)
    return arr[:, :, :3] if arr.ndim == 3 and arr.shape[2] == 4 else arr


def bright_level(image: np.ndarray) -> int:
    """The :data:`BRIGHT_SAMPLES` th brightest of a 16-bit image's colour samples (its darkest where
    it has fewer; 0 for none).

    Not the largest: one stuck pixel at 65535 in one training image made a 12-bit set measure 16
    bits, and the 12-bit misses (2 of 12 anomalies released) came back. Not a percentile either: the
    99.9th passed over a small bright object on a dark ground (60 x 60 px of a 2048 x 2048 picture),
    the set measured 10 bits or 8, and the object, clipped to white, hid the anomaly inside it (the
    anomalous picture reached the model as the clean one did). A burned-in label still counts: the
    set is read at 16 bits, as before the depth was measured, which loses contrast but clips nothing."""
    samples = colour_samples(image).ravel()
    if samples.size == 0:
        return 0
    rank = max(samples.size - BRIGHT_SAMPLES, 0)
    return int(np.partition(samples, rank)[rank])


def sixteen_bit_depth(levels: Iterable[int]) -> int:
    """The bits the 16-bit images of ``levels`` (each one's :func:`bright_level`) hold: the least b
    of :data:`SENSOR_BIT_DEPTHS` with every level below 2**b; :data:`SIXTEEN_BITS` without any.

    X-ray and machine-vision cameras store 10-, 12- or 14-bit samples in 16-bit files. Read over
    the full range, 12-bit data fills a sixteenth of [0, 1]: on a synthetic ore set stored so
    (values 0..4080), the model released 2 of 12 anomalous test images at its own threshold and
    ranked them at AUROC 0.983, against none and 1.000 on the same images at 8 bits; read at the
    12 bits its training images held, none and 1.000 too. Training records the depth its 16-bit
    images hold and every input is read at it (:func:`to_rgb_float`).
    """
    top = max((int(m) for m in levels), default=None)
    if top is None:
        return SIXTEEN_BITS
    return next(bits for bits in SENSOR_BIT_DEPTHS if top >> bits == 0 or bits == SIXTEEN_BITS)


def samples_beyond(image: np.ndarray, bits: int) -> int:
    """How many colour samples of a 16-bit image exceed ``bits`` bits (0 for any other dtype), which
    :func:`to_rgb_float` clips."""
    arr = colour_samples(image)
    if arr.dtype != np.uint16 or bits >= SIXTEEN_BITS or arr.size == 0:
        return 0
    return int(np.count_nonzero(arr > 2**bits - 1))


def beyond_bit_depth(image: np.ndarray, bits: int) -> bool:
    """True for a 16-bit image holding a sample of more than ``bits`` bits, which
    :func:`to_rgb_float` clips."""
    arr = colour_samples(image)
    return arr.dtype == np.uint16 and bits < SIXTEEN_BITS and arr.size > 0 and int(arr.max()) >> bits > 0


def to_rgb_float(image: np.ndarray, *, sixteen_bit_depth: int = SIXTEEN_BITS) -> np.ndarray:
    """(H, W), (H, W, 1), (H, W, 3) or (H, W, 4) uint8/uint16/float -> (H, W, 3) float32 in [0, 1].

    uint16 is divided by ``2**sixteen_bit_depth - 1`` (65535 at 16) and clipped to 1 (see
    :func:`sixteen_bit_depth`)."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise InputError(f"image of shape {arr.shape} is not accepted; use (H, W), (H, W, 1) or (H, W, 3)")
    arr = arr[:, :, :3]
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if arr.dtype == np.uint16:
        out = arr.astype(np.float32) / float(2**sixteen_bit_depth - 1)
        return np.minimum(out, 1.0, out=out) if sixteen_bit_depth < SIXTEEN_BITS else out
    if arr.dtype in (np.float32, np.float64):
        return np.clip(arr.astype(np.float32), 0.0, 1.0)
    raise InputError(f"image dtype {arr.dtype} is not accepted; use uint8, uint16 or float32 in [0, 1]")


def is_grey(image: np.ndarray) -> bool:
    """True for a one-channel image, or an RGB(A) one whose three colour channels are equal: an X-ray's
    or a mono camera's picture, however it was stored. (H, W), (H, W, 1), (H, W, 3) or (H, W, 4)."""
    arr = np.asarray(image)
    if arr.ndim == 2 or arr.shape[2] == 1:
        return True
    return bool(np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 1], arr[..., 2]))


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, length - tile, step))
    starts.append(length - tile)
    return starts


def view_count(height: int, width: int, tiling: TilingConfig) -> int:
    """``len(plan_views(height, width, tiling))``, from the tiles' starts along each side, without
    listing the views themselves (an image refused for too many views would have listed millions)."""
    t = tiling.tile_size
    if not t or max(height, width) <= t:
        return 1
    return len(_starts(height, t, tiling.overlap)) * len(_starts(width, t, tiling.overlap))


def plan_views(height: int, width: int, tiling: TilingConfig) -> list[View]:
    """The views of an image: one full view, or overlapping tiles covering it."""
    t = tiling.tile_size
    if not t or max(height, width) <= t:
        return [View(0, 0, height, width)]
    return [
        View(y, x, min(t, height), min(t, width))
        for y in _starts(height, t, tiling.overlap)
        for x in _starts(width, t, tiling.overlap)
    ]


def view_downscale(height: int, width: int, *, size: int, tiling: TilingConfig) -> float:
    """How many image pixels per model-input pixel along a view's longer side (1.0: none lost).

    Each view (the whole image, or a tile) is resized to ``size`` x ``size``, so a factor of 2 turns
    a defect two pixels wide into one pixel of the model's input.
    """
    return max(view_downscale_hw(height, width, size=size, tiling=tiling))


def view_downscale_hw(height: int, width: int, *, size: int, tiling: TilingConfig) -> tuple[float, float]:
    """:func:`view_downscale` along a view's height and along its width, (H / S, W / S).

    A view is resized to a square whatever its shape, so the two differ for any other shape: a 3 x 64
    view is enlarged 21x along its height and not at all along its width, which its longer side
    alone does not show. Tiles all have one shape (``min(t, H) x min(t, W)``), so their largest
    height and largest width are those of one view.
    """
    views = plan_views(height, width, tiling)
    return max(v.h for v in views) / size, max(v.w for v in views) / size


def _resize(img: np.ndarray, w: int, h: int) -> np.ndarray:
    shrink = w < img.shape[1] or h < img.shape[0]
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def make_views(
    rgb: np.ndarray,
    *,
    size: int,
    mean: Sequence[float],
    std: Sequence[float],
    tiling: TilingConfig,
) -> tuple[torch.Tensor, list[View]]:
    """Cut, resize and normalise an image into model inputs.

    Args:
        rgb: (H, W, 3) float32 in [0, 1] (see :func:`to_rgb_float`).
        size: model input side S.

    Returns:
        (T, 3, S, S) float32 normalised views and their :class:`View` rectangles.

    Raises:
        InputError: the image would become more than :func:`max_views` views.
    """
    height, width = rgb.shape[0], rgb.shape[1]
    count, cap = view_count(height, width, tiling), max_views(size)
    if count > cap:
        raise InputError(
            f"a {width}x{height} image would become {count:,} views ({tiling.tile_size} px tiles "
            f"overlapping by {tiling.overlap} px), more than the {cap:,} accepted for a {size} px model "
            "input; score a smaller image"
        )
    views = plan_views(height, width, tiling)
    crops = [_resize(np.ascontiguousarray(rgb[v.y : v.y + v.h, v.x : v.x + v.w]), size, size) for v in views]
    # normalised straight into a new NCHW array: one pass instead of a layout copy and two more
    chw = np.stack(crops).transpose(0, 3, 1, 2)
    out = np.empty(chw.shape, dtype=np.float32)
    np.subtract(chw, np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1), out=out)
    np.divide(out, np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1), out=out)
    return torch.from_numpy(out), views


def _ramp(n: int, overlap: int) -> np.ndarray:
    i = np.arange(n, dtype=np.float32)
    edge = np.minimum(i + 0.5, n - i - 0.5)
    return np.clip(edge / max(overlap, 1), 1e-3, 1.0)


def stitch_maps(maps: np.ndarray, views: Sequence[View], height: int, width: int, overlap: int) -> np.ndarray:
    """Per-view maps (T, S, S) -> one (height, width) float32 map, blended linearly across overlaps."""
    if len(views) == 1:
        v = views[0]
        return _resize(maps[0].astype(np.float32), v.w, v.h)
    acc = np.zeros((height, width), dtype=np.float32)
    wsum = np.zeros((height, width), dtype=np.float32)
    for m, v in zip(maps, views, strict=True):
        weight = np.outer(_ramp(v.h, overlap), _ramp(v.w, overlap))
        acc[v.y : v.y + v.h, v.x : v.x + v.w] += _resize(m.astype(np.float32), v.w, v.h) * weight
        wsum[v.y : v.y + v.h, v.x : v.x + v.w] += weight
    return acc / np.maximum(wsum, 1e-12)
