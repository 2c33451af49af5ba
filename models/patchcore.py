"""PatchCore's memory bank and nearest-neighbour search (Roth et al., CVPR 2022).

The bank holds patch embeddings of normal images, reduced by :func:`models.coreset.greedy_coreset`.
A query patch's anomaly is its Euclidean distance to the nearest bank entry. The search is written
with matmuls (``|q|^2 - 2 q.b + |b|^2``) over fixed-size chunks of the bank, so it bounds memory, runs
fast on CPUs and exports to ONNX (the chunk count depends only on the bank size, fixed at fit time).
The matmuls only pick the nearest row: its distance is then taken directly, ``||q - b||``, because the
expanded form cancels two large terms and leaves a rounding floor that grows with the feature norm.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.coreset import greedy_coreset

__all__ = ["FineBank", "MemoryBank", "fit_fine_scale", "select_bank"]


def select_bank(
    patches: torch.Tensor, *, ratio: float, max_bank: int, seed: int = 0, proj_dim: int = 32
) -> torch.Tensor:
    """Reduce normal patch embeddings to a memory bank.

    Args:
        patches: (N, D) patch embeddings of normal training images.
        ratio: fraction of patches to keep (PatchCore's coreset ratio); 1.0 keeps all (up to the cap).
        max_bank: upper bound on the bank size, whatever the ratio.
        seed: coreset seed.

    Returns:
        (M, D) float32 bank, M = min(N, max(1, round(ratio * N)), max_bank).
    """
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"coreset ratio must be in (0, 1]; got {ratio}")
    n = patches.shape[0]
    k = min(n, max(1, round(ratio * n)), max_bank)
    if k >= n:
        return patches.float().contiguous()
    idx = greedy_coreset(patches, k, proj_dim=proj_dim, seed=seed)
    return patches[idx].float().contiguous()


class MemoryBank(nn.Module):
    """Nearest-neighbour distance of query patches to a fixed bank.

    Args:
        bank: (M, D) float32 bank (or ``M``/``D`` sizes via :meth:`empty` before loading a state dict).
        chunk: bank rows compared per matmul; bounds the (B*P, chunk) distance block.
    """

    bank: torch.Tensor
    bank_sq: torch.Tensor

    def __init__(self, bank: torch.Tensor, *, chunk: int = 4096) -> None:
        super().__init__()
        self.register_buffer("bank", bank.float().contiguous())
        self.register_buffer("bank_sq", bank.float().pow(2).sum(1))
        self.chunk = int(chunk)

    @classmethod
    def empty(cls, size: int, dim: int, *, chunk: int = 4096) -> MemoryBank:
        """A zero bank of the given shape, to be filled by ``load_state_dict``."""
        return cls(torch.zeros(size, dim), chunk=chunk)

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        """(B, P, D) query patches -> (B, P) float32 distance to the nearest bank entry (>= 0).

        The nearest row is found with ``|q - b|^2 - |q|^2 = |b|^2 - 2 q.b``, one fused ``addmm`` per
        chunk (``|q|^2`` is the same for every bank row, so it does not change which row is nearest).
        That expanded form subtracts terms of size ``|q|^2`` and keeps float32 rounding of that size:
        a query identical to a bank row came out up to 0.011 away at feature norms ~12 and 1.0 at ~1240,
        enough to flip a verdict by the batch it was scored in. So the distance itself is ``||q - b||``
        to the row found, exact to the precision of the features. Only where two bank rows are closer
        to each other than that rounding can the search pick the farther of them, and the distance is
        then still the true distance to a bank row. The gather and subtraction are lost in the
        search's own time: 0.9-1.04x of the old cost for 1-8 views of 1024 patches (D 152) against a
        16k-row bank on two CPU cores.
        """
        b, p, d = query.shape
        q = query.reshape(b * p, d)
        m = self.bank.shape[0]
        best: torch.Tensor | None = None
        best_row: torch.Tensor | None = None
        for i in range(math.ceil(m / self.chunk)):
            lo = i * self.chunk
            part = self.bank[lo : lo + self.chunk]
            d2 = torch.addmm(self.bank_sq[lo : lo + self.chunk].unsqueeze(0), q, part.t(), alpha=-2.0)
            low, row = d2.min(dim=1)
            if best is None or best_row is None:
                best, best_row = low, row
            else:
                # strict: an equal distance in a later chunk keeps the earlier row, as one min would
                closer = low < best
                best = torch.where(closer, low, best)
                best_row = torch.where(closer, row + lo, best_row)
        assert best_row is not None  # m >= 1
        nearest = self.bank.index_select(0, best_row)
        return (q - nearest).pow(2).sum(1).sqrt().reshape(b, p)


class FineBank(nn.Module):
    """The fine-scale memory bank and the affine map of its distances onto the main bank's scale.

    Features at stride 4 describe a small neighbourhood, so they catch thin or small local anomalies
    (a cable, a few pale lumps of the wrong material) that the stride-8/16 patch features average
    into the look of normal cargo; the deep features in turn catch large ones (an oversize lump). The two
    scales get separate banks because in one concatenated embedding the deeper, wider features
    dominate every distance. ``scale`` and ``shift`` put fine distances in the main bank's units
    (fitted on held-out normals by :func:`fit_fine_scale`), so that a patch's distance is the larger
    of the two.
    """

    scale: torch.Tensor
    shift: torch.Tensor

    def __init__(self, bank: MemoryBank) -> None:
        super().__init__()
        self.bank = bank
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("shift", torch.zeros(()))

    @classmethod
    def empty(cls, size: int, dim: int, *, chunk: int = 4096) -> FineBank:
        return cls(MemoryBank.empty(size, dim, chunk=chunk))

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        """(B, P, D_fine) query patches -> (B, P) distances in the main bank's units."""
        return self.bank(query) * self.scale + self.shift


def fit_fine_scale(main: torch.Tensor, fine: torch.Tensor) -> tuple[float, float]:
    """(scale, shift) mapping fine-bank image scores onto main-bank ones.

    Args:
        main, fine: (N,) image scores (top-k mean distances) of the same N >= 2 held-out normal views
            to the main bank and to the fine bank.

    Returns:
        The affine map that gives the fine scores the main scores' mean and standard deviation, so
        that a normal view is about as far from either bank and neither scale drowns the other.
    """
    if main.numel() < 2 or main.shape != fine.shape:
        shapes = f"{tuple(main.shape)}, {tuple(fine.shape)}"
        raise ValueError(f"need two equal (N >= 2,) score vectors; got {shapes}")
    spread = float(fine.double().std())
    scale = float(main.double().std()) / spread if spread > 1e-9 else 1.0
    return scale, float(main.double().mean()) - scale * float(fine.double().mean())
