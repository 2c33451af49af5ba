"""The supervised head joins the max-fusion only when validation shows it helps."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.fusion_gate import fine_scale_gate, gate_signal, strict_on_tie
from pipeline.train import TrainConfig

Y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
Z = np.array([-5.0, -5.0, -5.0, -5.0, 1.0, 1.0, 1.0, 1.0])  # one-class ranks perfectly
IDENTITY = ((1.0, 0.0), (1.0, 0.0))


@pytest.mark.parametrize(
    ("head", "min_auroc", "kept", "head_auroc"),
    [
        # as good as the one-class score: kept
        (Z.copy(), 0.9, True, 1.0),
        # coin-flip head: dropped
        (np.array([3.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 3.0]), 0.9, False, 0.5),
        # same coin flip, but the floor is off: still dropped, as the fusion would rank worse
        (np.array([3.0, 0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 3.0]), 0.0, False, 0.5),
        # good on its own (15 of 16 pairs) but a confident false alarm breaks the fused ranking
        (np.array([-10.0, -10.0, -10.0, 4.0, 3.0, 5.0, 5.0, 5.0]), 0.9, False, 0.9375),
    ],
)
def test_gate_head(head: np.ndarray, min_auroc: float, kept: bool, head_auroc: float) -> None:
    gate = gate_signal(Z, head, Y, IDENTITY, min_auroc)
    assert gate.kept is kept
    assert gate.one_class_auroc == 1.0
    assert gate.head_auroc == head_auroc


def test_gate_refuses_a_missing_class() -> None:
    gate = gate_signal(Z[:4], Z[:4], Y[:4], IDENTITY, 0.9)
    assert gate[:3] == (False, None, None)
    assert "single class" in gate.reason


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_min_head_auroc_is_validated(value: float) -> None:
    from datasets.errors import InputError

    with pytest.raises(InputError, match=f"min_head_auroc {value}"):
        TrainConfig(min_head_auroc=value)


@pytest.mark.parametrize(("strict", "kept"), [(False, True), (True, False)])
def test_a_strict_gate_refuses_a_tie(strict: bool, kept: bool) -> None:
    # both rank perfectly: the fusion measures no gain over the one-class score alone
    gate = gate_signal(Z, Z.copy(), Y, IDENTITY, 0.0, strict=strict)
    assert gate.kept is kept
    assert ("no measured gain" in gate.reason) is not kept


@pytest.mark.parametrize(("rule", "kept"), [("max", False), ("sum", True)])
def test_the_patch_head_keeps_a_tie_only_under_the_sum(rule: str, kept: bool) -> None:
    # under the max an extra signal can only add false alarms; under the sum a tie is no evidence
    gate = gate_signal(Z, Z.copy(), Y, IDENTITY, 0.0, strict=strict_on_tie(rule), rule=rule)
    assert gate.kept is kept


def test_a_strict_gate_keeps_a_signal_that_adds() -> None:
    weak = np.array([-5.0, -5.0, -5.0, -5.0, 1.0, 1.0, -6.0, -6.0])  # one-class misses two
    head = np.array([-5.0, -5.0, -5.0, -5.0, -6.0, -6.0, 2.0, 2.0])  # the head finds them
    gate = gate_signal(weak, head, Y, IDENTITY, 0.0, strict=True)
    assert gate.kept is True and gate.one_class_auroc == 0.5


def _views(main: list[float], fine: list[float] | None) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """One 1x1-patch view per image with the given main and fine distances."""
    return [
        (torch.tensor([[[m]]]), None if fine is None else torch.tensor([[[f]]]))
        for m, f in zip(main, fine or main, strict=True)
    ]


LABELS = [0, 0, 0, 1, 2]  # three normals, two anomalies (of two types)


@pytest.mark.parametrize(
    ("main", "fine", "kept", "says"),
    [
        # the main bank misses the second anomaly; the fine bank sees it
        (
            [1.0, 2.0, 3.0, 4.0, 1.5],
            [0.0, 0.0, 0.0, 0.0, 9.0],
            True,
            "one-class AUROC 1.000 > without it 0.667",
        ),
        # the fine bank only raises a normal: dropped
        ([1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.0, 9.0, 0.0, 0.0], False, "no measured gain"),
        # a tie (both perfect) measures no gain: dropped
        ([1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.0, 0.0, 6.0, 0.0], False, "1.000, without it 1.000"),
        # no fine-scale bank at all
        ([1.0, 2.0, 3.0, 4.0, 5.0], None, False, "off"),
    ],
)
def test_fine_scale_gate(main: list[float], fine: list[float] | None, kept: bool, says: str) -> None:
    gate = fine_scale_gate(_views(main, fine), LABELS, topk=10)
    assert gate.kept is kept
    assert says in gate.reason
    if fine is not None:
        assert "on 3 normal and 2 anomalous training images" in gate.reason
