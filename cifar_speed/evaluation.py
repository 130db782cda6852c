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


def jpeg75_scores(model: nn.Module, test_split: D.Split, mean, std, device) -> dict:
    """The sidecar's JPEG-75 keys: top-1 on the test images after a quality-75 round trip (the same
    images as users' JPEGs arrive) and that set's content sha256. Training records them; the tools that
    score a checkpoint trained before the set existed record the same keys, scored the same way."""
    jpeg = D.jpeg_version(test_split, 75)
    return {"test_accuracy_jpeg75": evaluate(model, jpeg, mean, std, device)["accuracy"],
            "jpeg75_sha256": D.content_sha256(jpeg)}
