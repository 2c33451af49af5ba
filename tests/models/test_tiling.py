"""How much resolution a view loses on its way to the model input, which pictures count as grey, and
how tiles' maps are stitched."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from datasets.errors import InputError
from models.tiling import (
    TilingConfig,
    bright_level,
    default_overlap,
    is_grey,
    make_views,
    max_views,
    min_tile_size,
    plan_views,
    samples_beyond,
    sixteen_bit_depth,
    stitch_maps,
    to_rgb_float,
    view_count,
    view_downscale,
    view_downscale_hw,
)


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


@pytest.mark.parametrize(
    ("height", "width", "tiling"),
    [
        (64, 64, TilingConfig()),
        (64, 64, TilingConfig(tile_size=64)),
        (65, 64, TilingConfig(tile_size=64)),
        (300, 200, TilingConfig(tile_size=64, overlap=16)),
        (300, 200, TilingConfig(tile_size=64, overlap=63)),
        (1000, 7, TilingConfig(tile_size=32, overlap=5)),
    ],
)
def test_view_count_is_the_number_of_planned_views(height: int, width: int, tiling: TilingConfig) -> None:
    assert view_count(height, width, tiling) == len(plan_views(height, width, tiling))


@pytest.mark.parametrize(("input_size", "floor"), [(32, 16), (64, 32), (65, 33), (256, 128), (1024, 512)])
def test_the_smallest_tile_is_half_the_model_input(input_size: int, floor: int) -> None:
    assert min_tile_size(input_size) == floor


def test_the_view_cap_holds_a_50_mp_image_at_the_smallest_tile() -> None:
    for size in (32, 64, 256, 1024):
        t = min_tile_size(size)
        assert view_count(7072, 7072, TilingConfig(tile_size=t)) <= max_views(size)
        # and in tiles overlapping as training's default has them
        overlapping = TilingConfig(tile_size=t, overlap=default_overlap(t))
        assert view_count(7072, 7072, overlapping) <= max_views(size)


@pytest.mark.parametrize(("overlap", "refused"), [(8, False), (12, True)])
def test_an_image_cut_into_more_views_than_the_cap_is_refused(
    monkeypatch: pytest.MonkeyPatch, overlap: int, refused: bool
) -> None:
    import models.tiling as tiling_module

    monkeypatch.setattr(tiling_module, "MAX_VIEW_PIXELS", 32 * 32 * 100)  # 100 views of 32 px
    rgb = np.zeros((64, 80, 3), np.float32)
    tiling = TilingConfig(tile_size=16, overlap=overlap)  # 7 x 9 = 63 views, or 13 x 17 = 221
    if refused:
        with pytest.raises(
            InputError,
            match=r"a 80x64 image would become 221 views \(16 px tiles overlapping by 12 px\), "
            r"more than the 100 accepted for a 32 px model input",
        ):
            make_views(rgb, size=32, mean=(0.5,) * 3, std=(0.5,) * 3, tiling=tiling)
    else:
        batch, views = make_views(rgb, size=32, mean=(0.5,) * 3, std=(0.5,) * 3, tiling=tiling)
        assert batch.shape[0] == len(views) == 63


def _border_steps(side: int, tiling: TilingConfig, size: int = 16) -> float:
    """The stitched map's mean step across tile borders over its median step elsewhere, for tiles
    whose maps read one smooth field but disagree as scored tiles do: a level of their own (each tile
    sees its own surroundings) and a rim raised by the padding beyond their edges."""
    views = plan_views(side, side, tiling)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    field = 0.4 + 0.15 * np.sin(xx / 17) + 0.1 * np.cos(yy / 23)
    i = np.arange(size, dtype=np.float32)
    rim = np.exp(-np.minimum(i, size - 1 - i) / 1.5)
    rng = np.random.default_rng(0)
    maps = np.stack(
        [
            cv2.resize(field[v.y : v.y + v.h, v.x : v.x + v.w], (size, size), interpolation=cv2.INTER_AREA)
            + rng.uniform(-0.1, 0.1)
            + 0.2 * np.maximum(rim[:, None], rim[None, :])
            for v in views
        ]
    )
    stitched = stitch_maps(maps, views, side, side, tiling.overlap)
    dx = np.abs(np.diff(stitched, axis=1)).mean(axis=0)  # dx[i]: from column i to i + 1
    dy = np.abs(np.diff(stitched, axis=0)).mean(axis=1)
    borders = sorted(({v.x for v in views} | {v.x + v.w for v in views}) - {0, side})
    at_borders = np.mean([dx[b - 1] for b in borders] + [dy[b - 1] for b in borders])
    return float(at_borders / np.median(np.concatenate([dx, dy])))


@pytest.mark.parametrize("side", [96, 100])  # tiles flush with the image, and a last one overlapping more
def test_the_default_tiling_of_training_stitches_maps_without_seams(side: int) -> None:
    # Tiles that only abut left a straight line in the map at each border, 21-30x its median step
    # on clean 384 px ore (the brightest line of a clean image's map): training overlaps them by default.
    from pipeline.train import TrainConfig

    config = TrainConfig(image_size=32, tile_size=32)
    assert config.tile_overlap == default_overlap(32) == 8
    assert _border_steps(side, TilingConfig(32, config.tile_overlap)) < 3.0
    assert _border_steps(side, TilingConfig(32, 0)) > 5.0  # what the overlap saves a map from


@pytest.mark.parametrize(
    ("levels", "bits"),
    [
        ([4080], 12),  # 12-bit data shifted into 16 bits (value * 16)
        ([4095, 100], 12),
        ([4000], 12),
        ([4096], 14),  # rounded up to a depth cameras store: no 13-bit sensor
        ([1023], 10),
        ([1024], 12),
        ([0], 8),  # an 8-bit image stored wide
        ([255], 8),
        ([256], 10),
        ([31872], 16),  # a dark full-range set measured 15 bits, and brighter clean images were clipped
        ([65535], 16),
        ([], 16),  # no 16-bit training image: the full range, as before
    ],
)
def test_the_bits_of_16_bit_images_are_the_fewest_sensor_depth_that_holds_their_bright_level(
    levels: list[int], bits: int
) -> None:
    assert sixteen_bit_depth(levels) == bits


def test_a_few_stuck_pixels_do_not_raise_an_images_bright_level() -> None:
    # one pixel at 65535 (a stuck pixel, a burned-in white label) made a 12-bit set read at 16 bits
    image = np.random.default_rng(0).integers(0, 4096, (64, 64), dtype=np.uint16)
    image[0, 0] = image[5, 7] = 65535
    assert 4000 < bright_level(image) < 4096
    assert sixteen_bit_depth([bright_level(image)]) == 12
    # an alpha channel (opaque: 65535 throughout) is no sample the model reads
    rgba = np.dstack([image, image, image, np.full_like(image, 65535)])
    assert bright_level(rgba) == bright_level(np.dstack([image] * 3)) < 4096
    assert samples_beyond(rgba, 12) == 6 and samples_beyond(image, 16) == 0


def test_a_small_bright_object_on_a_dark_ground_sets_the_bright_level() -> None:
    # the 99.9th percentile passed over it: the set read at 10 bits, the object clipped to white, and
    # an anomaly inside it reached the model as the clean picture did
    ground = np.random.default_rng(1).integers(300, 900, (128, 128), dtype=np.uint16)
    ground[60:64, 60:64] = 3000  # 16 grey pixels: 0.098 % of the picture
    assert bright_level(ground) == 3000
    assert sixteen_bit_depth([bright_level(ground)]) == 12
    colour = np.dstack([ground] * 3)
    colour[60:62, 60:62] = 4000  # two by two colour pixels
    assert sixteen_bit_depth([bright_level(colour)]) == 12


def test_an_8_bit_image_stored_wide_reads_as_itself() -> None:
    eight = np.arange(256, dtype=np.uint8)[None, :]
    assert np.array_equal(to_rgb_float(eight.astype(np.uint16), sixteen_bit_depth=8), to_rgb_float(eight))


def test_a_16_bit_image_is_read_at_the_models_depth() -> None:
    image = np.array([[0, 2048, 4095, 65535]], np.uint16)
    read = to_rgb_float(image, sixteen_bit_depth=12)[0, :, 0].tolist()
    assert read == pytest.approx([0.0, 2048 / 4095, 1.0, 1.0])  # clipped above 4095
    # at 16 bits, as before the depth was recorded: bit for bit the full range
    full = to_rgb_float(image)
    assert np.array_equal(full, np.repeat((image.astype(np.float32) / 65535.0)[..., None], 3, axis=2))
    assert np.array_equal(to_rgb_float(image, sixteen_bit_depth=16), full)
