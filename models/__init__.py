"""Anomaly models: backbones, detectors, thresholds, the saved artifact and the predictor.

The inference contract (:mod:`models.inference`) is imported eagerly; the torch-heavy names below are
loaded on first use, so that importing the contract stays cheap for the service and the tests.
"""

from __future__ import annotations

import importlib
from typing import Any

from models.inference import GOOD, Prediction, Predictor, Thresholds

_LAZY = {
    "ArtifactPredictor": "models.predictor",
    "Detector": "models.detector",
    "DetectorConfig": "models.detector",
    "DetectorOutput": "models.detector",
    "WeightsSpec": "models.weights",
    "create_model": "models.registry",
    "list_models": "models.registry",
    "load_model": "models.artifact",
    "register_model": "models.registry",
    "save_artifact": "models.artifact",
}

__all__ = ["GOOD", "Prediction", "Predictor", "Thresholds", *sorted(_LAZY)]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        if name in ("create_model", "list_models"):
            importlib.import_module("models.backbones")  # registers the builders
        return getattr(module, name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
