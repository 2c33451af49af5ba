"""The one-class score in training: out-of-fold scoring of the training images (step 3), whether
the fine-scale bank stays, the type head's inputs, and the final memory bank (step 5).

The training normals are split into folds; each fold is scored against a memory bank built from
the other folds, so the supervised heads learn from one-class scores that are as high as they will
be on unseen normals (a normal scored against a bank that contains it would look unrealistically
clean).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from models.detector import Detector, fit_position_norm, untrained_patch_head
from models.patchcore import FineBank, MemoryBank
from models.tiling import is_grey
from pipeline.fusion_gate import Gate, fine_scale_gate
from pipeline.train.config import TrainConfig
from pipeline.train.embedding import Embedded, Trainer
from pipeline.train.image_sets import TrainingSet


class FoldScores(NamedTuple):
    """Every training image once (a unit), in the order the folds scored them.

    Attributes:
        embedded: each unit's embedding; labels: its class index (0 = good); folds: its fold;
            grey: whether it is a grey picture.
        scale_dists: each unit's distances, (T, h, w), to the main bank of the other folds'
            normals and to their fine-scale bank (``None`` without one).
        seconds: time spent selecting the fold banks.
    """

    embedded: list[Embedded]
    labels: list[int]
    folds: list[int]
    grey: list[bool]
    scale_dists: list[tuple[torch.Tensor, torch.Tensor | None]]
    seconds: float


def score_out_of_fold(
    trainer: Trainer, emb_good: Sequence[Embedded], emb_anom: Sequence[Embedded], training: TrainingSet
) -> FoldScores:
    """Out-of-fold one-class distances for every training unit: main bank, and fine-scale bank or None."""
    config = trainer.config
    embedded: list[Embedded] = []
    labels: list[int] = []
    unit_folds: list[int] = []
    unit_grey: list[bool] = []
    scale_dists: list[tuple[torch.Tensor, torch.Tensor | None]] = []  # per unit
    coreset_seconds = 0.0
    # (embedding, fold, label) of every training image: the normals, then the anomalies
    train_units = [(e, g, 0) for e, g in zip(emb_good, training.fold_of_good, strict=True)] + [
        (e, g, training.class_names.index(kind))
        for e, g, kind in zip(emb_anom, training.fold_of_anom, training.anomaly_types, strict=True)
    ]
    train_grey = [is_grey(img) for img in [*training.goods, *training.anomalies]]
    for f in range(config.folds):
        t0 = time.perf_counter()
        bank, fine = trainer.banks(
            [e for e, g in zip(emb_good, training.fold_of_good, strict=True) if g != f],
            [e for e, g in zip(emb_good, training.fold_of_good, strict=True) if g == f],
        )
        coreset_seconds += time.perf_counter() - t0
        with torch.inference_mode():
            for (e, g, label), grey in zip(train_units, train_grey, strict=True):
                if g == f:
                    scale_dists.append(trainer.detector.scale_distances(e.patches, bank, fine))
                    embedded.append(e)
                    labels.append(label)
                    unit_folds.append(f)
                    unit_grey.append(grey)
        trainer.progress("out-of-fold scoring", f + 1, config.folds)
    return FoldScores(embedded, labels, unit_folds, unit_grey, scale_dists, coreset_seconds)


class FineScale(NamedTuple):
    """Whether the fine-scale bank stays, and the embeddings and distances that follow from it.

    Attributes:
        gate: the decision and its reason.
        dists: each unit's (T, h, w) distances: the larger of the two banks' where it stays, the
            main bank's otherwise.
        emb_good, emb_anom, embedded: the training normals', anomalies' and units' embeddings,
            without the fine-scale channels where it was fitted and dropped.
    """

    gate: Gate
    dists: list[torch.Tensor]
    emb_good: list[Embedded]
    emb_anom: list[Embedded]
    embedded: list[Embedded]


def choose_fine_scale(
    trainer: Trainer, scores: FoldScores, emb_good: list[Embedded], emb_anom: list[Embedded]
) -> FineScale:
    """Keep the fine-scale bank where it ranks the out-of-fold units better (or is forced on); where
    it was fitted and is not kept, take it out of the detector."""
    config, det = trainer.config, trainer.detector
    scale_dists = scores.scale_dists
    embedded = scores.embedded
    fine_gate = fine_scale_gate(scale_dists, scores.labels, topk=det.config.topk)
    if config.fine_scale == "on" and not fine_gate.kept:
        fine_gate = fine_gate._replace(kept=True, reason=f"on (forced); {fine_gate.reason}")
    if fine_gate.kept:
        dists = [main if fine is None else torch.maximum(main, fine) for main, fine in scale_dists]
    else:
        dists = [main for main, _ in scale_dists]
    if config.fine_scale != "off" and not fine_gate.kept:  # drop its channels, its bank and its config flag
        split = det.embedder.out_dim

        def main_only(e: Embedded) -> Embedded:
            return Embedded(e.patches[:, :split], e.pooled)

        emb_good, emb_anom = [main_only(e) for e in emb_good], [main_only(e) for e in emb_anom]
        embedded = [main_only(e) for e in embedded]
        trainer.base_config = dataclasses.replace(trainer.base_config, fine_scale=False)
        det.config = dataclasses.replace(det.config, fine_scale=False)
        det.fine = None
        det.patch_head = untrained_patch_head(det.config, split, seed=config.seed)
    return FineScale(fine_gate, dists, emb_good, emb_anom, embedded)


class OneClassInputs(NamedTuple):
    """What the type head learns from, one row per unit.

    Attributes:
        x: (U, F) type-head inputs of each unit's most anomalous view.
        y: (U,) class indices; labels: the same, as a list.
        scores: U out-of-fold one-class raw image scores.
    """

    x: torch.Tensor
    y: torch.Tensor
    labels: list[int]
    scores: list[float]


def one_class_inputs(
    det: Detector,
    config: TrainConfig,
    embedded: Sequence[Embedded],
    dists: Sequence[torch.Tensor],
    labels: list[int],
) -> OneClassInputs:
    """Fit the position norm and the attention temperature on the units' out-of-fold normal
    distances, then read each unit's one-class score and type-head inputs."""
    units = list(zip(embedded, dists, labels, strict=True))
    normal_dists = [d for _, d, label in units if label == 0]
    if config.position_norm:
        grid = int(normal_dists[0].shape[-1])
        det.config = dataclasses.replace(det.config, grid=grid)
        det.pos_scale, det.pos_shift = fit_position_norm(torch.cat(normal_dists))
        units = [(e, det.normalise_positions(dist), label) for e, dist, label in units]
    normal_flat = torch.cat([dist.flatten() for _, dist, label in units if label == 0])
    det.attn_temp.fill_(float(normal_flat.std().clamp_min(1e-6)))
    xs, ys, unit_scores = [], [], []
    with torch.inference_mode():
        for e, dist, label in units:
            map_raw = det.smooth_map(dist)
            score_raw = det.image_score(dist, map_raw)
            best = int(score_raw.argmax())  # the most anomalous view (tile) speaks for the image
            xs.append(
                det.head_inputs(
                    e.patches[best : best + 1],
                    e.pooled[best : best + 1],
                    dist[best : best + 1],
                    score_raw[best : best + 1],
                )
            )
            ys.append(label)
            unit_scores.append(float(score_raw[best]))
    return OneClassInputs(torch.cat(xs), torch.tensor(ys), ys, unit_scores)


class FinalBank(NamedTuple):
    """The model's memory bank and fine-scale bank (or None), and the time spent selecting them."""

    bank: MemoryBank
    fine: FineBank | None
    seconds: float


def fit_final_bank(
    trainer: Trainer, emb_good: Sequence[Embedded], val_good: Sequence[np.ndarray]
) -> FinalBank:
    """The memory bank of all training normals (coreset-reduced) and, with the fine-scale bank kept,
    that bank, its scale fitted on the validation normals; put in the detector with their sizes."""
    det = trainer.detector
    t0 = time.perf_counter()
    fine_kept = trainer.base_config.fine_scale
    held_out = trainer.embed(val_good, "embed validation normals") if fine_kept else []
    final_bank, final_fine = trainer.banks(emb_good, held_out)
    seconds = time.perf_counter() - t0
    det.bank = final_bank
    det.fine = final_fine
    det.config = dataclasses.replace(
        det.config,
        bank_size=int(final_bank.bank.shape[0]),
        fine_bank_size=int(final_fine.bank.bank.shape[0]) if final_fine is not None else 1,
    )
    return FinalBank(final_bank, final_fine, seconds)
