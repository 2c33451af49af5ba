"""Patch embeddings: the neighbourhood average (3x3 by default, per map when asked), at the border and
inside, and the concatenation."""

from __future__ import annotations

import pytest
import torch

from models.features import PatchEmbedder


def _constant_maps() -> list[torch.Tensor]:
    """A (1, 2, 8, 8) map of 1.0 and a (1, 3, 4, 4) map of 2.0, shallowest first."""
    return [torch.ones(1, 2, 8, 8), torch.full((1, 3, 4, 4), 2.0)]


@pytest.mark.parametrize(
    ("zero_padded", "corner", "edge"),
    [
        (True, 4 / 9, 6 / 9),  # the zeros beyond the edge count: border patches shrink
        (False, 1.0, 1.0),  # only in-map neighbours: a constant map stays constant
    ],
)
def test_border_patches_of_a_constant_map(zero_padded: bool, corner: float, edge: float) -> None:
    patches, pooled = PatchEmbedder((2, 3), zero_padded_pooling=zero_padded)(_constant_maps())
    assert patches.shape == (1, 5, 8, 8) and pooled.shape == (1, 5)
    shallow = patches[0, 0]
    assert float(shallow[0, 0]) == pytest.approx(corner)
    assert float(shallow[0, 4]) == pytest.approx(edge)
    assert float(shallow[4, 4]) == pytest.approx(1.0)  # interior: nine in-map neighbours either way
    # the deeper map, upsampled to the shallow grid: interior cells keep its value
    assert float(patches[0, 2, 3, 3]) == pytest.approx(2.0)


def test_zero_padded_pooling_is_the_default_and_changes_only_the_border() -> None:
    feats = [torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)]
    new, _ = PatchEmbedder((4, 6))(feats)
    old, _ = PatchEmbedder((4, 6), zero_padded_pooling=False)(feats)
    shallow_new, shallow_old = new[:, :4], old[:, :4]
    torch.testing.assert_close(shallow_new[:, :, 1:-1, 1:-1], shallow_old[:, :, 1:-1, 1:-1])
    assert not torch.allclose(shallow_new[:, :, 0], shallow_old[:, :, 0])


def test_a_pool_size_of_one_reads_the_map_cell_by_cell() -> None:
    feats = [torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)]
    sharp, pooled_sharp = PatchEmbedder((4, 6), pool_sizes=(3, 1))(feats)
    default, pooled_default = PatchEmbedder((4, 6))(feats)
    explicit, _ = PatchEmbedder((4, 6), pool_sizes=(3, 3))(feats)
    torch.testing.assert_close(default, explicit)  # empty: 3 for every map
    torch.testing.assert_close(sharp[:, :4], default[:, :4])  # the shallow map keeps its 3x3 average
    upsampled = torch.nn.functional.interpolate(feats[1], size=(8, 8), mode="bilinear", align_corners=False)
    torch.testing.assert_close(sharp[:, 4:], upsampled)
    assert not torch.allclose(sharp[:, 4:], default[:, 4:])
    assert pooled_sharp.shape == pooled_default.shape == (2, 10)


@pytest.mark.parametrize(
    "pool_sizes",
    [
        (3,),  # one size for two maps
        (3, 1, 1),  # three sizes for two maps
        (3, 2),  # even: no centred neighbourhood
        (3, 0),
    ],
)
def test_pool_sizes_must_be_odd_and_one_per_map(pool_sizes: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=r"pool_sizes .* one odd size >= 1 per feature map \(2 maps\)"):
        PatchEmbedder((4, 6), pool_sizes=pool_sizes)
