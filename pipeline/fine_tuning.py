"""Fine-tuning the backbone on defect masks, before the detector is fitted on its features (opt-in).

The frozen ImageNet features are the limit on vacuum packs: a barely open seal or a loose fibre on
a tray sits as close to some normal patch as the packs' own variation (label, barcode, board parts)
does, whatever head is put on top (more feature layers, wider heads and other patch-head inputs gave
no gain; ``bench/README.md``). Fine-tuning reshapes the features themselves: the backbone's blocks
up to its deepest feature layer and a per-patch classifier of the
:class:`~models.patch_head.PatchHead` shape (1x1 convolutions on
:meth:`~models.detector.Detector.embed`'s patch embeddings) are trained together, by AdamW on
class-balanced binary cross-entropy, to say which patches show a defect:

* defect patches from the labelled training anomalies' masks (``ground_truth/``), labelled the way
  the patch head's are (:data:`~pipeline.patch_training.MIN_COVERAGE`); half of these views show the
  defect transplanted (:func:`models.pseudo_anomalies.transplant_defect`) into a training normal of
  the same size and kind, moved a little, so that a few labelled defects are seen on many packs,
  benches and lights, not only on their own images over and over;
* normal patches from the training normals, half of which get a fresh pseudo-anomaly
  (:func:`models.pseudo_anomalies.make_pseudo_anomaly`) with its mask at every draw, so that the
  features learn generic local damage and not only the labelled types;
* every view randomly rotated by a multiple of 90 degrees and mirrored, with its targets.

The classifier becomes the detector's patch head, and the rest of the detector (memory bank, type
head, calibration) is fitted as usual on the tuned backbone, whose weights the artifact stores like
any other. Batch-norm statistics stay frozen (batches of 8 views would make them noise). Validation
images are never used, so thresholds and validation metrics stay honest.

The weights are averaged over the last half of the steps at a constant learning rate (stochastic
weight averaging): on development seed 11 the classifier alone scored 0.892-0.918 over three random
draws of views and pseudo-anomalies, against 0.886-0.889 with the rate decayed to zero on a cosine
and 0.851-0.927 at a constant rate without averaging. Transplanting half the defect views raised
the end-to-end test image AUROC on seed 11 from 0.867 to 0.900 (mean of four paired draws,
0.822-0.908 against 0.882-0.908), with foreign objects and the held-out puncture gaining most, and
left fresh seed 2718 level (0.880 -> 0.875); the TNR at 1 % FNR, which the single faintest anomaly
decides, did not improve (0.208 -> 0.171 on seed 11).

Measured end to end against the default model on the same files (600 steps at 3e-4, 0.5-1 s per
step on two CPU cores): vacuum-pack image AUROC 0.889 / 0.813 and 0.937 / 0.856 on fresh seeds 9191
and 3141 (TNR at 1 % FNR 0.117 / 0.083 and 0.500 / 0.167); bulk ore 0.998 / 0.993 and 0.993 /
0.999, so it helps ore on one seed and costs on the other. It stays off by default
(``TrainConfig.fine_tune_steps = 0``): the models issue asks for that on CPU, and it adds about 5-10
minutes to a fit of under a minute. ``bench/README.md`` has the runs.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.detector import Detector
from models.patch_head import PatchHead
from models.pseudo_anomalies import host_key, make_pseudo_anomaly, transplant_defect
from models.tiling import TilingConfig, make_views
from pipeline.patch_training import MIN_COVERAGE, mask_coverage

__all__ = ["FineTuneConfig", "FineTuneReport", "FineTuned", "fine_tune_backbone"]

ProgressFn = Callable[[str, int, int], None]


@dataclass(frozen=True)
class FineTuneConfig:
    """How to fine-tune.

    Attributes:
        steps: optimiser steps (0: no fine-tuning).
        lr: learning rate of the backbone.
        head_lr: learning rate of the per-patch classifier (it starts from random weights and
            becomes the patch head).
        batch_size: views per step, half from masked anomalies and half from normals.
        hidden: hidden width of the classifier.
        weight_decay: AdamW's.
        max_pos_weight: cap on the positive-class weight of the loss (defects are rare patches).
        average_last: share of the steps, at the end, over which the weights are averaged
            (stochastic weight averaging); the learning rate then stays constant. 0: no averaging,
            the rate decays to zero on a cosine.
        transplant: share of the defect views drawn from a labelled defect transplanted into a
            training normal (:func:`transplant_defect`) instead of from its own image.
    """

    steps: int = 600
    lr: float = 3e-4
    head_lr: float = 3e-3
    batch_size: int = 8
    hidden: int = 64
    weight_decay: float = 1e-2
    max_pos_weight: float = 50.0
    average_last: float = 0.5
    transplant: float = 0.5

    def __post_init__(self) -> None:
        checks = [
            (self.steps >= 0, f"fine-tune steps {self.steps} must be >= 0"),
            (
                self.lr > 0 and self.head_lr > 0,
                f"fine-tune learning rates must be > 0; got {self.lr}, {self.head_lr}",
            ),
            (self.batch_size >= 2, f"fine-tune batch_size {self.batch_size} must be >= 2"),
            (self.hidden >= 1, f"fine-tune hidden {self.hidden} must be >= 1"),
            (self.max_pos_weight >= 1, f"fine-tune max_pos_weight {self.max_pos_weight} must be >= 1"),
            (
                0.0 <= self.average_last < 1.0,
                f"fine-tune average_last {self.average_last} must be in [0, 1)",
            ),
            (0.0 <= self.transplant <= 1.0, f"fine-tune transplant {self.transplant} must be in [0, 1]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


class FineTuneReport(NamedTuple):
    """What a fine-tuning run did (the model card's ``training.fine_tune``).

    Attributes:
        steps: optimiser steps taken.
        lr: backbone learning rate.
        batch_size: views per step.
        normals: normal training images drawn from.
        masked: labelled anomalous training images with masks drawn from.
        first_loss, last_loss: mean loss over the first and the last 10 % of the steps.
        averaged_steps: the last steps whose weights were averaged into the result (0: none).
        transplanted: defect views drawn from a labelled defect transplanted into a normal.
        seconds: wall time.
    """

    steps: int
    lr: float
    batch_size: int
    normals: int
    masked: int
    averaged_steps: int
    transplanted: int
    first_loss: float
    last_loss: float
    seconds: float


class FineTuned(NamedTuple):
    """What :func:`fine_tune_backbone` gives back: the per-patch classifier trained with the backbone,
    as a :class:`~models.patch_head.PatchHead` on the tuned features, and the run's report."""

    patch_head: PatchHead
    report: FineTuneReport


class _View(NamedTuple):
    image: torch.Tensor  # (3, S, S) normalised
    coverage: torch.Tensor  # (h, w) share of each patch cell the defect mask covers


class _Classifier(nn.Module):
    """``D -> hidden -> 1`` per patch: the patch head's shape, on the raw (unstandardised) features.

    No standardisation layer: the patch embeddings are already on a common scale, and batch
    statistics of views that are half defects would drift from any running ones the head kept.
    """

    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.hidden = nn.Conv2d(channels, hidden, kernel_size=1)
        self.out = nn.Conv2d(hidden, 1, kernel_size=1)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.hidden(patches))).squeeze(1)

    def as_patch_head(self, topk: int) -> PatchHead:
        """The same function as a :class:`PatchHead` (identity standardisation)."""
        head = PatchHead(self.hidden.in_channels, self.hidden.out_channels, topk=topk)
        with torch.no_grad():
            head.hidden.load_state_dict(self.hidden.state_dict())
            head.out.load_state_dict(self.out.state_dict())
        return head.eval()


def _augment(view: _View, rng: np.random.Generator) -> _View:
    k = int(rng.integers(4))
    image, coverage = torch.rot90(view.image, k, (1, 2)), torch.rot90(view.coverage, k, (0, 1))
    if rng.random() < 0.5:
        image, coverage = image.flip(2), coverage.flip(1)
    return _View(image, coverage)


class _RunningAverage:
    """The mean of some parameters' values over the steps it is told about (weight averaging).

    Only the parameters that have a gradient when the first step is added are averaged: those of
    blocks past the deepest feature layer never get one and never move, so they are left alone.
    """

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params
        self.means: list[torch.Tensor] = []
        self.count = 0

    @torch.no_grad()
    def add(self) -> None:
        self.count += 1
        if not self.means:
            self.params = [p for p in self.params if p.grad is not None]
            self.means = [p.detach().clone() for p in self.params]
        for mean, p in zip(self.means, self.params, strict=True):
            mean.add_((p - mean) / self.count)

    @torch.no_grad()
    def apply(self) -> None:
        """Write the means into the parameters (nothing when no step was added)."""
        for mean, p in zip(self.means, self.params, strict=True):
            p.copy_(mean)


def _trainable(detector: Detector) -> list[nn.Parameter]:
    """The backbone's parameters; those of blocks past the deepest feature layer get no gradient
    and so do not move."""
    params = [p for p in detector.backbone.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the backbone has no trainable parameters")
    return params


def fine_tune_backbone(
    detector: Detector,
    normals: Sequence[np.ndarray],
    masked: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    config: FineTuneConfig,
    tiling: TilingConfig,
    rng: np.random.Generator,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> FineTuned:
    """Fine-tune ``detector``'s backbone in place on defect masks (see the module docstring).

    Args:
        detector: a detector whose bank and heads are not fitted yet (they would no longer match).
        normals: training normals, (H, W, 3) float32 RGB in [0, 1].
        masked: labelled anomalous training images with their (H, W) defect masks in [0, 1]; may be
            empty, in which case the pseudo-anomalies are the only defects.
        config: the run's settings; tiling: how images are cut into views.
        rng: the training run's generator (pseudo-anomalies, sampling, augmentation).
        seed: seeds the classifier's initial weights.
        progress: called as ``progress("fine-tune backbone", step, steps)``.

    Returns:
        The classifier trained alongside, as a patch head of ``detector.config.patch_topk``, and a
        :class:`FineTuneReport`; the detector is left in eval mode.

    Raises:
        ValueError: no normals, or a mask whose size differs from its image's.
    """
    if not normals:
        raise ValueError("fine-tuning needs at least one normal training image")
    for n, (image, mask) in enumerate(masked):
        if mask.shape != image.shape[:2]:
            raise ValueError(
                f"masked image {n}: mask shape {mask.shape} differs from image {image.shape[:2]}"
            )
    notify = progress or (lambda stage, done, total: None)
    cfg = detector.config
    start = time.perf_counter()

    def views_of(image: np.ndarray, mask: np.ndarray | None) -> list[_View]:
        batch, _ = make_views(image, size=cfg.input_size, mean=cfg.mean, std=cfg.std, tiling=tiling)
        grid = cfg.input_size // int(detector.backbone.strides[0])
        if mask is None:
            cover = torch.zeros(batch.shape[0], grid, grid)
        else:
            cover = mask_coverage(mask, size=cfg.input_size, tiling=tiling, grid=grid)
        return [_View(v, c) for v, c in zip(batch, cover, strict=True)]

    # Keep only views that show some defect: a tile away from the defect would teach "normal"
    # with a defect label nowhere, which the normals already do.
    defect_views = [
        v for img, m in masked for v in views_of(img, m) if float(v.coverage.max()) >= MIN_COVERAGE
    ]
    half = config.batch_size // 2
    # Each masked image's possible hosts (normals of its size and kind).
    normals_of: dict[tuple[tuple[int, ...], bool], list[int]] = {}
    for n, normal in enumerate(normals):
        normals_of.setdefault(host_key(normal), []).append(n)
    hosts = [normals_of.get(host_key(img), []) for img, _ in masked]
    transplantable = [k for k, h in enumerate(hosts) if h]

    torch.manual_seed(seed)
    # the patch head is built for the detector's patch embeddings: its width is theirs
    classifier = _Classifier(detector.patch_head.hidden.in_channels, config.hidden)
    params = _trainable(detector)
    optimiser = torch.optim.AdamW(
        [
            {"params": params, "lr": config.lr},
            {"params": list(classifier.parameters()), "lr": config.head_lr},
        ],
        weight_decay=config.weight_decay,
    )
    # With 8 views per step the gradient is noisy, and a constant rate alone leaves the weights
    # wherever the last few batches pushed them (seed 11: 0.851 and 0.927 for two draws). Either
    # average the weights over the last steps at a constant rate (the default: 0.892-0.918 over three
    # draws, 0.886-0.889 with cosine decay on the same draws) or decay the rate to zero on a cosine.
    averaging = config.average_last > 0
    first_averaged = (
        config.steps - max(1, round(config.average_last * config.steps)) if averaging else config.steps
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser,
        (lambda step: 1.0)
        if averaging
        else (lambda step: 0.5 * (1.0 + math.cos(math.pi * step / max(1, config.steps)))),
    )
    average = _RunningAverage(params + list(classifier.parameters()))
    detector.train()
    classifier.train()
    for module in detector.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()  # frozen running statistics; their affine weights still train

    def draw_batch() -> tuple[list[_View], int]:
        """Half defect views (when there are any), some of them transplanted into normals; the rest
        normal views, every second of them with a fresh pseudo-anomaly. Views are cut per draw, not
        kept, so a large tiled set fits. Returns the batch and how many defects were transplanted."""
        n_defect = half if defect_views else 0
        batch, moved = [], 0
        for _ in range(n_defect):
            if config.transplant and transplantable and rng.random() < config.transplant:
                k = transplantable[int(rng.integers(len(transplantable)))]
                host = normals[hosts[k][int(rng.integers(len(hosts[k])))]]
                batch.append(one_view(*transplant_defect(masked[k][0], masked[k][1], host, rng)))
                moved += 1
            else:
                batch.append(_augment(defect_views[int(rng.integers(len(defect_views)))], rng))
        for j in range(config.batch_size - n_defect):
            image, mask = normals[int(rng.integers(len(normals)))], None
            if j % 2 == 0:
                image, pasted, _ = make_pseudo_anomaly(image, rng)
                mask = pasted.astype(np.float32)
            batch.append(one_view(image, mask))
        return batch, moved

    def one_view(image: np.ndarray, mask: np.ndarray | None) -> _View:
        """A random view of ``image``, one that shows the defect when there is a mask, augmented."""
        views = views_of(image, mask)
        hit = [v for v in views if float(v.coverage.max()) >= MIN_COVERAGE] if mask is not None else []
        pool = hit or views
        return _augment(pool[int(rng.integers(len(pool)))], rng)

    losses: list[float] = []
    transplants = 0
    try:
        with torch.enable_grad():
            for step in range(config.steps):
                batch, moved = draw_batch()
                transplants += moved
                images = torch.stack([v.image for v in batch])
                coverage = torch.stack([v.coverage for v in batch])
                logits = classifier(detector.embed(images)[0])
                positive = coverage >= MIN_COVERAGE
                valid = positive | (coverage == 0)
                target = positive.float()
                n_pos = float(target[valid].sum())
                n_neg = float(valid.sum()) - n_pos
                pos_weight = torch.tensor(min(config.max_pos_weight, n_neg / max(n_pos, 1.0)))
                loss = F.binary_cross_entropy_with_logits(logits[valid], target[valid], pos_weight=pos_weight)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                schedule.step()
                if step >= first_averaged:
                    average.add()
                losses.append(float(loss.detach()))
                notify("fine-tune backbone", step + 1, config.steps)
    finally:
        detector.eval()
        optimiser.zero_grad(set_to_none=True)
    average.apply()
    tail = max(1, len(losses) // 10)
    summary = FineTuneReport(
        steps=config.steps,
        lr=config.lr,
        batch_size=config.batch_size,
        normals=len(normals),
        masked=len(masked),
        averaged_steps=average.count,
        transplanted=transplants,
        first_loss=float(np.mean(losses[:tail])) if losses else float("nan"),
        last_loss=float(np.mean(losses[-tail:])) if losses else float("nan"),
        seconds=round(time.perf_counter() - start, 3),
    )
    return FineTuned(classifier.eval().as_patch_head(cfg.patch_topk), summary)
