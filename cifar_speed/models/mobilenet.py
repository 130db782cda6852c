"""torchvision's MobileNetV3-Small, adapted to 32x32 CIFAR images and trained from scratch.

At 224x224 the network downsamples 32x; on 32x32 that leaves a 1x1 map after the third stage. We
set the stem and the first inverted-residual block to stride 1, so the last feature map is 4x4
(downsampling 8x), which is what CIFAR-sized ResNets use too.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import mobilenet_v3_small

from ..errors import CifarSpeedError
from . import register_model


def _set_stride_1(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d) and m.stride == (2, 2):
            m.stride = (1, 1)
            return


@register_model
def mobilenetv3_small(num_classes: int = 10, imagenet_weights: str | None = None) -> nn.Module:
    model = mobilenet_v3_small(weights=None, num_classes=num_classes)
    _set_stride_1(model.features[0])  # stem
    _set_stride_1(model.features[1])  # first block's depthwise conv
    if imagenet_weights:
        # A local torchvision state dict (e.g. mobilenet_v3_small-047dcff4.pth); never downloaded.
        try:
            state = torch.load(imagenet_weights, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError) as e:
            raise CifarSpeedError(f"cannot read ImageNet weights {imagenet_weights}: {e}") from None
        state = {k: v for k, v in state.items() if not k.startswith("classifier.3.")}  # 1000-class head
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) - {"classifier.3.weight", "classifier.3.bias"}:
            raise CifarSpeedError(f"{imagenet_weights} is not a MobileNetV3-Small state dict")
    return model
