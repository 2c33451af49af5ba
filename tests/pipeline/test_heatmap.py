"""The heatmap overlay and its colour scale: the legend shows the overlay's own colours."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest

from pipeline.heatmap import MAX_SIDE, display_png, legend_svg, overlay, overlay_png


def test_the_legend_shows_the_overlays_colours_from_clean_to_defect() -> None:
    svg = legend_svg()
    stops = re.findall(r'stop-color="#([0-9a-f]{6})"', svg)
    assert len(stops) == 9
    grey = np.full((4, 4, 3), 128, np.uint8)
    # a map at 1 (a defect) blends the legend's last colour in at the overlay's full weight (0.45)
    red = np.array([int(stops[-1][i : i + 2], 16) for i in (0, 2, 4)], np.float32)
    expected = np.round(128 * 0.55 + red * 0.45)
    assert np.array_equal(overlay(grey, np.ones((4, 4), np.float32))[0, 0], expected)
    # a map at 0 leaves the picture as it is: the legend says so at its left end
    assert np.array_equal(overlay(grey, np.zeros((4, 4), np.float32)), grey)
    assert "0: like clean cargo" in svg and "1: a defect" in svg


@pytest.mark.parametrize(
    ("shape", "drawn"),
    [
        ((3000, 1200, 3), (2048, 819)),
        ((1200, 3000), (819, 2048)),
        ((900, 700, 1), (900, 700)),
        ((40, 30, 3), (40, 30)),
    ],
)
def test_a_heatmap_is_drawn_no_larger_than_its_limit(shape: tuple[int, ...], drawn: tuple[int, int]) -> None:
    """Drawn at full size, a 49-megapixel upload's heatmap took 2.2 GB that no pixel budget
    counted; the PNG is shrunk to MAX_SIDE first, keeping its proportions."""
    image = np.full(shape, 120, np.uint8)
    amap = np.zeros((16, 16), np.float32)
    amap[4:8, 4:8] = 1.0
    png = cv2.imdecode(np.frombuffer(overlay_png(image, amap), np.uint8), cv2.IMREAD_COLOR)
    assert png.shape[:2] == drawn and MAX_SIDE == 2048
    assert png[0, 0, 0] == 120 and png[drawn[0] * 5 // 16, drawn[1] * 5 // 16, 0] < 80  # hot: no blue


@pytest.mark.parametrize("dtype", [np.float16, np.int32, np.bool_])
def test_a_large_image_of_a_type_opencv_cannot_resize_is_drawn(dtype: type) -> None:
    png = overlay_png(np.zeros((3000, 100), dtype), np.zeros((4, 4), np.float32))
    assert cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR).shape == (2048, 68, 3)


@pytest.mark.parametrize(
    ("low", "high", "shown"),
    [
        (800, 4095, (50, 255)),  # a 12-bit X-ray in a 16-bit file: /257 showed it black (3..16)
        (1000, 16383, (16, 255)),  # 14 bits
        (12000, 65535, (47, 255)),  # the full 16 bits: as before
    ],
)
def test_a_16_bit_image_is_shown_over_the_range_it_uses(low: int, high: int, shown: tuple[int, int]) -> None:
    image = np.linspace(low, high, 64 * 64).reshape(64, 64).astype(np.uint16)
    drawn = overlay(image, np.zeros((8, 8), np.float32))
    assert drawn.shape == (64, 64, 3)
    assert abs(int(drawn.min()) - shown[0]) <= 1 and drawn.max() >= 254
    assert int(drawn[..., 0].mean()) > 100  # visible, not a black square


def test_the_legend_keeps_its_size_on_a_page_that_stretches_svgs() -> None:
    assert 'style="width: 420px; max-width: 100%; height: auto"' in legend_svg()


def test_a_dark_16_bit_picture_keeps_its_noise_dark() -> None:
    # its 99.9th percentile is 0: stretched to 1, every pixel of 1 or 2 was drawn white
    image = np.zeros((64, 64), np.uint16)
    image[::16, ::16] = 2
    drawn = overlay(image, np.zeros((8, 8), np.float32))
    assert int(drawn.max()) <= 2


_RAMP = np.arange(30 * 50, dtype=np.float64).reshape(30, 50) / (30 * 50 - 1)
_COLOUR = np.dstack(
    [(_RAMP * 255).astype(np.uint8), np.zeros((30, 50), np.uint8), np.full((30, 50), 9, np.uint8)]
)


@pytest.mark.parametrize(
    ("image", "max_side", "channels"),
    [
        ((_RAMP * 4095).astype(np.uint16)[:, :, None], MAX_SIDE, 1),  # a 12-bit X-ray in a 16-bit file
        (np.dstack([(_RAMP * 65535).astype(np.uint16)] * 3), MAX_SIDE, 3),
        ((_RAMP * 255).astype(np.uint8), MAX_SIDE, 1),
        (_COLOUR, 20, 3),  # shrunk as the heatmap is
    ],
)  # fmt: skip
def test_the_display_picture_is_the_picture_under_its_heatmap(
    image: np.ndarray, max_side: int, channels: int
) -> None:
    """The review page's picture of a TIFF or a 16-bit upload: what the overlay draws where there is no
    heat, at its size, 8 bits; a grey picture kept grey."""
    shown = cv2.imdecode(np.frombuffer(display_png(image, max_side=max_side), np.uint8), cv2.IMREAD_UNCHANGED)
    under = cv2.imdecode(
        np.frombuffer(overlay_png(image, np.zeros((4, 4), np.float32), max_side=max_side), np.uint8),
        cv2.IMREAD_UNCHANGED,
    )
    assert shown.dtype == np.uint8 and (shown.ndim == 2) == (channels == 1)
    assert np.array_equal(shown if channels == 3 else np.dstack([shown] * 3), under)
