"""Accuracy of a model on a data split: used at the end of training, by `cifar-speed eval` and tools."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import data as D
from .devices import autocast


@torch.no_grad()
def evaluate(model: nn.Module, split: D.Split, mean, std, device, dtype=torch.float32, batch_size=500,
             channels_last=False, on_batch=None) -> dict:
    """Top-1 accuracy, mean cross-entropy and predictions over a whole split (eval mode).
    on_batch(images done, images in all) after each batch: a progress display."""
    was_training = model.training
    model.eval()
    preds, loss_sum = [], 0.0
    for _, x, y in D.batches(split, batch_size, mean, std, device=device):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").item()
        preds.append(logits.argmax(1).cpu())
        if on_batch is not None:
            on_batch(sum(len(p) for p in preds), len(split))
    model.train(was_training)
    pred = torch.cat(preds)
    return {"accuracy": (pred == split.labels).float().mean().item(), "loss": loss_sum / len(split), "pred": pred}
