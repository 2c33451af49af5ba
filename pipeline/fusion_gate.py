"""Which supervised signals join the fusion: the gate, judged on validation and out-of-fold evidence.

Under the default rule, the sum of calibrated log-odds (``models.fusion``), a signal moves every
image's score; under the max of calibrated probabilities it can only raise one, so a signal that
is noisy on normals turns straight into false alarms. Each
supervised signal (the type head, then the patch head) is therefore kept only when the evidence
shows that the fusion with it, under the model's rule, ranks anomalies above normals at least as
well as without it (strictly better for the patch head under the max: :func:`strict_on_tie`; for
the type head, which must also rank the evidence at 0.9 on its own, "as well" allows 0.003 of
AUROC, below what the evidence can resolve near 1: ``TrainConfig.head_gate_tolerance``). The
evidence is the validation split plus every labelled training image scored out of fold
(:func:`training_evidence`): a handful of validation anomalies let through a type head that cost on
new images (fresh seed 4848, vacuum packs: kept on a validation AUROC of 0.94, it ranked the test
images at 0.707, and the fused score 0.848 fell below the patch head's own 0.863).

The fine-scale memory bank (``models.patchcore.FineBank``) is gated the same way inside the one-class
score: it is kept only when the out-of-fold one-class scores of the training images rank strictly
better with it than without it (:func:`fine_scale_gate`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np
import torch

from models.detector import Detector
from models.fusion import Fusion, fuse_logits
from pipeline.metrics import image_auroc

__all__ = [
    "PSEUDO_ONLY",
    "Evidence",
    "Gate",
    "fine_scale_gate",
    "gate_signal",
    "fused_logit",
    "out_of_fold_log_odds",
    "strict_on_tie",
    "stratified_folds",
    "training_evidence",
]


class Gate(NamedTuple):
    """Whether a supervised signal joins the fusion, and the AUROCs behind the decision.

    ``one_class_auroc`` is the AUROC of what it is fused with (the one-class score for the type
    head; the fusion so far for the patch head); ``head_auroc`` is the signal's own. For the
    fine-scale bank they are the one-class AUROC without and with it.
    """

    kept: bool
    one_class_auroc: float | None
    head_auroc: float | None
    reason: str = ""


PSEUDO_ONLY = "no labelled anomalous validation images: a head validated on pseudo-anomalies is not fused"


class Evidence(NamedTuple):
    """Images a head's gate is judged on."""

    signals: np.ndarray  # (N, 3) uncalibrated signals in models.fusion.SIGNALS order
    labels: np.ndarray  # (N,) 0/1


def out_of_fold_log_odds(
    x: torch.Tensor,
    y: torch.Tensor,
    fold_of: np.ndarray,
    *,
    folds: int,
    fit: Callable[[torch.Tensor, torch.Tensor], torch.nn.Module],
) -> np.ndarray:
    """Type-head log-odds (anomalous vs good) of each training image from a head that did not see it.

    For each fold ``f`` a head is fitted on the images of the other folds and scores the images of
    fold ``f``, so that the gate can judge the type head on every labelled training image, as it
    judges the patch head, and not on the handful held out for validation alone. A head fitted on
    part of the images (four fifths in training) is a little weaker than the final one, so the
    evidence errs towards leaving the head out.

    Args:
        x: (N, F) type-head inputs (their one-class part already out of fold); y: (N,) class
            indices, 0 = good.
        fold_of: (N,) each image's fold.
        folds: the number of folds.
        fit: fits a head on (inputs, labels) with the final head's settings; returns type logits.

    Returns:
        (N,) float64 log-odds, NaN in a fold whose complement lacks normals or anomalies.
    """
    out = np.full(len(y), np.nan)
    anomalous = (y > 0).numpy()
    for f in range(folds):
        held = fold_of == f
        seen = anomalous[~held]
        if not held.any() or seen.all() or not seen.any():
            continue
        head = fit(x[~held], y[~held])
        with torch.inference_mode():
            out[held] = Fusion.head_log_odds(head(x[held])).double().numpy()
    return out


def stratified_folds(labels: np.ndarray, folds: int, rng: np.random.Generator) -> np.ndarray:
    """(N,) fold of each item: each class dealt round-robin over ``folds`` in a random order."""
    out = np.zeros(len(labels), dtype=np.int64)
    start = 0
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        out[idx] = (np.arange(len(idx)) + start) % folds
        start += len(idx)  # the next class starts where this one stopped, so folds stay even
    return out


def training_evidence(
    det: Detector,
    val_signals: torch.Tensor,
    y_val: np.ndarray,
    unit_scores: Sequence[float],
    unit_labels: Sequence[int],
    unit_head: np.ndarray,
    unit_patch: np.ndarray,
    *,
    signal: int,
) -> Evidence:
    """Validation signals plus the training images whose out-of-fold ``signal`` exists.

    Args:
        det: the detector, its fusion's one-class standardisation already fitted.
        val_signals: (V, 3) validation signals; y_val: (V,) their 0/1 labels.
        unit_scores: U out-of-fold one-class raw scores; unit_labels: U class indices (0 = good).
        unit_head: (U,) type-head log-odds of the training images (out of fold where the type head is
            judged on them; in-sample where only the patch head is).
        unit_patch: (U,) out-of-fold patch-head scores, NaN where a fold could not be fitted.
        signal: the column judged (1 type head, 2 patch head, ``models.fusion.SIGNALS`` order): a
            training image joins the evidence only where that signal is finite.
    """
    with torch.inference_mode():
        z = det.fusion.one_class_z(torch.tensor(unit_scores, dtype=torch.float32)).double().numpy()
    units = np.stack([z, unit_head, unit_patch], axis=1)
    keep = np.isfinite(units[:, signal])
    labels = (np.asarray(unit_labels) > 0).astype(y_val.dtype)[keep]
    return Evidence(
        np.concatenate([val_signals.double().numpy(), units[keep]]), np.concatenate([y_val, labels])
    )


def fused_logit(signals: np.ndarray, platt: Sequence[tuple[float, float]], rule: str) -> np.ndarray:
    """(N, k) uncalibrated signals and k (slope, bias) pairs -> (N,) logit of the fused score, as
    :class:`models.fusion.Fusion` computes it under ``rule`` (a signal with slope 0 is off)."""
    a = torch.tensor([p[0] for p in platt], dtype=torch.float64)
    b = torch.tensor([p[1] for p in platt], dtype=torch.float64)
    logits = torch.as_tensor(signals, dtype=torch.float64) * a + b
    return fuse_logits(logits, a, rule).numpy()


def strict_on_tie(rule: str) -> bool:
    """Whether the patch head must rank the evidence strictly better to be fused under ``rule``.

    Under the max a signal can only raise scores, so one without a measured gain can only add false
    alarms on unseen normals: a tie drops it (kept on ties, the frozen default lost TNR at 1 % FNR,
    session 8). Under the sum it lowers scores as often as it raises them, and a tie on 6 validation
    anomalies says nothing; the tuned patch head it concerns ranked test images better than the
    fused score in 12 of 14 fine-tuned vacuum models. Kept on the tie that dropped it on fresh seed
    2468, it lifted that model's test AUROC 0.852 -> 0.877 (session 11).
    """
    return rule == "max"


def gate_signal(
    z: np.ndarray,
    head_log_odds: np.ndarray,
    y: np.ndarray,
    platt: tuple[tuple[float, float], tuple[float, float]],
    min_auroc: float,
    *,
    head_calibrated: bool = True,
    pseudo_validation: bool = False,
    names: tuple[str, str] = ("head", "one-class"),
    strict: bool = False,
    rule: str = "max",
    tolerance: float = 0.0,
) -> Gate:
    """Keep the head only if it ranks validation images well on its own and its fusion with the
    one-class score (under ``rule``, see :mod:`models.fusion`) ranks them no worse than the
    one-class score alone.

    The patch head is gated by the same rule, with ``z`` the logit of what is already fused
    (one-class, and the type head if kept) under the identity calibration, and ``names`` saying so.

    The max-fusion lets either signal raise an image's score, so a head that is noisy on normals
    (it was ~0.56 validation AUROC on synthetic vacuum packs) turns into false alarms. Both signals
    ranked by AUROC, which does not depend on a signal's Platt map; the fusion's AUROC does, so it
    is computed from the calibrated probabilities.

    Args:
        z: (N,) standardised one-class log scores; head_log_odds: (N,); y: (N,) 0/1 labels.
        platt: ((a, b) of the one-class score, (a, b) of the head), as fitted on (z, y) and
            (head_log_odds, y).
        min_auroc: the head's least AUROC on the evidence to be kept.
        head_calibrated: False when the head's Platt fit was refused (it ranks validation anomalies
            below normals): never kept.
        pseudo_validation: the validation anomalies are pseudo-anomalies from the generator the
            head was trained on, so its validation AUROC says nothing about real anomalies (fused in,
            such a head cost 0.03 image AUROC on synthetic ore: one-class 1.000 -> fused 0.972):
            never kept; the one-class score decides alone.
        names: how ``reason`` names the gated signal and the one it is fused with.
        strict: the fusion must rank strictly better, not merely no worse. A tie (typically both
            perfect on the evidence) measures no gain, and in a max-fusion a signal without a
            measured gain can only add false alarms on unseen normals.
        tolerance: when not ``strict``, the fusion may rank the evidence this much worse (AUROC)
            and still count as no worse.
    """
    labels = y.astype(bool)
    oc = image_auroc(z, labels).value
    head = image_auroc(head_log_odds, labels).value
    if oc is None or head is None:
        return Gate(False, oc, head, "validation has a single class: AUROC undefined")
    fused = image_auroc(fused_logit(np.stack([z, head_log_odds], axis=1), platt, rule), labels).value
    gains = fused is not None and (fused > oc if strict else fused >= oc - tolerance)
    kept = head >= min_auroc and gains
    this, other = names
    slack = f" - {tolerance:.3g}" if tolerance and not strict else ""
    if not kept:
        shown = "n/a" if fused is None else f"{fused:.3f}"
        least = f" (least {min_auroc:.3g})" if min_auroc > 0 else ""
        reason = f"{this} AUROC {head:.3f}{least}; fused {shown}, {other} {oc:.3f}{slack}"
        if strict and fused is not None and fused == oc:
            reason += ": no measured gain"
    elif pseudo_validation:
        kept, reason = False, PSEUDO_ONLY.replace("a head", f"a {this}")
    elif not head_calibrated:
        kept, reason = False, f"the {this} ranks validation anomalies below normals"
    else:
        floor = f" >= {min_auroc:.3g}" if min_auroc > 0 else ""
        order = ">" if strict else ">="
        reason = f"{this} AUROC {head:.3f}{floor}; fused {fused:.3f} {order} {other} {oc:.3f}{slack}"
    return Gate(bool(kept), oc, head, reason)


def fine_scale_gate(
    scale_dists: Sequence[tuple[torch.Tensor, torch.Tensor | None]], labels: Sequence[int], *, topk: int
) -> Gate:
    """Keep the fine-scale bank only if it makes the one-class score rank strictly better.

    A patch's distance with the fine-scale bank is the larger of its two banks' distances, so the
    bank can only raise scores, and on normals whose fine texture varies it raises false alarms: on
    vacuum packs of a fresh seed (6060) it lowered the out-of-fold one-class AUROC 0.749 -> 0.667.
    The gate judges the one-class score only; what the supervised heads add on top can still move
    the full model either way.

    Args:
        scale_dists: per training image, its (T, h, w) out-of-fold main-bank distances and fine-bank
            distances in main-bank units (``None`` when there is no fine-scale bank).
        labels: per image, 0 for normal, > 0 for anomalous (labelled or pseudo).
        topk: patches averaged into a view's score; an image scores its highest view.
    """
    if not scale_dists or scale_dists[0][1] is None:
        return Gate(False, None, None, "off")
    y = (np.asarray(labels) > 0).astype(np.int64)

    def score(d: torch.Tensor) -> float:
        flat = d.flatten(1)
        return float(flat.topk(min(topk, flat.shape[1]), dim=1).values.mean(dim=1).max())

    without = np.array([score(main) for main, _ in scale_dists])
    with_fine = np.array([score(torch.maximum(main, fine)) for main, fine in scale_dists])  # type: ignore[arg-type]
    a_without, a_with = image_auroc(without, y).value, image_auroc(with_fine, y).value
    if a_without is None or a_with is None:
        return Gate(False, a_without, a_with, "no anomalous training images to judge it: not used")
    evidence = f"(out of fold, on {int((y == 0).sum())} normal and {int(y.sum())} anomalous training images)"
    if a_with > a_without:
        return Gate(
            True, a_without, a_with, f"one-class AUROC {a_with:.3f} > without it {a_without:.3f} {evidence}"
        )
    return Gate(
        False,
        a_without,
        a_with,
        f"one-class AUROC {a_with:.3f}, without it {a_without:.3f}: no measured gain {evidence}",
    )
