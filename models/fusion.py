"""Fusion and calibration: one score in [0, 1] from the one-class distance and the supervised heads.

Each signal is calibrated separately with a regularised 1-D logistic regression (Platt scaling) on
the validation split: the one-class image score as ``(log s - mu) / sd`` (mu, sd of out-of-fold
normal scores), the type head as its anomaly log-odds ``logsumexp(logits[1:]) - logits[0]``, the
patch head's image score as it is (logit units). Under ``"sum"`` (what training uses unless told
otherwise) the final score adds the calibrated log-odds, as if the signals were independent
evidence: an image that two signals each find somewhat suspect outranks one that a single signal
finds so, and one signal's false alarm on a normal image is tempered by the others. ``"max"``
takes the MAX of the calibrated probabilities instead, so that a confident "good" from a supervised
head can never suppress the one-class signal, whatever anomaly type it is. On the benchmark that
guarantee did not pay on average: the sum ranked the held-out types as well or better on most
models (not all: punctures 0.846 -> 0.788 on one seed of seven), and all images about as well on
bulk ore and better on vacuum packs with many labelled anomalies and on fine-tuned models
(:class:`pipeline.train.TrainConfig` ``fusion``; ``bench/README.md``, sessions 10 and 14). A signal
that validation did not support is switched off with :data:`OFF`, under either rule.

When the one-class score and the patch head are both fused under ``"sum"``, training makes the
detector read them at one spot (:meth:`Fusion.co_located`): the pixel of their smoothed maps where
their calibrated log-odds add up to the most, instead of each signal at its own hottest patches.
A clean vacuum pack's one-class peak often lies in the background and its patch-head peak on a
barcode; at one spot those no longer add up, while a defect both see still does (vacuum packs'
test image AUROC +0.016 to +0.050 on seven seeds; ``bench/README.md``, session 18).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

__all__ = [
    "FALLBACK_CALIBRATION",
    "FUSION_RULES",
    "MIN_SLOPE",
    "OFF",
    "SCORE_DTYPES",
    "SIGNALS",
    "Calibration",
    "Fusion",
    "fit_calibration",
    "fit_platt",
    "fuse_logits",
]

MIN_SLOPE = 0.05
"""Least Platt slope accepted: a calibration must never reverse (or flatten) the ranking it maps."""

FALLBACK_CALIBRATION = (1.0, -3.0)
"""(a, b) used when validation cannot give a usable slope: on the standardised one-class score,
a normal image at the out-of-fold mean maps to 0.05 and one 3 spreads above it to 0.5."""


FUSION_RULES = ("max", "sum")
"""How the calibrated signals combine: the max of their probabilities, or the sum of their log-odds."""

SIGNALS = ("one_class", "type_head", "patch_head")
"""The fused signals, in the order of :class:`Fusion`'s ``slope`` and ``bias``."""

OFF = (0.0, -30.0)
"""(slope, bias) that switch a signal off: sigmoid(-30) ~ 1e-13 under the max, and under the sum a
slope of 0 marks the signal as left out (:meth:`Fusion.forward`)."""


SCORE_DTYPES = ("float64", "float32")
"""The precision the fused score's sigmoid is taken in: ``"float64"`` since session 28; cards from
before say nothing and keep ``"float32"`` (see :meth:`Fusion.forward`)."""


class Fusion(nn.Module):
    """Calibrated fusion of the one-class score, the type head's anomaly log-odds and the patch
    head's image score (see :data:`SIGNALS`), by ``rule`` (one of :data:`FUSION_RULES`)."""

    oc_mu: torch.Tensor
    oc_sd: torch.Tensor
    slope: torch.Tensor
    bias: torch.Tensor

    def __init__(self, rule: str = "max", *, score_dtype: str = "float64") -> None:
        super().__init__()
        if rule not in FUSION_RULES:
            raise ValueError(f"fusion rule {rule!r} not in {FUSION_RULES}")
        if score_dtype not in SCORE_DTYPES:
            raise ValueError(f"score_dtype {score_dtype!r} not in {SCORE_DTYPES}")
        self.rule = rule
        self.score_dtype = score_dtype
        self.register_buffer("oc_mu", torch.zeros(()))
        self.register_buffer("oc_sd", torch.ones(()))
        self.register_buffer("slope", torch.ones(len(SIGNALS)))
        self.register_buffer("bias", torch.zeros(len(SIGNALS)))

    def one_class_z(self, score_raw: torch.Tensor) -> torch.Tensor:
        """(B,) raw one-class scores (distances > 0) -> (B,) standardised log score."""
        return (score_raw.clamp_min(1e-12).log() - self.oc_mu) / self.oc_sd

    def co_located(self, map_raw: torch.Tensor, patch_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S, S) one-class distance map and patch-head logit map -> (B,) one-class and (B,) patch
        values at the pixel where their calibrated log-odds add up to the most.

        Fed to :meth:`forward` in place of the two signals' own image scores, they make the fused
        score the hottest spot of the two signals' summed evidence: a one-class peak in the
        background and a patch-head peak on a barcode elsewhere no longer add up, while a defect
        both see does. The maps' values are smoothed, so they run lower than the image scores the
        Platt maps were fitted on; the thresholds are set on the fused scores this gives.
        """
        spot = self.spot(map_raw, patch_map)
        return map_raw.flatten(1).gather(1, spot).squeeze(1), patch_map.flatten(1).gather(1, spot).squeeze(1)

    def spot(self, map_raw: torch.Tensor, patch_map: torch.Tensor) -> torch.Tensor:
        """(B, S, S) maps as :meth:`co_located` -> (B, 1) flat index of the pixel it reads."""
        evidence = self.slope[0] * self.one_class_z(map_raw) + self.slope[2] * patch_map
        return evidence.flatten(1).argmax(dim=1, keepdim=True)

    @staticmethod
    def head_log_odds(type_logits: torch.Tensor) -> torch.Tensor:
        """(B, K) logits with ``good`` at 0 -> (B,) log-odds of "anomalous of any type"."""
        return torch.logsumexp(type_logits[:, 1:], dim=1) - type_logits[:, 0]

    def signals(
        self, score_raw: torch.Tensor, type_logits: torch.Tensor, patch_score: torch.Tensor
    ) -> torch.Tensor:
        """(B,) raw one-class score, (B, K) type logits, (B,) patch score -> (B, 3) uncalibrated
        signals in :data:`SIGNALS` order (what the Platt fits see)."""
        z = self.one_class_z(score_raw)
        return torch.stack([z, self.head_log_odds(type_logits), patch_score], dim=1)

    def log_odds(
        self, score_raw: torch.Tensor, type_logits: torch.Tensor, patch_score: torch.Tensor
    ) -> torch.Tensor:
        """Inputs as :meth:`forward` -> (B, 3) calibrated log-odds of each signal, in :data:`SIGNALS`
        order; NaN for a switched-off signal.

        What each signal says about an image, on one scale: under ``"sum"`` the fused score is the
        sigmoid of the sum of the finite entries, under ``"max"`` of their max. So a false alarm or
        a miss can be traced to the signal that made it (the evaluation report's gallery).
        """
        logits = self._calibrated(score_raw, type_logits, patch_score)
        return torch.where(self.slope > 0, logits, torch.full_like(logits, float("nan")))

    def forward(
        self, score_raw: torch.Tensor, type_logits: torch.Tensor, patch_score: torch.Tensor
    ) -> torch.Tensor:
        """(B,) raw one-class score, (B, K) type logits, (B,) patch score -> (B,) float64 fused score
        in [0, 1].

        The sigmoid is taken in float64 (``score_dtype``): in float32 every fused log-odds above
        about 16.6 came out as exactly 1.0, so a clean image one signal flagged hard tied with every
        plain anomaly, and a hold cut above such an image could not be placed (float64 keeps them
        apart up to about 36). A model trained before keeps ``"float32"``, the precision its
        thresholds were placed on.
        """
        logit = self.fused_log_odds(score_raw, type_logits, patch_score)
        if self.score_dtype == "float32":
            return torch.sigmoid(logit).double()
        return torch.sigmoid(logit.double())

    def fused_log_odds(
        self, score_raw: torch.Tensor, type_logits: torch.Tensor, patch_score: torch.Tensor
    ) -> torch.Tensor:
        """Inputs as :meth:`forward` -> (B,) float32 log-odds whose sigmoid is the fused score.

        Unlike the score it never saturates, so it tells apart two images (or two runtimes) that
        both score 1.0.
        """
        return fuse_logits(self._calibrated(score_raw, type_logits, patch_score), self.slope, self.rule)

    def _calibrated(
        self, score_raw: torch.Tensor, type_logits: torch.Tensor, patch_score: torch.Tensor
    ) -> torch.Tensor:
        """(B, 3) Platt-calibrated logits of the signals, switched-off ones at their bias of -30."""
        return self.signals(score_raw, type_logits, patch_score) * self.slope + self.bias


def fuse_logits(logits: torch.Tensor, slope: torch.Tensor, rule: str) -> torch.Tensor:
    """(N, k) calibrated logits and their (k,) Platt slopes -> (N,) logit of the fused score under
    ``rule``: the largest logit (the max of the probabilities), or the sum over the signals in use.

    The one definition of the rules, for :class:`Fusion` and for the gates that judge a signal
    under its model's rule (``pipeline.fusion_gate``).
    """
    if rule == "sum":
        # A switched-off signal (slope 0) adds nothing, rather than its bias of -30.
        return (logits * (slope > 0).to(logits.dtype)).sum(dim=1)
    return logits.max(dim=1).values


def fit_platt(x: torch.Tensor, y: torch.Tensor, *, l2: float = 1e-2, steps: int = 50) -> tuple[float, float]:
    """Regularised 1-D logistic regression ``p = sigmoid(a x + b)`` by Newton's method.

    Args:
        x: (N,) float feature; y: (N,) 0/1 labels. Both classes should be present.
        l2: penalty on ``a`` and ``b`` (times N); keeps both finite when the classes separate
            perfectly, which they do on small validation sets (an unpenalised bias runs off to
            extreme values there and saturates the score).

    Returns:
        (a, b) as floats; (1, 0) if a class is missing.
    """
    x = x.double()
    y = y.double()
    if y.min() == y.max():
        return 1.0, 0.0
    n = x.numel()
    theta = torch.zeros(2, dtype=torch.float64)
    design = torch.stack([x, torch.ones_like(x)], dim=1)
    reg = torch.tensor([l2 * n, l2 * n], dtype=torch.float64)
    for _ in range(steps):
        p = torch.sigmoid(design @ theta)
        grad = design.t() @ (p - y) + reg * theta
        hess = (design.t() * (p * (1 - p))) @ design + torch.diag(reg)
        delta = torch.linalg.solve(hess, grad)
        theta = theta - delta
        if delta.abs().max() < 1e-9:
            break
    return float(theta[0]), float(theta[1])


class Calibration(NamedTuple):
    """A monotone calibration ``p = sigmoid(a x + b)`` and whether validation data fitted it."""

    a: float
    b: float
    fitted: bool


def fit_calibration(x: torch.Tensor, y: torch.Tensor) -> Calibration:
    """:func:`fit_platt`, refusing a slope below :data:`MIN_SLOPE`.

    On a handful of validation anomalies that happen to score lower than the validation normals,
    Platt scaling fits a negative slope, and the calibrated score then ranks every later image
    upside down (seen: test AUROC 0.24 from a one-class score ranking at 0.76). Such a fit is
    replaced by :data:`FALLBACK_CALIBRATION` (``fitted=False``); the caller records that.
    """
    a, b = fit_platt(x, y)
    if a >= MIN_SLOPE:
        return Calibration(a, b, True)
    return Calibration(*FALLBACK_CALIBRATION, False)
