"""Helpers for the inference-toolkit tests: tiny checkpoints and a small in-memory test split."""
from __future__ import annotations

from pathlib import Path

import torch

from cifar_speed.checkpoint import save_checkpoint
from cifar_speed.data import CIFAR_MEAN, CIFAR_STD, Split
from cifar_speed.models import create_model


def make_checkpoint(folder: Path, name: str = "lightnn", seed: int = 0, stem: str | None = None) -> Path:
    torch.manual_seed(seed)
    model = create_model(name).eval()
    meta = {"model": name, "name": stem or name, "normalize": {"mean": list(CIFAR_MEAN), "std": list(CIFAR_STD)},
            "test_accuracy": 0.1}
    return save_checkpoint(Path(folder) / (stem or name), model, meta)


def fake_split(n: int = 40, seed: int = 0) -> Split:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % 10
    return Split(images, labels)


def with_trained_batchnorm(name: str) -> torch.nn.Module:
    """An airbench-layout model (fast, frontier_*) in eval mode whose BatchNorms hold trained-looking
    statistics and biases (gamma stays frozen at 1, as airbench trains it), seeded: what BN folding
    must reproduce exactly."""
    from cifar_speed.models.fast import BatchNorm

    torch.manual_seed(0)
    net = create_model(name).eval()
    for m in net.modules():
        if isinstance(m, BatchNorm):
            m.running_mean.uniform_(-1, 1), m.running_var.uniform_(0.5, 2), m.bias.data.uniform_(-0.5, 0.5)
    return net
