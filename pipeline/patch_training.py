"""Patch-level training examples for the patch head, from the labelled anomalies' pixel masks.

A patch is a positive when the defect mask covers at least :data:`MIN_COVERAGE` of its cell on the
patch grid; a negative when the mask does not touch it at all (patches the mask only grazes are
left out: their label is ambiguous). Negatives come from the training normals and from the clean
parts of the anomalous images, a fixed number per view, drawn with the training run's generator so
that a run is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from models.patch_head import PatchHead
from models.tiling import TilingConfig, make_views

__all__ = [
    "MIN_COVERAGE",
    "MIRRORS",
    "NEGATIVES_PER_VIEW",
    "PatchExamples",
    "mask_coverage",
    "mirrored",
    "out_of_fold_scores",
    "patch_examples",
]

MIN_COVERAGE = 0.3
"""Least share of a patch cell the mask must cover for the patch to count as defective."""
NEGATIVES_PER_VIEW = 256
"""Normal patches drawn per view (of a normal image, and of an anomalous image's clean part) by
default; ``TrainConfig.patch_negatives`` sets it per run (64 before session 21)."""
MIRRORS: tuple[tuple[int, ...], ...] = ((1,), (0,), (0, 1))
"""The axes each mirror image flips: left-right, up-down, and both (a half turn)."""


class PatchExamples(NamedTuple):
    """Training data of the patch head.

    Attributes:
        x: (N, D) patch embeddings.
        y: (N,) 1.0 for a defective patch, 0.0 for a normal one.
        images_with_masks: anomalous images that contributed positives.
    """

    x: torch.Tensor
    y: torch.Tensor
    images_with_masks: int

    @property
    def positives(self) -> int:
        return int(self.y.sum())


def mask_coverage(mask: np.ndarray, *, size: int, tiling: TilingConfig, grid: int) -> torch.Tensor:
    """(H, W) mask in [0, 1] -> (T, grid, grid) share of each patch cell it covers, per view.

    The mask is cut and resized into views exactly as its image is (:func:`models.tiling.make_views`),
    so view t's coverage lines up with view t's patch grid.
    """
    rgb = np.repeat(mask.astype(np.float32)[..., None], 3, axis=2)
    views, _ = make_views(rgb, size=size, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), tiling=tiling)
    return F.adaptive_avg_pool2d(views[:, :1], grid)[:, 0].clamp(0.0, 1.0)


def mirrored(image: np.ndarray, mask: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """The :data:`MIRRORS` of an (H, W[, C]) image and its (H, W) defect mask, each pair flipped alike.

    A defect looks no less like one mirrored, while the backbone's features of it change (a CNN
    is not mirror-invariant), so each mirror image gives the patch head defect patches it has not
    seen: with 8 labelled images per type it has few.
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    return [
        (np.ascontiguousarray(np.flip(image, axes)), np.ascontiguousarray(np.flip(mask, axes)))
        for axes in MIRRORS
    ]


def patch_examples(
    normal_patches: Sequence[torch.Tensor],
    anomalous: Sequence[tuple[torch.Tensor, np.ndarray]],
    *,
    size: int,
    tiling: TilingConfig,
    rng: np.random.Generator,
    negatives_per_view: int = NEGATIVES_PER_VIEW,
) -> PatchExamples:
    """Assemble the patch head's training set.

    Args:
        normal_patches: per normal training image, its (T, D, h, w) patch embeddings.
        anomalous: per labelled anomalous training image that has a mask, its (T, D, h, w) patch
            embeddings and the (H, W) mask in [0, 1] at the image's own size.
        size: model input side S; tiling: the run's tiling (to cut masks like their images).
        rng: the run's generator.
        negatives_per_view: normal patches drawn at random from each view (all, where it has
            fewer); every defect patch is kept.

    Returns:
        The examples; ``x`` is empty (0, D) when there is nothing to learn from.
    """
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []

    def draw(flat: torch.Tensor, candidates: torch.Tensor, label: float, limit: int | None) -> None:
        idx = candidates.numpy()
        if limit is not None and idx.size > limit:
            idx = rng.choice(idx, size=limit, replace=False)
        if idx.size:
            xs.append(flat[torch.from_numpy(np.sort(idx))])
            ys.append(torch.full((idx.size,), label))

    used = 0
    for patches in normal_patches:
        for view in patches:
            flat = view.reshape(view.shape[0], -1).t()
            draw(flat, torch.arange(flat.shape[0]), 0.0, negatives_per_view)
    for patches, mask in anomalous:
        coverage = mask_coverage(mask, size=size, tiling=tiling, grid=int(patches.shape[-1]))
        before = len(ys)
        for view, cov in zip(patches, coverage, strict=True):
            flat = view.reshape(view.shape[0], -1).t()
            cov = cov.reshape(-1)
            draw(flat, torch.nonzero(cov >= MIN_COVERAGE).reshape(-1), 1.0, None)
            draw(flat, torch.nonzero(cov == 0).reshape(-1), 0.0, negatives_per_view)
        used += int(any(float(y[0]) == 1.0 for y in ys[before:]))
    if not xs:
        d = int(normal_patches[0].shape[1]) if normal_patches else 0
        return PatchExamples(torch.zeros(0, d), torch.zeros(0), 0)
    return PatchExamples(torch.cat(xs), torch.cat(ys), used)


def out_of_fold_scores(
    normals: Sequence[tuple[torch.Tensor, int]],
    masked: Sequence[tuple[torch.Tensor, np.ndarray, int]],
    scored: Sequence[tuple[torch.Tensor, int]],
    *,
    folds: int,
    size: int,
    tiling: TilingConfig,
    rng: np.random.Generator,
    fit: Callable[[PatchExamples], PatchHead],
    min_positives: int,
    negatives_per_view: int = NEGATIVES_PER_VIEW,
    executor: Executor | None = None,
) -> np.ndarray:
    """Patch-head image scores of training images from heads that did not see them.

    For each fold ``f`` a head is fitted on the examples of the other folds and scores the images of
    fold ``f``, so that the fusion gate can judge the patch head on every labelled training image,
    not only on the handful held out for validation.

    Args:
        normals: per normal training image, its (T, D, h, w) patches and fold.
        masked: per image with a defect mask (labelled or pseudo), its patches, (H, W) mask and fold.
        scored: the images to score, each with its patches and fold.
        folds: the number of folds.
        size, tiling, rng, negatives_per_view: as for :func:`patch_examples`.
        fit: fits a head on examples (the same settings as the final head).
        min_positives: a fold with fewer defect patches to learn from is not scored (NaN).
        executor: fits the folds' heads side by side (``None``: one after another); ``fit`` must
            then be safe to call from several threads.

    Returns:
        (len(scored),) float64: each image's patch score (the max over its views), NaN where its
        fold could not be fitted.
    """
    # every fold's examples drawn from ``rng`` first, in fold order, so that the draws are the same
    # whether the heads are then fitted one after another or side by side
    fitted: dict[int, PatchExamples] = {}
    for f in range(folds):
        examples = patch_examples(
            [p for p, g in normals if g != f],
            [(p, m) for p, m, g in masked if g != f],
            size=size,
            tiling=tiling,
            rng=rng,
            negatives_per_view=negatives_per_view,
        )
        if examples.positives >= min_positives:
            fitted[f] = examples
    heads = (executor.map if executor is not None else map)(fit, fitted.values())
    out = np.full(len(scored), np.nan)
    for f, head in zip(fitted, heads, strict=True):
        with torch.inference_mode():
            for n, (patches, g) in enumerate(scored):
                if g == f:
                    out[n] = float(head(patches).max())
    return out
