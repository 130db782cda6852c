"""`compile`: torch.compile (Inductor), and AOTInductor's .pt2 package as the saved artifact.

Modes: "default", "max-autotune", and on CUDA "reduce-overhead" (CUDA graphs: outputs are cloned
before the next replay overwrites them). On CPU the graph is compiled with Inductor's `freezing`,
which folds the weights into constants so oneDNN can pre-pack them and fold BatchNorm into the
convolutions: the inference case Inductor documents for CPUs.

fp16 / bf16 compile the same function eager runs: torch.autocast around a channels_last model, so
the numerics match eager at that precision, and with freezing the Conv-BN folding happens in fp32
before the folded weights are cast (converting the weights to bf16 first would fold in bf16).
Logits come back as fp32. channels_last for every precision: Inductor's CPU and CUDA conv paths
prefer it; the input conversion happens inside the compiled function, so its cost is timed.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from . import TORCH_DTYPES, Runner, precision_on_device
from ..errors import CifarSpeedError, UnavailableError

MODES = ("default", "max-autotune", "reduce-overhead")
EXTENSION = ".pt2"


def availability(precision: str, device: str) -> tuple[bool, str]:
    ok, reason = precision_on_device(precision, device)
    if not ok:
        return ok, reason
    if device == "cpu":
        import shutil
        if not (shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")):
            return False, "torch.compile on CPU needs a C++ compiler (g++ / clang++) on PATH"
    else:
        try:
            import triton  # noqa: F401
        except ImportError:
            return False, "torch.compile on CUDA needs the triton package"
    return True, ""


class _Cast(nn.Module):
    """Input fp32 NCHW -> channels_last under autocast at `dtype`, logits back to fp32: the function
    every compiled artifact exposes, so its callers never need to know the precision."""

    def __init__(self, model: nn.Module, dtype: torch.dtype, device_type: str):
        super().__init__()
        self.model, self.dtype, self.device_type = model, dtype, device_type

    def forward(self, x):
        x = x.contiguous(memory_format=torch.channels_last)
        if self.dtype == torch.float32:
            return self.model(x)
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            return self.model(x).float()


def _prepare(model: nn.Module, precision: str, device: str) -> nn.Module:
    model = model.to(device).eval().to(memory_format=torch.channels_last)
    for p in model.parameters():
        p.requires_grad_(False)
    return _Cast(model, TORCH_DTYPES[precision], device).eval()


def build(model, meta, precision, device, batch_sizes, cache_dir=None, mode: str = "default", **_):
    if mode not in MODES:
        raise CifarSpeedError(f"unknown torch.compile mode {mode!r}; valid modes: {', '.join(MODES)}")
    if mode == "reduce-overhead" and device != "cuda":
        raise UnavailableError("torch.compile mode reduce-overhead needs CUDA (it replays CUDA graphs)")
    # Dynamo caches compiled frames per code object (_Cast.forward) and, past its recompile limit,
    # silently runs eager: a sweep over many models x batch sizes would then time eager under a
    # "compile" label. So: start each build from an empty cache, allow a graph per batch size (+1 for
    # batch-1 latency) and make hitting the limit an error instead of a fallback.
    torch._dynamo.reset()
    cfg = torch._dynamo.config
    cfg.recompile_limit = max(getattr(cfg, "recompile_limit", 8), len(set(batch_sizes)) + 2)
    if hasattr(cfg, "fail_on_recompile_limit_hit"):
        cfg.fail_on_recompile_limit_hit = True
    wrapped = _prepare(model, precision, device)
    # dynamic=False: one specialised graph per batch size (the sweep times each size on its own).
    if device == "cpu":
        # torch.compile takes mode or options, not both: spell max-autotune as its config flag.
        options = {"freezing": True, **({"max_autotune": True} if mode == "max-autotune" else {})}
        compiled = torch.compile(wrapped, dynamic=False, options=options)
    else:
        compiled = torch.compile(wrapped, mode=None if mode == "default" else mode, dynamic=False)

    if mode == "reduce-overhead":
        def run(x):
            with torch.inference_mode():
                torch.compiler.cudagraph_mark_step_begin()
                return compiled(x).clone()
    else:
        def run(x):
            with torch.inference_mode():
                return compiled(x)

    return Runner(run, "compile", precision, device, {"mode": mode, "memory_format": "channels_last",
                                                       "freezing": device == "cpu"})


# -- AOTInductor artifact ---------------------------------------------------------------------------

def save(model, meta, precision, device, batch_sizes, path, profile=None, **_) -> dict:
    """torch.export with a dynamic batch dimension, then AOTInductor into a .pt2 package at `path`."""
    from . import batch_profile

    profile = profile or batch_profile(batch_sizes)
    wrapped = _prepare(model, precision, device)
    example = torch.randn(profile["opt"], 3, 32, 32, device=device)
    batch = torch.export.Dim("batch", min=profile["min"], max=profile["max"])
    with torch.no_grad():
        ep = torch.export.export(wrapped, (example,), dynamic_shapes=({0: batch},))
        options = {"freezing": True} if device == "cpu" else {}
        # AOTInductor insists on a name ending in .pt2; `path` may be a temporary name (atomic write).
        staging = Path(str(path) + ".pt2")
        try:
            torch._inductor.aoti_compile_and_package(ep, package_path=str(staging), inductor_configs=options)
            os.replace(staging, path)
        finally:
            staging.unlink(missing_ok=True)
    return {"artifact_format": "aoti-pt2", "dynamic_batch": profile}


def load(path, sidecar: dict, device: str) -> Runner:
    try:
        compiled = torch._inductor.aoti_load_package(str(path))
    except Exception as e:  # a truncated zip or a package built by another torch raises many types
        raise CifarSpeedError(f"cannot load AOTInductor package {path}: {type(e).__name__}: {e}".splitlines()[0]) from None

    def run(x):
        with torch.inference_mode():
            return compiled(x)

    return Runner(run, "compile", sidecar["precision"], device, {"artifact": str(path), "artifact_format": "aoti-pt2"})
