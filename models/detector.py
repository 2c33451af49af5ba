"""The full scoring graph in one ``nn.Module``: backbone -> patch features -> nearest-neighbour
distances -> anomaly map -> supervised heads (image type head, patch head) -> fusion.

``Detector.forward`` takes a normalised (B, 3, S, S) float32 tensor and returns a
:class:`DetectorOutput`. It uses only ONNX-exportable torch ops: no numpy, no Python loops over
data-dependent sizes (the memory-bank chunk loop depends only on the bank size fixed at fit time).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import models.backbones  # noqa: F401  (registers the backbone builders)
from models.classifier import TypeHead
from models.features import PatchEmbedder
from models.fusion import FUSION_RULES, SCORE_DTYPES, Fusion
from models.patch_head import PatchHead
from models.patchcore import FineBank, MemoryBank
from models.registry import create_model

__all__ = [
    "DetectorConfig",
    "DetectorOutput",
    "Detector",
    "RawOutput",
    "build_detector",
    "fit_position_norm",
    "untrained_patch_head",
]

_SCORE_REDUCTIONS = ("max", "topk")


class DetectorOutput(NamedTuple):
    """What :class:`Detector` returns.

    Attributes:
        score: (B,) float32 fused anomaly score in [0, 1].
        anomaly_map: (B, S, S) float32 one-class anomaly map in [0, 1] (model's own scale).
        type_logits: (B, K) float32 logits of the supervised type head; index 0 is ``good``.
    """

    score: torch.Tensor
    anomaly_map: torch.Tensor
    type_logits: torch.Tensor


class RawOutput(NamedTuple):
    """Intermediate values, used by training (calibration) and tests.

    Attributes:
        score_raw: (B,) one-class image score in feature-distance units (> 0); with
            ``config.co_located``, the smoothed map's value at the spot the fusion reads.
        map_raw: (B, S, S) smoothed distance map, distance units.
        type_logits: (B, K) head logits.
        patch_score: (B,) patch head's image score (logit units); with ``config.co_located``, its
            smoothed map's value at the same spot.
        patch_map: (B, S, S) patch head's logits, upsampled and smoothed like ``map_raw``.
    """

    score_raw: torch.Tensor
    map_raw: torch.Tensor
    type_logits: torch.Tensor
    patch_score: torch.Tensor
    patch_map: torch.Tensor


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    """Everything needed to rebuild a :class:`Detector`'s structure before loading its tensors.

    Attributes:
        backbone: registered backbone name (``lite0``, ``resnet18``, ...).
        input_size: S, the square input side in pixels.
        mean, std: input normalisation (from the backbone's weights spec).
        proj_dim: random-projection width of patch embeddings (0: none).
        bank_size: M, memory-bank rows.
        class_names: head classes, ``"good"`` first.
        score_reduction: ``"max"`` (max of the smoothed map) or ``"topk"`` (mean of the top-k patches).
        topk: k for ``"topk"``.
        sigma: Gaussian smoothing of the map at S = 256, scaled with S.
        chunk: memory-bank rows per matmul.
        pad: reflect padding, in input pixels, added around the input before the backbone and cropped
            off the patch grid afterwards (a multiple of the backbone's deepest stride). Without it
            the CNN's zero padding gives the outer ring of patches features unlike any interior
            patch, and those border distances dominate the image score of normal images.
        grid: side of the patch grid (S / the shallowest stride) that the per-position distance
            normalisation was fitted on; 0 = no per-position normalisation.
        patch_hidden: hidden width of the patch head (:mod:`models.patch_head`).
        patch_topk: k of the patch head's image score.
        fine_scale: a second memory bank on the backbone's stride-4 features (see
            :class:`models.patchcore.FineBank`); their channels follow the main patch channels.
        fine_bank_size: rows of the fine-scale bank.
        zero_padded_pooling: the patch embeddings' 3x3 average counts the zeros beyond the feature
            map's edge (:class:`models.features.PatchEmbedder`); False averages in-map neighbours only.
        fusion: how the calibrated signals combine into the score (:data:`models.fusion.FUSION_RULES`).
            ``"max"`` here because a card written before the rule was recorded used it; training
            asks for ``"sum"`` unless told otherwise.
        co_located: the one-class and patch-head signals are read at the one pixel where their
            calibrated log-odds add up to the most (:meth:`models.fusion.Fusion.co_located`), not
            each at its own hottest patches. False in cards written before it existed.
        grey_offsets: what each signal adds for a grey view (channels equal: an X-ray, a mono
            camera), so that clean grey and colour pictures share one scale
            (:mod:`pipeline.picture_kinds`): the one-class log-distance (the distance map and score
            are multiplied by its exp), the type head's anomaly log-odds, and the patch head's logits.
            Zeros (no change) in cards written before it existed.
        pool_sizes: side of each backbone map's neighbourhood average in the patch embeddings,
            shallowest first (:class:`models.features.PatchEmbedder`); empty: 3 for every map, as in
            cards written before it existed.
    """

    backbone: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    proj_dim: int
    bank_size: int
    class_names: tuple[str, ...]
    score_reduction: str = "max"
    topk: int = 10
    sigma: float = 4.0
    chunk: int = 4096
    pad: int = 0
    grid: int = 0
    patch_hidden: int = 64
    patch_topk: int = 5
    fine_scale: bool = False
    fine_bank_size: int = 1
    zero_padded_pooling: bool = True
    fusion: str = "max"
    co_located: bool = False
    grey_offsets: tuple[float, float, float] = (0.0, 0.0, 0.0)
    pool_sizes: tuple[int, ...] = ()
    score_dtype: str = "float64"

    def __post_init__(self) -> None:
        if self.pad < 0 or self.grid < 0:
            raise ValueError(f"pad and grid must be >= 0; got pad={self.pad}, grid={self.grid}")
        if self.patch_hidden < 1 or self.patch_topk < 1:
            raise ValueError(
                f"patch_hidden and patch_topk must be >= 1; got {self.patch_hidden}, {self.patch_topk}"
            )
        if self.fusion not in FUSION_RULES:
            raise ValueError(f"fusion {self.fusion!r} not in {FUSION_RULES}")
        if len(self.grey_offsets) != 3 or not all(math.isfinite(v) for v in self.grey_offsets):
            raise ValueError(f"grey_offsets must be 3 finite numbers; got {self.grey_offsets}")
        if any(k < 1 or k % 2 == 0 for k in self.pool_sizes):
            raise ValueError(f"pool_sizes must be odd sizes >= 1; got {self.pool_sizes}")
        if self.score_dtype not in SCORE_DTYPES:
            raise ValueError(f"score_dtype {self.score_dtype!r} not in {SCORE_DTYPES}")
        if self.score_reduction not in _SCORE_REDUCTIONS:
            raise ValueError(f"score_reduction {self.score_reduction!r} not in {_SCORE_REDUCTIONS}")
        if len(self.class_names) < 2 or self.class_names[0] != "good":
            raise ValueError(f"class_names must start with 'good' and name >= 1 type; got {self.class_names}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorConfig:
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise ValueError(f"unknown detector config keys {sorted(unknown)}; accepted: {sorted(fields)}")
        kw = dict(data)
        kw.setdefault("grey_offsets", (0.0, 0.0, 0.0))
        kw.setdefault("pool_sizes", ())
        # cards written before scores were computed in float64 had their thresholds placed on float32
        # scores: read in float64, a hold of 1.0 (scores saturated there) would hold nothing
        kw.setdefault("score_dtype", "float32")
        for key in ("mean", "std", "class_names", "grey_offsets", "pool_sizes"):
            kw[key] = tuple(kw[key])
        return cls(**kw)


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    xs = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(xs**2) / (2 * sigma**2))
    return k / k.sum()


class Detector(nn.Module):
    """PatchCore-style one-class detector + supervised type and patch heads + calibrated fusion."""

    blur: torch.Tensor
    map_lo: torch.Tensor
    map_span: torch.Tensor
    attn_temp: torch.Tensor
    pos_scale: torch.Tensor
    pos_shift: torch.Tensor
    backbone: Any  # an nn.Module with out_channels (see models.backbones)

    def __init__(
        self,
        config: DetectorConfig,
        backbone: nn.Module,
        embedder: PatchEmbedder,
        bank: MemoryBank,
        head: TypeHead,
        patch_head: PatchHead,
        fusion: Fusion,
        fine: FineBank | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.embedder = embedder
        self.bank = bank
        self.fine = fine
        self.head = head
        self.patch_head = patch_head
        self.fusion = fusion
        sigma = config.sigma * config.input_size / 256.0
        kernel = _gaussian_kernel(sigma)
        self.register_buffer("blur", kernel)
        self._blur_taps = kernel.double().numpy()  # the same taps, for smoothing_operator's numpy
        self._smoothing: dict[int, torch.Tensor] = {}  # smoothing_operator per grid side (not saved)
        # Map normalisation: (map - map_lo) / map_span, clipped; set from validation normals.
        self.register_buffer("map_lo", torch.zeros(()))
        self.register_buffer("map_span", torch.ones(()))
        # Temperature of the attention pooling (a typical normal patch distance).
        self.register_buffer("attn_temp", torch.ones(()))
        # Per-position affine map of patch distances (see normalise_positions); identity until fitted.
        side = max(1, config.grid)
        self.register_buffer("pos_scale", torch.ones(side, side))
        self.register_buffer("pos_shift", torch.zeros(side, side))
        if config.pad:
            deepest = max(int(s) for s in getattr(backbone, "strides", (1,)))
            if config.pad % deepest:
                raise ValueError(
                    f"pad {config.pad} must be a multiple of the backbone's deepest stride {deepest}"
                )

    # -- the pieces, usable with another bank (out-of-fold training) --------------------------
    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, S, S) normalised -> patches (B, D, h, w), pooled (B, C).

        With ``config.pad`` the input is reflect-padded first and the patch grid cropped back to the
        image's own patches, so (h, w) is the same as without padding.
        """
        pad = self.config.pad
        if pad:
            x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
        # NHWC: oneDNN's depthwise and pointwise convolutions run ~1.8x faster on CPUs in this layout.
        fine = self.config.fine_scale
        feats = self.backbone(x.contiguous(memory_format=torch.channels_last), fine=fine)
        patches, pooled = self.embedder(feats[:-1] if fine else feats)
        if fine:
            # the fine map averaged over in-map neighbours (as its gate and figures were measured; the
            # main maps' zero-padded average was not tried on it), then onto the patch grid (2x2 mean)
            f = F.avg_pool2d(feats[-1], kernel_size=3, stride=1, padding=1, count_include_pad=False)
            ratio = int(self.backbone.strides[0]) // int(self.backbone.fine_stride)
            patches = torch.cat([patches, F.avg_pool2d(f, kernel_size=ratio)], dim=1)
        if pad:
            c = pad // int(self.backbone.strides[0])
            patches = patches[:, :, c : patches.shape[2] - c, c : patches.shape[3] - c]
        return patches, pooled

    def distances(
        self, patches: torch.Tensor, bank: MemoryBank | None = None, fine: FineBank | None = None
    ) -> torch.Tensor:
        """(B, D, h, w) patches -> (B, h, w) nearest-neighbour distances to ``bank`` (default: own).

        With a fine-scale bank (``fine``, default: own), a patch's distance is the larger of its
        main-bank distance and its fine-bank distance in main-bank units.
        """
        main, fine_dist = self.scale_distances(patches, bank, fine)
        return main if fine_dist is None else torch.maximum(main, fine_dist)

    def scale_distances(
        self, patches: torch.Tensor, bank: MemoryBank | None = None, fine: FineBank | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, D, h, w) patches -> (B, h, w) main-bank distances and, with a fine-scale bank, (B, h, w)
        fine-bank distances in main-bank units (else ``None``)."""
        b, d, h, w = patches.shape
        q = patches.reshape(b, d, h * w).transpose(1, 2)
        if not self.config.fine_scale:
            return (bank or self.bank)(q).reshape(b, h, w), None
        split = self.embedder.out_dim
        main = (bank or self.bank)(q[:, :, :split]).reshape(b, h, w)
        fine_bank = fine or self.fine
        assert fine_bank is not None  # built with the config
        return main, fine_bank(q[:, :, split:]).reshape(b, h, w)

    def normalise_positions(self, dist: torch.Tensor) -> torch.Tensor:
        """(B, h, w) raw distances -> (B, h, w) distances on one scale for every grid position.

        Some positions are intrinsically farther from the bank than others (the image border, the
        middle of a pack where the product varies most), so a raw distance means different things
        in different places. Training fits ``d * pos_scale + pos_shift``: the per-position z-score of
        out-of-fold normal distances, mapped back to distance units (the global mean and spread of
        those distances), so that values stay positive and comparable with the raw ones.
        """
        if self.config.grid == 0:
            return dist
        return (dist * self.pos_scale + self.pos_shift).clamp_min(0.0)

    def smooth_map(self, dist: torch.Tensor) -> torch.Tensor:
        """(B, h, w) per-patch values -> (B, S, S) upsampled, Gaussian-smoothed map (same units).

        Bilinear upsampling, replicate padding and the separable Gaussian are all linear and act on
        rows and columns separately, so the whole chain is ``A_h @ dist @ A_w^T`` with (S, h) and
        (S, w) matrices (:meth:`smoothing_operator`). Two small matmuls instead of a resize, a pad
        and two single-channel convolutions at full size: the same map to float rounding, at about a
        tenth of the cost under ONNX Runtime.
        """
        h, w = int(dist.shape[1]), int(dist.shape[2])  # static in a trace: the grid is fixed by S
        a_h = self.smoothing_operator(h).to(device=dist.device, dtype=dist.dtype)
        a_w = a_h if w == h else self.smoothing_operator(w).to(device=dist.device, dtype=dist.dtype)
        return torch.matmul(torch.matmul(a_h, dist), a_w.t())

    def smoothing_operator(self, n: int) -> torch.Tensor:
        """(S, n) matrix of the per-axis chain: bilinear upsampling of n values to S
        (``align_corners=False``, as ``F.interpolate``), replicate padding, then the ``blur`` kernel.

        Built in numpy so that an ONNX trace records it as one constant, not as the ops that made it.
        """
        cached = self._smoothing.get(n)
        if cached is not None:
            return cached
        s = self.config.input_size
        kernel = self._blur_taps
        r = (kernel.size - 1) // 2
        # F.interpolate's source coordinate of each output pixel, clamped at the first input value
        src = np.maximum(((np.arange(s + 2 * r) - r).clip(0, s - 1) + 0.5) * (n / s) - 0.5, 0.0)
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, n - 1)
        frac = src - lo
        up = np.zeros((s + 2 * r, n))  # the replicate-padded upsampling, one row per padded pixel
        np.add.at(up, (np.arange(s + 2 * r), lo), 1.0 - frac)
        np.add.at(up, (np.arange(s + 2 * r), hi), frac)
        windows = np.lib.stride_tricks.sliding_window_view(up, kernel.size, axis=0)  # (S, n, taps)
        op = torch.from_numpy(np.einsum("snt,t->sn", windows, kernel).astype(np.float32))
        self._smoothing[n] = op
        return op

    def image_score(self, dist: torch.Tensor, map_raw: torch.Tensor) -> torch.Tensor:
        """(B, h, w) distances and (B, S, S) map -> (B,) raw image score."""
        if self.config.score_reduction == "max":
            return map_raw.flatten(1).max(dim=1).values
        flat = dist.flatten(1)
        return flat.topk(min(self.config.topk, flat.shape[1]), dim=1).values.mean(dim=1)

    def head_inputs(
        self, patches: torch.Tensor, pooled: torch.Tensor, dist: torch.Tensor, score_raw: torch.Tensor
    ) -> torch.Tensor:
        """Inputs of the supervised head.

        Args:
            patches: (B, D, h, w); pooled: (B, C); dist: (B, h, w); score_raw: (B,).

        Returns:
            (B, C + D + 3): pooled features, the patch embedding averaged with softmax weights that
            concentrate on the most anomalous patches, and log distance statistics (image score,
            mean, mean of the top 2 % of patches).
        """
        b, d, h, w = patches.shape
        flat = dist.reshape(b, h * w)
        weights = torch.softmax(flat / self.attn_temp, dim=1)
        # (B, 1, P) @ (B, P, D) rather than an einsum: ONNX Runtime runs MatMul several times faster
        attn = torch.matmul(weights.unsqueeze(1), patches.reshape(b, d, h * w).transpose(1, 2)).squeeze(1)
        k = max(1, (h * w) // 50)
        top = flat.topk(k, dim=1).values.mean(dim=1)
        stats = torch.stack([score_raw, flat.mean(dim=1), top], dim=1).clamp_min(1e-6).log()
        return torch.cat([pooled, attn, stats], dim=1)

    def raw(self, x: torch.Tensor) -> RawOutput:
        """(B, 3, S, S) normalised -> :class:`RawOutput` (before fusion and map normalisation)."""
        patches, pooled = self.embed(x)
        dist = self.normalise_positions(self.distances(patches))
        map_raw = self.smooth_map(dist)
        score_raw = self.image_score(dist, map_raw)
        logits = self.head(self.head_inputs(patches, pooled, dist, score_raw))
        patch_logits = self.patch_head.logits(patches)
        if any(self.config.grey_offsets):
            # after the type head's inputs, which it was trained on as they are
            map_raw, score_raw, logits, patch_logits = self.offset_grey_views(
                x, map_raw, score_raw, logits, patch_logits
            )
        patch_map = self.smooth_map(patch_logits)
        if self.config.co_located:
            score_raw, patch_score = self.fusion.co_located(map_raw, patch_map)
        else:
            patch_score = self.patch_head.image_score(patch_logits)
        return RawOutput(score_raw, map_raw, logits, patch_score, patch_map)

    @staticmethod
    def grey_views(x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised views -> (B,) 1.0 where the three channels are equal, else 0.0.

        A grey picture is replicated to three equal channels before normalisation, and the mean and
        std are the same for every channel in every registered backbone, so its view's channels stay
        equal (:func:`models.tiling.is_grey` on the picture itself). A camera's colour picture has
        sensor noise and compression in every channel, so only a view with no colour in any pixel
        (a blank or fully saturated tile) counts as grey too.
        """
        spread = (x[:, 0] - x[:, 1]).abs().amax(dim=(1, 2)) + (x[:, 1] - x[:, 2]).abs().amax(dim=(1, 2))
        return (spread <= 1e-6).to(x.dtype)

    def offset_grey_views(
        self,
        x: torch.Tensor,
        map_raw: torch.Tensor,
        score_raw: torch.Tensor,
        type_logits: torch.Tensor,
        patch_logits: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Apply ``config.grey_offsets`` to the grey views of ``x``: the (B, S, S) distance map and
        (B,) score scaled by exp(one-class offset), the (B, K) type logits' "good" lowered by the
        type-head offset (their anomaly log-odds rise by it), the (B, h, w) patch logits raised by
        the patch-head offset. Colour views pass unchanged."""
        grey = self.grey_views(x)
        oc, head, patch = self.config.grey_offsets
        scale = torch.exp(grey * oc)
        type_logits = torch.cat([type_logits[:, :1] - (grey * head).unsqueeze(1), type_logits[:, 1:]], dim=1)
        return (
            map_raw * scale.view(-1, 1, 1),
            score_raw * scale,
            type_logits,
            patch_logits + (grey * patch).view(-1, 1, 1),
        )

    def signal_maps(
        self, map_raw: torch.Tensor, patch_map: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, S) distance map and patch-head logit map -> the two halves of the anomaly map, each
        (B, S, S) in [0, 1]: the one-class map on the model's validation-normal scale, and the patch
        head's defect probability, calibrated like its image score (zero when it is not fused)."""
        one_class = ((map_raw - self.map_lo) / self.map_span).clamp(0.0, 1.0)
        patch = torch.sigmoid(self.fusion.slope[2] * patch_map + self.fusion.bias[2])
        return one_class, patch

    def normalise_map(self, map_raw: torch.Tensor, patch_map: torch.Tensor) -> torch.Tensor:
        """(B, S, S) distance map and patch-head logit map -> (B, S, S) anomaly map in [0, 1].

        The larger of the two :meth:`signal_maps`: a seal defect the one-class map cannot tell from
        the product's own variation still shows through the patch head.
        """
        return torch.maximum(*self.signal_maps(map_raw, patch_map))

    def forward(self, x: torch.Tensor) -> DetectorOutput:
        """(B, 3, S, S) normalised float32 -> :class:`DetectorOutput`."""
        raw = self.raw(x)
        score = self.fusion(raw.score_raw, raw.type_logits, raw.patch_score)
        return DetectorOutput(score, self.normalise_map(raw.map_raw, raw.patch_map), raw.type_logits)


def build_detector(
    config: DetectorConfig,
    *,
    backbone: Any = None,
    embed_seed: int = 0,
) -> Detector:
    """An empty-bank detector of ``config``'s structure.

    Args:
        config: the structure.
        backbone: a built backbone; ``None`` builds the structure only (weights come from a saved
            state dict loaded afterwards — no weights file is read).
        embed_seed: seed of the random projection and of the patch head's initial weights, which a
            model whose patch head is not trained keeps (both overwritten by a loaded state dict).
    """
    if backbone is None:
        backbone = create_model(config.backbone, weights=None)
    backbone = backbone.to(memory_format=torch.channels_last)  # see Detector.embed
    channels: tuple[int, ...] = tuple(backbone.out_channels)
    embedder = PatchEmbedder(
        channels,
        proj_dim=config.proj_dim,
        seed=embed_seed,
        zero_padded_pooling=config.zero_padded_pooling,
        pool_sizes=config.pool_sizes,
    )
    bank = MemoryBank.empty(config.bank_size, embedder.out_dim, chunk=config.chunk)
    fine = None
    dim = embedder.out_dim
    if config.fine_scale:
        if not backbone.fine_channels:
            raise ValueError(f"backbone {config.backbone!r} has no fine layer for fine_scale")
        fine = FineBank.empty(config.fine_bank_size, backbone.fine_channels, chunk=config.chunk)
        dim += backbone.fine_channels
    head = TypeHead(embedder.concat_dim + dim + 3, len(config.class_names))
    patch_head = untrained_patch_head(config, dim, seed=embed_seed)
    return Detector(
        config,
        backbone,
        embedder,
        bank,
        head,
        patch_head,
        Fusion(config.fusion, score_dtype=config.score_dtype),
        fine,
    ).eval()


def untrained_patch_head(config: DetectorConfig, in_channels: int, *, seed: int) -> PatchHead:
    """``config``'s patch head before training, on ``in_channels``-wide patches, drawn from ``seed``
    alone: a model whose patch head is not trained saves it, so the same seed must give the same
    weights in any process (torch's global generator, unseeded, gave others in each)."""
    generator = torch.Generator().manual_seed(seed)
    return PatchHead(in_channels, config.patch_hidden, topk=config.patch_topk, generator=generator)


def fit_position_norm(normal_dists: torch.Tensor, *, sigma: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Fit :meth:`Detector.normalise_positions` from out-of-fold distances of normal images.

    Args:
        normal_dists: (N, h, w) nearest-neighbour distances of normal views to a bank that does not
            contain them (N >= 2).
        sigma: Gaussian smoothing, in patches, of the per-position mean and spread (estimates from a
            few hundred views are noisy; neighbouring positions behave alike).

    Returns:
        (pos_scale, pos_shift), each (h, w): ``d * scale + shift`` = global mean + global spread *
        (d - mean at the position) / (spread at the position).
    """
    if normal_dists.ndim != 3 or normal_dists.shape[0] < 2:
        raise ValueError(f"need (N >= 2, h, w) distances; got shape {tuple(normal_dists.shape)}")
    d = normal_dists.double()
    k = _gaussian_kernel(sigma).double()
    r = (k.numel() - 1) // 2

    def smooth(m: torch.Tensor) -> torch.Tensor:
        m = F.pad(m[None, None], (r, r, r, r), mode="replicate")
        m = F.conv2d(F.conv2d(m, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
        return m[0, 0]

    mu = smooth(d.mean(dim=0))
    sd = smooth(d.std(dim=0)).clamp_min(1e-6)
    mu_g, sd_g = float(mu.mean()), float(sd.mean())
    scale = sd_g / sd
    return scale.float(), (mu_g - mu * scale).float()
