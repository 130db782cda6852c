"""`fast`: the airbench94 network (Keller Jordan, arXiv 2404.00498), ~1.97 M parameters.

A frozen 2x2 patch-whitening conv (initialised from the training data's patch covariance), three
conv groups of widths 64/256/256 (conv -> maxpool -> BN -> GELU -> conv -> BN -> GELU), a 3x3 max
pool and a bias-free linear head scaled by 1/9. `tta_level` adds test-time augmentation inside
forward (1: mirror, 2: mirror + 1-pixel translations) so every backend exports the same function.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from . import register_model


class BatchNorm(nn.BatchNorm2d):
    # airbench's BN: momentum 0.6 in its convention (PyTorch's 0.4), tiny eps, only the bias trained.
    def __init__(self, num_features: int, momentum: float = 0.6, eps: float = 1e-12):
        super().__init__(num_features, eps=eps, momentum=1 - momentum)
        self.weight.requires_grad = False


class Conv(nn.Conv2d):
    # padding=1, not "same" (the same arithmetic for a 3x3 stride-1 conv): torch.export turns "same"
    # into aten.conv2d.padding, which PT2E's X86InductorQuantizer does not match (it annotates
    # aten.conv2d.default only), so every 3x3 conv of this layout stayed fp32 under `compile int8`.
    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout, kernel_size=3, padding=1, bias=False)

    def reset_parameters(self):
        super().reset_parameters()
        w = self.weight.data
        torch.nn.init.dirac_(w[: w.size(1)])  # identity-initialised channels train faster


class ConvGroup(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = Conv(cin, cout)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BatchNorm(cout)
        self.conv2 = Conv(cout, cout)
        self.norm2 = BatchNorm(cout)
        self.activ = nn.GELU()

    def forward(self, x):
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))


def fold_batchnorm(net: nn.Module) -> tuple[nn.Module, int]:
    """An inference copy of `net` with each conv group's BatchNorms folded into its convolutions, and
    how many were folded. conv2 -> BN folds as every exporter does it; conv1 -> max-pool -> BN folds
    too where every channel's scale gamma / sqrt(var + eps) is positive, because max-pooling commutes
    with a positive per-channel affine map (airbench freezes gamma at 1), which no exporter does: ONNX
    Runtime's int8 graph of `fast` kept its 3 BatchNormalization nodes outside the int8 kernels."""
    out, folded = copy.deepcopy(net).eval(), 0
    for group in (m for m in out.modules() if isinstance(m, ConvGroup)):
        for conv_name, norm_name in (("conv1", "norm1"), ("conv2", "norm2")):
            conv, norm = getattr(group, conv_name), getattr(group, norm_name)
            if not isinstance(norm, nn.BatchNorm2d):
                continue
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
            if conv_name == "conv1" and not bool((scale > 0).all()):
                continue   # a negative scale would turn that channel's max into a min
            with torch.no_grad():
                bias = norm.bias - norm.running_mean * scale
                if conv.bias is not None:
                    bias = bias + conv.bias * scale
                conv.weight.mul_(scale.view(-1, 1, 1, 1))
                conv.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)
            setattr(group, norm_name, nn.Identity())
            folded += 1
    return out, folded


class FastNet(nn.Module):
    def __init__(self, num_classes: int = 10, widths=(64, 256, 256), tta_level: int = 0, stem_stride: int = 1):
        super().__init__()
        whiten_width = 2 * 3 * 2 * 2
        # stem_stride 2 whitens non-overlapping 2x2 patches (a patchify stem): every later layer runs
        # at half the resolution, a quarter of the work, and the 3-channel full-resolution conv, the
        # slowest single layer of a batch-1 call in the OpenVINO profiles in results/, shrinks by 4x too.
        self.whiten = nn.Conv2d(3, whiten_width, kernel_size=2, stride=stem_stride, padding=0, bias=True)
        self.whiten.weight.requires_grad = False
        side = (32 - 2) // stem_stride + 1
        for _ in range(3):
            side //= 2   # each conv group max-pools by 2: 31 -> 3 (stride 1), 16 -> 2 (stride 2)
        self.layers = nn.Sequential(
            nn.GELU(),
            ConvGroup(whiten_width, widths[0]),
            ConvGroup(widths[0], widths[1]),
            ConvGroup(widths[1], widths[2]),
            nn.MaxPool2d(side),
            nn.Flatten(),
        )
        self.head = nn.Linear(widths[2], num_classes, bias=False)
        self.scale = 1 / 9
        self.tta_level = tta_level

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the whitening conv to the eigenvectors of the 2x2 patch covariance (+ and - copies)."""
        c, (h, w) = images.shape[1], self.whiten.weight.shape[2:]
        patches = images.unfold(2, h, 1).unfold(3, w, 1).transpose(1, 3).reshape(-1, c, h, w).float()
        flat = patches.view(len(patches), -1)
        cov = (flat.T @ flat) / len(flat)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov, UPLO="U")
        eigenvalues = eigenvalues.flip(0).view(-1, 1, 1, 1)
        eigenvectors = eigenvectors.T.reshape(c * h * w, c, h, w).flip(0)
        scaled = eigenvectors / torch.sqrt(eigenvalues + eps)
        self.whiten.weight.copy_(torch.cat((scaled, -scaled)).to(self.whiten.weight.dtype))

    def _logits(self, x):
        return self.head(self.layers(self.whiten(x))) * self.scale

    def forward(self, x):
        if self.tta_level == 0:
            return self._logits(x)
        mirror = 0.5 * self._logits(x) + 0.5 * self._logits(x.flip(-1))
        if self.tta_level == 1:
            return mirror
        padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
        h, w = x.shape[-2:]
        shifted = [padded[:, :, 0:h, 0:w], padded[:, :, 2:h + 2, 2:w + 2]]
        translate = torch.stack([0.5 * self._logits(s) + 0.5 * self._logits(s.flip(-1)) for s in shifted]).mean(0)
        return 0.5 * mirror + 0.5 * translate


@register_model
def fast(num_classes: int = 10) -> nn.Module:
    return FastNet(num_classes)


@register_model
def fast_tta(num_classes: int = 10) -> nn.Module:
    """The same weights as `fast`, with airbench's level-2 test-time augmentation (6 forwards/image)."""
    return FastNet(num_classes, tta_level=2)
