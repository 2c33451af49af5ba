"""One training run, :func:`train_model`: the steps of the package docstring in order, each a named
stage whose result the later ones take."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import torch

from datasets.mvtec import read_mvtec
from models.artifact import read_card
from models.inference import Thresholds
from pipeline.fine_tuning import FineTuned
from pipeline.train.calibration import calibrate, standardise_one_class
from pipeline.train.card import model_card
from pipeline.train.config import ProgressFn, TrainConfig, deep_features_choice
from pipeline.train.data import TrainingData, cargo_type, read_training_data
from pipeline.train.embedding import Trainer
from pipeline.train.gates import at_gated_views, fuse, gate_heads, training_signals
from pipeline.train.heads import train_patch_head, train_type_head
from pipeline.train.image_sets import training_set, validation_set
from pipeline.train.model_folder import check_out_dir, save_in_place_of
from pipeline.train.one_class import choose_fine_scale, fit_final_bank, one_class_inputs, score_out_of_fold
from pipeline.train.thresholds import place_thresholds


class TrainResult(NamedTuple):
    """What :func:`train_model` produced."""

    out_dir: Path
    model_id: str
    thresholds: Thresholds
    card: dict[str, Any]
    fit_seconds: float


def train_model(
    data_root: str | Path,
    out_dir: str | Path,
    *,
    config: TrainConfig,
    progress: ProgressFn | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train a detector on ``data_root`` (MVTec layout) and save the artifact in ``out_dir``.

    The card records ``data_root`` as an absolute path, and the dataset's files in it relative to it.

    Raises:
        DatasetFormatError: no ``train/good`` images (at least 4 needed).
        CargoTypeError: cargo type neither configured nor the dataset folder's name.
        WeightsError: the backbone's weights are missing or do not match their spec.
        InputError: ``out_dir`` is a file, lies inside ``data_root``, holds something that is not a
            model, holds a model and ``overwrite`` is not set, or cannot be written (all checked
            before any training).
    """
    given = Path(data_root)
    # One absolute root, as read_mvtec resolves the items' paths: the card's paths are read against
    # it (relative to it) and it is recorded as it, whatever the folder --data was typed from.
    root = given.expanduser().resolve()
    check_out_dir(Path(out_dir), given, overwrite=overwrite)
    workers = config.threads or torch.get_num_threads()
    with _torch_threads(1):
        return _train(given, root, Path(out_dir), config, progress, workers)


@contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Torch's ops on ``n`` threads each, the count before restored after.

    The run computes every op on one thread: with several, oneDNN splits the sum of a 1x1
    convolution over a small map (Lite0's 672 -> 112 ones) and the patch head's fit its gradient
    sums across the threads, so their rounding, and every weight after them, depended on the
    machine's size, and a model retrained from the same data and seed to audit it came out
    different (``bench/README.md``, session 37). ``workers`` images are embedded at a time instead
    (:meth:`Trainer.embed`), and as many patch heads fitted
    (:func:`~pipeline.train.heads.train_patch_head`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(
    given: Path,
    root: Path,
    out_dir: Path,
    config: TrainConfig,
    progress: ProgressFn | None,
    workers: int,
) -> TrainResult:
    """:func:`train_model`'s steps, ``workers`` images embedded at a time."""
    start = time.perf_counter()
    read_mvtec(given)  # a missing or malformed folder is named as such, before its cargo type is asked
    cargo = cargo_type(given, config.cargo_type)
    deep_features, deep_features_words = deep_features_choice(config.deep_features, cargo)
    trainer = Trainer(config, progress, sharp=deep_features == "sharp", workers=workers)
    report, det = trainer.progress, trainer.detector

    # 1-2: the split, decoded; the anomalies each side learns from or is judged on; the embeddings
    data = read_training_data(root, config, trainer.rng, report)
    training = training_set(data, config.folds, trainer.rng)
    validation = validation_set(data, trainer.rng)
    tuned = _fine_tune(trainer, data, workers) if config.fine_tune_steps else None
    emb_good = trainer.embed(training.goods, "embed normals")
    emb_anom = trainer.embed(training.anomalies, "embed anomalies")

    # 3: out-of-fold one-class scores, the fine-scale bank kept or dropped, the type head's inputs
    folds = score_out_of_fold(trainer, emb_good, emb_anom, training)
    fine = choose_fine_scale(trainer, folds, emb_good, emb_anom)
    inputs = one_class_inputs(det, config, fine.embedded, fine.dists, folds.labels)

    # 4: the supervised heads
    type_head = train_type_head(
        det, inputs, len(training.class_names), config, pseudo=training.pseudo, fine_tuned=tuned is not None
    )
    report("supervised head", 1, 1)
    patch = train_patch_head(
        trainer,
        training,
        data.defect_masks,
        fine.emb_good,
        fine.emb_anom,
        list(zip(fine.embedded, folds.folds, strict=True)),
        tuned=tuned,
        val_pseudo=validation.pseudo,
    )
    report("patch head", 1, 1)
    signals = training_signals(det, config, inputs, folds.grey, type_head, patch)

    # 5: the final bank, calibration and gates on the validation split, thresholds
    final = fit_final_bank(trainer, fine.emb_good, validation.good)
    det.head = type_head.head
    det.config = dataclasses.replace(det.config, class_names=training.class_names)
    spread = standardise_one_class(det, signals.one_class, inputs.labels)
    report("memory bank", 1, 1)
    cal = calibrate(det, trainer.tiling, config.batch_size, validation, patch_trained=patch.trained)
    gates = gate_heads(det, config, cal, signals, inputs.labels, patch, val_pseudo=validation.pseudo)
    # a head the gates switched off no longer picks the views the model reads: calibrate at those
    cal, gates = at_gated_views(det, cal, gates)
    fused = fuse(det, config, cal, gates, validation)
    report("calibration", 1, 1)
    cut = place_thresholds(fused.scores, cal.labels, config, val_pseudo=validation.pseudo)
    fit_seconds = time.perf_counter() - start

    # 6: the artifact
    card = model_card(
        root=root,
        cargo=cargo,
        deep_features_words=deep_features_words,
        config=config,
        trainer=trainer,
        data=data,
        training=training,
        validation=validation,
        tuned=tuned,
        fine_gate=fine.gate,
        final=final,
        patch=patch,
        grey_offsets=signals.grey_offsets,
        spread=spread,
        cal=cal,
        gates=gates,
        fused=fused,
        cut=cut,
        emb_good=fine.emb_good,
        fit_seconds=fit_seconds,
        coreset_seconds=folds.seconds + final.seconds,
    )
    out = save_in_place_of(Path(out_dir), det, card)
    saved = read_card(out)
    report("artifact", 1, 1)
    return TrainResult(out, str(saved["model_id"]), cut.thresholds, saved, fit_seconds)


def _fine_tune(trainer: Trainer, data: TrainingData, threads: int) -> FineTuned:
    """The backbone fine-tuned on the training split's normals and its labelled defect masks.

    Opt-in and all backward passes, it keeps the run's ``threads``: a fine-tuned model is not the
    same across thread counts."""
    masked = [
        (image, data.defect_masks[n])
        for n, image in enumerate(data.train.anomalies)
        if n in data.defect_masks
    ]
    with _torch_threads(threads):
        return trainer.fine_tune(data.train.goods, masked)
