"""What a run minimises, chosen once from the recipe's [distill] kind: plain cross-entropy, or one of
the tutorial's three distillation objectives (kd, cosine, regressor; losses in distill.py).

An objective says what the student's forward pass returns (`student`), which extra module it trains
beside the model (the regressor), what it reads from the teacher (`teacher_output`) and how a batch's
loss is computed from the student's outputs, the teacher's targets and the labels (`loss`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CifarSpeedError
from . import distill
from .recipe import Recipe


class Objective:
    """Cross-entropy on the labels: a recipe without [distill]."""

    distills = False
    regressor: nn.Module | None = None

    def __init__(self, recipe: Recipe, world_size: int):
        self.recipe, self.world_size = recipe, world_size

    @property
    def summed(self) -> bool:
        """Whether `loss` is the batch's total (not its mean), times the number of processes (DDP
        averages gradients, so a sum is scaled by the world size): the running loss divides it back."""
        return self.recipe.train.loss_reduction == "sum"

    def build(self, seed: int, device: torch.device) -> None:
        """Create what the objective trains beside the model (nothing here)."""

    def extra_params(self) -> list:
        return list(self.regressor.parameters()) if self.regressor is not None else []

    def student(self, model: nn.Module) -> nn.Module:
        """The module the step calls: one module, so DDP sees every trained parameter."""
        return model

    def loss(self, out, teacher_out, labels) -> tuple[torch.Tensor, torch.Tensor]:
        """(fp32 logits, loss) of one batch."""
        t = self.recipe.train
        logits = out.float()
        loss = F.cross_entropy(logits, labels, label_smoothing=t.label_smoothing, reduction=t.loss_reduction)
        if t.loss_reduction == "sum":
            loss = loss * self.world_size  # DDP averages gradients; a sum must stay a sum
        return logits, loss


class Distillation(Objective):
    """A teacher's targets enter the loss. The feature objectives are wired to the tutorial's
    deepnn -> lightnn shapes; kd needs only logits, so any teacher teaches any student."""

    distills = True
    shapes: tuple[str, str] | None = ("lightnn", "deepnn")  # (student, teacher) models, or None: any
    cached_targets = False  # whether the teacher's targets are kept on disk between runs

    @property
    def kind(self) -> str:
        return self.recipe.distill.kind

    @property
    def summed(self) -> bool:
        return False   # the feature objectives are means whatever the recipe's loss_reduction

    def check_student(self, model_name: str) -> None:
        if self.shapes and model_name != self.shapes[0]:
            raise CifarSpeedError(f"{self.kind} distillation trains the {self.shapes[0]} student, not {model_name!r}")

    def check_teacher(self, meta: dict) -> None:
        if self.shapes and meta["model"] != self.shapes[1]:
            raise CifarSpeedError(f"the {self.kind} teacher must be a {self.shapes[1]} checkpoint, got {meta['model']!r}")

    def teacher_output(self, teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # The feature objectives (cosine, regressor): the student returns (logits, features) and
    # feature_loss(logits, features, teacher's features, labels, soft_weight, ce_weight) weighs them.
    feature_loss = None

    def loss(self, out, teacher_out, labels):
        logits, features = out
        logits = logits.float()
        d = self.recipe.distill
        return logits, self.feature_loss(logits, features.float(), teacher_out, labels, d.soft_weight, d.ce_weight)


class KD(Distillation):
    """Hinton's soft targets: the teacher's logits at a temperature, plus cross-entropy."""

    shapes = None
    cached_targets = True

    @property
    def summed(self) -> bool:
        return self.recipe.train.loss_reduction == "sum"   # loss() scales it to the batch's sum

    def teacher_output(self, teacher, x):
        return teacher(x)

    def loss(self, out, teacher_out, labels):
        d = self.recipe.distill
        logits = out.float()
        loss = distill.kd_loss(logits, teacher_out, labels, d.temperature, d.soft_weight, d.ce_weight)
        if self.recipe.train.loss_reduction == "sum":
            loss = loss * len(labels) * self.world_size  # lr scaled for a summed loss (airbench_sgd)
        return logits, loss


class _Features(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_features(x)


class Cosine(Distillation):
    """The student's flattened conv features pulled towards the direction of the teacher's."""

    def student(self, model):
        return _Features(model)

    def teacher_output(self, teacher, x):
        return teacher.forward_features(x)[1]

    feature_loss = staticmethod(distill.cosine_loss)


class _RegressedMap(nn.Module):
    """The student and the regressor as one module, so DDP all-reduces the regressor's gradient too."""

    def __init__(self, model: nn.Module, regressor: nn.Module):
        super().__init__()
        self.model, self.regressor = model, regressor

    def forward(self, x):
        logits, fmap = self.model.forward_feature_map(x)
        return logits, self.regressor(fmap)


class Regressed(Distillation):
    """The student's feature map, through a trained regressor, matched to the teacher's (MSE)."""

    def build(self, seed, device):
        # Its own seed: the regressor's init does not depend on whether the teacher was just trained.
        torch.manual_seed(seed + 1)
        self.regressor = distill.Regressor().to(device)

    def student(self, model):
        return _RegressedMap(model, self.regressor)

    def teacher_output(self, teacher, x):
        return teacher.forward_feature_map(x)[1]

    feature_loss = staticmethod(distill.regressor_loss)


OBJECTIVES = {"kd": KD, "cosine": Cosine, "regressor": Regressed}


def make_objective(recipe: Recipe, world_size: int) -> Objective:
    """The recipe's objective; plain cross-entropy when it names no distillation kind."""
    kind = recipe.distill.kind
    return OBJECTIVES[kind](recipe, world_size) if kind else Objective(recipe, world_size)
