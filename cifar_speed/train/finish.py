"""The end of a run: the final fp32 evaluation on the official test set, then the checkpoint and its sidecar."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .. import data as D
from .. import harness
from ..checkpoint import save_checkpoint
from ..evaluation import evaluate, jpeg75_scores
from ..models import count_params, flops_per_image
from ..provenance import provenance
from .recipe import Recipe

if TYPE_CHECKING:
    from .loop import Run


def save_final(run: Run, model: nn.Module, progress: dict) -> Path:
    """Evaluate the trained model and write `<out>/<name>` (weights + sidecar); returns the sidecar."""
    recipe, dev, mean, std, test_split = run.recipe, run.device, run.data.mean, run.data.std, run.data.test
    model = model.float().to(memory_format=torch.contiguous_format)
    test = evaluate(model, test_split, mean, std, dev)
    meta = {
        "model": recipe.model,
        "name": recipe.name,
        "normalize": {"mean": list(mean), "std": list(std)},
        "test_accuracy": test["accuracy"],
        "per_class_accuracy": _per_class(test["pred"], test_split.labels),
        "param_count": count_params(model, trainable_only=False),
        "flops_per_image": flops_per_image(model),
        "epochs_run": progress["epoch"],
        "steps_run": progress["step"],
        "epochs_requested": run.epochs,
        "train_seconds": round(progress["train_seconds"], 1),
        "train_images_per_s": round(progress["images"] / max(progress["train_seconds"], 1e-9), 1),
        "train_precision": str(run.dtype).removeprefix("torch."),
        **_cpu_load(progress, dev),
        "device": str(dev),
        "world_size": run.ddp.world_size,
        "recipe": recipe.to_dict(),
        "data": {s: {"data_sha256": d, "labels_sha256": l} for s, (d, l) in D.SHA256.items()},
        "history": progress["history"],
        "provenance": provenance(),
    }
    if "best_val_accuracy" in progress:
        meta.update(best_val_accuracy=progress["best_val_accuracy"], best_val_loss=progress["best_val_loss"],
                    best_epoch=progress.get("best_epoch"), early_stopped=progress.get("early_stopped", False))
    if run.data.report_test is not None:
        meta["report_split_test_accuracy"] = evaluate(model, run.data.report_test, mean, std, dev)["accuracy"]
    meta.update(_variant_accuracies(recipe, model, test_split, mean, std, dev))
    if run.teacher_meta is not None:
        t = run.teacher_meta
        meta["teacher"] = _teacher_record(t)
        if t.get("ensemble"):   # [distill] ensemble: the further teachers whose logits were averaged in
            meta["teacher"]["ensemble"] = [_teacher_record(m) for m in t["ensemble"]]
    if run.start is not None:
        meta["fine_tuned_from"] = run.start
    return save_checkpoint(run.out_dir / recipe.name, model, meta)


def _teacher_record(meta: dict) -> dict:
    return {"name": meta.get("name"), "weights_sha256": meta.get("weights_sha256"),
            "test_accuracy": meta.get("test_accuracy")}


def _variant_accuracies(recipe: Recipe, model: nn.Module, test_split: D.Split, mean, std, device) -> dict:
    """Test accuracy with the recipe's test-time augmentation, and on the JPEG-75 copy of the test set."""
    out = {}
    if recipe.train.eval_tta and hasattr(model, "tta_level"):
        model.tta_level = recipe.train.eval_tta
        out["test_accuracy_tta"] = evaluate(model, test_split, mean, std, device)["accuracy"]
        out["tta_level"] = recipe.train.eval_tta
        model.tta_level = 0
    return out | jpeg75_scores(model, test_split, mean, std, device)


def _per_class(pred: torch.Tensor, labels: torch.Tensor) -> dict:
    return {c: (pred[labels == i] == i).float().mean().item() for i, c in enumerate(D.CLASSES)}


def _cpu_load(progress: dict, device: torch.device) -> dict:
    """Process CPU seconds of the training epochs and whether other work shared the cores (CPU runs)."""
    if device.type != "cpu" or "train_cpu_seconds" not in progress:
        return {}
    threads = torch.get_num_threads()
    flag, ratio = harness.disturbed(progress["train_cpu_seconds"], progress["train_seconds"], threads)
    shared = progress.get("train_disturbed_epochs", 0)
    return {"train_cpu_seconds": round(progress["train_cpu_seconds"], 1), "train_cpu_wall_ratio": round(ratio, 2),
            "train_threads": threads, "train_disturbed": flag or shared > 0, "train_disturbed_epochs": shared}
