"""What a run changes as it trains, held together so one object is saved each epoch and restored on --resume.

The resume point's files (resume.py commits them as one set): the weights as safetensors and the rest
(tensors and plain data only) in state.pt, which loads with weights_only=True.
"""
from __future__ import annotations

import io
import json
import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from torch import nn

from ..checkpoint import weights_bytes
from ..errors import CifarSpeedError
from . import resume as resume_store
from .optim import Lookahead
from .recipe import Recipe


def new_progress() -> dict:
    """The run's counters and history, saved as JSON in every resume point."""
    return {"epoch": 0, "step": 0, "best_val_loss": math.inf, "bad_epochs": 0, "history": [], "train_seconds": 0.0,
            "images": 0}


@dataclass
class TrainingState:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: object | None
    regressor: nn.Module | None
    lookahead: Lookahead | None
    generator: torch.Generator
    best_state: dict | None = None  # the best epoch's weights, kept when early stopping may restore them
    progress: dict = field(default_factory=new_progress)

    def save(self, work: Path, recipe: Recipe) -> None:
        """The per-epoch resume point, committed as one set."""
        st = {"optimizer": self.optimizer.state_dict(),
              "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
              "regressor": self.regressor.state_dict() if self.regressor is not None else None,
              "lookahead": self.lookahead.ema if self.lookahead is not None else None, "best_model": self.best_state,
              "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(),
              "progress": json.dumps(self.progress)}
        buf = io.BytesIO()
        torch.save(st, buf)
        resume_store.save_epoch(work, self.progress["epoch"],
                                {"weights.safetensors": weights_bytes(self.model, recipe.model), "state.pt": buf.getvalue()},
                                extra={"model": recipe.model, "recipe": resume_recipe(recipe)})

    def restore(self, point: resume_store.ResumePoint, recipe: Recipe) -> None:
        """Load a verified resume point into the run. A point of another recipe, or files that do not fit
        this model and optimiser, are refused in one line: resuming them would silently train a different model."""
        where = point.folder
        if point.manifest.get("recipe") != json.loads(json.dumps(resume_recipe(recipe))):
            raise CifarSpeedError(f"cannot resume from {where}: it was trained with a different recipe or seed; "
                                  "delete its .work folder or train without --resume")
        try:
            st = self._load(point, recipe)
        except (pickle.UnpicklingError, SafetensorError, RuntimeError, ValueError, KeyError, TypeError, EOFError,
                AttributeError, IndexError) as e:  # untrusted bytes: any of these means "not a state of this run"
            raise CifarSpeedError(f"cannot resume from {where}: {' '.join(str(e).split())[:120] or type(e).__name__}; "
                                  "delete its .work folder or train without --resume") from None
        self.best_state = st.get("best_model")

    def _load(self, point: resume_store.ResumePoint, recipe: Recipe) -> dict:
        weights = safetensors_load(point.files["weights.safetensors"])
        st = torch.load(io.BytesIO(point.files["state.pt"]), map_location="cpu", weights_only=True)
        expected = self.model.state_dict()
        if set(weights) != set(expected) or any(weights[k].shape != expected[k].shape for k in expected):
            raise ValueError(f"its weights are not {recipe.model!r} weights")
        self.model.load_state_dict(weights)
        self.optimizer.load_state_dict(st["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(st["scheduler"])
        if self.regressor is not None:
            self.regressor.load_state_dict(st["regressor"])
        if self.lookahead is not None:
            self.lookahead.ema = st["lookahead"]
        self.generator.set_state(st["generator"])
        torch.set_rng_state(st["torch_rng"])
        progress = json.loads(st["progress"])
        if not isinstance(progress, dict) or progress.get("epoch") != point.epoch:
            raise ValueError("its progress record names another epoch")
        self.progress = progress
        return st


def resume_recipe(recipe: Recipe) -> dict:
    """What must match for a resumed run to be the same run: the recipe without its file's location,
    its name and its epoch count (resuming with more epochs extends a run; --epochs may differ)."""
    d = recipe.to_dict()
    for k in ("path", "name"):
        d.pop(k, None)
    d["train"] = {k: v for k, v in d["train"].items() if k != "epochs"}
    return d
