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

int8 (CPU only) is the PT2E flow with the x86 Inductor quantizer: torch.export (dynamic batch) ->
prepare_pt2e(X86InductorQuantizer default config: per-channel symmetric int8 weights, per-tensor
uint8 activations) -> calibration on the fixed training-image sample (cifar_speed/calibration.py)
-> convert_pt2e -> torch.compile with freezing, where Inductor's quantization passes turn the
Q/DQ pairs into oneDNN int8 convolutions / linears (VNNI here; AMX where the CPU has it). In torch
2.14 PT2E lives in `torchao` (torch.ao.quantization no longer has quantize_pt2e); without it int8 is
unavailable with that reason. On CUDA the x86 quantizer does not apply: int8 is unavailable there
(use trt, or onnxrt with the TensorRT provider).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from . import TORCH_DTYPES, Option, Runner, precision_on_device, register_backend
from .. import calibration
from ..errors import CifarSpeedError, UnavailableError
from ..provenance import int8_isa

MODES = ("default", "max-autotune", "reduce-overhead")
OPTIONS = {"mode": Option(MODES, "default", "torch.compile mode (reduce-overhead replays CUDA graphs: CUDA only)")}
EXTENSION = ".pt2"


def timed_from_artifact(precision: str, device: str, options: dict) -> bool:
    """`bench` times the AOTInductor package (the file `cifar-speed compile` ships) on CPU in the
    default mode: there it ran as fast as the JIT (results/amd-epyc-2c-avx2/aoti-vs-jit.json). The
    package has no CUDA-graph or autotuning mode, so those cells, and CUDA, time the JIT."""
    return device == "cpu" and options.get("mode", "default") == "default"


@register_backend("compile", order=10)
def availability(precision: str, device: str) -> tuple[bool, str]:
    ok, reason = precision_on_device(precision, device)
    if not ok:
        return ok, reason
    if precision == "int8":
        if device != "cpu":
            return False, ("compile int8 is the PT2E x86 Inductor quantizer, a CPU flow; on CUDA use trt "
                           "(ModelOpt int8) or onnxrt with the TensorRT provider")
        if _pt2e_source() is None:
            return False, (f"compile int8 needs PT2E quantization: torch {torch.__version__} has no "
                           "torch.ao.quantization.quantize_pt2e and torchao is not installed (pip install torchao)")
        if int8_isa() == "avx2":
            # X86InductorQuantizer has no reduced-range option, and oneDNN's AVX2 int8 kernels sum u8 x s8
            # pairs in int16 (VPMADDUBSW), which saturates: every model lost 2.4-3.0 points of top-1 in
            # results/amd-epyc-2c-avx2/sweep-1.json. onnxrt and openvino int8 keep accuracy there.
            return False, ("compile int8 (PT2E, X86InductorQuantizer) loses accuracy on AVX2 without VNNI/AMX: "
                           "no reduced-range mode against VPMADDUBSW's int16 saturation; use onnxrt or openvino int8")
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


# -- int8: PT2E ---------------------------------------------------------------------------------------

_PT2E_MODULES = {
    "torchao": ("torchao.quantization.pt2e.quantize_pt2e", "torchao.quantization.pt2e.quantizer.x86_inductor_quantizer"),
    "torch.ao": ("torch.ao.quantization.quantize_pt2e", "torch.ao.quantization.quantizer.x86_inductor_quantizer"),
}


def _pt2e_source() -> str | None:
    """Where PT2E is importable from, found by looking for its files without importing anything:
    importing torchao.quantization takes seconds and its x86 quantizer installs Inductor passes
    process-wide, which availability checks (doctor, sweep planning) must not do."""
    import importlib.util

    for source, names in _PT2E_MODULES.items():
        top = names[0].split(".")[0]
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        roots = list(spec.submodule_search_locations or []) if spec else []

        def present(name: str) -> bool:
            parts = name.split(".")[1:]
            return any(Path(r, *parts[:-1], parts[-1] + ".py").is_file() or Path(r, *parts, "__init__.py").is_file()
                       for r in roots)

        if roots and all(present(n) for n in names):
            return source
    return None


_PLAIN_LAYERS = (nn.Conv2d, nn.Linear, nn.BatchNorm2d)


def plain_layers(model: nn.Module) -> nn.Module:
    """A copy of `model` whose subclassed convs, linears and BatchNorms (fast's `Conv` with its
    training-time init, its `BatchNorm` with other defaults) are instances of the torch classes
    themselves, with the same weights and settings. The x86 quantizer finds its patterns by the
    module class recorded at export (get_source_partitions matches nn.Conv2d exactly), so a subclass
    leaves its layer in fp32: `compile int8` of fast ran at its fp32 speed for that reason."""
    import copy

    out = copy.deepcopy(model)
    for parent in list(out.modules()):
        for name, child in parent.named_children():
            base = next((b for b in _PLAIN_LAYERS if isinstance(child, b) and type(child) is not b), None)
            if base is None:
                continue
            plain = base.__new__(base)
            plain.__dict__ = child.__dict__.copy()   # parameters, buffers and settings, shared
            setattr(parent, name, plain)
    return out


def quantize_pt2e(model: nn.Module, calib: "calibration.Calibration", max_batch: int = 1024) -> nn.Module:
    """The PT2E-converted (Q/DQ) fp32-in / fp32-out module, calibrated on `calib`."""
    import importlib

    source = _pt2e_source()
    if source is None:
        raise UnavailableError(availability("int8", "cpu")[1])
    qmod, xmod = (importlib.import_module(n) for n in _PT2E_MODULES[source])
    model = plain_layers(model.cpu().eval())
    example = calib.images[:2] if calib.size >= 2 else calib.images.expand(2, -1, -1, -1)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    with torch.no_grad():
        # Captured and calibrated under no_grad, as the PT2E x86 Inductor tutorial does.
        gm = torch.export.export(model, (example.contiguous(),), dynamic_shapes=({0: batch},)).module()
        quantizer = xmod.X86InductorQuantizer()
        quantizer.set_global(xmod.get_default_x86_inductor_quantization_config())
        prepared = qmod.prepare_pt2e(gm, quantizer)
        for b in calib.batches(64):
            prepared(b)
        return qmod.convert_pt2e(prepared)


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


def build(model, meta, precision, device, batch_sizes, cache_dir=None, mode: str = "default", **options):
    if mode not in MODES:
        raise CifarSpeedError(f"unknown torch.compile mode {mode!r}; valid modes: {', '.join(MODES)}")
    if mode == "reduce-overhead" and device != "cuda":
        raise UnavailableError("torch.compile mode reduce-overhead needs CUDA (it replays CUDA graphs)")
    # Dynamo caches compiled frames per code object, and every runner built here shares one
    # (_Cast.forward): a sweep's precisions x batch sizes are all entries of it. Past its recompile
    # limit Dynamo would silently run eager under a "compile" label, so the limit is set far above any
    # sweep and hitting it is an error instead of a fallback. No torch._dynamo.reset() here: it would
    # drop the compiled code of runners already built, which would then recompile inside their trials.
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit", "accumulated_cache_size_limit"):
        if hasattr(cfg, name):
            setattr(cfg, name, max(getattr(cfg, name), 4096))
    if hasattr(cfg, "fail_on_recompile_limit_hit"):
        cfg.fail_on_recompile_limit_hit = True
    if precision == "int8":
        return _build_int8(model, meta, batch_sizes, mode, options)
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
                                                       "freezing": device == "cpu"},
                  graph_capturable=device.startswith("cuda") and mode != "reduce-overhead")


def _build_int8(model, meta, batch_sizes, mode, options) -> Runner:
    from . import batch_profile

    calib = calibration.require(options, meta)
    converted = quantize_pt2e(model, calib, max_batch=max(1024, batch_profile(batch_sizes)["max"]))
    # Freezing through a config patch around the calls that compile, not torch.compile(options=...):
    # on torch 2.14 + torchao 0.18 the options route fails in constant folding
    # (UnsupportedOperatorException: onednn.qconv_prepack), the config patch compiles.
    patch = {"freezing": True, **({"max_autotune": True} if mode == "max-autotune" else {})}
    compiled = torch.compile(converted, dynamic=False)

    def run(x):
        with torch.no_grad(), torch._inductor.config.patch(patch):
            return compiled(x)

    return Runner(run, "compile", "int8", "cpu", {"mode": mode, "freezing": True, "quantization": {
        "flow": "pt2e", "source": _pt2e_source(), "quantizer": "X86InductorQuantizer (default config)",
        "calibration": calib.describe()}})


# -- AOTInductor artifact ---------------------------------------------------------------------------

def save(model, meta, precision, device, batch_sizes, path, profile=None, **options) -> dict:
    """torch.export with a dynamic batch dimension, then AOTInductor into a .pt2 package at `path`."""
    from . import batch_profile

    profile = profile or batch_profile(batch_sizes)
    extra = {}
    if precision == "int8":
        calib = calibration.require(options, meta)
        wrapped = quantize_pt2e(model, calib, max_batch=max(1024, profile["max"]))
        extra["quantization"] = {"flow": "pt2e", "source": _pt2e_source(),
                                 "quantizer": "X86InductorQuantizer (default config)", "calibration": calib.describe()}
    else:
        wrapped = _prepare(model, precision, device)
    example = torch.randn(profile["opt"], 3, 32, 32, device=device)
    batch = torch.export.Dim("batch", min=profile["min"], max=profile["max"])
    with torch.no_grad():
        ep = torch.export.export(wrapped, (example,), dynamic_shapes=({0: batch},))
        inductor = {"freezing": True} if device == "cpu" else {}
        # AOTInductor insists on a name ending in .pt2; `path` may be a temporary name (atomic write).
        staging = Path(str(path) + ".pt2")
        try:
            with torch._inductor.config.patch(inductor):   # int8: see _build_int8 on freezing
                torch._inductor.aoti_compile_and_package(ep, package_path=str(staging), inductor_configs=inductor)
            os.replace(staging, path)
        finally:
            staging.unlink(missing_ok=True)
    return {"artifact_format": "aoti-pt2", "dynamic_batch": profile, **extra}


def load(path, sidecar: dict, device: str) -> Runner:
    try:
        compiled = torch._inductor.aoti_load_package(str(path))
    except Exception as e:  # a truncated zip or a package built by another torch raises many types
        raise CifarSpeedError(f"cannot load AOTInductor package {path}: {type(e).__name__}: {e}".splitlines()[0]) from None

    def run(x):
        with torch.inference_mode():
            return compiled(x)

    return Runner(run, "compile", sidecar["precision"], device, {
        "artifact": str(path), "artifact_format": "aoti-pt2", "program": "AOTInductor package",
        "memory_format": "channels_last" if sidecar["precision"] != "int8" else None, "freezing": device == "cpu"})
