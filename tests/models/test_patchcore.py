"""The memory bank's nearest-neighbour distance: exact near zero, whatever the feature norm or batch."""

from __future__ import annotations

import pytest
import torch

from models.patchcore import MemoryBank


def _bank(rows: int, dim: int, scale: float, seed: int) -> torch.Tensor:
    # non-negative like post-ReLU features, so |q|^2 and 2 q.b are large and nearly cancel
    return torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed)).abs() * scale


@pytest.mark.parametrize("scale", [1.0, 10.0, 100.0])
@pytest.mark.parametrize("chunk", [64, 4096])
def test_a_query_identical_to_a_bank_row_is_at_distance_zero(scale: float, chunk: int) -> None:
    bank = _bank(500, 152, scale, seed=0)
    got = MemoryBank(bank, chunk=chunk)(bank[:64].clone()[None])
    assert float(got.max()) == 0.0


@pytest.mark.parametrize("scale", [1.0, 100.0])
@pytest.mark.parametrize("chunk", [64, 4096])
def test_near_duplicates_get_their_exact_distance(scale: float, chunk: int) -> None:
    bank = _bank(500, 152, scale, seed=1)
    step = torch.randn(64, 152, generator=torch.Generator().manual_seed(2)) * 1e-3
    query = bank[100:164] + step
    got = MemoryBank(bank, chunk=chunk)(query[None])[0].double()
    want = torch.cdist(query.double(), bank.double()).min(dim=1).values
    assert torch.allclose(got, want, rtol=1e-4, atol=0.0)


def test_a_patch_scores_the_same_alone_and_in_any_batch() -> None:
    bank = _bank(300, 152, 10.0, seed=3)
    patch = bank[7:8] + 0.01
    others = _bank(5 * 40, 152, 10.0, seed=4).view(5, 40, 152)
    module = MemoryBank(bank, chunk=64)
    alone = module(patch[None])[0, 0]
    batched = torch.cat([others, torch.cat([patch, others[0, 1:]])[None]])
    assert torch.equal(module(batched)[5, 0], alone)


@pytest.mark.parametrize("where", [0, 70, 150])
def test_the_nearest_row_is_found_in_whichever_chunk_holds_it(where: int) -> None:
    far = _bank(160, 8, 5.0, seed=6) + 10.0
    row = _bank(1, 8, 1.0, seed=5)
    bank = torch.cat([far[:where], row, far[where:]])
    got = MemoryBank(bank, chunk=64)((row + 0.5)[None])
    assert torch.allclose(got, torch.full((1, 1), 0.5 * 8**0.5), rtol=1e-6)
