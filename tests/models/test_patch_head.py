"""The patch head: per-patch logits of documented shape, top-k image score, a fit that separates."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from models.artifact import load_model
from models.fusion import OFF
from models.patch_head import FitStopped, PatchHead, fit_patch_head
from pipeline.train import MIN_PATCH_POSITIVES


def _clusters(n: int = 400, d: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Normal patches around 0, defect patches shifted along the first two axes."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = (torch.arange(n) % 5 == 0).float()  # 20 % defective
    x[y == 1, :2] += 3.0
    return x, y


def test_logits_and_score_have_documented_shapes() -> None:
    head = PatchHead(12, 8, topk=3)
    logits = head.logits(torch.randn(2, 12, 4, 5))
    assert logits.shape == (2, 4, 5)
    assert head(torch.randn(2, 12, 4, 5)).shape == (2,)


def test_image_score_is_the_mean_of_the_topk_patch_logits() -> None:
    head = PatchHead(1, 1, topk=3)
    logits = torch.tensor([[[1.0, 9.0], [4.0, 2.0]], [[0.0, 0.0], [0.0, 6.0]]])
    assert head.image_score(logits).tolist() == pytest.approx([(9 + 4 + 2) / 3, 2.0])
    assert PatchHead(1, 1, topk=10).image_score(logits).tolist() == pytest.approx([4.0, 1.5])


def test_row_logits_are_the_per_patch_logits() -> None:
    torch.manual_seed(0)
    head = PatchHead(12, 8)
    head.in_mean.normal_()
    head.in_std.uniform_(0.5, 2.0)
    rows = torch.randn(30, 12)
    grid = rows.t().reshape(1, 12, 5, 6)
    torch.testing.assert_close(head.row_logits(rows), head.logits(grid).reshape(-1))


@pytest.mark.parametrize("negative_share", [1.0, 0.25])
def test_fit_separates_defect_patches_from_normal_ones(negative_share: float) -> None:
    x, y = _clusters()
    head = fit_patch_head(x, y, hidden=16, seed=0, negative_share=negative_share)
    with torch.no_grad():
        logits = head.logits(x.t().reshape(1, x.shape[1], 1, -1)).reshape(-1)
    accuracy = float(((logits > 0).float() == y).float().mean())
    assert accuracy > 0.95
    # a fresh test draw from the same clusters is separated too
    xt, yt = _clusters(seed=1)
    with torch.no_grad():
        lt = head.logits(xt.t().reshape(1, xt.shape[1], 1, -1)).reshape(-1)
    assert float(lt[yt == 1].mean()) > float(lt[yt == 0].mean()) + 2.0


@pytest.mark.parametrize("negative_share", [1.0, 0.25])
def test_fit_is_deterministic_for_a_seed(negative_share: float) -> None:
    x, y = _clusters()
    a, b = (fit_patch_head(x, y, hidden=8, seed=3, negative_share=negative_share) for _ in range(2))
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name


def test_a_seeded_head_draws_as_the_seeded_global_generator_and_leaves_it_alone() -> None:
    # The untrained head a model saves, and the fits side by side in threads, draw from their own
    # generator: the same weights as torch.manual_seed(seed) gave before, and the global state untouched.
    torch.manual_seed(7)
    expected = PatchHead(12, 4, topk=2).state_dict()
    before = torch.random.get_rng_state()
    head = PatchHead(12, 4, topk=2, generator=torch.Generator().manual_seed(7))
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(head.state_dict()[name], value) for name, value in expected.items())


def test_a_fit_told_to_stop_gives_no_head() -> None:
    # Checked before each step: a fit in a pool's thread ends at its next step, not after all of them.
    x, y = _clusters()
    stop = threading.Event()
    stop.set()
    with pytest.raises(FitStopped, match="^patch-head fit stopped at step 0 of 300$"):
        fit_patch_head(x, y, hidden=8, stop=stop)


def test_a_share_per_step_still_learns_a_rare_normal_pattern() -> None:
    # defects stand out along axis 0; 3 % of the normals do too but differ along axis 1 (a barcode's
    # edge beside the film, say). Each step sees a tenth of the normals, a handful of the rare ones.
    g = torch.Generator().manual_seed(0)
    normals = torch.randn(2000, 6, generator=g)
    normals[:60, 0] += 3.0
    normals[:60, 1] -= 5.0
    defects = torch.randn(200, 6, generator=g)
    defects[:, 0] += 3.0
    x, y = torch.cat([defects, normals]), torch.cat([torch.ones(200), torch.zeros(2000)])
    head = fit_patch_head(x, y, hidden=16, seed=0, negative_share=0.1)
    # a head that only ever saw a common tenth of the normals, for contrast
    common = torch.cat([defects, normals[60:260]])
    blind = fit_patch_head(common, torch.cat([torch.ones(200), torch.zeros(200)]), hidden=16, seed=0)
    with torch.no_grad():
        rare = float(head.row_logits(normals[:60]).mean())
        assert rare < 0 < float(head.row_logits(defects).mean())
        assert float(blind.row_logits(normals[:60]).mean()) > 0  # it calls the rare pattern a defect


@pytest.mark.parametrize("share", [0.0, -0.5, 1.5])
def test_fit_refuses_a_share_outside_0_1(share: float) -> None:
    x, y = _clusters()
    with pytest.raises(ValueError, match=f"negative_share {share} must be in"):
        fit_patch_head(x, y, hidden=4, negative_share=share)


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (torch.zeros(10, 4), torch.zeros(10), "need defect and normal patches; got 0 of 10"),
        (torch.zeros(10, 4), torch.ones(10), "got 10 of 10 defective"),
        (torch.zeros(10), torch.zeros(10), r"need x \(N, D\) and y \(N,\)"),
        (torch.zeros(10, 4), torch.zeros(9), r"got \(10, 4\) and \(9,\)"),
    ],
)
def test_fit_refuses_unusable_data(x: torch.Tensor, y: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fit_patch_head(x, y, hidden=4)


@pytest.mark.parametrize(("args"), [(0, 4, 1), (4, 0, 1), (4, 4, 0)])
def test_head_refuses_empty_widths(args: tuple[int, int, int]) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        PatchHead(args[0], args[1], topk=args[2])


def test_without_masks_the_patch_head_learns_from_pseudo_anomalies_and_the_gate_decides(
    tiny_model_dir: Path,
) -> None:
    card = json.loads((tiny_model_dir / "model.json").read_text())
    trained = card["training"]["patch_head"]
    assert trained["labelled_masks"] == 0 and trained["pseudo_anomalies"] > 0
    # 64 px images give few defect patches: trained only above the least count, and said so
    assert trained["trained"] is (trained["defect_patches"] >= MIN_PATCH_POSITIVES)
    if not trained["trained"]:
        assert "not trained" in card["validation"]["patch_head_gate"]
    fusion = load_model(tiny_model_dir, runtime="torch").detector.fusion
    off = (float(fusion.slope[2]), float(fusion.bias[2])) == (0.0, -30.0)
    assert off is not card["validation"]["patch_head_in_fusion"]


def test_the_map_shows_the_patch_head_only_when_it_is_fused(tiny_model_dir: Path) -> None:
    det = load_model(tiny_model_dir, runtime="torch").detector
    map_raw = det.map_lo + det.map_span * torch.linspace(0.0, 0.5, 64 * 64).reshape(1, 64, 64)
    patch_map = torch.full((1, 64, 64), -8.0)
    patch_map[0, 10:20, 10:20] = 40.0  # the patch head is sure of a defect here
    with torch.no_grad():
        det.fusion.slope[2], det.fusion.bias[2] = OFF
    one_class = det.normalise_map(map_raw, torch.full_like(patch_map, -1e4))
    # Off in the fusion (validation did not support it): the map is the one-class map, defect or not.
    assert torch.allclose(det.normalise_map(map_raw, patch_map), one_class, atol=1e-6)
    with torch.no_grad():
        det.fusion.slope[2], det.fusion.bias[2] = 1.0, 0.0
    fused = det.normalise_map(map_raw, patch_map)
    assert float(fused[0, 10:20, 10:20].min()) > 0.99
    assert torch.allclose(fused[0, 30:, 30:], one_class[0, 30:, 30:], atol=1e-3)
