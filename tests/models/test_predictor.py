"""The predictor: an image's scale against the model's training images', and what each signal said."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from models.artifact import load_model
from models.fusion import SIGNALS
from models.predictor import ArtifactPredictor


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
        (48, 64, 1.0),  # the longer side decides
        (128, 128, 0.5),
        (32, 32, 2.0),
        (64, 256, 0.25),
    ],
)
def test_scale_vs_training_compares_the_longer_sides(
    predictor: ArtifactPredictor, height: int, width: int, scale: float
) -> None:
    assert predictor.card["preprocessing"]["source_resolution"]["downscale"] == 1.0
    assert predictor.scale_vs_training(height, width) == scale


def test_every_prediction_carries_its_scale(predictor: ArtifactPredictor, imaging) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(5)
    same, large = predictor.predict([imaging.texture(rng, 64), imaging.texture(rng, 256)])
    assert (same.scale_vs_training, large.scale_vs_training) == (1.0, 0.25)


def test_tiles_keep_a_large_image_at_the_training_scale(predictor: ArtifactPredictor) -> None:
    tiled = _with_preprocessing(predictor, tiling={"tile_size": 64, "overlap": 16})
    assert tiled.scale_vs_training(256, 256) == 1.0
    assert predictor.scale_vs_training(256, 256) == 0.25


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
