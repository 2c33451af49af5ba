"""The fine-scale memory bank: its affine map onto the main bank's scale, and how distances combine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.decode import decode_image
from models.artifact import load_model
from models.patchcore import FineBank, MemoryBank, fit_fine_scale


def test_fit_gives_fine_scores_the_main_scores_mean_and_spread() -> None:
    main = torch.tensor([10.0, 12.0, 14.0])
    fine = torch.tensor([1.0, 2.0, 3.0])
    scale, shift = fit_fine_scale(main, fine)
    assert (scale, shift) == pytest.approx((2.0, 8.0))
    mapped = fine * scale + shift
    assert torch.allclose(mapped, main)


def test_constant_fine_scores_are_shifted_not_blown_up() -> None:
    scale, shift = fit_fine_scale(torch.tensor([10.0, 12.0]), torch.tensor([3.0, 3.0]))
    assert (scale, shift) == pytest.approx((1.0, 8.0))


@pytest.mark.parametrize(
    ("main", "fine"),
    [([1.0], [1.0]), ([1.0, 2.0], [1.0, 2.0, 3.0]), ([], [])],
)
def test_fit_refuses_too_few_or_mismatched_scores(main: list[float], fine: list[float]) -> None:
    with pytest.raises(ValueError, match="need two equal"):
        fit_fine_scale(torch.tensor(main), torch.tensor(fine))


def test_fine_bank_distances_are_mapped_affinely() -> None:
    bank = FineBank(MemoryBank(torch.tensor([[0.0, 0.0], [3.0, 4.0]])))
    bank.scale.fill_(2.0)
    bank.shift.fill_(1.0)
    query = torch.tensor([[[0.0, 0.0], [6.0, 8.0]]])  # distances 0 and 5
    assert torch.allclose(bank(query), torch.tensor([[1.0, 11.0]]))


def test_a_patch_is_as_far_as_the_farther_of_its_two_banks(
    tiny_model_dir: Path, tiny_data_root: Path
) -> None:
    det = load_model(tiny_model_dir, runtime="torch").detector
    assert det.config.fine_scale and det.fine is not None
    paths = sorted((tiny_data_root / "test").glob("*/*.png"))
    pixels = np.stack([decode_image(p).pixels for p in paths]).astype(np.float32) / 255.0
    x = (torch.from_numpy(pixels).permute(0, 3, 1, 2) - 0.5) / 0.5  # Lite0: mean = std = 0.5
    with torch.inference_mode():
        patches = det.embed(x)[0]
    split = det.embedder.out_dim
    q = patches.flatten(2).transpose(1, 2)
    with torch.inference_mode():
        main, fine = det.bank(q[:, :, :split]), det.fine(q[:, :, split:])
        got = det.distances(patches).flatten(1)
    assert torch.equal(got, torch.maximum(main, fine))
    assert bool((fine > main).any()) and bool((main > fine).any())  # both scales speak somewhere
