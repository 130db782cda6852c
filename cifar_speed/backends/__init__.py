"""Inference backends behind one small interface: eager, torch.compile, ONNX Runtime, Torch-TensorRT.

Each backend module exposes

    availability(precision, device) -> (ok, reason)          can this machine run it, and if not why
    build(model, meta, precision, device, batch_sizes, cache_dir=None, **options) -> Runner

optionally the settings a user may choose, with their valid values (`bench --option BACKEND.NAME=V1,V2`;
several values make the option an axis of the sweep, each value its own row),

    OPTIONS = {"name": Option(choices=(...), default=..., help="...")}

and, where the backend has a saved artifact (`cifar-speed compile`),

    EXTENSION = ".onnx" | ".pt2" | ".ep" | ".xml"
    save(model, meta, precision, device, batch_sizes, path, **options) -> dict   (extra sidecar facts)
    load(path, sidecar, device) -> Runner

A backend registers itself by decorating its `availability` with `@register_backend("name")`; every
module of this package is imported when the package is, so adding a backend is adding one module
(its heavy imports stay inside functions: listing backends must not load onnxruntime or openvino).

A Runner takes a float32, normalised NCHW batch already on its device and returns float32 logits
on that device. A combination a backend or machine cannot run raises UnavailableError with the
reason: nothing is ever silently run in another precision.
"""
from __future__ import annotations

import copy
import importlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Callable

import torch

from ..errors import CifarSpeedError, UnavailableError
from ..provenance import cpu_has_fast_bf16, cpu_has_fast_int8

# Everything else reads this tuple. int8 is calibrated post-training quantization (see
# cifar_speed/calibration.py): it has no torch dtype of its own, each backend quantizes in its own way.
from ..defaults import PRECISIONS  # noqa: E402  (one definition; the CLI reads it without torch)
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# name on the command line -> module in this package ("compile" would shadow the builtin), filled by
# register_backend in `order` (eager first: it is the baseline every sweep measures first).
BACKENDS: dict[str, str] = {}
_ORDER: dict[str, int] = {}


def register_backend(name: str, order: int = 100):
    """Decorator for a backend module's `availability`: registers the module under `name`."""
    def register(fn):
        module = fn.__module__.rpartition(".")[2]
        if BACKENDS.get(name, module) != module:
            raise RuntimeError(f"backend name {name!r} registered twice ({BACKENDS[name]} and {module})")
        _ORDER[name] = order
        ordered = sorted({**BACKENDS, name: module}.items(), key=lambda kv: (_ORDER[kv[0]], kv[0]))
        BACKENDS.clear()
        BACKENDS.update(ordered)
        return fn
    return register


@dataclass
class Runner:
    """A compiled model: call it on a device batch, get fp32 logits back on the same device."""
    fn: Callable[[torch.Tensor], torch.Tensor]
    backend: str
    precision: str
    device: str
    info: dict = field(default_factory=dict)   # what was built: memory format, provider, mode, artifact ...
    # Optional server-style throughput: inflight(batches, calls) runs `calls` calls (cycling through
    # `batches`) with several requests in flight and returns each call's latency in seconds plus
    # facts about how (requests, streams); the sweep records it as mode "async" (cifar_speed/inflight.py).
    inflight: Callable | None = None
    # True when the whole call can be captured in a CUDA graph by the caller (no host syncs, no graphs
    # of its own): the DAWNBench "graph" method needs it.
    graph_capturable: bool = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()


@dataclass(frozen=True)
class Option:
    """A setting a backend declares in its OPTIONS: the values it accepts, the value a sweep uses when
    the user gives none (None: the backend picks per precision and records it in runner.info), and
    one line of help."""
    choices: tuple[str, ...]
    default: str | None
    help: str


def with_fold_bn(model, options: dict, declared: dict[str, Option]) -> tuple[object, dict]:
    """The fold_bn option of the exporting backends (onnxrt, openvino): (the model with each BatchNorm
    folded into its conv where the option is on, facts for the artifact: how many were folded)."""
    if options.get("fold_bn", declared["fold_bn"].default) != "on":
        return model, {}
    from ..models.fast import fold_batchnorm

    folded, count = fold_batchnorm(model)
    return folded, {"fold_bn": count}


def declared_options(backend: str) -> dict[str, Option]:
    return dict(getattr(get_backend(backend), "OPTIONS", {}))


def parse_option(text: str) -> tuple[str, str, list[str]]:
    """'compile.mode=max-autotune' -> ('compile', 'mode', ['max-autotune']); one clear error for an
    unknown backend, option or value."""
    m = re.fullmatch(r"\s*([A-Za-z0-9_-]+)\.([A-Za-z0-9_]+)\s*=\s*(.*?)\s*", str(text))
    if not m:
        raise CifarSpeedError(f"--option {text!r}: expected BACKEND.NAME=VALUE[,VALUE...], e.g. compile.mode=max-autotune")
    backend, name = m.group(1), m.group(2)
    declared = declared_options(backend)
    if name not in declared:
        raise CifarSpeedError(f"--option {text!r}: the {backend} backend has no option {name!r} "
                              f"(its options: {', '.join(declared) or 'none'})")
    values = [v.strip() for v in m.group(3).split(",")]
    choices = declared[name].choices
    if not all(v in choices for v in values):
        raise CifarSpeedError(f"--option {text!r}: {backend}.{name} takes {', '.join(choices)}")
    return backend, name, list(dict.fromkeys(values))


def option_axes(texts) -> dict[str, dict[str, list[str]]]:
    """Every --option, as backend -> option -> the values to measure (a later one replaces an earlier)."""
    axes: dict[str, dict[str, list[str]]] = {}
    for text in texts or ():
        backend, name, values = parse_option(text)
        axes.setdefault(backend, {})[name] = values
    return axes


def get_backend(name: str) -> ModuleType:
    if name not in BACKENDS:
        raise CifarSpeedError(f"unknown backend {name!r}; valid backends: {', '.join(BACKENDS)}")
    return importlib.import_module(f"{__name__}.{BACKENDS[name]}")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise CifarSpeedError(f"unknown precision {precision!r}; valid precisions: {', '.join(PRECISIONS)}")
    return precision


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> str:
    if device not in ("cpu", "cuda"):
        raise CifarSpeedError(f"unknown device {device!r}; valid devices: cpu, cuda")
    return device


def precision_on_device(precision: str, device: str) -> tuple[bool, str]:
    """The machine-level rule shared by every backend: which precisions this device runs natively."""
    check_precision(precision)
    if device == "cuda":
        if not torch.cuda.is_available():
            return False, "no CUDA GPU visible to torch"
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            return False, f"bf16 needs a GPU with native bf16 ({torch.cuda.get_device_name(0)} has none)"
        if precision == "int8" and torch.cuda.get_device_capability(0) < (7, 5):
            return False, f"int8 needs int8 tensor cores (compute capability 7.5+; {torch.cuda.get_device_name(0)} has none)"
        return True, ""
    if precision == "fp16":
        return False, "fp16 needs CUDA (CPUs here have no fast fp16 arithmetic)"
    if precision == "bf16" and not cpu_has_fast_bf16():
        return False, "bf16 on CPU needs AMX or AVX512-BF16 (this CPU has neither)"
    if precision == "int8" and not cpu_has_fast_int8():
        return False, "int8 on CPU needs AVX2, AVX512-VNNI or AMX-INT8 (this CPU has none of them)"
    return True, ""


def availability(backend: str, precision: str, device: str) -> tuple[bool, str]:
    check_precision(precision)
    check_device(device)
    return get_backend(backend).availability(precision, device)


def build(backend: str, model, meta: dict, precision: str, device: str, batch_sizes, cache_dir=None,
          **options) -> Runner:
    """Check availability (raise UnavailableError with the reason) then build the backend's runner.

    The runner gets its own copy of the module: backends move it to the device, cast it and change its
    memory format in place, which must not change the caller's model (a CPU reference computed after a
    CUDA build would otherwise run on CUDA weights)."""
    ok, reason = availability(backend, precision, device)
    if not ok:
        raise UnavailableError(f"{backend} {precision} on {device} is unavailable: {reason}")
    model = copy.deepcopy(model)
    return get_backend(backend).build(model, meta, precision, device, list(batch_sizes),
                                      Path(cache_dir) if cache_dir else None, **options)


def batch_profile(batch_sizes) -> dict:
    """The min / opt / max batch a dynamic-shape engine is built for, covering every size in the sweep.

    min is 1 so batch-1 latency (DAWNBench) and short tail batches run on the same engine; opt is the
    largest batch of the sweep (the throughput case). TensorRT rejects opt == min (Torch-TensorRT
    #4103), so a sweep of batch 1 only gets opt = max = 2.
    """
    sizes = [int(b) for b in batch_sizes]
    if not sizes or any(b < 1 for b in sizes):
        raise CifarSpeedError(f"batch sizes must be positive integers, got {batch_sizes!r}")
    opt = max(sizes)
    if opt == 1:
        opt = 2
    return {"min": 1, "opt": opt, "max": opt}


def parse_batches(text: str) -> list[int]:
    """'32,64,128' -> [32, 64, 128]; anything that is not a positive integer is one clear error."""
    out = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            value = int(part)
        except ValueError:
            value = 0
        if value < 1 or str(value) != part.lstrip("+"):
            raise CifarSpeedError(f"batch size {part!r} is not a positive integer (use e.g. --batch 32,64,128)")
        out.append(value)
    return out


def parse_choices(text: str | None, valid, what: str) -> list[str] | None:
    if text is None:
        return None
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    for t in items:
        if t not in valid:
            raise CifarSpeedError(f"unknown {what} {t!r}; valid {what}s: {', '.join(valid)}")
    return items


def _import_all() -> None:
    """Import every module of this package: each registers itself (see register_backend)."""
    import pkgutil

    for m in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{m.name}")


_import_all()
