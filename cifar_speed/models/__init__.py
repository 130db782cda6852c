"""Model registry, timm-style: `create_model(name)` and `list_models()`; one file per family."""
from __future__ import annotations

import inspect
from typing import Callable

import torch
from torch import nn

from ..errors import CifarSpeedError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> nn.Module:
    if name not in _REGISTRY:
        raise CifarSpeedError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    model = _REGISTRY[name](**kwargs)
    model.model_name = name  # so checkpoints and reports can name it
    return model


def model_arguments(name: str) -> dict[str, inspect.Parameter]:
    """The keyword arguments `create_model(name, ...)` declares (what a sidecar's model_kwargs may set)."""
    if name not in _REGISTRY:
        raise CifarSpeedError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return dict(inspect.signature(_REGISTRY[name]).parameters)


def count_params(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def flops_per_image(model: nn.Module) -> int:
    """Forward FLOPs for one 3x32x32 image, counted by PyTorch's FlopCounterMode (2 per MAC)."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    param = next(model.parameters())
    x = torch.zeros(1, 3, 32, 32, device=param.device, dtype=param.dtype)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


# Importing the families registers them.
from . import cnn, fast, frontier, kd, mlp, mobilenet  # noqa: E402,F401
