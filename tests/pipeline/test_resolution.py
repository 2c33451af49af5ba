"""The training images' resolution against the model input, and when training warns about it."""

from __future__ import annotations

import pytest

from models.tiling import TilingConfig
from pipeline.resolution import (
    describe_resize,
    describe_scale,
    off_scale_images,
    off_training_scale,
    source_resolution,
)


def test_images_at_the_input_size_need_no_warning() -> None:
    summary = source_resolution([(256, 256), (250, 250), (256, 240)], size=256, tiling=TilingConfig())
    assert summary == {
        "longest_side_px": {"min": 250, "median": 256, "max": 256},
        "downscale": pytest.approx(1.0),
        "warning": None,
        "downscale_hw": [1.0, 0.977],  # median height 256, median width 250
        "downscale_hw_range": [[0.976562, 1.0], [0.9375, 1.0]],  # 250/256 = 0.9765625, rounded down
        "downscale_short_long": [0.9765625, 1.0],  # not rounded: as training compares its own images
    }


@pytest.mark.parametrize(
    ("shapes", "size", "tiling", "hw"),
    [
        ([(256, 256), (512, 512)], 256, TilingConfig(), None),  # square views: downscale says it all
        ([(512, 512)], 256, TilingConfig(tile_size=256), None),  # square tiles
        ([(480, 640)] * 3, 256, TilingConfig(), [1.875, 2.5]),
        ([(640, 480)] * 3, 256, TilingConfig(), [2.5, 1.875]),
        ([(100, 1000)], 256, TilingConfig(tile_size=256), [0.391, 1.0]),  # 100 x 256 tiles
        ([(480, 640), (640, 480), (480, 640)], 256, TilingConfig(), [1.875, 2.5]),  # medians per side
    ],
)
def test_views_that_are_not_square_record_each_side(
    shapes: list[tuple[int, int]], size: int, tiling: TilingConfig, hw: list[float] | None
) -> None:
    assert source_resolution(shapes, size=size, tiling=tiling).get("downscale_hw") == hw


@pytest.mark.parametrize(
    ("shapes", "size", "tiling", "span"),
    [
        ([(480, 640)] * 3, 256, TilingConfig(), None),  # one shape of view: the medians say it all
        ([(512, 512), (1024, 1024)], 256, TilingConfig(tile_size=256), None),  # square tiles alike
        ([(64, 160)] * 7 + [(160, 64)] * 3, 64, TilingConfig(), [[1.0, 2.5], [1.0, 2.5]]),
        ([(64, 160), (64, 65)], 64, TilingConfig(), [[1.0, 1.0], [1.015625, 2.5]]),
        ([(256, 256), (512, 512)], 256, TilingConfig(), [[1.0, 2.0], [1.0, 2.0]]),
        ([(100, 1000), (512, 512)], 256, TilingConfig(tile_size=256), [[0.390625, 1.0], [1.0, 1.0]]),
        ([(1, 1), (1024, 1024)], 1024, TilingConfig(), [[0.000976, 1.0], [0.000976, 1.0]]),  # 1/1024 > 0
    ],
    ids=["one-shape", "square-tiles", "both-orientations", "two-widths", "two-sizes", "tiled", "one-pixel"],
)
def test_views_of_several_shapes_record_the_span_of_each_side(
    shapes: list[tuple[int, int]], size: int, tiling: TilingConfig, span: list[list[float]] | None
) -> None:
    """A model trained on 7 landscape and 3 portrait images recorded one median per side, [1.0, 2.5],
    against which its own portrait images were 2.5x off and never released."""
    assert source_resolution(shapes, size=size, tiling=tiling).get("downscale_hw_range") == span


@pytest.mark.parametrize(
    ("shapes", "tiling", "sides"),
    [
        ([(480, 640)] * 3, TilingConfig(), None),  # one shape of view: its span and medians say it all
        ([(64, 160)] * 7 + [(160, 64)] * 3, TilingConfig(), [1.0, 2.5]),  # shorter and longer, not h and w
        ([(64, 64)] * 6 + [(32, 32)], TilingConfig(), [1.0, 1.0]),  # the span runs to 0.5; the median not
        ([(16, 64)] * 3 + [(64, 16)] * 3, TilingConfig(), [0.25, 1.0]),
        ([(2000, 3000), (40, 40)], TilingConfig(tile_size=64), [0.8125, 0.8125]),  # 64 px tiles and 40 px
    ],
    ids=["one-shape", "both-orientations", "two-sizes", "strips", "tiled"],
)
def test_views_of_several_shapes_record_the_median_shorter_and_longer_side(
    shapes: list[tuple[int, int]], tiling: TilingConfig, sides: list[float] | None
) -> None:
    """Scoring took every scale in the span for the training scale, so one image 2x off the others
    moved its end 2x; the median it now compares with is the one training refuses images by."""
    assert source_resolution(shapes, size=64, tiling=tiling).get("downscale_short_long") == sides


def test_shrunk_images_warn_and_name_both_remedies() -> None:
    summary = source_resolution([(512, 512)] * 3, size=256, tiling=TilingConfig())
    assert summary["downscale"] == 2.0
    assert summary["warning"] == (
        "the training images (512 px, median longer side) are shrunk 2.0x to the 256 px model input, "
        "so defects a few pixels wide may vanish; --image-size 512 or --tile-size 256 keeps their pixels "
        "(tiles overlapping by 64 px, about 9x the compute) but shows each patch less of its "
        "surroundings, which can cost large defects: compare with the default using `clearsight "
        "evaluate` on your own images"
    )


def test_images_too_large_for_any_input_suggest_only_tiling() -> None:
    warning = source_resolution([(3000, 4000)], size=256, tiling=TilingConfig())["warning"]
    assert warning is not None
    assert "shrunk 15.6x" in warning
    assert "--image-size" not in warning and "--tile-size 256" in warning


@pytest.mark.parametrize(
    ("shapes", "size", "tiling", "warns"),
    [
        ([(512, 512)], 256, TilingConfig(tile_size=256), False),  # tiled at their own resolution
        ([(512, 512)], 256, TilingConfig(), True),  # 2x: the threshold itself
        ([(480, 480)], 256, TilingConfig(), False),  # 1.875x
        ([(512, 512), (256, 256), (256, 256)], 256, TilingConfig(), False),  # the median decides
    ],
)
def test_when_training_warns(
    shapes: list[tuple[int, int]], size: int, tiling: TilingConfig, warns: bool
) -> None:
    assert (source_resolution(shapes, size=size, tiling=tiling)["warning"] is not None) is warns


def test_no_images_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="at least one image shape"):
        source_resolution([], size=256, tiling=TilingConfig())


@pytest.mark.parametrize(
    ("downscale", "words"),
    [
        (2.0, "downscaled 2x"),
        (1.5, "downscaled 1.5x"),
        (1.0, "not resized"),
        (0.977, "enlarged 1.02x"),
        (0.5, "enlarged 2x"),
    ],
)
def test_describe_resize(downscale: float, words: str) -> None:
    assert describe_resize(downscale) == words


@pytest.mark.parametrize(
    ("scale", "off"),
    [
        (None, False),  # a model that does not record its training images' sizes
        (1.0, False),
        (0.5, False),  # the tolerance itself is still trusted
        (2.0, False),
        (0.49, True),
        (2.01, True),
        (0.125, True),  # a 2048 px photo scored by a model trained on 256 px images
    ],
)
def test_off_training_scale(scale: float | None, off: bool) -> None:
    assert off_training_scale(scale) is off


@pytest.mark.parametrize(
    ("scale", "words"),
    [
        (
            0.25,
            "resized for the model 4x smaller than its training images were (a wider view with "
            "smaller objects, or the same view at a higher resolution)",
        ),
        (
            2.5,
            "resized for the model 2.5x larger than its training images were (less detail than "
            "they had, or a closer view)",
        ),
    ],
)
def test_describe_scale(scale: float, words: str) -> None:
    assert describe_scale(scale) == words


@pytest.mark.parametrize(
    ("shapes", "tiling", "off"),
    [
        ([(64, 64)] * 6 + [(1, 1)], TilingConfig(), [(6, 0.015625)]),  # a stray 1 px image
        ([(64, 64)] * 5 + [(128, 128)], TilingConfig(), []),  # 2x: at the tolerance, within it
        ([(64, 64)] * 5 + [(130, 130)], TilingConfig(), [(5, 2.03125)]),
        ([(48, 48), (64, 64), (80, 80), (96, 96), (64, 64)], TilingConfig(), []),  # within 2x of 64
        ([(64, 160)] * 7 + [(160, 64)] * 3, TilingConfig(), []),  # portrait among landscape
        ([(64, 64)] * 4 + [(64, 3)], TilingConfig(), [(4, 0.046875)]),  # a strip, off along one side
        ([(2000, 3000)] * 3 + [(16, 16)], TilingConfig(tile_size=64), [(3, 0.25)]),  # smaller than a tile
        ([(64, 64)] * 3 + [(8, 8)] * 2 + [(512, 512)], TilingConfig(), [(3, 0.125), (4, 0.125), (5, 8.0)]),
    ],
    ids=[
        "one-pixel",
        "twice",
        "past-twice",
        "several-sizes",
        "both-orientations",
        "strip",
        "tiled",
        "several",
    ],
)
def test_images_far_off_the_others_scale_are_found(
    shapes: list[tuple[int, int]], tiling: TilingConfig, off: list[tuple[int, float]]
) -> None:
    """One 1 px image among 64 px ones made the span of training scales [0.015625, 1.0] along each
    side, and scoring then took a 16 px thumbnail, 4x off the others, for a training-scale image."""
    assert off_scale_images(shapes, size=64, tiling=tiling) == off
