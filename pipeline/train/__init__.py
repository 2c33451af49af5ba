"""Training: an MVTec-layout folder -> a verified model artifact.

Steps (each reported to ``progress``):

1. read ``train/`` (``train/good`` and optional labelled anomalies ``train/<type>``), hold out a
   stratified validation split (``val_fraction`` of the good images and of each anomaly type, or
   ``val_anomaly_fraction`` of each anomaly type where that is set);
2. decode, preprocess (gray -> RGB, 16-bit scaling, resize or tiling) and embed every image once;
3. out-of-fold one-class scoring: the training normals are split into ``folds``; each fold is scored
   against a memory bank built from the other folds, so the supervised head learns from one-class
   scores that are as high as they will be on unseen normals (a normal scored against a bank that
   contains it would look unrealistically clean);
4. the supervised type head, on labelled anomalies — or, when there are none, on pseudo-anomalies
   pasted into training normals (recorded in the card); the patch head on the labelled anomalies'
   pixel masks (``ground_truth/``) and on pseudo-anomalies, when labelled validation anomalies can
   judge it (``pipeline.fusion_gate``);
5. the final memory bank on all training normals (coreset-reduced), fusion calibration and map scale
   on the validation split, thresholds at the target miss rate;
6. the artifact (``models.artifact.save_artifact``).

The modules, by step: :mod:`~pipeline.train.config` (how to train), :mod:`~pipeline.train.data`
and :mod:`~pipeline.train.image_sets` (1), :mod:`~pipeline.train.embedding` (2, and the banks),
:mod:`~pipeline.train.one_class` (3, and 5's bank), :mod:`~pipeline.train.heads` (4),
:mod:`~pipeline.train.calibration`, :mod:`~pipeline.train.gates` and
:mod:`~pipeline.train.thresholds` (5), :mod:`~pipeline.train.card` and
:mod:`~pipeline.train.model_folder` (6); :mod:`~pipeline.train.run` runs them in order.
"""

from pipeline.train.config import (
    DEEP_FEATURES,
    KNOWN_CARGO_TYPES,
    SHARP_CARGO_TYPES,
    ProgressFn,
    TrainConfig,
    deep_features_choice,
)
from pipeline.train.heads import MIN_PATCH_POSITIVES as MIN_PATCH_POSITIVES
from pipeline.train.heads import PATCH_PSEUDO_EVERY as PATCH_PSEUDO_EVERY
from pipeline.train.run import TrainResult, train_model

__all__ = [
    "DEEP_FEATURES",
    "KNOWN_CARGO_TYPES",
    "SHARP_CARGO_TYPES",
    "ProgressFn",
    "TrainConfig",
    "TrainResult",
    "deep_features_choice",
    "train_model",
]
