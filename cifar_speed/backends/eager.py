"""`eager`: the PyTorch module itself under torch.inference_mode, NCHW or channels_last.

fp32 defaults to NCHW: it is the plain-PyTorch baseline every other cell is compared against.
bf16 runs under torch.autocast with channels_last: on this project's AVX512-BF16 CPU, oneDNN's bf16
convolutions are several times faster in channels_last than NCHW (REFERENCE.md measured 3,693
against ~1,600 img/s at batch 128 for a small CNN; re-measure with `memory_format=`), and on CUDA
channels_last is what tensor-core convolutions want. The conversion of the input happens inside the
runner, so its cost is timed. int8 is unavailable here (see availability): quantized cells are
compared against this backend's fp32, not run by it.
"""
from __future__ import annotations

import contextlib

import torch

from . import TORCH_DTYPES, Option, Runner, precision_on_device, register_backend

MEMORY_FORMATS = {"nchw": torch.contiguous_format, "channels_last": torch.channels_last}
# A sweep runs eager in NCHW for every precision unless asked for more, so a bf16 speed-up is never
# silently a layout speed-up; `--option eager.memory_format=nchw,channels_last` measures both.
OPTIONS = {"memory_format": Option(tuple(MEMORY_FORMATS), "nchw", "layout of the weights and the input")}


@register_backend("eager", order=0)
def availability(precision: str, device: str) -> tuple[bool, str]:
    if precision == "int8":
        # PyTorch eager has no int8 convolution path worth timing (the old torch.ao eager-mode
        # quantization is deprecated); calibrated int8 runs through `compile` (PT2E + Inductor on
        # CPU), `onnxrt` (QDQ) and `trt`.
        return False, "eager has no int8 kernels worth measuring; int8 runs in compile (PT2E), onnxrt (QDQ) or trt"
    return precision_on_device(precision, device)


def default_memory_format(precision: str) -> str:
    return "nchw" if precision == "fp32" else "channels_last"


def build(model, meta, precision, device, batch_sizes, cache_dir=None, memory_format: str | None = None, **_):
    memory_format = memory_format or default_memory_format(precision)
    fmt = MEMORY_FORMATS[memory_format]
    model = model.to(device).eval().to(memory_format=fmt)
    dtype = TORCH_DTYPES[precision]
    if precision == "fp32":
        autocast = contextlib.nullcontext
    else:
        def autocast():
            return torch.autocast(device_type=device, dtype=dtype)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), autocast():
            return model(x.contiguous(memory_format=fmt)).float()

    return Runner(run, "eager", precision, device, {"memory_format": memory_format, "autocast": precision != "fp32"},
                  graph_capturable=device.startswith("cuda"))
