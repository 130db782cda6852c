"""The frontier family: airbench's layout (2x2 whitening, three conv groups, plain 3x3 convolutions,
no depthwise) at smaller widths, chosen for the fastest inference at each accuracy bar (85 / 90 / 94 %).

Plain dense 3x3 convolutions with BatchNorm (folded by every exporter) are what oneDNN, OpenVINO and
TensorRT run closest to peak; the widths are multiples of 16 so int8/bf16 kernels fill their vectors.
They train with knowledge distillation from `fast` with test-time augmentation (train/frontier_*.toml).
"""
from __future__ import annotations

from torch import nn

from . import register_model
from .fast import FastNet

WIDTHS = {
    "frontier_s": (16, 32, 64),
    "frontier_m": (32, 64, 128),
    "frontier_l": (64, 128, 256),
    "frontier_m_s2": (32, 64, 128),
}


def _frontier(name: str, num_classes: int, stem_stride: int = 1) -> nn.Module:
    return FastNet(num_classes, widths=WIDTHS[name], stem_stride=stem_stride)


@register_model
def frontier_s(num_classes: int = 10) -> nn.Module:
    """Widths 16/32/64: the 85 % bar."""
    return _frontier("frontier_s", num_classes)


@register_model
def frontier_m(num_classes: int = 10) -> nn.Module:
    """Widths 32/64/128: the 90 % bar."""
    return _frontier("frontier_m", num_classes)


@register_model
def frontier_l(num_classes: int = 10) -> nn.Module:
    """Widths 64/128/256: towards the 94 % bar at a fraction of fast's 236 MFLOP."""
    return _frontier("frontier_l", num_classes)


@register_model
def frontier_m_s2(num_classes: int = 10) -> nn.Module:
    """frontier_m's widths behind a stride-2 (patchify) stem: every layer at half the resolution, for
    the batch-1 latency of the 85 % bar."""
    return _frontier("frontier_m_s2", num_classes, stem_stride=2)
