"""Calibration on the validation split (step 5): the one-class score's standardisation on the
training normals' out-of-fold scores, then one forward pass per validation view, from whose outputs
the map scale and each signal's Platt calibration are fitted (and the gates and thresholds read)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

from models.detector import Detector, RawOutput
from models.fusion import Calibration, fit_calibration, fuse_logits
from models.predictor import ImageScorer
from models.tiling import TilingConfig
from pipeline.train.image_sets import ValidationSet

ONE_CLASS_SD_FLOOR = 0.01
"""Least spread of the log one-class score (natural-log units) the fusion divides by.

The fused score reads the one-class score as ``(log s - mu) / sd``, so a wobble in ``log s`` moves
it by wobble / sd. Measured on five models trained on ordinary data (64 to 256 px, both cargo
types), ``log s`` of one image moves by at most 1.1e-5 between batch sizes 1, 7 and 16, 1 and 2
threads, and PyTorch and ONNX Runtime: at this floor that is 1e-3 of a spread. Ordinary data spreads
0.02 to 0.10 (about 20 models, 64 to 256 px; 0.052 at the default 256 px), so the floor is half the
smallest spread seen and leaves their ``sd`` as it was (0.05 would have changed most of them). It
binds on normals that are near-copies of one another, whose distances to the bank are float rounding
of zero: on 14 copies of one picture ``log s`` moved by up to 0.09 between batches, which the earlier
floor of 1e-3 turned into the whole verdict. Only a floor of 0.03 or more steadied that model, which
would change ordinary ones too, so training warns instead (:func:`spread_warning`)."""

FEW_NORMALS = 10
"""Fewer training normals (out-of-fold scores) than this measure no spread to go by: four distinct
pictures (three out-of-fold scores, the least training takes) gave 0.0041, 0.0275 and 0.0235 on
three seeds, so a spread under the floor from them says they are few, not that they are copies."""


class OneClassSpread(NamedTuple):
    """The spread of the training normals' out-of-fold log one-class scores.

    Attributes:
        log_sd: their standard deviation as measured (None with a single normal).
        sd: the one the fusion divides by: ``log_sd``, at least :data:`ONE_CLASS_SD_FLOOR`.
        normals: how many out-of-fold scores ``log_sd`` was measured on.
    """

    log_sd: float | None
    sd: float
    normals: int

    def card(self) -> dict[str, Any]:
        """The card's ``validation.one_class_spread``."""
        return {
            "log_sd": self.log_sd,
            "floor": ONE_CLASS_SD_FLOOR,
            "sd": self.sd,
            "normals": self.normals,
            "warning": spread_warning(self.log_sd, self.normals),
        }


def standardise_one_class(
    det: Detector, unit_scores: Sequence[float], labels: Sequence[int]
) -> OneClassSpread:
    """The fusion's one-class standardisation: mean and spread of the training normals' out-of-fold
    log scores, the spread at least :data:`ONE_CLASS_SD_FLOOR`."""
    oof_normal_scores = [score for score, label in zip(unit_scores, labels, strict=True) if label == 0]
    logs = torch.tensor(oof_normal_scores).clamp_min(1e-12).log()
    log_sd = float(logs.std()) if logs.numel() > 1 else None
    sd = 1.0 if log_sd is None else max(log_sd, ONE_CLASS_SD_FLOOR)
    spread = OneClassSpread(log_sd, sd, len(oof_normal_scores))
    det.fusion.oc_mu.fill_(float(logs.mean()))
    det.fusion.oc_sd.fill_(spread.sd)
    return spread


def spread_warning(log_sd: float | None, normals: int) -> str | None:
    """A warning when the training normals' one-class scores barely differ, or None: from
    ``normals`` (fewer than :data:`FEW_NORMALS`), too few to tell, said as such, not as copies."""
    if log_sd is None or log_sd >= ONE_CLASS_SD_FLOOR:
        return None
    if normals < FEW_NORMALS:
        return (
            f"{normals} training normals are too few to measure how much normal images vary: their "
            f"one-class scores' spread ({log_sd:.2g} in log units) was raised to the floor "
            f"({ONE_CLASS_SD_FLOOR}), and a new normal's score may turn on float rounding (the batch it "
            "comes in, the runtime). Train on more normal images"
        )
    return (
        f"the training normals' one-class scores barely differ (spread {log_sd:.2g} in log units, under the "
        f"floor of {ONE_CLASS_SD_FLOOR} that ordinary data stays above): the normal images look like copies "
        "of one another, so the model has seen no normal variation, and a new normal's score may turn on "
        "float rounding (the batch it comes in, the runtime). Train on varied normal images"
    )


class ValidationCalibration(NamedTuple):
    """The validation split scored once, and the signals' calibrations fitted on it.

    Attributes:
        scorer: scores images as the model will.
        labels: (V,) 0/1, the normals then the anomalies.
        outputs: each image's raw outputs (normals with their maps).
        signals: (V, 3) each image's signals (``models.fusion.SIGNALS`` order) at the view that
            speaks for it.
        one_class, head, patch: each signal's Platt calibration.
        picked_by: (3,) bool, the signals whose fused score picked each image's view.
    """

    scorer: ImageScorer
    labels: np.ndarray
    outputs: list[RawOutput]
    signals: torch.Tensor
    one_class: Calibration
    head: Calibration
    patch: Calibration
    picked_by: torch.Tensor


def calibrate(
    det: Detector,
    tiling: TilingConfig,
    batch_size: int,
    validation: ValidationSet,
    *,
    patch_trained: bool,
) -> ValidationCalibration:
    """Score the validation split, set the detector's map scale on its normals, and fit each
    signal's calibration.

    Each image's signals are read at the view (tile) where the signals that can join the fusion
    add up to the most (:func:`view_signals`); ``patch_trained``: whether the patch head was trained.
    """
    # Calibration on the validation split: one forward pass per view; fusion, thresholds and the map
    # scale are all computed from its outputs.
    val_good, val_anom = validation.good, validation.anomalies
    scorer = ImageScorer(det, tiling=tiling, batch_size=batch_size)
    y_val = np.array([0] * len(val_good) + [1] * len(val_anom))
    outs = [r for r, _, _ in scorer.raw_outputs(val_good, map_stride=_MAP_STRIDE)]
    _set_map_scale(det, [o.map_raw for o in outs])
    outs += [r for r, _, _ in scorer.raw_outputs(val_anom, maps=False)]
    fusable = view_signals(pseudo=validation.pseudo, patch_trained=patch_trained)
    return _fit_at_views(det, scorer, y_val, outs, fusable)


def at_fused_views(det: Detector, cal: ValidationCalibration, fused: torch.Tensor) -> ValidationCalibration:
    """``cal`` again, each image's view picked by the ``fused`` signals ((3,) bool) alone, and every
    signal's calibration fitted there; ``cal`` itself where that picks the same views.

    A gate may switch off a head that helped pick the views: the finished model then reads each
    image at another view than the one its calibration was fitted at."""
    again = _fit_at_views(det, cal.scorer, cal.labels, cal.outputs, fused)
    return cal if torch.equal(again.signals, cal.signals) else again


def _fit_at_views(
    det: Detector, scorer: ImageScorer, y_val: np.ndarray, outs: list[RawOutput], picked_by: torch.Tensor
) -> ValidationCalibration:
    """Each image's signals at its view picked by the ``picked_by`` signals, and their calibrations."""
    with torch.inference_mode():
        # the view that speaks for each image, as ImageScorer picks it (max fused score), among the
        # signals the fused score can hold
        signals = torch.stack([_at_view(det, o, picked_by) for o in outs])
    z, lo, ps = signals.t()
    y_t = torch.tensor(y_val)
    oc_cal, head_cal, patch_cal = (fit_calibration(s, y_t) for s in (z, lo, ps))
    return ValidationCalibration(scorer, y_val, outs, signals, oc_cal, head_cal, patch_cal, picked_by)


def view_signals(*, pseudo: bool, patch_trained: bool) -> torch.Tensor:
    """(3,) bool, in ``SIGNALS`` order: the signals that may join the fusion, by which calibration
    picks each image's view. An untrained patch head (random weights) is never fused, nor is any
    head judged on pseudo-anomalies (``pipeline.fusion_gate.gate_signal``): counted, they chose the
    tile whose one-class score was calibrated, a tile the finished model does not read."""
    return torch.tensor([True, not pseudo, patch_trained and not pseudo])


def _at_view(det: Detector, out: RawOutput, fusable: torch.Tensor) -> torch.Tensor:
    """(3,) ``out``'s signals at its view where the ``fusable`` ones' fused log-odds (as the
    fusion stands, uncalibrated) are highest."""
    signals = det.fusion.signals(out.score_raw, out.type_logits, out.patch_score)
    slope, bias = det.fusion.slope[fusable], det.fusion.bias[fusable]
    fused = fuse_logits(signals[:, fusable] * slope + bias, slope, det.fusion.rule)
    return signals[int(torch.sigmoid(fused.double()).argmax())]  # the score, as Fusion gives it


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
