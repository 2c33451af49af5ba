"""Anomaly models: backbones, detectors, thresholds, the saved artifact and the predictor."""

from models.inference import GOOD, Prediction, Predictor, Thresholds

__all__ = ["GOOD", "Prediction", "Predictor", "Thresholds"]
