"""The three distillation losses of the PyTorch knowledge-distillation tutorial.

Each returns the weighted total `soft_weight * distill_term + ce_weight * cross_entropy`, exactly as
the tutorial combines them, so results can be compared with its published runs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) averaged over the batch, scaled by T^2 (Hinton et al.) so the
    gradient's size does not shrink as T grows."""
    soft_targets = F.softmax(teacher_logits / temperature, dim=-1)
    log_student = F.log_softmax(student_logits / temperature, dim=-1)
    kl = (soft_targets * (soft_targets.clamp_min(1e-12).log() - log_student)).sum() / student_logits.shape[0]
    return kl * temperature**2


def kd_loss(student_logits, teacher_logits, labels, temperature=2.0, soft_weight=0.25, ce_weight=0.75):
    return (soft_weight * soft_target_loss(student_logits, teacher_logits, temperature)
            + ce_weight * F.cross_entropy(student_logits, labels))


def cosine_loss(student_logits, student_hidden, teacher_hidden, labels, soft_weight=0.25, ce_weight=0.75):
    """CosineEmbeddingLoss with target 1 pulls the student's hidden vector towards the teacher's direction."""
    target = torch.ones(student_hidden.shape[0], device=student_hidden.device)
    hidden = nn.functional.cosine_embedding_loss(student_hidden, teacher_hidden, target)
    return soft_weight * hidden + ce_weight * F.cross_entropy(student_logits, labels)


class Regressor(nn.Module):
    """Maps the student's [B,16,8,8] feature map to the teacher's [B,32,8,8] (trained with the student)."""

    def __init__(self, cin: int = 16, cout: int = 32):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1)

    def forward(self, x):
        return self.conv(x)


def regressor_loss(student_logits, regressed_map, teacher_map, labels, soft_weight=0.25, ce_weight=0.75):
    return soft_weight * F.mse_loss(regressed_map, teacher_map) + ce_weight * F.cross_entropy(student_logits, labels)
