"""The supervised signals join the fusion only when the evidence shows they help."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.classifier import fit_type_head
from models.fusion import Fusion
from pipeline.fusion_gate import (
    fine_scale_gate,
    gate_signal,
    out_of_fold_log_odds,
    stratified_folds,
    strict_on_tie,
    training_evidence,
)
from pipeline.metrics import image_auroc
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


@pytest.mark.parametrize(
    ("tolerance", "strict", "kept"),
    [(0.0, False, False), (0.05, False, False), (0.07, False, True), (0.07, True, False)],
)
def test_a_tolerance_keeps_a_fusion_that_ranks_at_most_that_much_worse(
    tolerance: float, strict: bool, kept: bool
) -> None:
    head = np.array([-10.0, -10.0, -10.0, 4.0, 3.0, 5.0, 5.0, 5.0])  # fused under the max: 15 of 16 pairs
    gate = gate_signal(Z, head, Y, IDENTITY, 0.9, strict=strict, tolerance=tolerance)
    assert gate.kept is kept
    assert (f"one-class 1.000 - {tolerance:g}" in gate.reason) is (tolerance > 0 and not strict)


@pytest.mark.parametrize("value", [-0.001, 0.5])
def test_head_gate_tolerance_is_validated(value: float) -> None:
    from datasets.errors import InputError

    with pytest.raises(InputError, match=f"head_gate_tolerance {value}"):
        TrainConfig(head_gate_tolerance=value)


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


def test_head_gate_evidence_is_validated() -> None:
    from datasets.errors import InputError

    with pytest.raises(InputError, match="head_gate_evidence 'test' not in out-of-fold, validation"):
        TrainConfig(head_gate_evidence="test")


def _fit(x: torch.Tensor, y: torch.Tensor) -> torch.nn.Module:
    return fit_type_head(x, y, 2, seed=0)


def test_out_of_fold_log_odds_do_not_reward_a_memorising_head() -> None:
    # Labels unrelated to the inputs, one input dimension per image: a head can memorise every image,
    # so in-sample it separates them perfectly; scored out of fold it knows nothing.
    n = 40
    x = torch.eye(n)
    y = torch.tensor([0, 1] * (n // 2))
    fold_of = (np.arange(n) // 2) % 2  # both classes in both folds
    head = _fit(x, y)
    with torch.inference_mode():
        in_sample = Fusion.head_log_odds(head(x)).numpy()
    oof = out_of_fold_log_odds(x, y, fold_of, folds=2, fit=_fit)
    labels = y.numpy().astype(bool)
    assert image_auroc(in_sample, labels).value == 1.0
    assert image_auroc(oof, labels).value == pytest.approx(0.5, abs=0.15)


def test_out_of_fold_log_odds_score_each_image_with_a_head_that_did_not_see_it() -> None:
    seen: list[set[int]] = []

    def recording_fit(x: torch.Tensor, y: torch.Tensor) -> torch.nn.Module:
        seen.append({int(i) for i in x[:, 1].tolist()})  # column 1 holds each image's index
        return _fit(x, y)

    n = 12
    y = torch.tensor([0] * 8 + [1] * 4)
    x = torch.stack([y.float() * 4 - 2, torch.arange(n, dtype=torch.float32)], dim=1)
    fold_of = np.array([0, 1, 2] * 4)
    oof = out_of_fold_log_odds(x, y, fold_of, folds=3, fit=recording_fit)
    assert seen == [set(np.flatnonzero(fold_of != f)) for f in range(3)]
    assert (oof[y.numpy() == 1] > 0).all() and (oof[y.numpy() == 0] < 0).all()


def test_out_of_fold_log_odds_leave_a_fold_unscored_when_its_complement_lacks_anomalies() -> None:
    y = torch.tensor([0, 0, 0, 0, 1, 1])
    x = y.float()[:, None]
    fold_of = np.array([0, 1, 0, 1, 1, 1])  # fold 0's complement holds both anomalies; fold 1's none
    oof = out_of_fold_log_odds(x, y, fold_of, folds=2, fit=_fit)
    assert np.isfinite(oof[fold_of == 0]).all()
    assert np.isnan(oof[fold_of == 1]).all()


class _Det:
    """What training_evidence reads of a detector: its fusion's one-class standardisation."""

    def __init__(self) -> None:
        self.fusion = Fusion("sum")
        self.fusion.oc_mu.fill_(0.0)
        self.fusion.oc_sd.fill_(2.0)


@pytest.mark.parametrize(("signal", "kept_units"), [(1, [0, 2]), (2, [1, 2])])
def test_training_evidence_adds_the_units_whose_signal_exists(signal: int, kept_units: list[int]) -> None:
    val = torch.tensor([[0.5, 1.0, 2.0], [1.5, -1.0, 0.0]])
    y_val = np.array([0, 1])
    scores = [1.0, np.e**2, np.e**4]  # one-class z = log(score) / 2: 0, 1, 2
    head = np.array([0.3, np.nan, -0.3])
    patch = np.array([np.nan, 5.0, 6.0])
    ev = training_evidence(_Det(), val, y_val, scores, [0, 2, 1], head, patch, signal=signal)  # type: ignore[arg-type]
    units = np.array([[0.0, 0.3, np.nan], [1.0, np.nan, 5.0], [2.0, -0.3, 6.0]])[kept_units]
    np.testing.assert_allclose(ev.signals, np.concatenate([val.numpy(), units]), rtol=1e-6)
    np.testing.assert_array_equal(ev.labels, np.concatenate([y_val, np.array([0, 1, 1])[kept_units]]))


def test_stratified_folds_deal_every_class_evenly() -> None:
    labels = np.array([0] * 12 + [1] * 5 + [2] * 3)
    folds = stratified_folds(labels, 5, np.random.default_rng(0))
    for c in (0, 1, 2):
        counts = np.bincount(folds[labels == c], minlength=5)
        assert counts.max() - counts.min() <= 1
    assert sorted(np.bincount(folds, minlength=5)) == [4, 4, 4, 4, 4]
