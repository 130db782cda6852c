"""`trt`: Torch-TensorRT (dynamo IR) with a min / opt / max batch profile, saved as an ExportedProgram.

Written against the documented Torch-TensorRT 2.x API (it cannot be installed on the CPU dev machine;
tests marked `gpu` exercise it): `torch_tensorrt.compile(model, ir="dynamo", arg_inputs=[Input(min_shape,
opt_shape, max_shape, dtype)], ...)`, `torch_tensorrt.save(gm, path, output_format="exported_program",
arg_inputs=...)`, `torch_tensorrt.load(path).module()`. Engines are cached on disk
(`cache_built_engines` / `reuse_cached_engines` in `engine_cache_dir`) so a rebuild of the same graph
and profile reuses them. Precision: fp16 / bf16 through `enabled_precisions` (TensorRT may keep some
layers in fp32 where faster, the documented weak-typing behaviour); the input stays fp32.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from . import TORCH_DTYPES, Runner, batch_profile, precision_on_device
from ..errors import CifarSpeedError

EXTENSION = ".ep"
DEFAULT_ENGINE_CACHE = Path.home() / ".cache" / "cifar-speed" / "trt-engines"


def _minor(version: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


def availability(precision: str, device: str) -> tuple[bool, str]:
    if device != "cuda" or not torch.cuda.is_available():
        missing = "torch-tensorrt and a CUDA GPU"
        try:
            import torch_tensorrt  # noqa: F401
            missing = "a CUDA GPU"
        except Exception:
            if torch.cuda.is_available():
                missing = "torch-tensorrt (pip install 'cifar-speed[trt]')"
        return False, f"trt needs {missing}"
    try:
        import torch_tensorrt
    except ImportError:
        return False, "trt needs torch-tensorrt (pip install 'cifar-speed[trt]'; TensorRT wheels come from NVIDIA's index)"
    except Exception as e:  # an ABI mismatch shows up as OSError: undefined symbol (Torch-TensorRT #3351)
        return False, f"torch-tensorrt fails to import ({type(e).__name__}: {str(e).splitlines()[0][:160]}): version mismatch with torch {torch.__version__}?"
    have, want = _minor(getattr(torch_tensorrt, "__version__", "")), _minor(torch.__version__)
    if have and want and have != want:
        return False, (f"torch-tensorrt {torch_tensorrt.__version__} pairs with torch {have[0]}.{have[1]}, "
                       f"not the installed torch {torch.__version__}")
    return precision_on_device(precision, device)


def input_spec(profile: dict):
    """The Torch-TensorRT Input for a batch profile (opt must differ from min: see batch_profile)."""
    import torch_tensorrt

    shape = lambda n: (n, 3, 32, 32)  # noqa: E731
    return torch_tensorrt.Input(min_shape=shape(profile["min"]), opt_shape=shape(profile["opt"]),
                                max_shape=shape(profile["max"]), dtype=torch.float32)


def compile_settings(precision: str, engine_cache_dir: Path | None) -> dict:
    """Keyword arguments for torch_tensorrt.compile: precisions and the on-disk engine cache."""
    enabled = {torch.float32} | ({TORCH_DTYPES[precision]} if precision != "fp32" else set())
    cache = Path(engine_cache_dir or DEFAULT_ENGINE_CACHE)
    return {"enabled_precisions": enabled, "min_block_size": 1,
            "cache_built_engines": True, "reuse_cached_engines": True, "engine_cache_dir": str(cache)}


def _compile(model, precision: str, profile: dict, engine_cache_dir):
    import torch_tensorrt

    model = model.cuda().eval()
    with torch.no_grad():
        return torch_tensorrt.compile(model, ir="dynamo", arg_inputs=[input_spec(profile)],
                                      **compile_settings(precision, engine_cache_dir))


def _runner(module, precision: str, info: dict) -> Runner:
    def run(x):
        with torch.inference_mode():
            return module(x).float()
    return Runner(run, "trt", precision, "cuda", info)


def build(model, meta, precision, device, batch_sizes, cache_dir=None, **_):
    profile = batch_profile(batch_sizes)
    engines = Path(cache_dir) / "trt-engines" if cache_dir else None
    gm = _compile(model, precision, profile, engines)
    return _runner(gm, precision, {"profile": profile, "engine_cache": str(engines or DEFAULT_ENGINE_CACHE)})


def save(model, meta, precision, device, batch_sizes, path, profile=None, cache_dir=None, **_) -> dict:
    import torch_tensorrt

    profile = profile or batch_profile(batch_sizes)
    engines = Path(cache_dir) / "trt-engines" if cache_dir else Path(path).parent / "trt-engines"
    gm = _compile(model, precision, profile, engines)
    example = torch.randn(profile["opt"], 3, 32, 32, device="cuda")
    torch_tensorrt.save(gm, str(path), output_format="exported_program", arg_inputs=[example])
    return {"artifact_format": "torch-tensorrt-exported-program", "profile": profile, "engine_cache": str(engines)}


def load(path, sidecar: dict, device: str) -> Runner:
    ok, reason = availability(sidecar["precision"], device)
    if not ok:
        raise CifarSpeedError(reason)
    import torch_tensorrt

    try:
        module = torch_tensorrt.load(str(path)).module()
    except Exception as e:
        raise CifarSpeedError(f"cannot load TensorRT program {path}: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}") from None
    return _runner(module, sidecar["precision"], {"artifact": str(path), "profile": sidecar.get("profile")})
