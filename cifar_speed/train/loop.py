"""The training loop, one recipe at a time: data -> model -> optimiser -> epochs -> checkpoint.

Runs single-process or under torchrun (DistributedDataParallel: gloo on CPU, nccl on CUDA; each
rank takes its slice of every global batch, rank 0 alone writes). Every epoch ends with an atomic
resume point (weights, optimiser and RNG state committed as one set, resume.py), so `--resume` loses at
most one epoch and never pairs one epoch's weights with another's optimiser.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from torch import nn

from .. import data as D
from .. import harness
from ..checkpoint import SHIPPED_DIR, load_checkpoint, paths_for, save_checkpoint, weights_bytes
from ..errors import CifarSpeedError
from ..fileio import atomic_path
from ..models import count_params, create_model, flops_per_image
from ..provenance import REPO_ROOT, cpu_has_fast_bf16, provenance
from . import distill
from . import resume as resume_store
from .recipe import Recipe, load_recipe

NORMALIZATION = {"cifar": (D.CIFAR_MEAN, D.CIFAR_STD), "imagenet": (D.IMAGENET_MEAN, D.IMAGENET_STD)}


# -- where and in which precision ------------------------------------------------------------------

def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise CifarSpeedError("--device cuda: no CUDA GPU is visible to PyTorch on this machine")
    if name not in ("cpu", "cuda"):
        raise CifarSpeedError(f"unknown device {name!r}: use cpu or cuda")
    return torch.device(name)


def resolve_precision(wanted: str, device: torch.device) -> torch.dtype:
    """auto: bf16 where the hardware computes it natively (AMX / AVX512-BF16 CPUs, Ampere+ GPUs)."""
    if wanted == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    if wanted == "fp16" and device.type != "cuda":
        raise CifarSpeedError("fp16 training needs a CUDA GPU; use bf16 or fp32 on the CPU")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[wanted]


def _cpu_load(state: dict, dev: torch.device) -> dict:
    """Process CPU seconds of the training epochs and whether other work shared the cores (CPU runs)."""
    if dev.type != "cpu" or "train_cpu_seconds" not in state:
        return {}
    threads = torch.get_num_threads()
    flag, ratio = harness.disturbed(state["train_cpu_seconds"], state["train_seconds"], threads)
    return {"train_cpu_seconds": round(state["train_cpu_seconds"], 1), "train_cpu_wall_ratio": round(ratio, 2),
            "train_threads": threads, "train_disturbed": flag}


def autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


# -- evaluation ------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model: nn.Module, split: D.Split, mean, std, device, dtype=torch.float32, batch_size=500,
             channels_last=False) -> dict:
    """Top-1 accuracy, mean cross-entropy and predictions over a whole split (eval mode)."""
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
    model.train(was_training)
    pred = torch.cat(preds)
    return {"accuracy": (pred == split.labels).float().mean().item(), "loss": loss_sum / len(split), "pred": pred}


# -- distributed -------------------------------------------------------------------------------------

@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Dist:
    """Join the process group torchrun set up (RANK / WORLD_SIZE in the environment), if any."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Dist()
    if device.type == "cuda":  # before the NCCL group forms, so each rank binds its own GPU
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(dist.get_rank(), dist.get_world_size())


class _StudentStep(nn.Module):
    """The forward pass the loss needs (logits; logits + hidden; logits + regressed map) as one module,
    so DDP sees every trained parameter (the regressor's too) and all-reduces its gradient."""

    def __init__(self, model: nn.Module, kind: str, regressor: nn.Module | None):
        super().__init__()
        self.model, self.kind, self.regressor = model, kind, regressor

    def forward(self, x):
        if self.kind == "cosine":
            return self.model.forward_features(x)
        if self.kind == "regressor":
            logits, fmap = self.model.forward_feature_map(x)
            return logits, self.regressor(fmap)
        return self.model(x)


# -- optimiser and schedule -------------------------------------------------------------------------

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


# -- teacher -----------------------------------------------------------------------------------------

def find_teacher(recipe: Recipe, out_dir: Path, **train_kwargs) -> tuple[nn.Module, dict]:
    """The teacher checkpoint: a path, or a name looked up in --out and then results/checkpoints.
    If it is missing and the recipe names a teacher recipe, train the teacher first."""
    t = recipe.distill.teacher
    candidates = [Path(t)] if t.endswith(".json") else []
    name = Path(t.removesuffix(".json")).name  # "deepnn" or "x/deepnn.json": look for deepnn.json, never deepnn.json.json
    candidates += [out_dir / f"{name}.json", SHIPPED_DIR / f"{name}.json"]
    for c in candidates:
        if paths_for(c)[1].is_file():
            return load_checkpoint(c)
    if not recipe.distill.teacher_recipe:
        raise CifarSpeedError(f"teacher checkpoint {t!r} not found (looked in {', '.join(map(str, candidates))}); "
                              "train it first or set [distill] teacher_recipe")
    teacher_recipe = Path(recipe.distill.teacher_recipe)
    if not teacher_recipe.is_absolute() and not teacher_recipe.exists():
        teacher_recipe = REPO_ROOT / teacher_recipe
    sidecar = train(load_recipe(teacher_recipe), out_dir=out_dir, **train_kwargs)
    return load_checkpoint(sidecar)


@torch.no_grad()
def teacher_targets(teacher: nn.Module, kind: str, split: D.Split, mean, std, device, dtype, batch_size=500):
    """Teacher outputs for every training image, computed once (the tutorial's recipes do not augment,
    so the teacher's eval-mode outputs for an image never change during training)."""
    outs = []
    for _, x, _ in D.batches(split, batch_size, mean, std, device=device):
        with autocast(device, dtype):
            if kind == "kd":
                outs.append(teacher(x).float())
            elif kind == "cosine":
                outs.append(teacher.forward_features(x)[1].float())
            else:
                outs.append(teacher.forward_feature_map(x)[1].float())
    return torch.cat(outs)


def cached_teacher_logits(teacher: nn.Module, teacher_meta: dict, tta: int, split: D.Split, mean, std, device,
                          dtype) -> torch.Tensor:
    """`teacher_targets` for kd, kept in the cache folder under the teacher's weights hash, its TTA level
    and the images' hash (numpy .npy: loaded without pickle)."""
    import numpy as np

    key = f"{teacher_meta.get('weights_sha256', 'unhashed')[:16]}-tta{tta}-{D._sha256(split.images.numpy())[:16]}"
    path = D.cache_root() / "teacher-logits" / f"{key}.npy"
    if path.is_file():
        try:
            arr = np.load(path, allow_pickle=False)
            if arr.shape == (len(split), 10) and arr.dtype == np.float32:
                return torch.from_numpy(arr)
        except (OSError, ValueError, EOFError):
            pass  # rebuilt below
    logits = teacher_targets(teacher, "kd", split, mean, std, device, dtype).cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.save adds no suffix
        np.save(f, logits.numpy().astype(np.float32), allow_pickle=False)
    return logits


# -- the loop ----------------------------------------------------------------------------------------

def make_splits(recipe: Recipe, data_dir) -> tuple[D.Split, D.Split | None, D.Split | None]:
    """(train, validation or None, the report's own 10 % 'test' or None). The official test set is
    never used for any training decision."""
    full = D.load_split("train", data_dir)
    if recipe.data.split == "report":
        return D.report_split(full, recipe.data.split_seed)
    if recipe.data.split == "holdout":
        tr, val = D.holdout(full, recipe.data.val_size, recipe.data.split_seed)
        return tr, val, None
    return full, None, None


def train(recipe: Recipe, *, data_dir=None, device: str = "cpu", out_dir: str | Path = "runs",
          epochs: float | None = None, resume: bool = False, show_progress: bool = True) -> Path:
    """Train one recipe; returns the path of the final checkpoint's sidecar (`<out>/<name>.json`)."""
    dev = resolve_device(device)
    ddp = init_distributed(dev)
    dtype = resolve_precision(recipe.train.precision, dev)
    out_dir = Path(out_dir)
    work = out_dir / f"{recipe.name}.work"
    epochs = float(epochs if epochs is not None else recipe.train.epochs)
    if epochs <= 0:
        raise CifarSpeedError("--epochs must be positive")

    # data
    mean, std = NORMALIZATION[recipe.data.normalize]
    train_split, val_split, report_test = make_splits(recipe, data_dir)
    test_split = D.load_split("test", data_dir)
    bs = recipe.data.batch_size
    steps_per_epoch = math.ceil(len(train_split) / bs)
    total_steps = max(1, round(epochs * steps_per_epoch))
    aug = D.Augment(flip=recipe.augment.flip, translate=recipe.augment.translate,
                    rotate_degrees=recipe.augment.rotate_degrees, shift_fraction=recipe.augment.shift_fraction,
                    cutout=recipe.augment.cutout)
    augmenting = aug.flip or aug.translate or aug.rotate_degrees or aug.shift_fraction or aug.cutout or recipe.augment.alternating_flip
    jpeg_aug = D.JpegAugment(recipe.augment.jpeg_fraction, recipe.augment.jpeg_quality_min, recipe.augment.jpeg_quality_max)

    # model: seeded right before it is built, as the tutorial does, so inits match across runs
    torch.manual_seed(recipe.seed)
    model = create_model(recipe.model)
    if hasattr(model, "init_whitening"):
        model.init_whitening(D.normalize(train_split.images[:5000], mean, std))
    model = model.to(dev)
    conv_model = any(isinstance(m, nn.Conv2d) for m in model.modules())
    channels_last = recipe.train.channels_last and conv_model
    if channels_last:
        model = model.to(memory_format=torch.channels_last)

    # distillation
    kind = recipe.distill.kind
    teacher, teacher_meta, targets, regressor = None, None, None, None
    if kind:
        # kd needs only logits, so any teacher teaches any student; the feature-based objectives are
        # wired to the tutorial's deepnn -> lightnn shapes.
        if kind != "kd" and recipe.model != "lightnn":
            raise CifarSpeedError(f"{kind} distillation trains the lightnn student, not {recipe.model!r}")
        teacher, teacher_meta = find_teacher(recipe, out_dir, data_dir=data_dir, device=device, epochs=epochs if epochs != recipe.train.epochs else None,
                                             show_progress=show_progress)
        if kind != "kd" and teacher_meta["model"] != "deepnn":
            raise CifarSpeedError(f"the {kind} teacher must be a deepnn checkpoint, got {teacher_meta['model']!r}")
        teacher = teacher.to(dev).eval()
        if recipe.distill.teacher_tta:
            if not hasattr(teacher, "tta_level"):
                raise CifarSpeedError(f"[distill] teacher_tta: the {teacher_meta['model']!r} teacher has no test-time augmentation")
            teacher.tta_level = recipe.distill.teacher_tta
        if tuple(teacher_meta["normalize"]["mean"]) != tuple(mean):
            raise CifarSpeedError("teacher and student recipes normalise differently; use the same [data] normalize")
        if kind == "kd":
            # The teacher sees each clean training image once; the student learns those soft targets
            # through its own augmentations (flip, crop, JPEG). Cached on disk: every seed and every
            # student of one teacher reuses them.
            targets = cached_teacher_logits(teacher, teacher_meta, recipe.distill.teacher_tta, train_split,
                                            mean, std, dev, dtype)
        elif not augmenting:
            targets = teacher_targets(teacher, kind, train_split, mean, std, dev, dtype)
        if kind == "regressor":
            torch.manual_seed(recipe.seed + 1)
            regressor = distill.Regressor().to(dev)

    optimizer = build_optimizer(recipe, model, regressor.parameters() if regressor is not None else ())
    scheduler, sched_unit = build_schedule(recipe, optimizer, total_steps)
    lookahead = Lookahead(model) if recipe.train.lookahead_every else None
    alpha_schedule = 0.95**5 * (torch.arange(total_steps + 1) / total_steps) ** 3
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    train_model = _StudentStep(model, kind, regressor) if kind in ("cosine", "regressor") else model
    if ddp.world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(train_model)

    gen = torch.Generator().manual_seed(recipe.seed)
    flip_base = torch.rand(len(train_split), generator=gen) < 0.5  # alternating flip's first-epoch mask
    state = {"epoch": 0, "step": 0, "best_val_loss": math.inf, "bad_epochs": 0, "history": [], "train_seconds": 0.0, "images": 0}
    best_state = None

    # resume
    if ddp.main:
        resume_store.remove_stale(work)
    if resume:
        point = resume_store.latest(work, say=print if ddp.main else (lambda _: None))
        if point is not None:
            best_state, state = _restore(point, recipe, model, optimizer, scheduler, regressor, lookahead, gen)
        elif ddp.main:
            print(f"no checkpoint to resume in {work}; starting from scratch")

    # train
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    progress = _progress(show_progress and ddp.main)
    task = progress.add_task(recipe.name, total=total_steps, completed=state["step"], info="")
    with progress:
        for epoch in range(state["epoch"], n_epochs):
            model.train()
            if recipe.train.whiten_bias_epochs and hasattr(model, "whiten"):
                model.whiten.bias.requires_grad = epoch < recipe.train.whiten_bias_epochs
            t0, cpu0, seen, correct, loss_sum = time.perf_counter(), time.process_time(), 0, 0, 0.0
            flip_mask = flip_base ^ bool(epoch % 2) if recipe.augment.alternating_flip else None
            for idx, x, y in D.batches(train_split, bs, mean, std, augment=None, shuffle=True, gen=gen,
                                       device=dev, rank=ddp.rank, world_size=ddp.world_size):
                if state["step"] >= total_steps:
                    break
                if flip_mask is not None:
                    x = torch.where(flip_mask[idx].to(dev).view(-1, 1, 1, 1), x.flip(-1), x)
                if augmenting:
                    x = aug(x, gen)
                x = jpeg_aug(x, mean, std, gen)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                with autocast(dev, dtype):
                    if kind == "cosine":
                        logits, hidden = train_model(x)
                    elif kind == "regressor":
                        logits, regressed = train_model(x)
                    else:
                        logits = train_model(x)
                    logits = logits.float()
                    if kind:
                        t_out = targets[idx].to(dev) if targets is not None else teacher_targets(
                            teacher, kind, D.Split(train_split.images[idx], y.cpu()), mean, std, dev, dtype, len(idx))
                    d = recipe.distill
                    if kind == "kd":
                        loss = distill.kd_loss(logits, t_out, y, d.temperature, d.soft_weight, d.ce_weight)
                        if recipe.train.loss_reduction == "sum":
                            loss = loss * len(y) * ddp.world_size  # lr scaled for a summed loss (airbench_sgd)
                    elif kind == "cosine":
                        loss = distill.cosine_loss(logits, hidden.float(), t_out, y, d.soft_weight, d.ce_weight)
                    elif kind == "regressor":
                        loss = distill.regressor_loss(logits, regressed.float(), t_out, y, d.soft_weight, d.ce_weight)
                    else:
                        loss = F.cross_entropy(logits, y, label_smoothing=recipe.train.label_smoothing,
                                               reduction=recipe.train.loss_reduction)
                        if recipe.train.loss_reduction == "sum":
                            loss = loss * ddp.world_size  # DDP averages gradients; a sum must stay a sum
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
                state["step"] += 1
                if sched_unit == "step":
                    scheduler.step()
                if lookahead is not None and state["step"] % recipe.train.lookahead_every == 0:
                    lookahead.update(model, decay=alpha_schedule[state["step"]].item())
                with torch.no_grad():
                    seen += len(y)
                    correct += (logits.argmax(1) == y).sum().item()
                    loss_sum += loss.item() * (1 if recipe.train.loss_reduction == "sum" and not kind else len(y))
                elapsed = time.perf_counter() - t0
                progress.update(task, advance=1, info=f"epoch {epoch + 1}/{n_epochs}  loss {loss_sum / seen:.3f}  "
                                f"acc {correct / seen:.3f}  {seen * ddp.world_size / elapsed:,.0f} img/s")
            if lookahead is not None and state["step"] >= total_steps:
                lookahead.update(model, decay=1.0)  # the last step ends on the averaged weights
            epoch_s, epoch_cpu_s = time.perf_counter() - t0, time.process_time() - cpu0
            state["train_seconds"] += epoch_s
            # Process CPU time beside wall time: a CPU run that shared its cores is flagged in the sidecar.
            state["train_cpu_seconds"] = state.get("train_cpu_seconds", 0.0) + epoch_cpu_s
            state["images"] += seen * ddp.world_size
            record = {"epoch": epoch + 1, "step": state["step"], "train_loss": loss_sum / max(seen, 1),
                      "train_accuracy": correct / max(seen, 1), "lr": optimizer.param_groups[-1]["lr"],
                      "seconds": round(epoch_s, 2), "images_per_s": round(seen * ddp.world_size / epoch_s, 1),
                      "cpu_wall_ratio": round(epoch_cpu_s / epoch_s, 2)}
            stop = False
            if val_split is not None:
                val = evaluate(model, val_split, mean, std, dev, dtype, channels_last=channels_last)
                record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
                if sched_unit == "epoch":
                    scheduler.step(val["loss"])
                if val["loss"] < state["best_val_loss"]:
                    state["best_val_loss"], state["bad_epochs"] = val["loss"], 0
                    state["best_epoch"], state["best_val_accuracy"] = epoch + 1, val["accuracy"]
                    best_state = copy.deepcopy(model.state_dict()) if recipe.train.early_stopping_patience else None
                else:
                    state["bad_epochs"] += 1
                    pat = recipe.train.early_stopping_patience
                    stop = bool(pat) and state["bad_epochs"] >= pat
            state["history"].append(record)
            state["epoch"] = epoch + 1
            if ddp.main:
                progress.console.print(_epoch_line(record))
                _save_progress(work, model, recipe, mean, std, optimizer, scheduler, regressor, lookahead,
                               best_state, gen, state)
            if stop:
                state["early_stopped"] = True
                if ddp.main:
                    progress.console.print(f"early stop after epoch {epoch + 1}: no val-loss improvement for "
                                           f"{recipe.train.early_stopping_patience} epochs; restoring epoch {state['best_epoch']}")
                break

    if best_state is not None:
        model.load_state_dict(best_state)
    if ddp.world_size > 1:
        dist.barrier()
    sidecar = paths_for(out_dir / recipe.name)[1]
    if ddp.main:
        sidecar = _finish(recipe, model, dev, mean, std, test_split, report_test, state, out_dir, teacher_meta,
                          total_steps, steps_per_epoch, epochs, dtype, ddp)
    if ddp.world_size > 1:
        dist.barrier()
    return sidecar


def _finish(recipe, model, dev, mean, std, test_split, report_test, state, out_dir, teacher_meta,
            total_steps, steps_per_epoch, epochs, dtype, ddp) -> Path:
    """Final fp32 evaluation on the official test set, then the checkpoint and its sidecar."""
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
        "epochs_run": state["epoch"],
        "steps_run": state["step"],
        "epochs_requested": epochs,
        "train_seconds": round(state["train_seconds"], 1),
        "train_images_per_s": round(state["images"] / max(state["train_seconds"], 1e-9), 1),
        "train_precision": str(dtype).removeprefix("torch."),
        **_cpu_load(state, dev),
        "device": str(dev),
        "world_size": ddp.world_size,
        "recipe": recipe.to_dict(),
        "data": {s: {"data_sha256": d, "labels_sha256": l} for s, (d, l) in D.SHA256.items()},
        "history": state["history"],
        "provenance": provenance(),
    }
    if "best_val_accuracy" in state:
        meta.update(best_val_accuracy=state["best_val_accuracy"], best_val_loss=state["best_val_loss"],
                    best_epoch=state.get("best_epoch"), early_stopped=state.get("early_stopped", False))
    if report_test is not None:
        meta["report_split_test_accuracy"] = evaluate(model, report_test, mean, std, dev)["accuracy"]
    if recipe.train.eval_tta and hasattr(model, "tta_level"):
        model.tta_level = recipe.train.eval_tta
        meta["test_accuracy_tta"] = evaluate(model, test_split, mean, std, dev)["accuracy"]
        meta["tta_level"] = recipe.train.eval_tta
        model.tta_level = 0
    jpeg = D.jpeg_version(test_split, 75)  # the same images as users' JPEGs arrive (issue: robustness)
    meta["test_accuracy_jpeg75"] = evaluate(model, jpeg, mean, std, dev)["accuracy"]
    meta["jpeg75_sha256"] = D.content_sha256(jpeg)
    if teacher_meta is not None:
        meta["teacher"] = {"name": teacher_meta.get("name"), "weights_sha256": teacher_meta.get("weights_sha256"),
                           "test_accuracy": teacher_meta.get("test_accuracy")}
    return save_checkpoint(out_dir / recipe.name, model, meta)


def _per_class(pred: torch.Tensor, labels: torch.Tensor) -> dict:
    return {c: (pred[labels == i] == i).float().mean().item() for i, c in enumerate(D.CLASSES)}


def _resume_recipe(recipe: Recipe) -> dict:
    """What must match for a resumed run to be the same run: the recipe without its file's location,
    its name and its epoch count (resuming with more epochs extends a run; --epochs may differ)."""
    d = recipe.to_dict()
    for k in ("path", "name"):
        d.pop(k, None)
    d["train"] = {k: v for k, v in d["train"].items() if k != "epochs"}
    return d


def _save_progress(work, model, recipe, mean, std, optimizer, scheduler, regressor, lookahead, best_state, gen, state):
    """The per-epoch resume point, committed as one set (resume.py): the weights as safetensors and the
    rest (tensors and plain data only) in state.pt, which loads with weights_only=True."""
    st = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler is not None else None,
          "regressor": regressor.state_dict() if regressor is not None else None,
          "lookahead": lookahead.ema if lookahead is not None else None, "best_model": best_state,
          "generator": gen.get_state(), "torch_rng": torch.get_rng_state(), "progress": json.dumps(state)}
    buf = io.BytesIO()
    torch.save(st, buf)
    resume_store.save_epoch(work, state["epoch"], {"weights.safetensors": weights_bytes(model, recipe.model),
                                                   "state.pt": buf.getvalue()},
                            extra={"model": recipe.model, "recipe": _resume_recipe(recipe)})


def _restore(point, recipe, model, optimizer, scheduler, regressor, lookahead, gen) -> tuple[dict | None, dict]:
    """Load a verified resume point into the run; (best_state, progress). A point of another recipe,
    or files that do not fit this model and optimiser, are refused in one line: resuming them would
    silently train a different model."""
    where = point.folder
    if point.manifest.get("recipe") != json.loads(json.dumps(_resume_recipe(recipe))):
        raise CifarSpeedError(f"cannot resume from {where}: it was trained with a different recipe or seed; "
                              "delete its .work folder or train without --resume")
    try:
        weights = safetensors_load(point.files["weights.safetensors"])
        st = torch.load(io.BytesIO(point.files["state.pt"]), map_location="cpu", weights_only=True)
        expected = model.state_dict()
        if set(weights) != set(expected) or any(weights[k].shape != expected[k].shape for k in expected):
            raise ValueError(f"its weights are not {recipe.model!r} weights")
        model.load_state_dict(weights)
        optimizer.load_state_dict(st["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(st["scheduler"])
        if regressor is not None:
            regressor.load_state_dict(st["regressor"])
        if lookahead is not None:
            lookahead.ema = st["lookahead"]
        gen.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        progress = json.loads(st["progress"])
        if not isinstance(progress, dict) or progress.get("epoch") != point.epoch:
            raise ValueError("its progress record names another epoch")
    except (pickle.UnpicklingError, SafetensorError, RuntimeError, ValueError, KeyError, TypeError, EOFError,
            AttributeError, IndexError) as e:  # untrusted bytes: any of these means "not a state of this run"
        raise CifarSpeedError(f"cannot resume from {where}: {' '.join(str(e).split())[:120] or type(e).__name__}; "
                              "delete its .work folder or train without --resume") from None
    return st.get("best_model"), progress


def _epoch_line(r: dict) -> str:
    s = (f"epoch {r['epoch']:>3}  loss {r['train_loss']:.4f}  acc {r['train_accuracy']:.4f}  "
         f"lr {r['lr']:.2e}  {r['images_per_s']:,.0f} img/s  {r['seconds']:.1f}s")
    if "val_accuracy" in r:
        s += f"  val_loss {r['val_loss']:.4f}  val_acc {r['val_accuracy']:.4f}"
    return s


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                    TimeElapsedColumn(), TimeRemainingColumn(), disable=not enabled, transient=False)
