"""Calibration on the validation split (step 5): the one-class score's standardisation on the
training normals' out-of-fold scores, then one forward pass per validation view, from whose outputs
the map scale and each signal's Platt calibration are fitted (and the gates and thresholds read)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch

from models.detector import Detector, RawOutput
from models.fusion import Calibration, fit_calibration
from models.predictor import ImageScorer
from models.tiling import TilingConfig
from pipeline.train.image_sets import ValidationSet


def standardise_one_class(det: Detector, unit_scores: Sequence[float], labels: Sequence[int]) -> None:
    """The fusion's one-class standardisation: mean and spread of the training normals' out-of-fold
    log scores."""
    oof_normal_scores = [score for score, label in zip(unit_scores, labels, strict=True) if label == 0]
    logs = torch.tensor(oof_normal_scores).clamp_min(1e-12).log()
    det.fusion.oc_mu.fill_(float(logs.mean()))
    det.fusion.oc_sd.fill_(float(logs.std().clamp_min(1e-3)) if logs.numel() > 1 else 1.0)


class ValidationCalibration(NamedTuple):
    """The validation split scored once, and the signals' calibrations fitted on it.

    Attributes:
        scorer: scores images as the model will.
        labels: (V,) 0/1, the normals then the anomalies.
        outputs: each image's raw outputs (normals with their maps).
        signals: (V, 3) each image's signals (``models.fusion.SIGNALS`` order) at the view that
            speaks for it.
        one_class, head, patch: each signal's Platt calibration.
    """

    scorer: ImageScorer
    labels: np.ndarray
    outputs: list[RawOutput]
    signals: torch.Tensor
    one_class: Calibration
    head: Calibration
    patch: Calibration


def calibrate(
    det: Detector, tiling: TilingConfig, batch_size: int, validation: ValidationSet
) -> ValidationCalibration:
    """Score the validation split, set the detector's map scale on its normals, and fit each
    signal's calibration."""
    # Calibration on the validation split: one forward pass per view; fusion, thresholds and the map
    # scale are all computed from its outputs.
    val_good, val_anom = validation.good, validation.anomalies
    scorer = ImageScorer(det, tiling=tiling, batch_size=batch_size)
    y_val = np.array([0] * len(val_good) + [1] * len(val_anom))
    outs = [r for r, _, _ in scorer.raw_outputs(val_good, map_stride=_MAP_STRIDE)]
    _set_map_scale(det, [o.map_raw for o in outs])
    outs += [r for r, _, _ in scorer.raw_outputs(val_anom, maps=False)]
    with torch.inference_mode():
        # the view that speaks for each image, as ImageScorer picks it (max fused score)
        signals = torch.stack(
            [
                det.fusion.signals(o.score_raw, o.type_logits, o.patch_score)[
                    int(det.fusion(o.score_raw, o.type_logits, o.patch_score).argmax())
                ]
                for o in outs
            ]
        )
    z, lo, ps = signals.t()
    y_t = torch.tensor(y_val)
    oc_cal, head_cal, patch_cal = (fit_calibration(s, y_t) for s in (z, lo, ps))
    return ValidationCalibration(scorer, y_val, outs, signals, oc_cal, head_cal, patch_cal)


_MAP_STRIDE = 4
"""Validation maps are kept at every 4th pixel for the map scale: they are Gaussian-smoothed (sigma
4 px at S = 256), so their median and q99.9 barely move, and memory stays bounded on big sets."""


def _set_map_scale(det: Detector, normal_maps: Sequence[torch.Tensor]) -> None:
    """Map normalisation from validation normals' raw maps: median -> 0,
    median + 2 x (q99.9 - median) -> 1.

    A normal image's hottest spots then sit near 0.5 and real defects saturate at 1.
    """
    flat = torch.cat([m.flatten() for m in normal_maps])
    # torch.quantile refuses very large inputs: subsample deterministically.
    if flat.numel() > 1_000_000:
        flat = flat[:: math.ceil(flat.numel() / 1_000_000)]
    lo = float(flat.median())
    hi = float(torch.quantile(flat, 0.999))
    det.map_lo.fill_(lo)
    det.map_span.fill_(max(2.0 * (hi - lo), 1e-6))
