"""The supervised heads (step 4): the type head on the units' one-class inputs, and the patch head on
the labelled anomalies' pixel masks, their mirror images and pseudo-anomalies; each with the
out-of-fold scores its fusion gate is judged on."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any, NamedTuple, TypeVar

import numpy as np
import torch

from models.classifier import TypeHead, fit_type_head
from models.detector import Detector
from models.patch_head import FitStopped, PatchHead, fit_patch_head
from models.pseudo_anomalies import PSEUDO_KINDS, make_pseudo_anomaly
from pipeline.fine_tuning import FineTuned
from pipeline.fusion_gate import out_of_fold_log_odds, stratified_folds
from pipeline.patch_training import PatchExamples, mirrored, out_of_fold_scores, patch_examples
from pipeline.train.config import TrainConfig
from pipeline.train.embedding import Embedded, Trainer
from pipeline.train.image_sets import TrainingSet
from pipeline.train.one_class import OneClassInputs

MIN_PATCH_POSITIVES = 20
"""Least defect patches (over all masked training anomalies) to train the patch head on."""

HEAD_OOF_FOLDS = 5
"""Folds of the type head's out-of-fold scores for its gate: each fold head sees 80 % of the images."""

PATCH_PSEUDO_EVERY = 3
"""Every third training normal also gives the patch head a pseudo-anomaly with its mask, so that it
learns generic local damage beside the labelled types. On the development seeds' vacuum packs this
raised test image AUROC 0.838 -> 0.879 (seed 11; held-out puncture 0.836 -> 0.919) and 0.789 -> 0.799
(seed 12); bulk ore moved within noise (seed 12: 0.965 -> 0.968)."""


class TypeHeadFit(NamedTuple):
    """The type head and its log-odds (anomalous vs good) of the U units: ``in_sample`` (U,) from
    the head itself, ``out_of_fold`` (U,) from heads fitted on the other folds, NaN where none was."""

    head: TypeHead
    in_sample: np.ndarray
    out_of_fold: np.ndarray


def train_type_head(
    det: Detector,
    inputs: OneClassInputs,
    n_classes: int,
    config: TrainConfig,
    *,
    pseudo: bool,
    fine_tuned: bool,
) -> TypeHeadFit:
    """Fit the type head on the units; score them out of fold where its gate is judged on them
    (labelled anomalies, a frozen backbone, ``head_gate_evidence="out-of-fold"``)."""
    unit_x, unit_y = inputs.x, inputs.y

    def fit_head(x: torch.Tensor, y: torch.Tensor) -> TypeHead:
        return fit_type_head(x, y, n_classes, seed=config.seed)

    head = fit_head(unit_x, unit_y)
    with torch.inference_mode():
        unit_head = det.fusion.head_log_odds(head(unit_x)).double().numpy()  # in-sample
    oof_head = np.full(len(inputs.labels), np.nan)
    # Not after fine-tuning: the backbone learned every training image's defects, so out-of-fold
    # head scores on them would flatter the head; validation alone judges it, as the patch head.
    if not pseudo and not fine_tuned and config.head_gate_evidence == "out-of-fold":
        # Its own folds, more than the one-class score's: the inputs are already out of fold, and a
        # head fitted on half of 8 labelled images per type judged too harshly (development seed 11,
        # bulk ore: a type head at 0.999 on test, 0.953 out of fold over 2 folds, was dropped).
        head_folds = stratified_folds(
            np.asarray(inputs.labels), HEAD_OOF_FOLDS, np.random.default_rng(config.seed)
        )
        oof_head = out_of_fold_log_odds(unit_x, unit_y, head_folds, folds=HEAD_OOF_FOLDS, fit=fit_head)
    return TypeHeadFit(head, unit_head, oof_head)


Masked = tuple[torch.Tensor, np.ndarray, int]
"""An image with a defect mask, for the patch head: its patches (T, D, h, w), its (H, W) mask and its fold."""


class MaskedImages(NamedTuple):
    """The patch head's images with masks, by source."""

    labelled: list[Masked]
    mirrored: list[Masked]
    pseudo: list[Masked]


class PatchHeadFit(NamedTuple):
    """What became of the patch head.

    Attributes:
        trained: whether the detector holds a trained patch head.
        from_tuning: the fine-tuning whose classifier is the patch head, or None.
        out_of_fold: (U,) the units' out-of-fold patch scores, NaN where there are none.
        examples: the patches a head on frozen features was (or would have been) fitted on.
        masked: the images with masks they were drawn from.
    """

    trained: bool
    from_tuning: FineTuned | None
    out_of_fold: np.ndarray
    examples: PatchExamples
    masked: MaskedImages


def train_patch_head(
    trainer: Trainer,
    training: TrainingSet,
    defect_masks: dict[int, np.ndarray],
    emb_good: Sequence[Embedded],
    emb_anom: Sequence[Embedded],
    units: Sequence[tuple[Embedded, int]],
    *,
    tuned: FineTuned | None,
    val_pseudo: bool,
) -> PatchHeadFit:
    """Put a patch head in the detector where one is wanted and has enough defect patches.

    Args:
        defect_masks: ``{index into training.anomalies: (H, W) mask}`` of the labelled anomalies.
        emb_good, emb_anom: the training normals' and anomalies' embeddings.
        units: each unit's (embedding, fold), for its out-of-fold score.
        tuned: the backbone's fine-tuning, if it was fine-tuned.
        val_pseudo: whether the validation anomalies are pseudo-anomalies.
    """
    config, det = trainer.config, trainer.detector
    # The patch head is only worth training when real validation anomalies can judge it.
    patch_wanted = config.patch_head and not val_pseudo
    # Fine-tuning trained a patch classifier with the backbone, on augmented views and a fresh
    # pseudo-anomaly at every draw; a head refitted on the tuned features fits their training masks
    # too well (development seed 11, vacuum packs: its test AUROC 0.834, against 0.80-0.93 for the
    # classifier in runs on the same data). It has no out-of-fold scores (the backbone saw every
    # training image), so validation alone judges it.
    head_from_tuning = tuned if patch_wanted else None
    fit_frozen = patch_wanted and head_from_tuning is None  # fit a patch head on the (frozen) features
    masked = _masked_images(trainer, training, defect_masks, emb_anom, fit_frozen=fit_frozen)
    masked_all = masked.labelled + masked.mirrored + masked.pseudo

    stop = threading.Event()

    def fit_patch(ex: PatchExamples) -> PatchHead:
        return fit_patch_head(
            ex.x,
            ex.y,
            hidden=det.config.patch_hidden,
            topk=det.config.patch_topk,
            seed=config.seed,
            negative_share=config.patch_negative_share,
            stop=stop,
        )

    examples = patch_examples(
        [e.patches for e in emb_good],
        [(p, m) for p, m, _ in masked_all],
        size=config.image_size,
        tiling=trainer.tiling,
        rng=trainer.rng,
        negatives_per_view=config.patch_negatives,
    )
    patch_trained = head_from_tuning is not None or examples.positives >= MIN_PATCH_POSITIVES
    oof_patch = np.full(len(units), np.nan)
    if head_from_tuning is not None:
        det.patch_head = head_from_tuning.patch_head
    elif patch_trained:

        def score_out_of_fold(pool: Executor) -> np.ndarray:
            if training.pseudo:  # only labelled training anomalies are worth scoring out of fold for the gate
                return np.full(len(units), np.nan)
            return out_of_fold_scores(
                [(e.patches, int(g)) for e, g in zip(emb_good, training.fold_of_good, strict=True)],
                masked_all,
                [(e.patches, g) for e, g in units],
                folds=config.folds,
                size=config.image_size,
                tiling=trainer.tiling,
                rng=trainer.rng,
                fit=fit_patch,
                min_positives=MIN_PATCH_POSITIVES,
                negatives_per_view=config.patch_negatives,
                executor=pool,
            )

        # The final head and the folds' heads fitted side by side, ``workers`` at a time: each fit
        # on one thread per op, as the run computes, so the heads do not depend on ``workers``
        # (with folds=2, the final head's fit is about as long as the two fold heads' together).
        det.patch_head, oof_patch = side_by_side(
            lambda: fit_patch(examples), score_out_of_fold, workers=trainer.workers, stop=stop
        )
    return PatchHeadFit(patch_trained, head_from_tuning, oof_patch, examples, masked)


_Main = TypeVar("_Main")
_Rest = TypeVar("_Rest")


def side_by_side(
    main: Callable[[], _Main],
    rest: Callable[[Executor], _Rest],
    *,
    workers: int,
    stop: threading.Event,
) -> tuple[_Main, _Rest]:
    """``main()`` in a pool of ``workers`` threads while ``rest(pool)`` runs here, handing its own
    work to the pool; both results.

    Leaving the pool waits for the work in it, and a fit in a thread cannot be interrupted: so when
    anything is raised here (Ctrl-C, SIGTERM raised in the main thread, a failed fit), ``stop`` is
    set for the running work to end at its next step, the queued work is cancelled, and the
    exception goes on at once instead of after every fit has run to its end. ``main`` failing sets
    ``stop`` as it fails, not once ``rest`` is done, and its own error goes on, not the
    :class:`~models.patch_head.FitStopped` the work it stopped raised.
    """
    with ThreadPoolExecutor(max(1, workers)) as pool:
        future = pool.submit(main)
        future.add_done_callback(lambda done: _failed(done) is None or stop.set())
        try:
            others = rest(pool)
            return future.result(), others
        except BaseException:
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            failed = _failed(future)
            if failed is not None and not isinstance(failed, FitStopped):
                raise failed from None
            raise


def _failed(future: Future[Any]) -> BaseException | None:
    """What ``future`` raised, or None while it runs, once it returned, or when it was cancelled."""
    return None if not future.done() or future.cancelled() else future.exception()


def _masked_images(
    trainer: Trainer,
    training: TrainingSet,
    defect_masks: dict[int, np.ndarray],
    emb_anom: Sequence[Embedded],
    *,
    fit_frozen: bool,
) -> MaskedImages:
    """(patches, mask, fold) of every image with a defect mask: labelled ones, their mirror images,
    then pseudo-anomalies made from every PATCH_PSEUDO_EVERY-th training normal (in that normal's
    fold). None unless ``fit_frozen``."""
    labelled = [(n, mask, int(training.fold_of_anom[n])) for n, mask in defect_masks.items() if fit_frozen]
    labelled_masks = [(emb_anom[n].patches, mask, fold) for n, mask, fold in labelled]
    # their mirror images too, each in its source's fold, so out-of-fold scores stay out of fold
    mirrors = [
        (image, mask, fold)
        for n, source_mask, fold in (labelled if trainer.config.patch_mirrors else [])
        for image, mask in mirrored(training.anomalies[n], source_mask)
    ]
    mirror_embedded = (
        trainer.embed([image for image, _, _ in mirrors], "embed mirror images") if mirrors else []
    )
    mirror_masks = [
        (e.patches, mask, fold) for e, (_, mask, fold) in zip(mirror_embedded, mirrors, strict=True)
    ]
    goods = training.goods
    pseudo_sources = np.arange(0, len(goods), PATCH_PSEUDO_EVERY) if fit_frozen else np.arange(0)
    pseudo_masks = [
        (patches, mask, int(training.fold_of_good[n]))
        for (patches, mask), n in zip(
            _pseudo_masks(trainer, [goods[n] for n in pseudo_sources]), pseudo_sources, strict=True
        )
    ]
    return MaskedImages(labelled_masks, mirror_masks, pseudo_masks)


def _pseudo_masks(trainer: Trainer, normals: Sequence[np.ndarray]) -> list[tuple[torch.Tensor, np.ndarray]]:
    """A pseudo-anomaly in each of ``normals``, embedded, with its (H, W) mask; kinds cycle."""
    images, masks = [], []
    for n, img in enumerate(normals):
        anomalous, mask, _ = make_pseudo_anomaly(img, trainer.rng, kind=PSEUDO_KINDS[n % len(PSEUDO_KINDS)])
        images.append(anomalous)
        masks.append(mask.astype(np.float32))
    embedded = trainer.embed(images, "embed pseudo-anomalies") if images else []
    return [(e.patches, m) for e, m in zip(embedded, masks, strict=True)]
