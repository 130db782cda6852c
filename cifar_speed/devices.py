"""Where a model runs and in which precision: the device and dtype choices shared by training,
evaluation and the benchmarks, and the autocast context every forward pass enters."""
from __future__ import annotations

import contextlib

import torch

from .errors import CifarSpeedError
from .provenance import cpu_bf16_trains_faster


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise CifarSpeedError("--device cuda: no CUDA GPU is visible to PyTorch on this machine")
    if name not in ("cpu", "cuda"):
        raise CifarSpeedError(f"unknown device {name!r}: use cpu or cuda")
    return torch.device(name)


def resolve_precision(wanted: str, device: torch.device) -> torch.dtype:
    """auto: bf16 where it trains faster than fp32 (AMX CPUs, AMD CPUs with AVX512-BF16, Ampere+ GPUs;
    cpu_bf16_trains_faster says why not every CPU with native bf16), else fp16 on older GPUs, fp32 on CPUs."""
    if wanted == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_bf16_trains_faster() else torch.float32
    if wanted == "fp16" and device.type != "cuda":
        raise CifarSpeedError("fp16 training needs a CUDA GPU; use bf16 or fp32 on the CPU")
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[wanted]


def autocast(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)
