"""`trt`: Torch-TensorRT (dynamo IR) with a min / opt / max batch profile, saved as an ExportedProgram.

Written against the documented Torch-TensorRT 2.x API (it cannot be installed on the CPU dev machine;
tests marked `gpu` exercise it): `torch_tensorrt.compile(model, ir="dynamo", arg_inputs=[Input(min_shape,
opt_shape, max_shape, dtype)], ...)`, `torch_tensorrt.save(gm, path, output_format="exported_program",
arg_inputs=...)`, `torch_tensorrt.load(path).module()`. Engines are cached on disk
(`cache_built_engines` / `reuse_cached_engines` in `engine_cache_dir`) so a rebuild of the same graph
and profile reuses them. Precision: fp16 / bf16 through `enabled_precisions` (TensorRT may keep some
layers in fp32 where faster, the documented weak-typing behaviour); the input stays fp32.

int8: explicit quantization. TensorRT 10 deprecates the implicit-quantization calibrators
(IInt8EntropyCalibrator2; Torch-TensorRT's `ptq.DataLoaderCalibrator` belonged to the TorchScript
frontend), and Torch-TensorRT 2.x documents int8 for the dynamo frontend as: NVIDIA ModelOpt
`mtq.quantize(model, mtq.INT8_DEFAULT_CFG, forward_loop)` inserts Q/DQ nodes (per-channel weights,
per-tensor activations) calibrated by the forward loop, then `torch_tensorrt.compile(...,
enabled_precisions={torch.int8})` under `modelopt...export_torch_mode()` turns them into TensorRT
quantize layers. The forward loop runs the same fixed training-image sample as every other int8
backend (cifar_speed/calibration.py). Needs the `nvidia-modelopt` package besides torch-tensorrt.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from . import TORCH_DTYPES, Runner, batch_profile, precision_on_device, register_backend
from .. import calibration
from ..errors import CifarSpeedError

EXTENSION = ".ep"
DEFAULT_ENGINE_CACHE = Path.home() / ".cache" / "cifar-speed" / "trt-engines"


def _minor(version: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)", version or "")
    return (int(m.group(1)), int(m.group(2))) if m else None


@register_backend("trt", order=30)
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
    if precision == "int8" and not _has_modelopt():
        return False, "trt int8 needs NVIDIA ModelOpt for explicit Q/DQ calibration (pip install nvidia-modelopt)"
    return precision_on_device(precision, device)


def _has_modelopt() -> bool:
    import importlib.util
    try:
        return importlib.util.find_spec("modelopt.torch.quantization") is not None
    except (ImportError, ValueError):
        return False


def input_spec(profile: dict):
    """The Torch-TensorRT Input for a batch profile (opt must differ from min: see batch_profile)."""
    import torch_tensorrt

    shape = lambda n: (n, 3, 32, 32)  # noqa: E731
    return torch_tensorrt.Input(min_shape=shape(profile["min"]), opt_shape=shape(profile["opt"]),
                                max_shape=shape(profile["max"]), dtype=torch.float32)


def compile_settings(precision: str, engine_cache_dir: Path | None) -> dict:
    """Keyword arguments for torch_tensorrt.compile: precisions and the on-disk engine cache."""
    dtype = torch.int8 if precision == "int8" else TORCH_DTYPES[precision]
    enabled = {torch.float32} | ({dtype} if precision != "fp32" else set())
    cache = Path(engine_cache_dir or DEFAULT_ENGINE_CACHE)
    return {"enabled_precisions": enabled, "min_block_size": 1,
            "cache_built_engines": True, "reuse_cached_engines": True, "engine_cache_dir": str(cache)}


def quantize_modelopt(model, calib: "calibration.Calibration", device: str = "cuda"):
    """A copy of `model` with ModelOpt int8 Q/DQ quantizers, calibrated on `calib` (the model given is
    left as it is: mtq.quantize rewrites modules in place)."""
    import copy

    import modelopt.torch.quantization as mtq

    qmodel = copy.deepcopy(model).to(device).eval()

    def forward_loop(m):
        for b in calib.batches(64):
            m(b.to(device))

    with torch.no_grad():
        mtq.quantize(qmodel, mtq.INT8_DEFAULT_CFG, forward_loop=forward_loop)
    return qmodel


def _export_mode(precision: str):
    import contextlib
    if precision != "int8":
        return contextlib.nullcontext()
    from modelopt.torch.quantization.utils import export_torch_mode
    return export_torch_mode()


def _compile(model, precision: str, profile: dict, engine_cache_dir, calib=None):
    import torch_tensorrt

    model = model.cuda().eval()
    if precision == "int8":
        model = quantize_modelopt(model, calib)
    with torch.no_grad(), _export_mode(precision):
        return torch_tensorrt.compile(model, ir="dynamo", arg_inputs=[input_spec(profile)],
                                      **compile_settings(precision, engine_cache_dir))


def _runner(module, precision: str, info: dict) -> Runner:
    def run(x):
        with torch.inference_mode():
            return module(x).float()
    return Runner(run, "trt", precision, "cuda", info)


def _calibration(precision: str, meta: dict, options: dict):
    return calibration.require(options, meta) if precision == "int8" else None


def _quant_info(calib) -> dict:
    return {} if calib is None else {"quantization": {"flow": "modelopt INT8_DEFAULT_CFG", "calibration": calib.describe()}}


def build(model, meta, precision, device, batch_sizes, cache_dir=None, **options):
    profile = batch_profile(batch_sizes)
    engines = Path(cache_dir) / "trt-engines" if cache_dir else None
    calib = _calibration(precision, meta, options)
    gm = _compile(model, precision, profile, engines, calib)
    return _runner(gm, precision, {"profile": profile, "engine_cache": str(engines or DEFAULT_ENGINE_CACHE),
                                   **_quant_info(calib)})


def save(model, meta, precision, device, batch_sizes, path, profile=None, cache_dir=None, **options) -> dict:
    import torch_tensorrt

    profile = profile or batch_profile(batch_sizes)
    engines = Path(cache_dir) / "trt-engines" if cache_dir else Path(path).parent / "trt-engines"
    calib = _calibration(precision, meta, options)
    gm = _compile(model, precision, profile, engines, calib)
    example = torch.randn(profile["opt"], 3, 32, 32, device="cuda")
    with _export_mode(precision):
        torch_tensorrt.save(gm, str(path), output_format="exported_program", arg_inputs=[example])
    return {"artifact_format": "torch-tensorrt-exported-program", "profile": profile, "engine_cache": str(engines),
            **_quant_info(calib)}


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
