"""ResNet-18 and Wide-ResNet-50-2 backbones (He et al., CVPR 2016; Zagoruyko & Komodakis, BMVC 2016).

torchvision's architectures, with weights ONLY from a local file the user names (safetensors, or a
torch state dict read with ``weights_only=True``): Clearsight never downloads weights. Features are
``layer2`` (stride 8) and ``layer3`` (stride 16), as in PatchCore. ImageNet mean/std normalisation.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from datasets.errors import WeightsError
from models.registry import register_model
from models.weights import WeightsSpec, load_state_dict

__all__ = ["RESNET_WEIGHTS", "ResNetBackbone"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class ResNetBackbone(nn.Module):
    """A torchvision ResNet returning the outputs of ``layer{i}`` for i in the feature layers."""

    net: Any  # a torchvision ResNet

    def __init__(self, net: Any, spec: WeightsSpec) -> None:
        super().__init__()
        self.spec = spec
        self.net = net
        self.feature_layers = tuple(spec.feature_layers)
        self.out_channels = tuple(_channels(net, i) for i in self.feature_layers)
        self.strides = tuple(2 ** (i + 1) for i in self.feature_layers)
        self.fine_layer = spec.fine_layer
        fine = spec.fine_layer >= 1
        self.fine_channels = _channels(net, spec.fine_layer) if fine else 0
        self.fine_stride = 2 ** (spec.fine_layer + 1) if fine else 0

    def forward(self, x: torch.Tensor, *, fine: bool = False) -> list[torch.Tensor]:
        """(B, 3, H, W) normalised float -> [(B, C_i, H/s_i, W/s_i)] for each feature layer, followed
        with ``fine`` by the fine layer's (B, fine_channels, H/fine_stride, W/fine_stride)."""
        n = self.net
        x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
        feats: list[torch.Tensor] = []
        fine_map = None
        for i in range(1, max(self.feature_layers) + 1):
            x = getattr(n, f"layer{i}")(x)
            if i in self.feature_layers:
                feats.append(x)
            if fine and i == self.fine_layer:
                fine_map = x
        return feats if fine_map is None else [*feats, fine_map]

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised float -> ImageNet logits (B, 1000)."""
        return self.net(x)


def _channels(net: nn.Module, layer: int) -> int:
    convs = [m for m in getattr(net, f"layer{layer}").modules() if isinstance(m, nn.Conv2d)]
    return int(convs[-1].out_channels)


def _spec(name: str) -> WeightsSpec:
    return WeightsSpec(
        name=f"{name}-user-file",
        source="file:<unset>",
        sha256="",
        input_size=224,
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        feature_layers=(2, 3),
        licence="as the user's weights file",
        fine_layer=1,  # layer1, stride 4
    )


RESNET_WEIGHTS: dict[str, WeightsSpec] = {
    "resnet18": _spec("resnet18"),
    "wide_resnet50": _spec("wide_resnet50"),
}


def _build(name: str, net: nn.Module, weights: str | Path | None) -> ResNetBackbone:
    spec = RESNET_WEIGHTS[name]
    if weights == "pretrained":
        raise WeightsError(
            f"{name} has no bundled weights; give a local .safetensors or .pth state dict "
            "(`clearsight train --backbone-weights FILE`, or weights=FILE)"
        )
    if weights == "random":
        warnings.warn(f"{name}: random initialisation, no pretrained weights", UserWarning, stacklevel=3)
    elif weights is not None:
        spec = spec.with_file(Path(str(weights)))
        state = load_state_dict(spec)
        try:
            net.load_state_dict(state)
        except RuntimeError as exc:
            raise WeightsError(f"weights file {str(weights)!r} does not fit {name}: {exc}") from exc
    return ResNetBackbone(net, spec).eval()


@register_model("resnet18")
def resnet18(*, weights: str | Path | None = "pretrained") -> ResNetBackbone:
    """torchvision ResNet-18; ``weights`` must be a local file (or ``"random"``)."""
    return _build("resnet18", torchvision.models.resnet18(weights=None), weights)


@register_model("wide_resnet50")
def wide_resnet50(*, weights: str | Path | None = "pretrained") -> ResNetBackbone:
    """torchvision Wide-ResNet-50-2; ``weights`` must be a local file (or ``"random"``)."""
    return _build("wide_resnet50", torchvision.models.wide_resnet50_2(weights=None), weights)
