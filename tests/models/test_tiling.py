"""How much resolution a view loses on its way to the model input."""

from __future__ import annotations

import pytest

from models.tiling import TilingConfig, view_downscale


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
