"""Coreset selection: deterministic, covering, and (on real embeddings) as good as the full bank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from models.artifact import load_model
from models.coreset import greedy_coreset
from models.patchcore import MemoryBank, select_bank
from pipeline.metrics import image_auroc


def _clusters(n: int, dim: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(20, dim, generator=gen) * 5
    return centres[torch.randint(0, 20, (n,), generator=gen)] + torch.randn(n, dim, generator=gen)


@pytest.mark.parametrize(("n", "k", "max_steps"), [(500, 50, 256), (3000, 300, 16), (1000, 999, 64)])
def test_selection_is_deterministic_unique_and_sized(n: int, k: int, max_steps: int) -> None:
    x = _clusters(n, 24, seed=3)
    a = greedy_coreset(x, k, seed=7, max_steps=max_steps)
    b = greedy_coreset(x, k, seed=7, max_steps=max_steps)
    assert torch.equal(a, b)
    assert a.numel() == k
    assert a.unique().numel() == k
    assert int(a.min()) >= 0 and int(a.max()) < n


def test_different_seeds_pick_different_sets() -> None:
    x = _clusters(800, 16, seed=1)
    assert not torch.equal(
        greedy_coreset(x, 40, seed=1).sort().values, greedy_coreset(x, 40, seed=2).sort().values
    )


@pytest.mark.parametrize(("n", "max_steps"), [(601, 256), (301, 16), (33, 4), (1000, 64)])
def test_one_row_fewer_than_distinct_rows_gives_exactly_that_many(n: int, max_steps: int) -> None:
    # k = n - 1 leaves groups of unequal size, the last exhausted before its share of rounds
    x = torch.randn(n, 16, generator=torch.Generator().manual_seed(0))
    idx = greedy_coreset(x, n - 1, max_steps=max_steps)
    assert idx.numel() == n - 1
    assert idx.unique().numel() == n - 1


@pytest.mark.parametrize("seed", range(6))
def test_any_k_up_to_n_distinct_rows_gives_k_unique_rows(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(25):
        n = int(torch.randint(2, 400, (), generator=gen))
        k = int(torch.randint(1, n + 1, (), generator=gen))
        max_steps = int(torch.randint(1, 64, (), generator=gen))
        x = torch.randn(n, 6, generator=gen)
        idx = greedy_coreset(x, k, max_steps=max_steps, seed=seed)
        assert idx.numel() == k, (n, k, max_steps)
        assert idx.unique().numel() == k, (n, k, max_steps)
        assert int(idx.min()) >= 0 and int(idx.max()) < n


@pytest.mark.parametrize(("distinct", "k", "max_steps"), [(5, 50, 8), (40, 60, 8), (40, 60, 256), (3, 3, 8)])
def test_with_repeated_rows_a_short_selection_holds_every_distinct_row(
    distinct: int, k: int, max_steps: int
) -> None:
    values = torch.randn(distinct, 8, generator=torch.Generator().manual_seed(1))
    x = values.repeat(240 // distinct, 1)
    idx = greedy_coreset(x, k, max_steps=max_steps)
    assert idx.unique().numel() == idx.numel() <= k
    covered = (values[:, None] == x[idx][None]).all(dim=2).any(dim=1)
    assert idx.numel() == k or bool(covered.all())
    assert idx.numel() >= min(k, distinct)


def test_select_bank_has_the_documented_size_next_to_n() -> None:
    x = torch.randn(601, 16, generator=torch.Generator().manual_seed(0))
    bank = select_bank(x, ratio=600 / 601, max_bank=10**6)
    assert bank.shape == (600, 16)
    assert torch.unique(bank, dim=0).shape[0] == 600


def test_k_at_least_n_keeps_everything() -> None:
    assert torch.equal(greedy_coreset(torch.zeros(5, 3), 9), torch.arange(5))


@pytest.mark.parametrize("max_steps", [256, 8])  # one group, and many groups in parallel
def test_coreset_covers_better_than_a_random_subset(max_steps: int) -> None:
    # Low-dimensional data, where the coverage radius separates k-center from chance clearly.
    x = torch.randn(4000, 4, generator=torch.Generator().manual_seed(5))
    k = 200
    radius = {}
    for name, idx in {
        "coreset": greedy_coreset(x, k, seed=0, max_steps=max_steps),
        "random": torch.randperm(4000, generator=torch.Generator().manual_seed(0))[:k],
    }.items():
        radius[name] = float(MemoryBank(x[idx])(x[None]).max())
    assert radius["coreset"] < 0.8 * radius["random"]


def test_select_bank_respects_ratio_and_cap() -> None:
    x = _clusters(1000, 8, seed=2)
    assert select_bank(x, ratio=0.1, max_bank=10_000).shape == (100, 8)
    assert select_bank(x, ratio=0.5, max_bank=64).shape == (64, 8)
    assert torch.equal(select_bank(x, ratio=1.0, max_bank=10_000), x)
    with pytest.raises(ValueError, match="coreset ratio must be in"):
        select_bank(x, ratio=0.0, max_bank=10)


def test_chunked_distances_match_cdist() -> None:
    bank, query = _clusters(300, 12, seed=8), _clusters(50, 12, seed=9)
    got = MemoryBank(bank, chunk=64)(query.view(2, 25, 12))
    want = torch.cdist(query.double(), bank.double()).min(dim=1).values.view(2, 25)
    assert torch.allclose(got.double(), want, atol=1e-3)


def test_subsampled_bank_scores_like_the_full_bank(tiny_model_dir: Path, tiny_data_root: Path) -> None:
    """On the tiny model's real embeddings: a 10 % coreset bank ranks test images as the full bank does."""
    from datasets.decode import decode_image

    det = load_model(tiny_model_dir).detector
    cfg = det.config
    goods = sorted((tiny_data_root / "train" / "good").glob("*.png"))
    tests = sorted((tiny_data_root / "test").glob("*/*.png"))

    def embed(paths: list[Path]) -> torch.Tensor:
        x = np.stack([decode_image(p).pixels for p in paths]).astype(np.float32) / 255.0
        t = (
            torch.from_numpy(x).permute(0, 3, 1, 2) - torch.tensor(cfg.mean).view(1, 3, 1, 1)
        ) / torch.tensor(cfg.std).view(1, 3, 1, 1)
        with torch.inference_mode():
            return det.embed(t)[0][:, : det.embedder.out_dim]  # the main bank's channels

    bank_patches = embed(goods)
    flat = bank_patches.permute(0, 2, 3, 1).reshape(-1, bank_patches.shape[1])
    test_patches = embed(tests)
    labels = np.array([p.parent.name != "good" for p in tests])
    scores = {}
    for ratio in (1.0, 0.1):
        bank = MemoryBank(select_bank(flat, ratio=ratio, max_bank=100_000, seed=0))
        with torch.inference_mode():
            query = test_patches.flatten(2).transpose(1, 2)
            scores[ratio] = bank(query).max(dim=1).values.numpy()
    full, sub = image_auroc(scores[1.0], labels).value, image_auroc(scores[0.1], labels).value
    assert full is not None and sub is not None
    assert abs(full - sub) <= 0.005
    assert np.corrcoef(scores[1.0], scores[0.1])[0, 1] > 0.95
