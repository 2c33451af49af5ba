"""What each fused signal says: the card's account, each signal's test AUROC, the gallery's words."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from evaluate_fakes import CARD_VALIDATION  # noqa: E402

from models.inference import GOOD  # noqa: E402
from pipeline.signal_evidence import describe_log_odds, fused_signals, signal_aurocs  # noqa: E402


@pytest.mark.parametrize(
    ("validation", "rows"),
    [
        (CARD_VALIDATION, [True, False, True]),
        ({k: v for k, v in CARD_VALIDATION.items() if not k.startswith("patch")}, [True, False]),
        ({}, []),  # a card that does not record its fusion: no section
    ],
)
def test_fused_signals_come_from_the_card(validation: dict[str, object], rows: list[bool]) -> None:
    signals = fused_signals({"validation": validation})
    assert [s["used"] for s in signals] == rows
    if rows:
        assert signals[1]["why"] == CARD_VALIDATION["head_gate"]
        assert "Platt scaling" in signals[0]["why"]


@pytest.mark.parametrize(
    ("training", "says"),
    [
        ({"fine_scale": {"used": True, "stride": 4}}, "main, and fine-scale at stride 4"),
        ({"fine_scale": {"used": False}}, "to the memory bank of normal patches"),
        ({}, "to the memory bank of normal patches"),  # a card from before the fine-scale bank
    ],
)
def test_the_one_class_signal_names_its_banks(training: dict[str, object], says: str) -> None:
    signals = fused_signals({"validation": CARD_VALIDATION, "training": training})
    assert says in signals[0]["signal"]


def test_each_row_names_its_signal() -> None:
    assert [s["key"] for s in fused_signals({"validation": CARD_VALIDATION})] == [
        "one_class",
        "type_head",
        "patch_head",
    ]


@pytest.mark.parametrize(
    ("log_odds", "rule", "words"),
    [
        ({"one_class": -1.83, "patch_head": -1.234}, "sum", "one-class −1.83 + patch head −1.23 = −3.06"),
        ({"one_class": 0.41, "patch_head": 2.1}, "max", "max(one-class 0.41, patch head 2.10)"),
        ({"one_class": 0.5}, "sum", "one-class 0.50"),  # one signal: nothing to add up
        ({"type_head": 1.0, "one_class": -0.25}, "sum", "type head 1.00 + one-class −0.25 = 0.75"),
        ({}, "sum", ""),
        (None, "max", ""),  # a predictor that reports no signals
    ],
)  # fmt: skip
def test_describe_log_odds(log_odds: dict[str, float] | None, rule: str, words: str) -> None:
    assert describe_log_odds(log_odds, rule) == words


def _rows(values: dict[str, list[float]], labels: list[str]) -> list[tuple[dict[str, float], str]]:
    return [({k: v[n] for k, v in values.items()}, label) for n, label in enumerate(labels)]


LABELS = [GOOD, GOOD, GOOD, "anomalous", "anomalous"]


def test_signal_aurocs_by_hand() -> None:
    # one-class: the anomaly at 0.5 beats 1 of the 3 clean images, the one at 3.0 all 3 -> 4 / 6
    # patch head: a tie at 1.0 with one clean image counts one half -> (3 + 2.5) / 6
    rows = _rows({"one_class": [0.0, 1.0, 2.0, 0.5, 3.0], "patch_head": [-1.0, 0.0, 1.0, 1.0, 2.0]}, LABELS)
    got = signal_aurocs(rows)
    assert got["one_class"]["image_auroc"] == pytest.approx(4 / 6)
    assert got["patch_head"]["image_auroc"] == pytest.approx(5.5 / 6)
    assert list(got) == ["one_class", "patch_head"] and got["one_class"]["images"] == 5
    for block in got.values():
        low, high = block["image_auroc_interval"]
        assert 0.0 <= low <= block["image_auroc"] <= high <= 1.0


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], set()),
        ([(None, GOOD), (None, "anomalous")], set()),  # a predictor that reports no signals
        (_rows({"one_class": [0.0, 1.0, 2.0, 0.5, 3.0]}, [GOOD] * 5), set()),  # one class only
        # a signal missing from one image is left out, the others stay
        (
            [({"one_class": float(n), "patch_head": 1.0}, label) for n, label in enumerate(LABELS[:-1])]
            + [({"one_class": 9.0}, "anomalous")],
            {"one_class"},
        ),
    ],
)
def test_signal_aurocs_only_where_defined(
    rows: list[tuple[dict[str, float] | None, str]], expected: set[str]
) -> None:
    assert set(signal_aurocs(rows)) == expected


def test_signal_aurocs_refuse_non_finite_log_odds() -> None:
    with pytest.raises(ValueError, match="NaN or infinite"):
        signal_aurocs(_rows({"one_class": [0.0, np.nan, 2.0, 0.5, 3.0]}, LABELS))
