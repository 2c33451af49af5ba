"""The fusion's calibration never reverses the ranking it calibrates."""

from __future__ import annotations

import pytest
import torch

from models.fusion import FALLBACK_CALIBRATION, MIN_SLOPE, fit_calibration, fit_platt

Y = torch.tensor([0, 0, 0, 0, 0, 0, 1, 1])


@pytest.mark.parametrize(
    ("x", "fitted"),
    [
        # anomalies above normals: Platt's own increasing fit is kept
        (torch.tensor([-1.0, -0.5, 0.0, 0.2, -0.3, 0.1, 2.0, 3.0]), True),
        # a few anomalies below the normals (small validation sets do this): Platt would fit a
        # negative slope, which would rank every later image upside down
        (torch.tensor([1.0, 1.5, 2.0, 1.2, 1.8, 1.1, -1.0, 0.0]), False),
        # no order at all: a flat fit, refused as well
        (torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]), False),
    ],
    ids=["increasing", "reversed", "flat"],
)
def test_fit_calibration_is_monotone_increasing(x: torch.Tensor, fitted: bool) -> None:
    cal = fit_calibration(x, Y)
    assert cal.fitted is fitted
    assert cal.a >= MIN_SLOPE
    if fitted:
        assert (cal.a, cal.b) == fit_platt(x, Y)
    else:
        assert fit_platt(x, Y)[0] < MIN_SLOPE  # the case is real, not a test artefact
        assert (cal.a, cal.b) == FALLBACK_CALIBRATION
    probs = torch.sigmoid(cal.a * x + cal.b)
    order = torch.argsort(x)
    assert torch.all(probs[order][1:] >= probs[order][:-1])
