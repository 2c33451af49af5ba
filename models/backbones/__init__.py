"""Feature backbones. Importing this package registers every family with :mod:`models.registry`.

Every backbone is an ``nn.Module`` with ``spec`` (its :class:`~models.weights.WeightsSpec`),
``feature_layers``, ``out_channels`` and ``strides`` (one per feature layer), ``forward(x) -> list of
feature maps`` and ``classify(x) -> ImageNet logits``.
"""

from __future__ import annotations

from models.backbones.efficientnet_lite import LITE_WEIGHTS, EfficientNetLiteBackbone
from models.backbones.resnet import RESNET_WEIGHTS, ResNetBackbone

__all__ = ["LITE_WEIGHTS", "RESNET_WEIGHTS", "EfficientNetLiteBackbone", "ResNetBackbone"]
