"""The int8 calibration sample: a fixed, seeded draw of training images, never the test set.

Post-training quantization needs representative activations to choose its scales. They come from
`load_split("train")` only: this module never names any other split, so calibration cannot leak the
10,000 test images that accuracy is measured on (tests/test_int8.py checks it by recording every
split loaded). The draw is `torch.randperm(50000, generator seeded with `seed`)[:size]`, normalised
with the checkpoint's own mean / std, so the same (size, seed) gives the same images on every
machine. Size, seed, split and the sha256 of the chosen indices go into the artifact's cache key and
sidecar (`Calibration.describe()`): changing any of them rebuilds the artifact.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import torch

from .checks import SEED, Range, check
from .defaults import CALIB_SEED, CALIB_SIZE
from .data import Split, load_split, normalize
from .errors import CifarSpeedError

DEFAULT_SIZE = CALIB_SIZE
DEFAULT_SEED = CALIB_SEED
SPLIT = "train"          # the only split calibration ever reads


@dataclass(frozen=True)
class Calibration:
    images: torch.Tensor     # normalised float32 [size, 3, 32, 32], CPU
    indices: torch.Tensor    # int64 positions in the training split
    seed: int
    normalize: dict

    @property
    def size(self) -> int:
        return len(self.indices)

    def indices_sha256(self) -> str:
        return hashlib.sha256(self.indices.to(torch.int64).numpy().tobytes()).hexdigest()

    def describe(self) -> dict:
        """What the artifact depends on (cache key) and records (sidecar)."""
        return {"size": self.size, "seed": self.seed, "split": SPLIT, "indices_sha256": self.indices_sha256(),
                "normalize": {"mean": list(self.normalize["mean"]), "std": list(self.normalize["std"])}}

    def batches(self, batch_size: int = 64):
        for i in range(0, self.size, batch_size):
            yield self.images[i:i + batch_size]


def _as_int(value, what: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if isinstance(value, bool) or not re.fullmatch(r"[+-]?\d+", text):
        raise CifarSpeedError(f"calibration {what} must be an integer, got {text[:40]!r}")
    if len(text) > 40:  # int() of thousands of digits is slow or refused; no valid value is this long
        raise CifarSpeedError(f"calibration {what} is a {len(text)}-digit number: out of range")
    return int(text)


# At most the 50,000 training images; the seed feeds torch.Generator.manual_seed (64 bits).
SIZE_RANGE = Range(1, 50_000, integer=True, why="training images")


def check_params(size, seed) -> tuple[int, int]:
    """(size, seed) as ints, or one line saying what is wrong."""
    size, seed = _as_int(size, "size"), _as_int(seed, "seed")
    if size < 1:
        raise CifarSpeedError(f"calibration size must be a positive number of training images, got {size}")
    if seed < 0:
        raise CifarSpeedError(f"calibration seed must be a non-negative integer, got {seed}")
    check(size, SIZE_RANGE, "calibration size (--calib-size)")
    check(seed, SEED, "calibration seed (--calib-seed)")
    return size, seed


def sample_indices(n_train: int, size: int, seed: int) -> torch.Tensor:
    if size > n_train:
        raise CifarSpeedError(f"calibration size {size} exceeds the {n_train} training images")
    return torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))[:size]


def calibration_sample(meta: dict, size: int = DEFAULT_SIZE, seed: int = DEFAULT_SEED, data_dir=None,
                       train: Split | None = None) -> Calibration:
    """The calibration sample for a checkpoint (its sidecar `meta` gives the normalisation).

    `train` replaces the loaded training split (tests only); nothing else can be passed in.
    """
    size, seed = check_params(size, seed)
    norm = meta.get("normalize") if isinstance(meta, dict) else None
    if not norm or "mean" not in norm or "std" not in norm:
        raise CifarSpeedError("int8 calibration needs the checkpoint's normalisation (normalize.mean / std in its sidecar)")
    split = train if train is not None else load_split(SPLIT, data_dir)
    idx = sample_indices(len(split), size, seed)
    images = normalize(split.images[idx], norm["mean"], norm["std"]).contiguous()
    return Calibration(images, idx, seed, {"mean": list(norm["mean"]), "std": list(norm["std"])})


def require(options: dict, meta: dict) -> Calibration:
    """The calibration a backend's int8 build was given, or the default sample for `meta`."""
    calib = options.get("calibration")
    if calib is None:
        calib = calibration_sample(meta)
    if not isinstance(calib, Calibration):
        raise CifarSpeedError("int8 build needs a cifar_speed.calibration.Calibration sample")
    return calib
