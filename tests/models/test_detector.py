"""The fitted detector: separation, input kinds, output shapes and ranges, type naming, tiling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datasets.decode import decode_image
from datasets.errors import InputError
from models.artifact import load_model
from models.detector import DetectorConfig, DetectorOutput, build_detector
from models.fusion import Fusion
from models.inference import GOOD, Predictor
from models.predictor import UNKNOWN, ArtifactPredictor


@pytest.fixture(scope="module")
def predictor(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    return load_model(tiny_model_dir)


def test_artifact_predictor_satisfies_the_contract(predictor) -> None:  # type: ignore[no-untyped-def]
    assert isinstance(predictor, Predictor)
    assert predictor.cargo_type == "bulk_ore"
    assert predictor.model_id.startswith("bulk_ore-lite0-")
    assert predictor.card["training"]["class_names"] == ["good", "plastic", "stain"]


def test_obvious_anomalies_score_above_every_normal(predictor, tiny_data_root: Path) -> None:  # type: ignore[no-untyped-def]
    paths = sorted((tiny_data_root / "test").glob("*/*.png"))
    preds = predictor.predict([decode_image(p).pixels for p in paths])
    good = [p.score for p, path in zip(preds, paths, strict=True) if path.parent.name == GOOD]
    bad = [p.score for p, path in zip(preds, paths, strict=True) if path.parent.name != GOOD]
    assert min(bad) > max(good)
    for pred, path in zip(preds, paths, strict=True):
        assert 0.0 <= pred.score <= 1.0
        assert pred.anomaly_map.shape == (64, 64)
        assert pred.anomaly_map.dtype == np.float32
        assert float(pred.anomaly_map.min()) >= 0.0 and float(pred.anomaly_map.max()) <= 1.0
        assert abs(sum(pred.type_probabilities.values()) - 1.0) < 1e-6
        assert pred.label == ("anomalous" if pred.score >= predictor.thresholds.release else GOOD)
        if pred.label == "anomalous" and path.parent.name != GOOD:
            assert pred.anomaly_type in (path.parent.name, UNKNOWN)


def test_the_map_points_at_the_defect(predictor, imaging) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(42)
    img = imaging.texture(rng)
    img[8:20, 40:60] = (30, 80, 230)  # a blue bar in the top-right
    amap = predictor.predict([img])[0].anomaly_map
    assert float(amap[8:20, 40:60].mean()) > 0.9
    assert float(amap[36:, :28].mean()) < 0.3  # the far bottom-left quadrant stays cool


def test_gray_and_16_bit_inputs_score_like_their_8_bit_rgb_twin(predictor, imaging) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(5)
    gray8 = imaging.texture(rng)[:, :, 0]
    rgb8 = np.repeat(gray8[:, :, None], 3, axis=2)
    variants = [
        gray8,
        gray8[:, :, None],
        rgb8,
        gray8.astype(np.uint16) * 257,
        rgb8.astype(np.float32) / 255.0,
    ]
    scores = [p.score for p in predictor.predict(variants)]
    assert np.allclose(scores, scores[2], atol=1e-5)


def test_other_sizes_get_maps_of_their_own_size(predictor, imaging) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(6)
    preds = predictor.predict([imaging.texture(rng, 96)[:80], imaging.texture(rng, 48)])
    assert [p.anomaly_map.shape for p in preds] == [(80, 96), (48, 48)]


@pytest.mark.parametrize(
    ("image", "match"),
    [
        (np.zeros((8, 8, 2), np.uint8), r"shape \(8, 8, 2\) is not accepted"),
        (np.zeros((8, 8, 3), np.int32), "dtype int32 is not accepted"),
    ],
)
def test_unusable_arrays_are_refused(predictor, image: np.ndarray, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InputError, match=match):
        predictor.predict([image])


def test_forward_returns_typed_output_of_documented_shapes(predictor) -> None:  # type: ignore[no-untyped-def]
    det = predictor.detector
    with torch.inference_mode():
        out = det(torch.zeros(3, 3, 64, 64))
    assert isinstance(out, DetectorOutput)
    assert out.score.shape == (3,)
    assert out.anomaly_map.shape == (3, 64, 64)
    assert out.type_logits.shape == (3, 3)


@pytest.mark.parametrize(("rule", "alarm"), [("max", True), ("sum", False)])
def test_confident_good_heads_hide_a_one_class_alarm_only_under_the_sum(
    predictor: ArtifactPredictor, rule: str, alarm: bool
) -> None:
    # The max's guarantee for anomaly types no head saw; the sum (training's default) gives it up
    fusion = Fusion(rule)
    fusion.load_state_dict(predictor.detector.fusion.state_dict())  # the fitted calibrations
    very_good = torch.tensor([[50.0, -50.0, -50.0]])
    clean_patches = torch.tensor([-50.0])  # the patch head sees no defect anywhere
    raw = torch.tensor([1e6])  # a one-class distance far beyond anything normal
    with torch.inference_mode():
        assert (float(fusion(raw, very_good, clean_patches)) > 0.99) is alarm


def _small_defect_scores(
    tmp_path: Path,
    imaging,
    runs: dict[str, dict[str, object]],  # type: ignore[no-untyped-def]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Large 192 px images with a 10 px defect, a model per run of TrainConfig overrides at a 64 px
    input: (good scores, defect scores) per run."""
    import cv2

    from pipeline.train import TrainConfig, train_model

    root = tmp_path / "bulk_ore"
    rng = np.random.default_rng(3)
    for i in range(14):
        path = root / "train" / "good" / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), imaging.texture(rng, 192)[:, :, ::-1])
    goods = [imaging.texture(rng, 192) for _ in range(6)]
    defects = []
    for _ in range(6):
        img = imaging.texture(rng, 192)
        y, x = (int(v) for v in rng.integers(30, 160, 2))
        img[y : y + 10, x : x + 10] = (40, 110, 250)
        defects.append(img)
    scores = {}
    for name, overrides in runs.items():
        config = TrainConfig(image_size=64, coreset_ratio=0.25, seed=0, **overrides)  # type: ignore[arg-type]
        pred = load_model(train_model(root, tmp_path / name, config=config).out_dir)
        preds = pred.predict(goods + defects)
        s = np.array([p.score for p in preds])
        scores[name] = (s[:6], s[6:])
        assert preds[-1].anomaly_map.shape == (192, 192)
    return scores


@pytest.mark.slow
def test_tiling_finds_a_small_defect_that_resizing_misses(tmp_path: Path, imaging) -> None:  # type: ignore[no-untyped-def]
    """With a 64 px input only the tiled model sees the 10 px defect (the fine-scale bank, which
    sees it even resized, is off here to isolate tiling)."""
    scores = _small_defect_scores(
        tmp_path,
        imaging,
        {
            "resized": {"fine_scale": "off"},
            "tiled": {"fine_scale": "off", "tile_size": 64, "tile_overlap": 16},
        },
    )
    good, bad = scores["tiled"]
    assert min(bad) > max(good)
    good, bad = scores["resized"]
    assert min(bad) <= max(good)


@pytest.mark.slow
def test_the_fine_scale_bank_finds_a_small_defect_the_main_bank_misses(tmp_path: Path, imaging) -> None:  # type: ignore[no-untyped-def]
    """Resized to a 64 px input the defect is 3 px: below what stride-8/16 features resolve, not
    below what the stride-4 fine-scale bank does."""
    scores = _small_defect_scores(
        tmp_path, imaging, {"main": {"fine_scale": "off"}, "fine": {"fine_scale": "on"}}
    )
    good, bad = scores["fine"]
    assert min(bad) > max(good)
    good, bad = scores["main"]
    assert min(bad) <= max(good)


def _reference_smoothing(dist: torch.Tensor, size: int, kernel: torch.Tensor) -> torch.Tensor:
    """The chain that Detector.smooth_map folds into two matmuls, op by op."""
    m = F.interpolate(dist.unsqueeze(1), size=(size, size), mode="bilinear", align_corners=False)
    r = (kernel.numel() - 1) // 2
    m = F.pad(m, (r, r, r, r), mode="replicate")
    m = F.conv2d(F.conv2d(m, kernel.view(1, 1, 1, -1)), kernel.view(1, 1, -1, 1))
    return m.squeeze(1)


@pytest.mark.parametrize(
    ("size", "grid"),
    [(256, (32, 32)), (224, (28, 28)), (64, (8, 8)), (96, (12, 9)), (32, (1, 1)), (40, (5, 5))],
)
def test_smoothing_by_matmul_equals_upsample_pad_and_blur(size: int, grid: tuple[int, int]) -> None:
    config = DetectorConfig(
        backbone="lite0", input_size=size, mean=(0.5,) * 3, std=(0.5,) * 3, proj_dim=0, bank_size=1,
        class_names=("good", "anomalous"),
    )  # fmt: skip
    det = build_detector(config)
    dist = torch.rand(2, *grid, generator=torch.Generator().manual_seed(size)) * 4.0
    want = _reference_smoothing(dist, size, det.blur)
    have = det.smooth_map(dist)
    assert have.shape == (2, size, size)
    assert float((have - want).abs().max()) <= 1e-5 * float(want.abs().max())


def _with_grey_offsets(predictor: ArtifactPredictor, offsets: tuple[float, float, float]):  # type: ignore[no-untyped-def]
    import dataclasses

    det = predictor.detector
    out = build_detector(dataclasses.replace(det.config, grey_offsets=offsets, co_located=False))
    out.load_state_dict(det.state_dict())
    return out.eval()


def _colour_and_grey_views(predictor: ArtifactPredictor, imaging) -> torch.Tensor:  # type: ignore[no-untyped-def]
    img = imaging.texture(np.random.default_rng(5))
    grey = np.repeat(img.mean(axis=2, keepdims=True).round().astype(np.uint8), 3, axis=2)
    return torch.cat([predictor.scorer.views(img)[0], predictor.scorer.views(grey)[0]])


def test_grey_views_are_those_whose_channels_are_equal(predictor, imaging) -> None:  # type: ignore[no-untyped-def]
    x = _colour_and_grey_views(predictor, imaging)
    assert predictor.detector.grey_views(x).tolist() == [0.0, 1.0]


def test_grey_offsets_move_grey_views_only(predictor, imaging) -> None:  # type: ignore[no-untyped-def]
    x = _colour_and_grey_views(predictor, imaging)
    with torch.inference_mode():
        plain = _with_grey_offsets(predictor, (0.0, 0.0, 0.0)).raw(x)
        moved = _with_grey_offsets(predictor, (0.3, 0.5, -0.7)).raw(x)
    for a, b in zip(plain, moved, strict=True):  # the colour view passes unchanged
        assert torch.equal(a[0], b[0])
    factor = float(np.exp(0.3))
    torch.testing.assert_close(moved.score_raw[1], plain.score_raw[1] * factor)
    torch.testing.assert_close(moved.map_raw[1], plain.map_raw[1] * factor)
    log_odds = Fusion.head_log_odds(moved.type_logits) - Fusion.head_log_odds(plain.type_logits)
    assert float(log_odds[1]) == pytest.approx(0.5, abs=1e-5)
    assert float(moved.patch_score[1] - plain.patch_score[1]) == pytest.approx(-0.7, abs=1e-5)
    torch.testing.assert_close(moved.patch_map[1], plain.patch_map[1] - 0.7)


def test_cards_before_grey_offsets_load_without_them(predictor) -> None:  # type: ignore[no-untyped-def]
    data = predictor.detector.config.to_dict()
    del data["grey_offsets"]
    assert DetectorConfig.from_dict(data).grey_offsets == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="grey_offsets must be 3 finite numbers"):
        DetectorConfig.from_dict({**data, "grey_offsets": [0.0, float("nan"), 0.0]})


def test_cards_before_pool_sizes_load_with_every_map_pooled(predictor) -> None:  # type: ignore[no-untyped-def]
    data = predictor.detector.config.to_dict()
    del data["pool_sizes"]
    config = DetectorConfig.from_dict(data)
    assert config.pool_sizes == ()
    assert build_detector(config).embedder.pool_sizes == (3, 3)
    assert DetectorConfig.from_dict({**data, "pool_sizes": [3, 1]}).pool_sizes == (3, 1)
    with pytest.raises(ValueError, match=r"pool_sizes must be odd sizes >= 1; got \(3, 2\)"):
        DetectorConfig.from_dict({**data, "pool_sizes": [3, 2]})
