"""What each fused signal says: the card's account of the signals, and their test-set evidence.

A model's score fuses up to three calibrated signals (``models.fusion.SIGNALS``): the one-class
distance to the normal patches, the type head and the patch head. When a model misses an anomaly or
raises a false alarm, the first question is which signal did it. Each prediction carries every
signal's calibrated log-odds (``Prediction.signal_log_odds``); here they become the report's
account of the signals (:func:`fused_signals`, from the model card: in the score or not, and why),
each signal's own image AUROC on the test set (:func:`signal_aurocs`: does the fusion rank better
than its best signal?) and the words the gallery prints under each image (:func:`describe_log_odds`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from models.fusion import SIGNALS
from models.inference import GOOD
from pipeline import metrics as m
from pipeline.intervals import bootstrap_intervals

__all__ = ["SIGNAL_NAMES", "describe_log_odds", "fused_signals", "signal_aurocs"]

SIGNAL_NAMES: dict[str, str] = {
    "one_class": "one-class",
    "type_head": "type head",
    "patch_head": "patch head",
}
"""Short names of :data:`models.fusion.SIGNALS`, as the report prints them."""


def fused_signals(card: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The signals a trained model can fuse, whether each is in its score, and why, from its card.

    Returns one ``{"key", "signal", "used", "why"}`` row per signal (``key`` from
    :data:`models.fusion.SIGNALS`), or an empty list for a card that does not record its fusion (a
    fake, or an artifact from before the heads were gated).
    """
    val = card.get("validation", {})
    if not isinstance(val, Mapping) or "head_in_fusion" not in val:
        return []
    fine = card.get("training", {}).get("fine_scale", {})
    banks = "the memory bank of normal patches"
    if isinstance(fine, Mapping) and fine.get("used"):
        banks = f"the memory banks of normal patches (main, and fine-scale at stride {fine.get('stride')})"
    rows: list[dict[str, Any]] = [
        {
            "key": "one_class",
            "signal": f"one-class distance to {banks}",
            "used": True,
            "why": f"always; calibration: {val.get('calibration', 'n/a')}",
        },
        {
            "key": "type_head",
            "signal": "type head (image-level classifier of the labelled types)",
            "used": bool(val["head_in_fusion"]),
            "why": str(val.get("head_gate", "")),
        },
    ]
    if "patch_head_in_fusion" in val:
        rows.append(
            {
                "key": "patch_head",
                "signal": "patch head (per-patch defect classifier, trained on defect masks)",
                "used": bool(val["patch_head_in_fusion"]),
                "why": str(val.get("patch_head_gate", "")),
            }
        )
    return rows


def signal_aurocs(rows: Iterable[tuple[Mapping[str, float] | None, str]]) -> dict[str, dict[str, Any]]:
    """Each signal's own image AUROC, with its 95 % bootstrap interval, on the scored test images.

    Args:
        rows: per scored image, its ``signal_log_odds`` and its label (``"good"`` or not).

    Returns:
        ``{signal: {"image_auroc", "image_auroc_interval", "images"}}`` for every signal that every
        image reports (a signal switched off in the model is absent from all of them); empty when
        the predictor reports no signals or one class is missing.
    """
    rows = list(rows)
    odds = [log_odds for log_odds, _ in rows if log_odds is not None]
    if not rows or len(odds) < len(rows):
        return {}
    labels = np.array([label != GOOD for _, label in rows], dtype=bool)
    out: dict[str, dict[str, Any]] = {}
    for name in SIGNALS:
        if not all(name in log_odds for log_odds in odds):
            continue
        values = np.array([log_odds[name] for log_odds in odds], dtype=np.float64)
        auroc = m.image_auroc(values, labels).value
        if auroc is None:
            return {}
        interval = (bootstrap_intervals(values, labels) or {}).get("image_auroc")
        out[name] = {
            "image_auroc": auroc,
            "image_auroc_interval": None if interval is None else [interval.low, interval.high],
            "images": int(values.size),
        }
    return out


def describe_log_odds(log_odds: Mapping[str, float] | None, rule: str) -> str:
    """One image's signals in words for the gallery, e.g. ``"one-class −1.83 + patch head −1.23 = −3.06"``
    under the sum (the fused log-odds), or ``"max(one-class 0.41, patch head 2.10)"`` under the max;
    ``""`` when the predictor reported none."""
    if not log_odds:
        return ""
    parts = [f"{SIGNAL_NAMES.get(k, k)} {_signed(v)}" for k, v in log_odds.items()]
    if len(parts) == 1:
        return parts[0]
    if rule == "sum":
        return " + ".join(parts) + f" = {_signed(sum(log_odds.values()))}"
    return f"max({', '.join(parts)})"


def _signed(value: float) -> str:
    return f"{value:.2f}".replace("-", "\u2212")
