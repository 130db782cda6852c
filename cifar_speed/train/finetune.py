"""A fine-tuning run's starting point: the checkpoint a recipe's [init] names, checked against its pin.

The pin is the sha256 of the weights file, so a fine-tuning recipe names the same starting weights
after a newer checkpoint ships under the same name; the starting checkpoints of the committed
recipes stay in the repository (results/checkpoints/bases/) so those recipes can be rerun.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..checkpoint import Checkpoint, load_checkpoint, paths_for
from ..errors import CifarSpeedError
from ..provenance import REPO_ROOT
from .recipe import Recipe, named_file


@dataclass
class StartPoint:
    sidecar: Path
    model: nn.Module
    meta: Checkpoint

    def record(self) -> dict:
        """What the fine-tuned checkpoint's sidecar says of where it started."""
        m = self.meta
        return {"checkpoint": _shown(self.sidecar), "name": m.get("name"), "weights_sha256": m.get("weights_sha256"),
                "test_accuracy": m.get("test_accuracy"), "test_accuracy_jpeg75": m.get("test_accuracy_jpeg75"),
                "recipe": (m.get("recipe") or {}).get("path"), "epochs_run": m.get("epochs_run"),
                "train_seconds": m.get("train_seconds")}


def _shown(path: Path) -> str:
    """A repository file by its path in the repository; anything else by its name alone (a sidecar
    must not carry the folders of the machine it was trained on)."""
    try:
        return path.resolve().relative_to(REPO_ROOT.resolve()).as_posix()
    except ValueError:
        return path.name


def start_sidecar(recipe: Recipe) -> Path:
    """[init] checkpoint's sidecar, relative to the working folder or else to the repository."""
    return named_file(paths_for(recipe.init.checkpoint)[1])


def load_start(recipe: Recipe) -> StartPoint | None:
    """The starting weights of a fine-tuning recipe (None for a run from scratch)."""
    if not recipe.init.checkpoint:
        return None
    sidecar = start_sidecar(recipe)
    if not sidecar.is_file():
        raise CifarSpeedError(f"[init] checkpoint {recipe.init.checkpoint!r} not found (looked for {sidecar})")
    model, meta = load_checkpoint(sidecar, model_name=recipe.model)  # verifies the weights against the sidecar
    if meta.get("weights_sha256") != recipe.init.weights_sha256:
        raise CifarSpeedError(f"[init] {sidecar} holds weights {str(meta.get('weights_sha256'))[:12]}..., "
                              f"not the {recipe.init.weights_sha256[:12]}... the recipe starts from")
    return StartPoint(sidecar, model, meta)
