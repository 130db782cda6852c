"""A training recipe: one TOML file, checked strictly so a typo is an error, not a silent default.

Sections and keys are the dataclass fields below; `cifar-speed train --help` and the files in
train/ show them in use.
"""
from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ..checks import SEED, Range, check
from ..errors import CifarSpeedError
from ..fileio import require_file
from ..provenance import REPO_ROOT
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
    jpeg_fraction: float = 0.0    # JPEG-compress this fraction of each batch (robustness to compressed inputs)
    jpeg_quality_min: int = 30    # ... at a quality drawn uniformly from [min, max]
    jpeg_quality_max: int = 95


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
    precision: str = "auto"       # auto | fp32 | bf16 | fp16: auto = bf16 where it trains faster (devices.resolve_precision)
    channels_last: bool = True
    lookahead_every: int = 0      # airbench's EMA/lookahead every k steps; 0 = off
    whiten_bias_epochs: float = 0.0  # fast: train the whitening conv's bias for this many epochs
    # fast/frontier: added to each patch-covariance eigenvalue before the whitening scales by 1/sqrt.
    # airbench's 5e-4 blows the faintest 2x2 patterns up to unit variance; JPEG's 4:2:0 chroma
    # subsampling replaces just those (its error there is 0.4-1.1x the signal), so a larger eps
    # trades a little clean detail for robustness on compressed inputs.
    whiten_eps: float = 5e-4
    eval_tta: int = 0             # also report test accuracy with this test-time-augmentation level


@dataclass
class DistillCfg:
    kind: str = ""                # "" (none) | kd | cosine | regressor
    teacher: str = ""             # teacher checkpoint (sidecar path), relative to the repo root or absolute
    teacher_recipe: str = ""      # recipe that trains the teacher if the checkpoint is missing
    teacher_tta: int = 0          # kd: run the teacher with this test-time-augmentation level (fast: 0-2)
    # What the teacher sees of each training image: "stored", the image as stored, once per image (kd
    # caches those logits on disk), so every flip, crop and JPEG copy of it is pulled to one target;
    # "view", the student's own flipped and cropped copy before JPEG compression, every step (a teacher
    # forward per batch), so a compressed copy is pulled to what the teacher says of that very copy clean.
    teacher_view: str = "stored"
    # The sha256 of the teacher's weights file: a distilled recipe keeps its teacher after a newer
    # checkpoint ships under the teacher's name (the older one is found in results/checkpoints/bases/).
    teacher_sha256: str = ""
    # kd from an ensemble: further teachers (sidecar paths or names, found as `teacher` is) and the
    # weights each must hold; their cached logits and the teacher's are averaged into one target.
    ensemble: list[str] = field(default_factory=list)
    ensemble_sha256: list[str] = field(default_factory=list)
    temperature: float = 2.0
    soft_weight: float = 0.25     # weight of the distillation term
    ce_weight: float = 0.75       # weight of the hard-label cross-entropy


@dataclass
class InitCfg:
    # Fine-tuning: start from a trained checkpoint's weights instead of a fresh init. The sidecar's
    # path (relative to the working folder or else the repository), and the sha256 of the weights it
    # must hold, so a recipe always names the same starting point even after a newer checkpoint is
    # shipped under that model's name.
    checkpoint: str = ""
    weights_sha256: str = ""


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
    init: InitCfg = field(default_factory=InitCfg)
    name: str = ""                # defaults to the file's stem
    path: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def with_added_fields(recorded: dict, defaults: dict | None = None) -> dict:
    """A recipe as a run recorded it (Recipe.to_dict() then), every field added to recipes since at its
    default: a new field's default keeps what runs did before it existed. In each section the recorded
    fields come first, in their order, then the added ones. `defaults`: Recipe(model=...).to_dict(),
    or a caller's own where it knows better (a teacher pin added later is the teacher the run names)."""
    defaults = Recipe(model=recorded["model"]).to_dict() if defaults is None else defaults
    filled = dict(recorded)
    for section, default in defaults.items():
        if not isinstance(default, dict):
            filled.setdefault(section, default)
            continue
        have = recorded.get(section) or {}
        filled[section] = {**have, **{k: v for k, v in default.items() if k not in have}}
    return filled


_CHOICES = {
    ("data", "split"): {"official", "report", "holdout"},
    ("data", "normalize"): {"cifar", "imagenet"},
    ("optim", "name"): {"adam", "adamw", "sgd", "airbench_sgd"},
    ("schedule", "name"): {"constant", "plateau", "onecycle", "airbench"},
    ("train", "precision"): {"auto", "fp32", "bf16", "fp16"},
    ("train", "loss_reduction"): {"mean", "sum"},
    ("distill", "kind"): {"", "kd", "cosine", "regressor"},
    ("distill", "teacher_view"): {"stored", "view"},
}


# Every numeric field's allowed values (tests/test_hardening.py fails for a numeric field missing
# here). Bounds are generous: they refuse what is nonsense or would crash, not unusual choices.
_UNIT = dict(low=0, high=1)
RANGES: dict[tuple[str, str], Range] = {
    ("", "seed"): SEED,
    ("data", "val_size"): Range(1, 49_999, integer=True, why="images held out of the 50,000 training images"),
    ("data", "split_seed"): SEED,
    ("data", "batch_size"): Range(1, 10_000, integer=True, why="a batch larger than the 10,000-image test set is a typo"),
    ("augment", "translate"): Range(0, 16, integer=True, why="pixels of a 32-pixel image"),
    ("augment", "rotate_degrees"): Range(0, 180),
    ("augment", "shift_fraction"): Range(0, 0.5, why="of the image size"),
    ("augment", "cutout"): Range(0, 32, integer=True, why="pixels of a 32-pixel image"),
    ("augment", "jpeg_fraction"): Range(**_UNIT, why="of each batch"),
    ("augment", "jpeg_quality_min"): Range(1, 100, integer=True, why="JPEG quality"),
    ("augment", "jpeg_quality_max"): Range(1, 100, integer=True, why="JPEG quality"),
    ("optim", "lr"): Range(0, 1000, low_open=True),
    ("optim", "weight_decay"): Range(0, 1000),
    ("optim", "momentum"): Range(0, 1, high_open=True),
    ("optim", "bias_scaler"): Range(0, 1000, low_open=True),
    ("schedule", "factor"): Range(0, 1, low_open=True, high_open=True, why="the lr is multiplied by it"),
    ("schedule", "patience"): Range(0, 10_000, integer=True),
    ("schedule", "min_lr"): Range(0, 1000),
    ("schedule", "warmup_fraction"): Range(0, 1, high_open=True, why="of all steps"),
    ("schedule", "start_factor"): Range(0, 1000),
    ("schedule", "end_factor"): Range(0, 1000),
    ("train", "epochs"): Range(0, 10_000, low_open=True),
    ("train", "early_stopping_patience"): Range(0, 10_000, integer=True),
    ("train", "label_smoothing"): Range(0, 1, high_open=True),
    ("train", "lookahead_every"): Range(0, 1_000_000, integer=True),
    ("train", "whiten_bias_epochs"): Range(0, 10_000),
    ("train", "whiten_eps"): Range(0, 100, low_open=True, why="added to covariance eigenvalues of normalised patches"),
    ("train", "eval_tta"): Range(0, 2, integer=True, why="fast's test-time-augmentation levels"),
    ("distill", "teacher_tta"): Range(0, 2, integer=True, why="fast's test-time-augmentation levels"),
    ("distill", "temperature"): Range(0, 1000, low_open=True),
    ("distill", "soft_weight"): Range(0, 1000),
    ("distill", "ce_weight"): Range(0, 1000),
}
# A numeric field not (yet) in RANGES is still refused when it is NaN or infinite.
_FINITE = Range(-float("inf"), float("inf"), low_open=True, high_open=True)


def check_field(section: str, key: str, value, source: str):
    """A recipe value or the flag that overrides it, range-checked; `source` names where it came from
    ("train/x.toml" or "--epochs")."""
    rng = RANGES.get((section, key), _FINITE)
    what = source if source.startswith("--") else f"{f'[{section}] ' if section else ''}{key} in {source}"
    return check(value, rng, what)


def _build(cls, table: dict, where: str, source: str = "the recipe"):
    if not isinstance(table, dict):
        raise CifarSpeedError(f"[{where}] must be a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(table) - set(fields)
    if unknown:
        raise CifarSpeedError(f"unknown key(s) {_short(', '.join(sorted(map(str, unknown))))} in [{where}]; "
                              f"valid: {', '.join(fields)}")
    values = {}
    for key, value in table.items():
        default = fields[key].default
        if isinstance(default, bool) and not isinstance(value, bool):
            raise CifarSpeedError(f"[{where}] {key} must be true or false, got {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise CifarSpeedError(f"[{where}] {key} must be a number, got {_short(value)}")
            if isinstance(default, int) and not isinstance(value, int):
                raise CifarSpeedError(f"[{where}] {key} must be an integer, got {_short(value)}")
            check_field(where, key, value, source)
        if isinstance(default, str) and not isinstance(value, str):
            raise CifarSpeedError(f"[{where}] {key} must be a string, got {_short(value)}")
        if fields[key].default_factory is list and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise CifarSpeedError(f"[{where}] {key} must be a list of strings, got {_short(value)}")
        if (where, key) in _CHOICES and value not in _CHOICES[(where, key)]:
            raise CifarSpeedError(f"[{where}] {key} = {_short(value)} is not one of {', '.join(sorted(map(repr, _CHOICES[(where, key)])))}")
        values[key] = value
    return cls(**values)


def _short(value) -> str:
    # Recipe values are echoed in errors; a 10 kB string or a 5,000-digit integer must stay one short line.
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"a {value.bit_length()}-bit integer"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


SECTIONS = {"data": DataCfg, "augment": AugmentCfg, "optim": OptimCfg, "schedule": ScheduleCfg,
            "train": TrainCfg, "distill": DistillCfg, "init": InitCfg}


def parse_recipe(text: str, name: str = "recipe", path: str = "") -> Recipe:
    try:
        raw = tomllib.loads(text)
    except (tomllib.TOMLDecodeError, ValueError) as e:  # ValueError: integers past Python's int->str digit limit
        raise CifarSpeedError(f"{path or name} is not valid TOML: {' '.join(str(e).split())[:200]}") from None
    return build_recipe(raw, name=name, path=path)


def _check_sha256(value: str, field: str, source: str) -> None:
    """A pinned weights hash, where the recipe sets one: 64 lowercase hex digits."""
    if value and not re.fullmatch(r"[0-9a-f]{64}", value):
        raise CifarSpeedError(f"{source}: {field} must be 64 lowercase hex digits")


def build_recipe(raw: dict, name: str = "recipe", path: str = "") -> Recipe:
    """A Recipe from a parsed TOML document, every key and value checked (types, choices, ranges)."""
    source = path or name
    if not isinstance(raw, dict):
        raise CifarSpeedError(f"{source} is not a TOML table")
    top = {"model", "seed", "description", *SECTIONS}
    unknown = set(raw) - top
    if unknown:
        raise CifarSpeedError(f"unknown key(s) {_short(', '.join(sorted(map(str, unknown))))} in {source}; valid: {', '.join(sorted(top))}")
    if "model" not in raw:
        raise CifarSpeedError(f"{source} has no `model` key; available models: {', '.join(list_models())}")
    if not isinstance(raw["model"], str) or raw["model"] not in list_models():
        raise CifarSpeedError(f"{source}: unknown model {_short(raw['model'])}; available: {', '.join(list_models())}")
    parts = {k: _build(cls, raw.get(k, {}), k, source) for k, cls in SECTIONS.items()}
    seed = raw.get("seed", 42)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise CifarSpeedError(f"{source}: seed must be an integer")
    check_field("", "seed", seed, source)
    if not isinstance(raw.get("description", ""), str):
        raise CifarSpeedError(f"{source}: description must be a string")
    recipe = Recipe(model=raw["model"], seed=seed, description=raw.get("description", ""), name=name, path=path, **parts)
    if recipe.distill.kind and not recipe.distill.teacher:
        raise CifarSpeedError(f"{source}: [distill] kind = {recipe.distill.kind!r} needs a teacher checkpoint")
    if recipe.train.early_stopping_patience and recipe.data.split == "official":
        raise CifarSpeedError(f"{source}: early stopping needs a validation split (data.split = 'report' or 'holdout'), "
                              "never the official test set")
    if recipe.schedule.name == "plateau" and recipe.data.split == "official":
        raise CifarSpeedError(f"{source}: a plateau schedule needs a validation split, never the official test set")
    if recipe.distill.teacher_view != "stored" and not recipe.distill.kind:
        raise CifarSpeedError(f"{source}: [distill] teacher_view = {recipe.distill.teacher_view!r} needs a [distill] kind")
    _check_sha256(recipe.distill.teacher_sha256, "[distill] teacher_sha256", source)
    if recipe.distill.teacher_sha256 and not recipe.distill.teacher:
        raise CifarSpeedError(f"{source}: [distill] teacher_sha256 pins the weights of a teacher the recipe does not name")
    _check_ensemble(recipe.distill, source)
    i = recipe.init
    if bool(i.checkpoint) != bool(i.weights_sha256):
        raise CifarSpeedError(f"{source}: [init] needs both checkpoint and weights_sha256 (the weights it starts from)")
    _check_sha256(i.weights_sha256, "[init] weights_sha256", source)
    a = recipe.augment
    if a.jpeg_quality_min > a.jpeg_quality_max:
        raise CifarSpeedError(f"{source}: [augment] jpeg_quality_min = {a.jpeg_quality_min} is above "
                              f"jpeg_quality_max = {a.jpeg_quality_max}")
    return recipe


def _check_ensemble(d: DistillCfg, source: str) -> None:
    """An ensemble averages cached kd logits: it needs kd on the stored images and a pin per member."""
    if not d.ensemble and not d.ensemble_sha256:
        return
    if d.kind != "kd" or d.teacher_view != "stored":
        raise CifarSpeedError(f"{source}: [distill] ensemble needs kind = 'kd' and teacher_view = 'stored' "
                              "(its members' logits are computed once per training image and averaged)")
    if len(d.ensemble) != len(d.ensemble_sha256):
        raise CifarSpeedError(f"{source}: [distill] ensemble names {len(d.ensemble)} teacher(s) but ensemble_sha256 "
                              f"pins {len(d.ensemble_sha256)}: one pin per member")
    for sha in d.ensemble_sha256:
        _check_sha256(sha, "[distill] ensemble_sha256", source)


def named_file(path: str | Path) -> Path:
    """A file a recipe names ([distill] teacher_recipe, [init] checkpoint): relative to the working
    folder where it exists there, else to the repository."""
    path = Path(path)
    return path if path.is_absolute() or path.exists() else REPO_ROOT / path


def load_recipe(path: str | Path) -> Recipe:
    p = require_file(path, "recipe")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CifarSpeedError(f"recipe {p} is not UTF-8 text (byte {e.start})") from None
    return parse_recipe(text, name=p.stem, path=str(p))
