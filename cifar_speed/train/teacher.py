"""The teacher of a distilled run: where its checkpoint is, its checks, and its targets per training image.

Training a missing teacher is the loop's explicit prerequisite step (loop.ensure_teacher), not done here.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from .. import data as D
from ..checkpoint import SHIPPED_DIR, paths_for, read_sidecar
from ..devices import autocast
from ..errors import CifarSpeedError
from ..fileio import atomic_path
from ..provenance import REPO_ROOT
from .objectives import Distillation
from .recipe import Recipe, named_file


def find_teacher(recipe: Recipe, out_dir: Path) -> Path | None:
    """The teacher checkpoint: a path, or a name looked up in --out and then results/checkpoints; with
    [distill] teacher_sha256, the first of those holding the pinned weights, else the one in
    results/checkpoints/bases/ that does. None when it is missing but the recipe names a teacher
    recipe to train; an error otherwise."""
    t, pin = recipe.distill.teacher, recipe.distill.teacher_sha256
    found, present, looked = _locate(t, pin, out_dir)
    if found is not None:
        return found
    if present:   # never retrain a teacher over a checkpoint of that name: the pin says which one to use
        raise CifarSpeedError(f"no teacher checkpoint holds the weights {pin[:12]}... [distill] teacher_sha256 "
                              f"pins ({present[0]} holds others; also looked in {looked})")
    if not recipe.distill.teacher_recipe:
        pinned = f" with weights {pin[:12]}... ([distill] teacher_sha256)" if pin else ""
        raise CifarSpeedError(f"teacher checkpoint {t!r}{pinned} not found (looked in {looked}); "
                              "train it first or set [distill] teacher_recipe")
    return None


def find_ensemble(recipe: Recipe, out_dir: Path) -> list[Path]:
    """The checkpoints of [distill] ensemble, each found as the teacher is and holding its pinned weights;
    a member missing is an error (no recipe trains it)."""
    paths = []
    for member, pin in zip(recipe.distill.ensemble, recipe.distill.ensemble_sha256):
        found, _, looked = _locate(member, pin, out_dir)
        if found is None:
            raise CifarSpeedError(f"[distill] ensemble: no checkpoint {member!r} with weights {pin[:12]}... "
                                  f"(looked in {looked}); train it first")
        paths.append(found)
    return paths


def _locate(t: str, pin: str, out_dir: Path) -> tuple[Path | None, list[Path], str]:
    """(the checkpoint named `t` holding the weights `pin` where one is given, or None; the candidates
    that exist; where it looked, for the error)."""
    # A path: relative to the working folder or else to the repository, as [distill] teacher_recipe.
    candidates = [Path(t), REPO_ROOT / t] if t.endswith(".json") else []
    name = Path(t.removesuffix(".json")).name  # "deepnn" or "x/deepnn.json": look for deepnn.json, never deepnn.json.json
    candidates += [out_dir / f"{name}.json", SHIPPED_DIR / f"{name}.json"]
    looked = ", ".join(map(str, candidates)) + (f", {SHIPPED_DIR / 'bases'}" if pin else "")
    if pin:
        candidates += sorted((SHIPPED_DIR / "bases").glob("*.json"))
    present = [c for c in candidates if paths_for(c)[1].is_file()]
    return next((c for c in present if not pin or _holds(c, pin)), None), present, looked


def _holds(sidecar: Path, weights_sha256: str) -> bool:
    """Whether a sidecar says it holds these weights (loading it then checks the weights file)."""
    try:
        return read_sidecar(sidecar).weights_sha256 == weights_sha256
    except CifarSpeedError:
        return False


def check_pin(recipe: Recipe, teacher_meta: dict) -> None:
    """A teacher trained from [distill] teacher_recipe must still be the pinned one."""
    pin, sha = recipe.distill.teacher_sha256, teacher_meta.get("weights_sha256")
    if pin and sha != pin:
        raise CifarSpeedError(f"the teacher holds weights {str(sha)[:12]}..., not the {pin[:12]}... "
                              "[distill] teacher_sha256 pins")


def teacher_recipe_path(recipe: Recipe) -> Path:
    """[distill] teacher_recipe, relative to the working folder or else to the repository."""
    return named_file(recipe.distill.teacher_recipe)


def prepare_teacher(teacher: nn.Module, meta: dict, recipe: Recipe, objective: Distillation, device, mean) -> nn.Module:
    """The loaded teacher on the device in eval mode (with its TTA if asked), once it fits this student."""
    objective.check_teacher(meta)
    teacher = teacher.to(device).eval()
    if recipe.distill.teacher_tta:
        if not hasattr(teacher, "tta_level"):
            raise CifarSpeedError(f"[distill] teacher_tta: the {meta['model']!r} teacher has no test-time augmentation")
        teacher.tta_level = recipe.distill.teacher_tta
    if tuple(meta["normalize"]["mean"]) != tuple(mean):
        raise CifarSpeedError("teacher and student recipes normalise differently; use the same [data] normalize")
    return teacher


@torch.no_grad()
def teacher_targets(output, split: D.Split, mean, std, device, dtype, batch_size=500) -> torch.Tensor:
    """`output(x)` (the teacher's target for a batch) for every image of `split`. The teacher is in eval
    mode, so its output for an image never changes during training and can be computed once."""
    outs = []
    for _, x, _ in D.batches(split, batch_size, mean, std, device=device):
        with autocast(device, dtype):
            outs.append(output(x).float())
    return torch.cat(outs)


def cached_teacher_logits(teacher: nn.Module, teacher_meta: dict, tta: int, split: D.Split, mean, std, device,
                          dtype, say: Callable[[str], None] = lambda line: None) -> torch.Tensor:
    """The teacher's logits for every image of `split`, kept in the cache folder under the teacher's
    weights hash, its TTA level and the images' hash (numpy .npy: loaded without pickle). `say` gets one
    line before they are computed: on a CPU that takes minutes before the first epoch line."""
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
    say(f"teacher logits: {teacher_meta.get('name') or 'the teacher'} (TTA {tta}) on {len(split):,} training images, "
        f"computed once before the first epoch and cached for later runs in {path}")
    logits = teacher_targets(teacher, split, mean, std, device, dtype).cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:  # a file object: np.save adds no suffix
        np.save(f, logits.numpy().astype(np.float32), allow_pickle=False)
    return logits


class TeacherTargets:
    """The teacher's side of each training batch: looked up when computed up front, else computed from
    the batch's clean (un-augmented) images."""

    def __init__(self, output, split: D.Split, mean, std, device, dtype, precomputed: torch.Tensor | None):
        self.output, self.split, self.mean, self.std = output, split, mean, std
        self.device, self.dtype, self.precomputed = device, dtype, precomputed

    def __call__(self, idx: torch.Tensor, labels: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        """The targets of the batch `idx`; of `views` (normalised, as the student's) where given."""
        if views is not None:
            with torch.no_grad():
                return self.output(views).float()
        if self.precomputed is not None:
            return self.precomputed[idx].to(self.device)
        batch = D.Split(self.split.images[idx], labels.cpu())
        return teacher_targets(self.output, batch, self.mean, self.std, self.device, self.dtype, len(idx))


def targets_for(teacher: nn.Module, meta: dict, recipe: Recipe, objective: Distillation, split: D.Split, mean, std,
                device, dtype, augmenting: bool, say: Callable[[str], None] = lambda line: None,
                ensemble: Sequence[tuple[nn.Module, dict]] = ()) -> TeacherTargets:
    """kd: the teacher sees each clean training image once; the student learns those soft targets
    through its own augmentations (flip, crop, JPEG). Cached on disk: every seed and every student of
    one teacher reuses them. The feature objectives compute theirs up front unless the run augments.
    [distill] teacher_view = "view": none up front; the teacher sees each step's flipped and cropped
    batch before JPEG (the loop passes it). `say`: where a status line goes (cached_teacher_logits).
    `ensemble`: the further kd teachers ([distill] ensemble, prepared), whose cached logits are averaged
    with the teacher's."""
    output = lambda x: objective.teacher_output(teacher, x)  # noqa: E731
    if recipe.distill.teacher_view == "view":   # the loop hands each batch's views in
        pre = None
    elif objective.cached_targets:
        members = [(teacher, meta), *ensemble]
        pre = torch.stack([cached_teacher_logits(m, m_meta, recipe.distill.teacher_tta, split, mean, std, device,
                                                 dtype, say) for m, m_meta in members]).mean(0)
    elif not augmenting:
        pre = teacher_targets(output, split, mean, std, device, dtype)
    else:
        pre = None
    return TeacherTargets(output, split, mean, std, device, dtype, pre)
