"""Backbone fine-tuning on defect masks: what it trains, what it leaves alone, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from models.artifact import load_model
from models.detector import DetectorConfig, build_detector
from models.registry import create_model
from models.tiling import TilingConfig
from pipeline.cli import app, run
from pipeline.fine_tuning import FineTuneConfig, FineTuneReport, fine_tune_backbone
from pipeline.train import TrainConfig

SIZE = 64
WHOLE = TilingConfig(0, 0)


def _texture(rng: np.random.Generator) -> np.ndarray:
    """(S, S, 3) float32 RGB in [0, 1]: smooth brown noise."""
    small = rng.random((8, 8, 3)).astype(np.float32)
    base = cv2.resize(small, (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    return np.clip(np.array([0.5, 0.35, 0.25], np.float32) * (0.7 + 0.5 * base), 0, 1)


def _with_bar(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A blue bar somewhere in ``img``, and its (S, S) 0/1 mask."""
    out, mask = img.copy(), np.zeros(img.shape[:2], np.float32)
    y, x = (int(v) for v in rng.integers(12, 52, 2))
    cv2.rectangle(out, (x - 10, y - 4), (x + 10, y + 4), (0.1, 0.3, 0.9), -1)
    cv2.rectangle(mask, (x - 10, y - 4), (x + 10, y + 4), 1.0, -1)
    return out, mask


def _detector():  # type: ignore[no-untyped-def]
    backbone = create_model("lite0")
    config = DetectorConfig(
        backbone="lite0",
        input_size=SIZE,
        mean=tuple(backbone.spec.mean),
        std=tuple(backbone.spec.std),
        proj_dim=0,
        bank_size=1,
        class_names=("good", "anomalous"),
        pad=16,
    )
    return build_detector(config, backbone=backbone)


def _data(seed: int = 0) -> tuple[list[np.ndarray], list[tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    normals = [_texture(rng) for _ in range(6)]
    masked = [_with_bar(_texture(rng), rng) for _ in range(4)]
    return normals, masked


def _tune(det, steps: int, seed: int = 0):  # type: ignore[no-untyped-def]
    normals, masked = _data()
    torch.set_num_threads(1)
    return fine_tune_backbone(
        det,
        normals,
        masked,
        config=FineTuneConfig(steps=steps, batch_size=4),
        tiling=WHOLE,
        rng=np.random.default_rng(seed),
        seed=seed,
    )


def test_fine_tuning_trains_the_feature_blocks_and_nothing_else() -> None:
    det = _detector()
    before = {k: v.clone() for k, v in det.state_dict().items()}
    calls: list[tuple[str, int, int]] = []
    normals, masked = _data()
    tuned = fine_tune_backbone(
        det,
        normals,
        masked,
        config=FineTuneConfig(steps=3, batch_size=4),
        tiling=WHOLE,
        rng=np.random.default_rng(0),
        progress=lambda *a: calls.append(a),
    )
    report = tuned.report
    after = det.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    deepest = max(det.backbone.feature_layers)
    assert any(k.startswith("backbone.net.blocks.0.") for k in changed)
    assert any(k.startswith(f"backbone.net.blocks.{deepest}.") for k in changed)
    # blocks past the deepest feature layer feed nothing: untouched
    assert not any(k.startswith(f"backbone.net.blocks.{deepest + 1}.") for k in changed)
    # batch-norm statistics stay frozen; only weights move
    assert not any(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in changed)
    # the bank, heads and fusion are not part of it
    assert all(k.startswith("backbone.") for k in changed)
    assert not det.training
    assert calls == [("fine-tune backbone", i, 3) for i in (1, 2, 3)]
    assert (report.steps, report.normals, report.masked, report.batch_size) == (3, 6, 4, 4)
    assert report.averaged_steps == 2  # the default averages the last half
    assert np.isfinite(report.first_loss) and np.isfinite(report.last_loss) and report.seconds > 0


def test_fine_tuning_is_reproducible_with_the_same_seed() -> None:
    a, b = _detector(), _detector()
    _tune(a, 2, seed=5)
    _tune(b, 2, seed=5)
    for (k, va), vb in zip(a.backbone.state_dict().items(), b.backbone.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


@pytest.mark.slow
def test_fine_tuning_learns_the_defect() -> None:
    """The loss of the per-patch defect classifier falls well below where it starts."""
    det = _detector()
    tuned = _tune(det, 40)
    assert tuned.report.last_loss < 0.5 * tuned.report.first_loss
    # the classifier it hands back as a patch head scores unseen defects above unseen normals
    rng = np.random.default_rng(99)
    normals = [_texture(rng) for _ in range(4)]
    defects = [_with_bar(_texture(rng), rng)[0] for _ in range(4)]

    def scores(images: list[np.ndarray]) -> list[float]:
        x = (torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) - 0.5) / 0.5
        with torch.inference_mode():
            return tuned.patch_head(det.embed(x)[0]).tolist()

    assert min(scores(defects)) > max(scores(normals))


def test_weight_averaging_leaves_the_mean_of_the_last_steps_weights() -> None:
    det = _detector()
    normals, masked = _data()
    seen: list[dict[str, torch.Tensor]] = []

    def snapshot(stage: str, done: int, total: int) -> None:
        seen.append({k: p.detach().clone() for k, p in det.backbone.named_parameters()})

    tuned = fine_tune_backbone(
        det,
        normals,
        masked,
        config=FineTuneConfig(steps=4, batch_size=4, average_last=0.5),
        tiling=WHOLE,
        rng=np.random.default_rng(0),
        progress=snapshot,
    )
    moved = 0
    for k, p in det.backbone.named_parameters():
        torch.testing.assert_close(p.detach(), (seen[2][k] + seen[3][k]) / 2)
        moved += not torch.equal(p.detach(), seen[3][k])
    assert moved  # the average, not the last step's weights
    assert tuned.report.averaged_steps == 2


def _views_seen(
    masked: list[tuple[np.ndarray, np.ndarray]], transplant: float
) -> tuple[list[torch.Tensor], FineTuneReport]:
    """Every view fine-tuning fed the backbone, (3, S, S) normalised, with ``masked`` as the defects,
    and the run's report."""
    det = _detector()
    seen: list[torch.Tensor] = []
    embed = det.embed

    def spy(images: torch.Tensor):  # type: ignore[no-untyped-def]
        seen.extend(images.detach().clone())
        return embed(images)

    det.embed = spy  # type: ignore[method-assign]
    normals, _ = _data()
    tuned = fine_tune_backbone(
        det,
        normals,
        masked,
        config=FineTuneConfig(steps=3, batch_size=4, transplant=transplant),
        tiling=WHOLE,
        rng=np.random.default_rng(0),
    )
    return seen, tuned.report


def _on_backdrop(value: tuple[float, float, float]) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(2)
    return [_with_bar(np.broadcast_to(np.float32(value), (SIZE, SIZE, 3)).copy(), rng) for _ in range(3)]


@pytest.mark.parametrize(("transplant", "own_views"), [(0.0, 6), (1.0, 0)])
def test_transplant_moves_the_labelled_defects_into_normals(transplant: float, own_views: int) -> None:
    """Defects on a green backdrop: their own views are mostly green, transplants into the brown
    normals only where the defect and its fringe are (2 of each batch of 4 are defect views)."""
    seen, report = _views_seen(_on_backdrop((0.1, 0.7, 0.1)), transplant)
    green = [float(((v[1] - v[0]) > 1.0).float().mean()) for v in seen]
    assert len(seen) == 12
    assert report.transplanted == 6 - own_views
    assert sum(g > 0.5 for g in green) == own_views
    if transplant:
        assert sum(0 < g < 0.5 for g in green) == 6  # the defect arrived with a little of its backdrop


def test_transplant_keeps_grey_defects_out_of_colour_normals() -> None:
    """The normals are colour photos, the defects grey (an X-ray's): no host, so their own views."""
    grey_defects = [
        (np.repeat(img.mean(-1, keepdims=True), 3, -1), m) for img, m in _on_backdrop((0.3, 0.3, 0.3))
    ]
    seen, report = _views_seen(grey_defects, transplant=1.0)
    grey = [bool(torch.equal(v[0], v[1]) and torch.equal(v[1], v[2])) for v in seen]
    assert sum(grey) == 6 and report.transplanted == 0


def test_the_classifier_becomes_an_equivalent_patch_head() -> None:
    from pipeline.fine_tuning import _Classifier

    torch.manual_seed(0)
    clf = _Classifier(6, 4)
    x = torch.randn(2, 6, 5, 5) * 3 + 1
    head = clf.as_patch_head(topk=3)
    assert head.topk == 3 and not head.training
    with torch.no_grad():
        torch.testing.assert_close(head.logits(x), clf(x))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("steps", -1, "fine-tune steps -1 must be >= 0"),
        ("lr", 0.0, "fine-tune learning rates must be > 0"),
        ("head_lr", -1.0, "fine-tune learning rates must be > 0"),
        ("batch_size", 1, "fine-tune batch_size 1 must be >= 2"),
        ("hidden", 0, "fine-tune hidden 0 must be >= 1"),
        ("max_pos_weight", 0.5, "fine-tune max_pos_weight 0.5 must be >= 1"),
        ("average_last", 1.0, r"fine-tune average_last 1.0 must be in \[0, 1\)"),
        ("average_last", -0.1, r"fine-tune average_last -0.1 must be in \[0, 1\)"),
        ("transplant", 1.5, r"fine-tune transplant 1.5 must be in \[0, 1\]"),
        ("transplant", -0.5, r"fine-tune transplant -0.5 must be in \[0, 1\]"),
    ],
)
def test_config_names_the_bad_value(field: str, value: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FineTuneConfig(**{field: value})  # type: ignore[arg-type]


def test_refuses_no_normals_and_a_mask_of_the_wrong_size() -> None:
    normals, masked = _data()
    kw = {"config": FineTuneConfig(steps=1), "tiling": WHOLE, "rng": np.random.default_rng(0)}
    with pytest.raises(ValueError, match="at least one normal"):
        fine_tune_backbone(_detector(), [], masked, **kw)  # type: ignore[arg-type]
    bad = [(masked[0][0], np.zeros((SIZE, SIZE // 2), np.float32))]
    with pytest.raises(
        ValueError, match=r"masked image 0: mask shape \(64, 32\) differs from image \(64, 64\)"
    ):
        fine_tune_backbone(_detector(), normals, bad, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("fine_tune_steps", -5, "fine_tune_steps -5 must be >= 0"),
        ("fine_tune_lr", 0.0, "fine_tune_lr 0.0 must be > 0"),
    ],
)
def test_train_config_names_bad_fine_tune_values(field: str, value: object, match: str) -> None:
    from datasets.errors import InputError

    with pytest.raises(InputError, match=match):
        TrainConfig(**{field: value})  # type: ignore[arg-type]


def test_train_cli_fine_tunes_and_the_artifact_keeps_the_tuned_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "240")  # the summary row on one line
    rng = np.random.default_rng(1)
    root = tmp_path / "bulk_ore"
    for i in range(8):
        img, mask = _with_bar(_texture(rng), rng) if i < 4 else (_texture(rng), None)
        folder = "plastic" if mask is not None else "good"
        path = root / "train" / folder / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), (img[:, :, ::-1] * 255).round().astype(np.uint8))
        if mask is not None:
            (root / "ground_truth" / "plastic").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(
                str(root / "ground_truth" / "plastic" / f"{i:03d}_mask.png"), (mask * 255).astype(np.uint8)
            )
    for i in range(8, 14):
        path = root / "train" / "good" / f"{i:03d}.png"
        cv2.imwrite(str(path), (_texture(rng)[:, :, ::-1] * 255).round().astype(np.uint8))
    out = tmp_path / "m"
    args = ["train", "--data", str(root), "--out", str(out), "--image-size", str(SIZE), "--threads", "1"]
    code = run(app, [*args, "--coreset-ratio", "0.5", "--fine-tune-steps", "2"])
    printed = capsys.readouterr().out
    assert code == 0
    card = json.loads((out / "model.json").read_text())
    tuned = card["training"]["fine_tune"]
    assert card["backbone"]["fine_tuned"] is True
    # 10 normals and 4 labelled images: 2 + 1 go to validation and are never trained on
    assert (tuned["steps"], tuned["normals"], tuned["masked"], tuned["averaged_steps"]) == (2, 8, 3, 1)
    assert "training split only" in tuned["data"]
    assert card["training"]["patch_head"] == {
        "trained": True,
        "source": "trained with the backbone (fine-tuning)",
        "labelled_masks": 3,
    }
    assert "backbone fine-tuning" in printed
    # the tuned backbone saw every training image: validation alone judges the type head
    assert card["validation"]["head_evidence"]["out_of_fold_training_images"] == 0
    # a fine-tuned model adds its signals' evidence (the default fusion), in the card and the artifact
    assert card["validation"]["fusion_rule"] == "sum of the calibrated log-odds"
    assert card["detector"]["fusion"] == "sum"
    assert "sum of the calibrated log-odds" in printed
    assert "2 steps on 8 normals and 3 masked anomalies, weights averaged over the last 1" in printed
    assert 0 <= tuned["transplanted"] <= 8  # of 2 x 4 defect views, half transplanted on average
    assert f"{tuned['transplanted']} defect views transplanted into normals" in printed
    stored = load_model(out, runtime="torch").detector.backbone.state_dict()
    pretrained = create_model("lite0").state_dict()
    assert any(not torch.equal(stored[k], pretrained[k]) for k in pretrained)
