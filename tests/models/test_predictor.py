"""The predictor: an image's scale against the model's training images', and what each signal said."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from datasets.errors import InputError, ModelError
from models.artifact import load_model
from models.fusion import SIGNALS
from models.predictor import ArtifactPredictor, ImageScorer
from models.tiling import TilingConfig
from pipeline.resolution import off_scale_images, off_training_scale, source_resolution


@pytest.fixture(scope="module")
def predictor(tiny_model_dir: Path) -> ArtifactPredictor:
    return load_model(tiny_model_dir, runtime="torch")


def _with_preprocessing(predictor: ArtifactPredictor, **changes: object) -> ArtifactPredictor:
    card = dict(predictor.card)
    card["preprocessing"] = {**card["preprocessing"], **changes}
    return ArtifactPredictor(predictor.detector, card, runtime="torch")


@pytest.mark.parametrize(
    ("height", "width", "scale"),
    [
        (64, 64, 1.0),  # the training images' size (64 px, the model input)
        (128, 128, 0.5),
        (32, 32, 2.0),
        (64, 256, 0.25),
        (48, 64, 1.3334),  # its height enlarged 1.33x more than the training views' (rounded away from 1)
        (64, 1, 64.0),  # a column enlarged 64x along its width: its longer side alone said 1.0
        (64, 4, 16.0),
        (3, 64, 21.3334),
        (32, 256, 0.25),  # both sides off, either way: the one farther off
        (16, 128, 4.0),
    ],
)
def test_scale_vs_training_takes_the_side_farther_off(
    predictor: ArtifactPredictor, height: int, width: int, scale: float
) -> None:
    assert predictor.card["preprocessing"]["source_resolution"]["downscale"] == 1.0
    assert predictor.scale_vs_training(height, width) == scale


def test_every_prediction_carries_its_scale(predictor: ArtifactPredictor, imaging) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(5)
    same, large = predictor.predict([imaging.texture(rng, 64), imaging.texture(rng, 256)])
    assert (same.scale_vs_training, large.scale_vs_training) == (1.0, 0.25)


@pytest.mark.parametrize("crop", [(slice(None), slice(0, 1)), (slice(0, 3), slice(None))])
def test_a_strip_of_a_training_image_is_not_released_on_its_score(  # type: ignore[no-untyped-def]
    predictor: ArtifactPredictor, crop: tuple[slice, slice], imaging
) -> None:
    image = np.ascontiguousarray(imaging.texture(np.random.default_rng(5), 64)[crop])
    assert off_training_scale(predictor.predict([image])[0].scale_vs_training)


def test_tiles_keep_a_large_image_at_the_training_scale(predictor: ArtifactPredictor) -> None:
    tiled = _with_preprocessing(predictor, tiling={"tile_size": 64, "overlap": 16})
    assert tiled.scale_vs_training(256, 256) == 1.0
    assert predictor.scale_vs_training(256, 256) == 0.25


@pytest.mark.parametrize(
    ("height", "width", "scale"), [(3, 2000, 21.3334), (2000, 3, 21.3334), (64, 2000, 1.0)]
)
def test_a_tiled_strip_is_measured_across_its_tiles_too(
    predictor: ArtifactPredictor, height: int, width: int, scale: float
) -> None:
    tiled = _with_preprocessing(predictor, tiling={"tile_size": 64, "overlap": 16})
    assert tiled.scale_vs_training(height, width) == scale


def test_training_views_of_another_shape_are_compared_side_by_side(predictor: ArtifactPredictor) -> None:
    # trained on 32 x 128 strips (no 64 px squares): a strip of that shape is at the training scale
    source = {"longest_side_px": {"min": 128, "median": 128, "max": 128}, "downscale": 2.0, "warning": None}
    strips = _with_preprocessing(predictor, source_resolution={**source, "downscale_hw": [0.5, 2.0]})
    assert strips.scale_vs_training(32, 128) == 1.0
    assert strips.scale_vs_training(48, 128) == 0.6666  # its height shrunk 1.5x more
    assert strips.scale_vs_training(100, 32) == 4.0  # turned on its side: its width enlarged 4x


def _trained_on(
    predictor: ArtifactPredictor, shapes: list[tuple[int, int]], tiling: dict
) -> ArtifactPredictor:
    """The predictor with the card training on ``shapes`` (height, width) would have written."""
    config = TilingConfig(**tiling)
    return _with_preprocessing(
        predictor, tiling=tiling, source_resolution=source_resolution(shapes, size=64, tiling=config)
    )


_LANDSCAPE_AND_PORTRAIT = [(64, 160)] * 7 + [(160, 64)] * 3
_TILED = {"tile_size": 64, "overlap": 16}


@pytest.mark.parametrize(
    ("shapes", "tiling", "others"),
    [
        (_LANDSCAPE_AND_PORTRAIT, {}, [(64, 160, 1.0), (160, 64, 1.0), (160, 160, 0.4), (64, 64, 2.5)]),
        ([(64, 160)] * 7 + [(64, 96)] * 3, {}, [(64, 96, 1.6667), (64, 112, 1.4286), (64, 16, 6.0)]),
        ([(64, 64)] * 5 + [(128, 128)], {}, [(128, 128, 0.5), (96, 96, 0.6666), (256, 256, 0.25)]),
        ([(2000, 3000), (40, 40)], _TILED, [(40, 40, 1.3), (50, 50, 1.04), (16, 64, 3.25)]),
    ],
    ids=["both-orientations", "two-widths", "two-sizes", "tiled"],
)
def test_every_shape_seen_in_training_is_within_the_training_scale(
    predictor: ArtifactPredictor, shapes: list[tuple[int, int]], tiling: dict, others: list
) -> None:
    """A model trained on 7 landscape (64 x 160) and 3 portrait (160 x 64) images recorded one
    median per side, [1.0, 2.5], and flagged its own portrait images 2.5x off the training scale,
    which the decision layer never released. Each side is now measured against the median shorter
    and longer side, so both orientations are at the training scale, every image training takes is
    within the tolerance of it, and stretched images are still measured side by side."""
    trained = _trained_on(predictor, shapes, tiling)
    assert not any(off_training_scale(trained.scale_vs_training(h, w)) for h, w in shapes)
    assert [(h, w, trained.scale_vs_training(h, w)) for h, w, _ in others] == others
    for height, width in [(64, 1), (3, 64), (3, 2000), (1, 64)]:  # strips enlarged 21x or more
        assert off_training_scale(trained.scale_vs_training(height, width)), (height, width)


def test_one_image_at_the_tolerance_does_not_widen_the_training_scale(predictor: ArtifactPredictor) -> None:
    """Training takes a 32 px image among 64 px ones (2x off, within the tolerance). The span of
    training scales then ran to 0.5, and a 16 px thumbnail, 4x off the others, scored 2.0 against
    its end and was released; against the median it is 4x off, as training would refuse it."""
    shapes = [(64, 64)] * 6 + [(32, 32)]
    assert off_scale_images(shapes, size=64, tiling=TilingConfig()) == []
    assert off_scale_images([(64, 64)] * 6 + [(16, 16)], size=64, tiling=TilingConfig()) == [(6, 0.25)]
    trained = _trained_on(predictor, shapes, {})
    assert (trained.scale_vs_training(32, 32), trained.scale_vs_training(16, 16)) == (2.0, 4.0)
    assert off_training_scale(trained.scale_vs_training(16, 16))
    assert trained.scale_vs_training(128, 128) == 0.5  # 2x the other way: within


def test_an_image_training_refuses_just_beyond_the_tolerance_is_off_the_training_scale(
    predictor: ArtifactPredictor,
) -> None:
    """Line-scan strips 6000 and 5000 px long: training refuses a 12001 px one 2.000167x off the
    median, but its scale, 0.49996, was rounded to 0.5, on the tolerance's edge, and the image was
    released on its score. Rounded away from 1 it is 0.4999, and a 12000 px one, which training takes,
    stays at 0.5."""
    shapes = [(2048, 6000)] * 5 + [(2048, 5000)] * 2
    assert [n for n, _ in off_scale_images([*shapes, (2048, 12001)], size=64, tiling=TilingConfig())] == [7]
    assert off_scale_images([*shapes, (2048, 12000)], size=64, tiling=TilingConfig()) == []
    trained = _trained_on(predictor, shapes, {})
    assert (trained.scale_vs_training(2048, 12001), trained.scale_vs_training(2048, 12000)) == (0.4999, 0.5)
    assert off_training_scale(trained.scale_vs_training(2048, 12001))
    assert not off_training_scale(trained.scale_vs_training(2048, 12000))
    # the other way: a 2999 px strip, enlarged 2.0007x against the 6000 px median, is flagged too
    assert [n for n, _ in off_scale_images([*shapes, (2048, 2999)], size=64, tiling=TilingConfig())] == [7]
    assert trained.scale_vs_training(2048, 2999) == 2.0007
    assert off_training_scale(trained.scale_vs_training(2048, 2999))


def test_strips_of_both_orientations_do_not_make_squares_the_training_scale(
    predictor: ArtifactPredictor,
) -> None:
    """Trained on 16 x 64 and 64 x 16 strips, the span along each side ran from 0.25 to 1.0, and a
    16 px and a 64 px square both scored 1.0, where training would refuse either among the strips."""
    strips = [(16, 64)] * 3 + [(64, 16)] * 3
    for square in [(16, 16), (64, 64)]:
        assert [n for n, _ in off_scale_images([*strips, square], size=64, tiling=TilingConfig())] == [6]
    trained = _trained_on(predictor, strips, {})
    assert (trained.scale_vs_training(16, 64), trained.scale_vs_training(64, 16)) == (1.0, 1.0)
    assert (trained.scale_vs_training(16, 16), trained.scale_vs_training(64, 64)) == (4.0, 0.25)


def test_a_card_without_the_median_keeps_the_span_and_says_so_at_load(
    predictor: ArtifactPredictor, caplog: pytest.LogCaptureFixture
) -> None:
    # a card written before training recorded the median shorter and longer side kept the span rule
    # silently: the 16 px thumbnail below scores 2.0 and is released
    with caplog.at_level(logging.WARNING, logger="clearsight.models"):
        trained = _trained_on(predictor, [(64, 64)] * 6 + [(32, 32)], {})
        _trained_on(predictor, [(64, 64)] * 6, {})  # one shape of view: no span to be loose
        assert _warned(caplog) == []
        source = dict(trained.card["preprocessing"]["source_resolution"])
        assert source.pop("downscale_short_long") == [1.0, 1.0]
        older = _with_preprocessing(trained, source_resolution=source)
    assert (older.scale_vs_training(16, 16), older.scale_vs_training(8, 8)) == (2.0, 4.0)
    [said] = [r.getMessage() for r in _warned(caplog)]
    assert said.startswith(f"model {older.model_id} ({older.cargo_type}): its card records")
    assert "the older and looser scale check" in said
    assert said.endswith("Retrain the model to check images against the median, as training does")


def test_a_card_without_the_span_keeps_the_medians(predictor: ArtifactPredictor) -> None:
    trained = _trained_on(predictor, _LANDSCAPE_AND_PORTRAIT, {})
    source = dict(trained.card["preprocessing"]["source_resolution"])
    assert source.pop("downscale_hw_range") == [[1.0, 2.5], [1.0, 2.5]]
    assert source.pop("downscale_short_long") == [1.0, 2.5]
    older = _with_preprocessing(trained, source_resolution=source)
    assert (older.scale_vs_training(64, 160), older.scale_vs_training(160, 64)) == (1.0, 2.5)


@pytest.mark.parametrize(
    "span",
    [[[1.0, 2.0]], [[1.0, 2.0], [0.0, 1.0]], [[2.0, 1.0], [1.0, 1.0]], "ab", [[1.0, None], [1.0, 1.0]], 5],
)
def test_a_card_with_a_malformed_span_is_refused(predictor: ArtifactPredictor, span: object) -> None:
    source = {**predictor.card["preprocessing"]["source_resolution"], "downscale_hw_range": span}
    with pytest.raises(ModelError, match=r"downscale_hw_range .*; accepted: \[\[least, most\]"):
        _with_preprocessing(predictor, source_resolution=source)


@pytest.mark.parametrize("sides", [[1.0], [2.0, 1.0], [0.0, 1.0], "ab", [1.0, None], [1.0, float("inf")], 5])
def test_a_card_with_malformed_median_sides_is_refused(predictor: ArtifactPredictor, sides: object) -> None:
    source = {**predictor.card["preprocessing"]["source_resolution"], "downscale_short_long": sides}
    with pytest.raises(ModelError, match=r"downscale_short_long .*; accepted: \[median along the shorter"):
        _with_preprocessing(predictor, source_resolution=source)


@pytest.mark.parametrize("figures", [[1.0], [1.0, 0.0], "ab", [1.0, None], [1.0, float("nan")]])
def test_a_card_with_malformed_side_figures_is_refused(predictor: ArtifactPredictor, figures: object) -> None:
    source = {**predictor.card["preprocessing"]["source_resolution"], "downscale_hw": figures}
    with pytest.raises(ModelError, match="downscale_hw"):
        _with_preprocessing(predictor, source_resolution=source)


def test_a_card_without_the_training_sizes_gives_no_scale(predictor: ArtifactPredictor) -> None:
    card = dict(predictor.card)
    card["preprocessing"] = {k: v for k, v in card["preprocessing"].items() if k != "source_resolution"}
    older = ArtifactPredictor(predictor.detector, card, runtime="torch")
    assert older.scale_vs_training(256, 256) is None
    assert older.predict([np.zeros((256, 256), np.uint8)])[0].scale_vs_training is None


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_the_signals_log_odds_give_the_score_back(tiny_model_dir: Path, runtime: str, imaging) -> None:  # type: ignore[no-untyped-def]
    predictor = load_model(tiny_model_dir, runtime=runtime)
    fusion = predictor.detector.fusion
    in_use = {name for name, slope in zip(SIGNALS, fusion.slope.tolist(), strict=True) if slope > 0}
    rng = np.random.default_rng(7)
    for p in predictor.predict([imaging.texture(rng, 64), imaging.texture(rng, 96)]):
        assert p.signal_log_odds is not None and set(p.signal_log_odds) == in_use
        values = list(p.signal_log_odds.values())
        fused = sum(values) if fusion.rule == "sum" else max(values)
        assert 1.0 / (1.0 + np.exp(-fused)) == pytest.approx(p.score, abs=1e-6)


def test_a_score_that_is_not_a_number_is_never_labelled_good(predictor: ArtifactPredictor) -> None:
    image = np.full((64, 64, 3), np.nan, np.float32)
    (prediction,) = predictor.predict([image])
    assert np.isnan(prediction.score)
    assert prediction.label == "anomalous"
    # no type probabilities of NaN: a verdict row refuses them, and the image's row must still be kept
    assert prediction.type_probabilities == {} and prediction.anomaly_type == "unknown"


def test_views_are_made_a_batch_at_a_time(predictor: ArtifactPredictor, imaging) -> None:  # type: ignore[no-untyped-def]
    # four tiled images of 4 views each, batches of 4 views: every image's views run before the next
    # image's are made, not all four images' (16 views) first
    tiled = _with_preprocessing(predictor, tiling={"tile_size": 64, "overlap": 0})
    scorer = ImageScorer(tiled.detector, tiling=tiled.scorer.tiling, batch_size=4)
    events: list[str] = []
    views, raw = scorer.views, scorer._raw

    def counted_views(image: np.ndarray):  # type: ignore[no-untyped-def]
        events.append("views")
        return views(image)

    def counted_raw(x):  # type: ignore[no-untyped-def]
        events.append(f"raw {x.shape[0]}")
        return raw(x)

    scorer.views, scorer._raw = counted_views, counted_raw  # type: ignore[method-assign]
    rng = np.random.default_rng(3)
    images = [imaging.texture(rng, 128) for _ in range(4)]
    results = scorer.score(images)
    assert events == ["views", "raw 4"] * 4
    alone = [ImageScorer(tiled.detector, tiling=tiled.scorer.tiling).score([image])[0] for image in images]
    assert [r.score for r in results] == pytest.approx([r.score for r in alone], abs=1e-6)


def test_an_image_over_the_view_cap_is_refused_before_its_views_are_made(
    predictor: ArtifactPredictor, monkeypatch: pytest.MonkeyPatch
) -> None:
    import models.tiling

    monkeypatch.setattr(models.tiling, "MAX_VIEW_PIXELS", 64 * 64 * 50)  # 50 views of 64 px
    tiled = _with_preprocessing(predictor, tiling={"tile_size": 32, "overlap": 0})
    with pytest.raises(InputError, match=r"a 512x256 image would become 128 views .* more than the 50"):
        tiled.predict([np.zeros((256, 512), np.uint8)])
    assert len(tiled.predict([np.zeros((160, 160), np.uint8)])[0].anomaly_map) == 160  # 25 views


def test_a_card_without_sixteen_bit_depth_reads_the_full_range(predictor: ArtifactPredictor, imaging) -> None:  # type: ignore[no-untyped-def]
    # cards written before training measured it: their scores stay what they were
    card = dict(predictor.card)
    card["preprocessing"] = {k: v for k, v in card["preprocessing"].items() if k != "sixteen_bit_depth"}
    card["training"] = {k: v for k, v in card["training"].items() if k != "sixteen_bit"}  # nor this
    older = ArtifactPredictor(predictor.detector, card, runtime="torch")
    assert older.scorer.sixteen_bit_depth == 16
    wide = imaging.texture(np.random.default_rng(5)).astype(np.uint16) * 257  # the full 16 bits
    as_float = wide.astype(np.float32) / 65535.0
    assert np.array_equal(older.scorer.views(wide)[0].numpy(), older.scorer.views(as_float)[0].numpy())


def _warned(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "clearsight.models" and r.levelno == logging.WARNING]


def test_samples_above_the_models_depth_are_warned_about_as_clipped_with_the_retraining_flag(
    predictor: ArtifactPredictor, imaging, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    # a brighter exposure of the same camera clips as surely as another camera's file: the warning
    # named only the latter, and not the flag that reads the brighter samples
    twelve = _with_sixteen_bit(predictor, "--sixteen-bit-depth", 12)
    bright = imaging.texture(np.random.default_rng(5)).astype(np.uint16) * 16
    bright[0, 0] = 5000
    expected = (
        rf"^model {re.escape(twelve.model_id)} \(bulk_ore\): a 16-bit image holds samples above 4095, the "
        r"most this model reads: its card records 16-bit images as holding 12 bits .*, and the samples "
        r"above are clipped to white\. If the training images under-represented bright exposures, "
        r"retrain with --sixteen-bit-depth"
    )
    with caplog.at_level(logging.WARNING, logger="clearsight.models"):
        twelve.predict([bright, bright])
    [said] = _warned(caplog)
    assert re.match(expected, said.getMessage())
    assert twelve.scorer.beyond_bit_depth == 2


def _with_sixteen_bit(predictor: ArtifactPredictor, chosen_by: str, depth: int = 16) -> ArtifactPredictor:
    card = dict(predictor.card)
    card["preprocessing"] = {**card["preprocessing"], "sixteen_bit_depth": depth}
    card["training"] = {
        **card["training"],
        "sixteen_bit": {**card["training"]["sixteen_bit"], "chosen_by": chosen_by},
    }
    return ArtifactPredictor(predictor.detector, card, runtime="torch")


@pytest.mark.parametrize(
    ("chosen_by", "warned"),
    [("no 16-bit image", True), ("measured", False), ("--sixteen-bit-depth", False)],
)
def test_16_bit_images_on_a_model_that_saw_none_are_warned_about_once(
    predictor: ArtifactPredictor, imaging, chosen_by: str, warned: bool, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    # read at the full 16 bits, assumed: a 12-bit camera's file reached the model with a sixteenth of
    # the contrast of its 8-bit training images, and nothing said so
    model = _with_sixteen_bit(predictor, chosen_by)
    eight = imaging.texture(np.random.default_rng(5))
    twelve = eight.astype(np.uint16) * 16
    model.predict([eight])
    assert model.scorer.unmeasured_sixteen_bit == 0
    with caplog.at_level(logging.WARNING, logger="clearsight.models"):
        model.predict([twelve, twelve])
        model.predict([twelve])
    said = _warned(caplog)
    if warned:
        expected = (
            rf"^model {re.escape(model.model_id)} \(bulk_ore\): a 16-bit image is read at 16 bits \(65535 "
            r"is white\), a depth "
            r"assumed: this model saw no 16-bit image at training, .* or with --sixteen-bit-depth set to "
            r"the bits the camera stores$"
        )
        assert len(said) == 1 and re.match(expected, said[0].getMessage())
        # the service writes it as one of its JSON log lines, the model among its fields; it was
        # printed raw, as two lines that were no JSON, naming no model
        from serve.logs import JsonFormatter

        line = JsonFormatter().format(said[0])
        entry = json.loads(line)
        assert "\n" not in line and (entry["level"], entry["logger"]) == ("warning", "clearsight.models")
        assert (entry["model_id"], entry["cargo_type"]) == (model.model_id, "bulk_ore")
        assert model.scorer.unmeasured_sixteen_bit == 3
    else:
        assert said == [] and model.scorer.unmeasured_sixteen_bit == 0
