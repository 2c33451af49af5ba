"""How much resolution a view loses on its way to the model input, and which pictures count as grey."""

from __future__ import annotations

import numpy as np
import pytest

from models.tiling import TilingConfig, is_grey, view_downscale, view_downscale_hw


@pytest.mark.parametrize(
    ("height", "width", "size", "tiling", "expected"),
    [
        (256, 256, 256, TilingConfig(), 1.0),
        (512, 512, 256, TilingConfig(), 2.0),
        (300, 512, 256, TilingConfig(), 2.0),  # the longer side decides
        (128, 128, 256, TilingConfig(), 0.5),  # enlarged, nothing lost
        (512, 512, 256, TilingConfig(tile_size=256), 1.0),  # tiles keep the pixels
        (1024, 1024, 256, TilingConfig(tile_size=512, overlap=64), 2.0),  # tiles shrunk in turn
        (200, 200, 256, TilingConfig(tile_size=256), 200 / 256),  # not tiled: smaller than a tile
    ],
)
def test_view_downscale(height: int, width: int, size: int, tiling: TilingConfig, expected: float) -> None:
    assert view_downscale(height, width, size=size, tiling=tiling) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("height", "width", "size", "tiling", "expected"),
    [
        (256, 256, 256, TilingConfig(), (1.0, 1.0)),
        (300, 512, 256, TilingConfig(), (300 / 256, 2.0)),
        (64, 1, 64, TilingConfig(), (1.0, 1 / 64)),
        (3, 64, 64, TilingConfig(), (3 / 64, 1.0)),
        (3, 2000, 64, TilingConfig(tile_size=64, overlap=16), (3 / 64, 1.0)),  # 3 x 64 tiles
        (100, 1000, 256, TilingConfig(tile_size=256), (100 / 256, 1.0)),
        (200, 200, 256, TilingConfig(tile_size=256), (200 / 256, 200 / 256)),  # not tiled
    ],
)
def test_view_downscale_hw(
    height: int, width: int, size: int, tiling: TilingConfig, expected: tuple[float, float]
) -> None:
    got = view_downscale_hw(height, width, size=size, tiling=tiling)
    assert got == pytest.approx(expected)
    assert view_downscale(height, width, size=size, tiling=tiling) == pytest.approx(max(expected))


def _rgb(r: int, g: int, b: int, dtype: type = np.uint8) -> np.ndarray:
    image = np.zeros((4, 5, 3), dtype)
    image[..., 0], image[..., 1], image[..., 2] = r, g, b
    return image


@pytest.mark.parametrize(
    ("image", "grey"),
    [
        (np.full((4, 5), 7, np.uint8), True),  # one channel
        (np.full((4, 5, 1), 300, np.uint16), True),  # one channel, 16-bit
        (_rgb(9, 9, 9), True),  # grey stored as RGB
        (np.dstack([_rgb(9, 9, 9), np.full((4, 5), 255, np.uint8)]), True),  # ... with alpha
        (_rgb(9, 9, 10), False),  # one channel off by one level is colour
        (_rgb(9, 8, 9), False),
        (_rgb(0.2, 0.2, 0.2, np.float32), True),
    ],
)
def test_is_grey(image: np.ndarray, grey: bool) -> None:
    assert is_grey(image) is grey
