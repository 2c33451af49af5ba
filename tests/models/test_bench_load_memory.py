"""bench_load_memory --speed: s36 and new compared where a difference in the bank would show."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import pytest

from bench.bench_load_memory import _comparison_images, _differences


def test_the_comparison_takes_the_training_datas_test_pictures(tiny_model_dir: Path) -> None:
    # random noise scores 1.0 to six places on the bench's model, so equal scores on it proved nothing
    root = Path(json.loads((tiny_model_dir / "model.json").read_text())["training"]["data_root"])
    files = sorted((root / "test").rglob("*.png"))
    images = _comparison_images(tiny_model_dir)
    assert len(images) == len(files) > 0
    assert any(f.parent.name == "good" for f in files)
    assert all(isinstance(image, np.ndarray) and image.ndim == 3 for image in images)


def _prediction(score: float, log_odds: dict[str, float] | None) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        score=score, anomaly_map=np.zeros((2, 2)), type_probabilities={"good": 1.0}, signal_log_odds=log_odds
    )


@pytest.mark.parametrize(
    ("a", "b", "log_odds"),
    [
        ({"one_class": 9.0}, {"one_class": 9.0}, 0.0),
        ({"one_class": 9.0}, {"one_class": 12.5}, 3.5),  # both score 1.0: only the log-odds tell
        ({"one_class": 9.0, "patch": 1.0}, {"one_class": 9.0}, float("inf")),  # a signal lost
        (None, None, 0.0),
    ],
    ids=["same", "saturated-but-different", "missing-signal", "none"],
)
def test_differences_report_log_odds_behind_equal_scores(
    a: dict[str, float] | None, b: dict[str, float] | None, log_odds: float
) -> None:
    got = _differences([_prediction(0.9999, a)], [_prediction(0.9999, b)])
    assert got["score"] == 0.0
    assert got["log_odds"] == log_odds


@pytest.mark.parametrize(("score", "unsaturated"), [(0.0, 0), (0.005, 0), (0.3, 1), (0.98, 1), (0.9999, 0)])
def test_only_scores_away_from_0_and_1_count_as_unsaturated(score: float, unsaturated: int) -> None:
    one = [_prediction(score, None)]
    assert _differences(one, one)["unsaturated"] == unsaturated
