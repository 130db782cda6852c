"""A training recipe: one TOML file, checked strictly so a typo is an error, not a silent default.

Sections and keys are the dataclass fields below; `cifar-speed train --help` and the files in
train/ show them in use.
"""
from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CifarSpeedError
from ..models import list_models


@dataclass
class DataCfg:
    split: str = "official"      # official: 50k train / 10k test; report: 70/20/10 of train; holdout: n_val held out
    val_size: int = 5000         # for split = "holdout"
    split_seed: int = 42
    normalize: str = "cifar"     # cifar | imagenet (the distillation tutorial uses ImageNet statistics)
    batch_size: int = 128


@dataclass
class AugmentCfg:
    flip: bool = False
    alternating_flip: bool = False  # airbench: each epoch flips exactly the images the previous one did not
    translate: int = 0
    rotate_degrees: float = 0.0
    shift_fraction: float = 0.0
    cutout: int = 0


@dataclass
class OptimCfg:
    name: str = "adam"           # adam | adamw | sgd | airbench_sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    bias_scaler: float = 1.0     # airbench_sgd: lr multiplier for BatchNorm biases


@dataclass
class ScheduleCfg:
    name: str = "constant"       # constant | plateau | onecycle | airbench
    factor: float = 0.1          # plateau
    patience: int = 5            # plateau
    min_lr: float = 0.0          # plateau
    warmup_fraction: float = 0.23  # airbench / onecycle
    start_factor: float = 0.2    # airbench: lr multiplier at step 0
    end_factor: float = 0.07     # airbench: lr multiplier at the last step


@dataclass
class TrainCfg:
    epochs: float = 10.0           # may be fractional (airbench trains 9.9 epochs)
    early_stopping_patience: int = 0  # epochs without val-loss improvement; 0 = off. Restores the best weights.
    label_smoothing: float = 0.0
    loss_reduction: str = "mean"  # airbench sums the loss over the batch (its lr is scaled for that)
    precision: str = "auto"       # auto | fp32 | bf16 | fp16: auto = bf16 where the CPU/GPU has it
    channels_last: bool = True
    lookahead_every: int = 0      # airbench's EMA/lookahead every k steps; 0 = off
    whiten_bias_epochs: float = 0.0  # fast: train the whitening conv's bias for this many epochs
    eval_tta: int = 0             # also report test accuracy with this test-time-augmentation level


@dataclass
class DistillCfg:
    kind: str = ""                # "" (none) | kd | cosine | regressor
    teacher: str = ""             # teacher checkpoint (sidecar path), relative to the repo root or absolute
    teacher_recipe: str = ""      # recipe that trains the teacher if the checkpoint is missing
    temperature: float = 2.0
    soft_weight: float = 0.25     # weight of the distillation term
    ce_weight: float = 0.75       # weight of the hard-label cross-entropy


@dataclass
class Recipe:
    model: str
    seed: int = 42
    description: str = ""
    data: DataCfg = field(default_factory=DataCfg)
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    schedule: ScheduleCfg = field(default_factory=ScheduleCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    distill: DistillCfg = field(default_factory=DistillCfg)
    name: str = ""                # defaults to the file's stem
    path: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_CHOICES = {
    ("data", "split"): {"official", "report", "holdout"},
    ("data", "normalize"): {"cifar", "imagenet"},
    ("optim", "name"): {"adam", "adamw", "sgd", "airbench_sgd"},
    ("schedule", "name"): {"constant", "plateau", "onecycle", "airbench"},
    ("train", "precision"): {"auto", "fp32", "bf16", "fp16"},
    ("train", "loss_reduction"): {"mean", "sum"},
    ("distill", "kind"): {"", "kd", "cosine", "regressor"},
}


def _build(cls, table: dict, where: str):
    if not isinstance(table, dict):
        raise CifarSpeedError(f"[{where}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(table) - set(fields)
    if unknown:
        raise CifarSpeedError(f"unknown key(s) {', '.join(sorted(unknown))} in [{where}]; valid: {', '.join(fields)}")
    values = {}
    for key, value in table.items():
        default = fields[key].default
        if isinstance(default, bool) and not isinstance(value, bool):
            raise CifarSpeedError(f"[{where}] {key} must be true or false, got {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CifarSpeedError(f"[{where}] {key} must be a number, got {value!r}")
            if isinstance(default, int) and not isinstance(value, int):
                raise CifarSpeedError(f"[{where}] {key} must be an integer, got {value!r}")
        if isinstance(default, str) and not isinstance(value, str):
            raise CifarSpeedError(f"[{where}] {key} must be a string, got {value!r}")
        if (where, key) in _CHOICES and value not in _CHOICES[(where, key)]:
            raise CifarSpeedError(f"[{where}] {key} = {value!r} is not one of {', '.join(sorted(map(repr, _CHOICES[(where, key)])))}")
        values[key] = value
    return cls(**values)


def parse_recipe(text: str, name: str = "recipe", path: str = "") -> Recipe:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise CifarSpeedError(f"{path or name} is not valid TOML: {e}") from None
    sections = {"data": DataCfg, "augment": AugmentCfg, "optim": OptimCfg, "schedule": ScheduleCfg,
                "train": TrainCfg, "distill": DistillCfg}
    top = {"model", "seed", "description", *sections}
    unknown = set(raw) - top
    if unknown:
        raise CifarSpeedError(f"unknown key(s) {', '.join(sorted(unknown))} in {path or name}; valid: {', '.join(sorted(top))}")
    if "model" not in raw:
        raise CifarSpeedError(f"{path or name} has no `model` key; available models: {', '.join(list_models())}")
    if raw["model"] not in list_models():
        raise CifarSpeedError(f"{path or name}: unknown model {raw['model']!r}; available: {', '.join(list_models())}")
    parts = {k: _build(cls, raw.get(k, {}), k) for k, cls in sections.items()}
    seed = raw.get("seed", 42)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise CifarSpeedError(f"{path or name}: seed must be an integer")
    recipe = Recipe(model=raw["model"], seed=seed, description=str(raw.get("description", "")), name=name, path=path, **parts)
    if recipe.distill.kind and not recipe.distill.teacher:
        raise CifarSpeedError(f"{path or name}: [distill] kind = {recipe.distill.kind!r} needs a teacher checkpoint")
    if recipe.train.early_stopping_patience and recipe.data.split == "official":
        raise CifarSpeedError(f"{path or name}: early stopping needs a validation split (data.split = 'report' or 'holdout'), "
                              "never the official test set")
    if recipe.schedule.name == "plateau" and recipe.data.split == "official":
        raise CifarSpeedError(f"{path or name}: a plateau schedule needs a validation split, never the official test set")
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    p = Path(path)
    if not p.is_file():
        raise CifarSpeedError(f"recipe {p} not found")
    return parse_recipe(p.read_text(), name=p.stem, path=str(p))
