"""The optimiser, the learning-rate schedule and airbench's lookahead, as a recipe names them."""
from __future__ import annotations

import torch
from torch import nn

from .recipe import Recipe


def build_optimizer(recipe: Recipe, model: nn.Module, extra_params=()) -> torch.optim.Optimizer:
    o = recipe.optim
    params = [p for p in model.parameters() if p.requires_grad] + list(extra_params)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay)
    # airbench_sgd: lr and weight decay are given per 1024 examples and decoupled; convert them to
    # PyTorch SGD's coupled form. BatchNorm biases get a larger lr but the same absolute decay.
    kilostep_scale = 1024 * (1 + 1 / (1 - o.momentum))
    lr = o.lr / kilostep_scale
    wd = o.weight_decay * recipe.data.batch_size / kilostep_scale
    lr_biases = lr * o.bias_scaler
    named = [(n, p) for n, p in model.named_parameters()]
    # The whitening bias is toggled during training, so it is always in the optimiser.
    norm_biases = [p for n, p in named if "norm" in n and p.requires_grad]
    others = [p for n, p in named if "norm" not in n and (p.requires_grad or n == "whiten.bias")]
    groups = [dict(params=norm_biases, lr=lr_biases, weight_decay=wd / lr_biases),
              dict(params=others, lr=lr, weight_decay=wd / lr)]
    return torch.optim.SGD(groups, momentum=o.momentum, nesterov=True)


def build_schedule(recipe: Recipe, optimizer, total_steps: int):
    """Returns (scheduler, steps_per_call): 'step' schedulers advance every batch, 'epoch' ones per epoch."""
    s = recipe.schedule
    if s.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=s.factor, patience=s.patience, min_lr=s.min_lr), "epoch"
    if s.name == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups],
                                                   total_steps=total_steps, pct_start=s.warmup_fraction), "step"
    if s.name == "airbench":
        warmup = int(total_steps * s.warmup_fraction)

        def factor(step: int) -> float:
            if step < warmup:
                f = step / warmup
                return s.start_factor * (1 - f) + f
            f = (step - warmup) / max(1, total_steps - warmup)
            return (1 - f) + s.end_factor * f

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor), "step"
    return None, "none"


class Lookahead:
    """airbench's lookahead: every k steps pull an EMA towards the weights and reset the weights to it."""

    def __init__(self, model: nn.Module):
        self.ema = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        for (k, ema), p in zip(self.ema.items(), model.state_dict().values()):
            if p.dtype.is_floating_point:
                ema.lerp_(p, 1 - decay)
                p.copy_(ema)
