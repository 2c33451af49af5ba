"""The inference contract every consumer (batch scorer, HTTP service, evaluation) relies on.

``load_model(path)`` (in ``models.artifact``) returns an object satisfying :class:`Predictor`; tests
inject fakes that satisfy the same protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

__all__ = ["GOOD", "Prediction", "Predictor", "Thresholds"]

GOOD = "good"
"""The label/type name of a normal (anomaly-free) image."""


class Thresholds(NamedTuple):
    """Operating-point thresholds on the final score in [0, 1].

    ``release``: images scoring below it are released (label ``good``); it is chosen so that at most
    ``target_miss_rate`` of anomalous validation images fall below it. ``hold``: images at or above it
    warrant a physical hold (``hold >= release``); between the two an officer reviews remotely.
    """

    release: float
    hold: float
    target_miss_rate: float
    method: str  # how ``release`` was found, e.g. "miss_rate_on_validation" or "normal_quantile_fallback"


class Prediction(NamedTuple):
    """One image's verdict.

    Attributes:
        score: final fused anomaly score in [0, 1]; higher is more anomalous.
        label: ``"anomalous"`` if ``score >= thresholds.release`` else ``"good"``.
        anomaly_type: most probable anomaly type when anomalous (may be ``"unknown"`` when the
            one-class detector fires but no known type fits), ``None`` when good.
        type_probabilities: probability per known class, ``"good"`` included; sums to 1.
        anomaly_map: float32 array (H, W) in [0, 1], the input image's own height and width.
        thresholds: the model's operating-point thresholds that produced ``label``.
        model_id: the artifact's id (name and content hash), for the audit trail.
        scale_vs_training: how this image is resized for the model against how the training images
            were, along the view's height and its width apart (``models.tiling.view_downscale_hw``):
            1.0 on a side whose downscale lies within the training views' range on that side, else
            its ratio to the nearer end (cards without the range: to the training views' median),
            and along its shorter and its longer side, the training views' median one over its own
            (where the card records it, ``downscale_short_long``: the median training refuses
            images more than 2x off by), whichever figure is farthest from 1 (a 64 x 3 strip cut
            from a 64 px training image: 21.3, its width enlarged 21x though its height is as in
            training). 1.0: the same.
            2.5: it is enlarged 2.5x more (a 96 px image for a model trained on 240 px ones): it
            holds less detail than they did, or shows a closer view. 0.4: it is shrunk 2.5x more: a
            wider view whose objects reach the model smaller than in training, or the same view at a
            higher resolution. Pixel counts cannot tell these apart; a score far from 1.0 was never
            validated either way. ``None`` when the card does not record the training images' sizes
            (models trained before it did).
        signal_log_odds: what each fused signal in use said about the image, as calibrated
            log-odds (keys from ``models.fusion.SIGNALS``: ``one_class``, ``type_head``,
            ``patch_head``; a switched-off signal is absent). ``score`` is the sigmoid of their sum
            under the model's ``sum`` fusion, of their max under ``max``, so they show which signal
            raised a false alarm or let an anomaly through. With the model's signals read at one
            spot (``DetectorConfig.co_located``), ``one_class`` and ``patch_head`` are what each
            said at the pixel where they agreed most. ``None`` from predictors that do not report
            them.
    """

    score: float
    label: str
    anomaly_type: str | None
    type_probabilities: Mapping[str, float]
    anomaly_map: np.ndarray
    thresholds: Thresholds
    model_id: str
    scale_vs_training: float | None = None
    signal_log_odds: dict[str, float] | None = None


@runtime_checkable
class Predictor(Protocol):
    """A loaded model that scores decoded images of one cargo type."""

    @property
    def model_id(self) -> str:
        """Artifact id, e.g. ``"bulk_ore-lite0-3f2a9c1b0d4e5f6a"``."""
        ...

    @property
    def cargo_type(self) -> str:
        """The cargo type this model was trained for (``bulk_ore``, ``vacuum_pack``, ...)."""
        ...

    @property
    def thresholds(self) -> Thresholds: ...

    @property
    def card(self) -> Mapping[str, Any]:
        """The artifact's ``model.json`` contents."""
        ...

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Score a batch of images.

        Args:
            images: arrays of shape (H, W), (H, W, 1) or (H, W, 3) (RGB), dtype uint8, uint16 or
                float32 in [0, 1]. Sizes may differ; preprocessing (resize, tiling, normalisation)
                is the predictor's own.

        Returns:
            One :class:`Prediction` per image, in order.
        """
        ...
