"""The supervised head: anomalous-or-not and the anomaly type, from backbone and one-class features.

A multinomial logistic regression (a single linear layer on standardised inputs) over ``K`` classes,
class 0 being ``"good"``. It is small on purpose: training sets hold tens to hundreds of labelled
images, and the head must fit in a second or two of CPU. Its inputs (built by
:meth:`models.detector.Detector.head_inputs`) are the pooled backbone features, the patch embedding
pooled inside the high-anomaly region, and statistics of the one-class distance map.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TypeHead", "fit_type_head"]


class TypeHead(nn.Module):
    """Standardise the inputs, then a linear layer to ``num_classes`` logits.

    Args:
        in_features: input width F.
        num_classes: K, including ``good`` at index 0.
    """

    in_mean: torch.Tensor
    in_std: torch.Tensor

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("in_mean", torch.zeros(in_features))
        self.register_buffer("in_std", torch.ones(in_features))
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, F) float -> (B, K) logits."""
        return self.linear((x - self.in_mean) / self.in_std)


def fit_type_head(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    *,
    weight_decay: float = 1e-2,
    steps: int = 300,
    seed: int = 0,
) -> TypeHead:
    """Fit a :class:`TypeHead` by full-batch Adam on class-balanced cross-entropy.

    Args:
        x: (N, F) float inputs (out-of-fold for the one-class part; see ``pipeline.train``).
        y: (N,) int64 labels in [0, K).
        num_classes: K.
        weight_decay: L2 penalty on the weights; keeps the fit finite on separable data.
        steps: optimiser steps.
        seed: seed of the initial weights.

    Returns:
        The fitted head, in eval mode.
    """
    torch.manual_seed(seed)
    head = TypeHead(x.shape[1], num_classes)
    head.in_mean.copy_(x.mean(0))
    head.in_std.copy_(x.std(0, unbiased=False).clamp_min(1e-6))
    counts = torch.bincount(y, minlength=num_classes).float()
    # Balanced weights: a rare anomaly type is not drowned by the many normals.
    weights = torch.where(counts > 0, counts.sum() / (counts.clamp_min(1.0) * (counts > 0).sum()), 0.0)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    opt = torch.optim.Adam(head.linear.parameters(), lr=0.05, weight_decay=weight_decay)
    head.train()
    with torch.enable_grad():
        for _ in range(steps):
            opt.zero_grad()
            loss = loss_fn(head(x), y)
            loss.backward()
            opt.step()
    return head.eval()
