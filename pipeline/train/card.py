"""The model card (step 6): what was trained, on what, how its inputs are preprocessed, how it was
calibrated and gated and how it did on the validation split; ``models.artifact.save_artifact`` adds
the detector's config, the hashes and the model id."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from datasets.mvtec import read_mvtec
from models.artifact import pseudo_types_of
from models.patchcore import FineBank
from models.threshold import METHOD_VALIDATION, allowed_misses, anomalies_for_bound, miss_rate_bound
from models.tiling import TilingConfig
from models.weights import file_sha256
from pipeline.fine_tuning import FineTuned
from pipeline.fusion_gate import Gate
from pipeline.leakage import duplicates_report
from pipeline.picture_kinds import GreyOffsets
from pipeline.resolution import source_resolution
from pipeline.train.calibration import OneClassSpread, ValidationCalibration
from pipeline.train.config import TrainConfig
from pipeline.train.data import TrainingData, files_hash
from pipeline.train.embedding import Embedded, Trainer
from pipeline.train.gates import FusedValidation, Gates
from pipeline.train.heads import PatchHeadFit
from pipeline.train.image_sets import TrainingSet, ValidationSet
from pipeline.train.one_class import FinalBank
from pipeline.train.thresholds import Cut, release_setter


def model_card(
    *,
    root: Path,
    cargo: str,
    deep_features_words: str,
    config: TrainConfig,
    trainer: Trainer,
    data: TrainingData,
    training: TrainingSet,
    validation: ValidationSet,
    tuned: FineTuned | None,
    fine_gate: Gate,
    final: FinalBank,
    patch: PatchHeadFit,
    grey_offsets: GreyOffsets | None,
    spread: OneClassSpread,
    cal: ValidationCalibration,
    gates: Gates,
    fused: FusedValidation,
    cut: Cut,
    emb_good: Sequence[Embedded],
    fit_seconds: float,
    coreset_seconds: float,
) -> dict[str, Any]:
    """The card of the model the steps fitted, from what each step produced."""
    spec = trainer.backbone.spec
    return {
        "cargo_type": cargo,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "clearsight_version": importlib.metadata.version("clearsight"),
        "backbone": {
            "name": config.backbone,
            "weights": spec.name,
            "weights_source": spec.source,
            "weights_sha256": spec.sha256 or _maybe_file_hash(spec.source),
            "licence": spec.licence,
            "stored_in_artifact": True,
            "fine_tuned": tuned is not None,
        },
        "preprocessing": _preprocessing(config, spec, trainer.tiling, data.images, data.sixteen_bit.depth),
        "thresholds": cut.thresholds._asdict(),
        "validation": _validation(
            root, config, validation, spread, cal, gates, fused, cut, rule=trainer.detector.fusion.rule
        ),
        "training": {
            "data_root": str(root),
            "counts": {
                "train": dict(Counter(i.anomaly_type for i in data.train.items)),
                "validation": dict(Counter(i.anomaly_type for i in data.val.items)),
            },
            "validation_share": {"good": config.val_fraction, "anomalous": config.val_anomaly_share},
            "files_sha256": files_hash(root, data.train.items + data.val.items, data.hashes),
            "duplicates": duplicates_report(
                root,
                [
                    (i.path, i.anomaly_type, h)
                    for i, h in zip(data.train.items + data.val.items, data.hashes, strict=True)
                ],
                [Path(i.path) for i in read_mvtec(root).split("test")],
                phashes=data.phashes,
            ),
            "empty_masks": data.empty_masks,
            "sixteen_bit": data.sixteen_bit._asdict(),
            "pseudo_anomalies": training.pseudo,
            "pseudo_types": pseudo_types_of(training.class_names),  # what loading checks it against
            "patch_head": _patch_head(patch, config),
            "class_names": list(training.class_names),
            "folds": config.folds,
            "coreset_ratio": config.coreset_ratio,
            "max_bank": config.max_bank,
            "bank_size": int(final.bank.bank.shape[0]),
            "fine_scale": _fine_scale_card(
                trainer.backbone,
                final.fine,
                fine_gate.reason if config.fine_scale != "off" else "off (--fine-scale off)",
            ),
            "grey_offsets": grey_offsets.card() if grey_offsets is not None else "off (--no-grey-offsets)",
            "deep_features": deep_features_words,
            "fine_tune": {"steps": 0}
            if tuned is None
            else {**tuned.report._asdict(), "data": _FINE_TUNE_DATA},
            "patches_total": int(sum(e.patches.shape[0] * e.patches[0, 0].numel() for e in emb_good)),
            "seed": config.seed,
            "fit_seconds": round(fit_seconds, 3),
            "coreset_seconds": round(coreset_seconds, 3),
        },
    }


def _preprocessing(
    config: TrainConfig, spec: Any, tiling: TilingConfig, images: Sequence[np.ndarray], sixteen_bit_depth: int
) -> dict[str, Any]:
    """The card's ``preprocessing``: how an image becomes the model's input."""
    return {
        "input_size": config.image_size,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "channels": "RGB; gray replicated to 3 channels",
        "scaling": "uint8 / 255, uint16 / (2 ** sixteen_bit_depth - 1) clipped to 1, float clipped to [0, 1]",
        "sixteen_bit_depth": sixteen_bit_depth,
        "resize": "cv2 INTER_AREA when shrinking, INTER_LINEAR when enlarging",
        "tiling": {"tile_size": tiling.tile_size, "overlap": tiling.overlap},
        "source_resolution": source_resolution(
            [img.shape[:2] for img in images], size=config.image_size, tiling=tiling
        ),
    }


def _validation(
    root: Path,
    config: TrainConfig,
    validation: ValidationSet,
    spread: OneClassSpread,
    cal: ValidationCalibration,
    gates: Gates,
    fused: FusedValidation,
    cut: Cut,
    *,
    rule: str,
) -> dict[str, Any]:
    """The card's ``validation``: the model's figures on the validation split, its calibration and
    the heads' gates."""
    thresholds, normal_scores, anomalous_scores = cut.thresholds, cut.normal_scores, cut.anomalous_scores
    val_pseudo, n_val_anom, y_val = validation.pseudo, len(validation.anomalies), cal.labels
    head_gate, patch_gate = gates.head, gates.patch
    return {
        "image_auroc": cut.auroc.value,
        "tnr_at_target_miss_rate": cut.tnr.value,
        "release_rate_at_threshold": float(np.mean(normal_scores < thresholds.release)),
        "miss_rate_at_threshold": float(np.mean(anomalous_scores < thresholds.release)),
        "n_good": int(len(validation.good)),
        "n_anomalous": int(n_val_anom),
        # what the release cut promises new anomalies like these (models.threshold docstring)
        "miss_rate_bound": miss_rate_bound(n_val_anom, config.target_miss_rate, method=thresholds.method),
        # the rule the cut was placed by: cards without it allowed floor(target * n) misses
        "misses_allowed": allowed_misses(config.target_miss_rate, n_val_anom),
        "release_set_by": release_setter(
            root, validation.anomaly_paths, anomalous_scores, normal_scores, config.target_miss_rate
        )
        if not val_pseudo and thresholds.method == METHOD_VALIDATION
        else None,
        "anomalies_for_target_bound": anomalies_for_bound(config.target_miss_rate),
        "anomalies": "pseudo (synthetic, made from held-out normals)" if val_pseudo else "labelled",
        "anomalous_types": dict(Counter(validation.anomaly_types)),
        "one_class_auroc": head_gate.one_class_auroc,
        "head_auroc": head_gate.head_auroc,
        "calibration": (
            "Platt scaling on the validation split"
            if cal.one_class.fitted
            else "fallback: validation did not rank anomalies above normals, so no slope was "
            "fitted; the standardised one-class score goes through a fixed logistic"
        ),
        # the spread the one-class score is standardised by (floored), and a warning where it binds
        "one_class_spread": spread.card(),
        "fusion_rule": _FUSION_WORDS[rule],
        "head_in_fusion": head_gate.kept,
        "head_gate": head_gate.reason,
        "head_evidence": {
            "validation_images": int(len(y_val)),
            "out_of_fold_training_images": int(gates.head_oof_images),
            "auroc_tolerance": config.head_gate_tolerance,
        },
        "patch_head_auroc": patch_gate.head_auroc,
        "patch_head_evidence": {
            "validation_images": int(len(y_val)),
            "out_of_fold_training_images": int(gates.patch_oof_images),
        },
        "patch_head_in_fusion": patch_gate.kept,
        "patch_head_gate": patch_gate.reason,
        "signals_co_located": fused.co_located,
    }


def _patch_head(patch: PatchHeadFit, config: TrainConfig) -> dict[str, Any]:
    """The card's ``training.patch_head``: how the patch head was trained, and on what."""
    if patch.from_tuning is not None:
        return {
            "trained": True,
            "source": "trained with the backbone (fine-tuning)",
            "labelled_masks": patch.from_tuning.report.masked,
        }
    examples = patch.examples
    return {
        "trained": patch.trained,
        "source": "frozen features",
        "labelled_masks": len(patch.masked.labelled),
        "mirrored_copies": len(patch.masked.mirrored),
        "pseudo_anomalies": len(patch.masked.pseudo),
        "masked_images": examples.images_with_masks,
        "defect_patches": examples.positives,
        "normal_patches": int(examples.y.numel()) - examples.positives,
        "normal_patches_per_view": config.patch_negatives,
        "normal_share_per_step": config.patch_negative_share,
    }


_FINE_TUNE_DATA = (
    "training split only: labelled anomalies' masks, those defects also transplanted into training normals, "
    "and pseudo-anomalies pasted into training normals; "
    "out-of-fold scores of the labelled training anomalies come from a backbone that saw them"
)


_FUSION_WORDS = {
    "max": "max of the calibrated probabilities",
    "sum": "sum of the calibrated log-odds",
}


def _fine_scale_card(backbone: Any, fine: FineBank | None, gate: str) -> dict[str, Any]:
    """The card's ``training.fine_scale``: whether the bank is in the model, why, and its figures."""
    if fine is None:
        return {"used": False, "gate": gate, "layer": None, "stride": None, "bank_size": 0}
    return {
        "used": True,
        "gate": gate,
        "layer": int(backbone.fine_layer),
        "stride": int(backbone.fine_stride),
        "bank_size": int(fine.bank.bank.shape[0]),
        "scale": float(fine.scale),
        "shift": float(fine.shift),
    }


def _maybe_file_hash(source: str) -> str:
    if source.startswith("file:"):
        return file_sha256(Path(source[len("file:") :]))
    return ""
