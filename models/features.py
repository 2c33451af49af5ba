"""Locally aware multi-scale patch features (Roth et al., "Towards Total Recall in Industrial Anomaly
Detection", CVPR 2022 — PatchCore).

Each backbone feature map is averaged over 3x3 neighbourhoods (so a patch "sees" its surroundings),
the deeper maps are upsampled to the grid of the shallowest one, and all are concatenated.

``pool_sizes`` can give each map its own neighbourhood: 1 reads a map cell by cell. The deeper maps
are coarse already (Lite0's block 4: one cell per 16 pixels, each seeing far more), so their 3x3
average spreads a small defect over 48 pixels of surrounding product. Read sharp, they rank small
and thin defects on vacuum packs better, and large, diffuse ones (a wet patch on ore) worse
(``pipeline.train``'s ``deep_features`` chooses by cargo type; ``bench/README.md`` has the runs).

The 3x3 average counts the zeros beyond the map's edge, as PatchCore's reference code (an unfold with
zero padding) and anomalib (``AvgPool2d(3, 1, 1)``) do: a border patch's features are shrunk to 6/9
of their value, a corner's to 4/9. Averaging over the in-map neighbours only keeps border patches at
full size, and the CNN's own zero-padding artefacts there then give them the largest distances in
normal images. On synthetic bulk ore (64 normals, seed 5301) a bare PatchCore on our features ranked
test images at 0.716 AUROC that way, against 0.966 counting the zeros (anomalib: 0.974). An optional
fixed random Gaussian projection (Johnson-Lindenstrauss) shrinks the channel count for wide backbones.
Only ONNX-exportable ops are used.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["PatchEmbedder"]


class PatchEmbedder(nn.Module):
    """Backbone feature maps -> patch embeddings and a global descriptor.

    Args:
        in_channels: channels of each backbone feature map, shallowest first.
        proj_dim: output channels of the fixed random projection; 0 keeps the concatenation.
        seed: seed of the projection matrix (stored as a buffer, so a saved model keeps it).
        zero_padded_pooling: the 3x3 average counts the zeros beyond the map's edge (see above);
            False averages the in-map neighbours only (format-4 models and the first detector).
        pool_sizes: side of each map's neighbourhood average, shallowest first: odd, >= 1 (1: none).
            Empty: 3 for every map (PatchCore's, and every model before the choice existed).
    """

    projection: torch.Tensor

    def __init__(
        self,
        in_channels: tuple[int, ...],
        *,
        proj_dim: int = 0,
        seed: int = 0,
        zero_padded_pooling: bool = True,
        pool_sizes: tuple[int, ...] = (),
    ) -> None:
        super().__init__()
        self.zero_padded_pooling = bool(zero_padded_pooling)
        sizes = tuple(int(k) for k in pool_sizes) or (3,) * len(in_channels)
        if len(sizes) != len(in_channels) or any(k < 1 or k % 2 == 0 for k in sizes):
            raise ValueError(
                f"pool_sizes {tuple(pool_sizes)} must give one odd size >= 1 per feature map "
                f"({len(in_channels)} maps)"
            )
        self.pool_sizes = sizes
        self.concat_dim = int(sum(in_channels))
        self.proj_dim = int(proj_dim) if 0 < proj_dim < self.concat_dim else 0
        gen = torch.Generator().manual_seed(seed)
        if self.proj_dim:
            proj = torch.randn(self.concat_dim, self.proj_dim, generator=gen) / math.sqrt(self.proj_dim)
        else:
            proj = torch.zeros(0)
        self.register_buffer("projection", proj)

    @property
    def out_dim(self) -> int:
        """Channels of the patch embeddings."""
        return self.proj_dim or self.concat_dim

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embed patches.

        Args:
            feats: [(B, C_i, h_i, w_i)] backbone maps, shallowest (largest grid) first.

        Returns:
            patches: (B, D, h, w) float32 patch embeddings on the shallowest grid.
            pooled: (B, sum C_i) global average of the concatenated (unprojected) features.
        """
        size = feats[0].shape[-2:]
        maps = []
        for f, k in zip(feats, self.pool_sizes, strict=True):
            if k > 1:
                f = F.avg_pool2d(
                    f, kernel_size=k, stride=1, padding=k // 2, count_include_pad=self.zero_padded_pooling
                )
            if f.shape[-2:] != size:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            maps.append(f)
        cat = torch.cat(maps, dim=1)
        pooled = cat.mean(dim=(2, 3))
        if self.proj_dim:
            cat = torch.einsum("bchw,cd->bdhw", cat, self.projection)
        return cat, pooled
