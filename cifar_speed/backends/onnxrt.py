"""`onnxrt`: export to ONNX (torch.onnx dynamo exporter, dynamic batch), check it, run it in ONNX Runtime.

Execution providers, whichever the installed build offers: CPU; CUDA with IO binding (the input is
bound at its device address and the output written into a preallocated torch tensor, so no host
copy is timed); TensorRT (fp16 through the EP's own `trt_fp16_enable`, engines cached on disk).

Precision is in the graph, not in a flag: an fp16 / bf16 cell exports the model converted to that
dtype with casts at the boundary (fp32 in, fp32 logits out). Whether ONNX Runtime's CPU provider
has bf16 kernels for the graph is probed by building a tiny bf16 Conv + MatMul session: if it cannot,
the cell is unavailable with ORT's own reason, never run in fp32 under a bf16 label.

int8 is static post-training quantization of the fp32 export (`quantize_int8`): QDQ format,
per-channel weights, activation ranges calibrated (MinMax) on the fixed training-image sample of
cifar_speed/calibration.py. On the CPU provider ORT fuses the QDQ pairs into QLinearConv / QGemm
kernels; on CUDA it needs the TensorRT provider (`trt_int8_enable`, TensorRT reads the Q/DQ scales
as explicit quantization); the plain CUDA provider has no int8 convolutions, so int8 there is
unavailable rather than run half on the host.

`export_onnx` is reused by the Triton model-repository export (a later issue).
"""
from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from torch import nn

from . import TORCH_DTYPES, Option, Runner, precision_on_device, register_backend, with_fold_bn
from .. import calibration
from ..errors import CifarSpeedError
from ..fileio import atomic_path
from ..provenance import int8_isa

EXTENSION = ".onnx"
# bench times the cached artifact, which serves every batch size (artifacts.runner_for, compile_checkpoint).
TIMED_FROM_ARTIFACT = True
PROFILE_SHAPES_ARTIFACT = False
INPUT_NAME, OUTPUT_NAME = "input", "logits"


# -- export ------------------------------------------------------------------------------------------

class _Cast(nn.Module):
    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x):
        return self.model(x.to(self.dtype)).float()


def export_onnx(model: nn.Module, path: str | os.PathLike, *, precision: str = "fp32",
                opset: int | None = None, max_batch: int = 1024, example_batch: int = 2) -> Path:
    """Export `model` (normalised fp32 NCHW in, fp32 logits out) to one self-contained .onnx file.

    The batch dimension is dynamic (named "batch"); weights are embedded (external_data=False), the
    result passes `onnx.checker.check_model`, and the file appears atomically.
    """
    import onnx

    path = Path(path)
    dtype = TORCH_DTYPES[precision]
    model = model.cpu().eval()
    wrapped = _Cast(model.to(dtype) if precision != "fp32" else model, dtype).eval()
    example = torch.randn(example_batch, 3, 32, 32)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    with atomic_path(path, suffix=".onnx") as tmp:
        try:
            with torch.no_grad():
                torch.onnx.export(wrapped, (example,), str(tmp), dynamo=True, external_data=False,
                                  input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                                  dynamic_shapes=({0: batch},), opset_version=opset, verbose=False)
        except Exception as e:
            raise CifarSpeedError(f"ONNX export failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
        onnx.checker.check_model(str(tmp), full_check=True)
    return path


# -- int8: static QDQ quantization ------------------------------------------------------------------

# fold_bn defaults to on: exact, and in the sweep that compared both (results/intel-r-xeon-r-processor-
# 2c-amx/sweep-s10.json) faster for int8 of every airbench-layout model, the same elsewhere.
OPTIONS = {"fold_bn": Option(("off", "on"), "on",
                             "fold each BatchNorm into its conv before export, also through the max-pool of the "
                             "airbench layout (fast, frontier_*; exact where every BN scale is positive)"),
           "spin": Option(("on", "off"), "on",
                          "CPU: the intra-op threads spin-wait for work after each call (ONNX Runtime's default) "
                          "or sleep at once (session.intra_op.allow_spinning = 0: cores free between calls)")}
ARTIFACT_OPTIONS = ("fold_bn",)
RUN_OPTIONS = ("spin",)   # applied to the session that runs the file, not part of it


def int8_settings(device: str) -> dict:
    """quantize_static settings for the provider that will run the model.

    CPU: uint8 activations x int8 weights (U8S8), the combination ORT's x86 kernels are built for.
    Measured on this project's AVX512-VNNI CPU (no AMX), ONNX Runtime 1.32, batch 128, the
    random-init `cnn`: U8S8 108 ms, S8S8 120 ms, U8U8 228 ms (fp32 120 ms; machine loaded).
    reduce_range (7-bit weights) is on only for CPUs without VNNI/AMX: there VPMADDUBSW adds two u8 x s8
    products into an int16 that can saturate; VNNI's VPDPBUSD (and AMX) accumulate in int32.
    TensorRT provider: TensorRT's explicit quantization takes symmetric int8 only (zero point 0).
    """
    if device == "cpu":
        return {"quant_format": "QDQ", "activation_type": "QUInt8", "weight_type": "QInt8",
                "per_channel": True, "reduce_range": int8_isa() == "avx2", "calibrate_method": "MinMax",
                "extra_options": {}}
    return {"quant_format": "QDQ", "activation_type": "QInt8", "weight_type": "QInt8",
            "per_channel": True, "reduce_range": False, "calibrate_method": "MinMax",
            "extra_options": {"ActivationSymmetric": True, "WeightSymmetric": True}}


def quantize_int8(model: nn.Module, path: str | os.PathLike, calib: "calibration.Calibration", device: str,
                  max_batch: int = 1024) -> dict:
    """Export fp32, pre-process (shape inference + graph optimisation, which folds what it can), then
    quantize_static into `path` (atomically). Returns the settings used, for the sidecar."""
    import tempfile

    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    settings = int8_settings(device)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._it = iter(calib.batches(64))

        def get_next(self):
            batch = next(self._it, None)
            return None if batch is None else {INPUT_NAME: batch.numpy()}

    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="cifar-speed-int8-") as tmp:
        fp32 = export_onnx(model, Path(tmp) / "fp32.onnx", max_batch=max_batch)
        pre = Path(tmp) / "pre.onnx"
        try:
            # The symbolic shape pass chokes on some dynamo exports; ONNX shape inference suffices here.
            quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        except Exception:
            pre = fp32
        with atomic_path(path, suffix=".onnx") as out:
            try:
                quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ,
                                per_channel=settings["per_channel"], reduce_range=settings["reduce_range"],
                                activation_type=getattr(QuantType, settings["activation_type"]),
                                weight_type=getattr(QuantType, settings["weight_type"]),
                                calibrate_method=getattr(CalibrationMethod, settings["calibrate_method"]),
                                extra_options=dict(settings["extra_options"]))
            except Exception as e:
                raise CifarSpeedError(f"ONNX Runtime int8 quantization failed: {type(e).__name__}: "
                                      f"{str(e).splitlines()[0] if str(e) else ''}") from None
            onnx.checker.check_model(str(out))
    return {**settings, "preprocessed": pre.name == "pre.onnx", "calibration": calib.describe()}


# -- availability --------------------------------------------------------------------------------------

def _ort():
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    return ort


@functools.lru_cache(maxsize=None)
def _bf16_probe(provider: str = "CPUExecutionProvider") -> tuple[bool, str]:
    """Can `provider` run a bf16 Conv and MatMul?  Built from onnx.helper, no torch export. (The CPU
    provider has no bf16 Conv either, so a CUDA session cannot pass by falling back to it.)"""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    ort = _ort()
    w = numpy_helper.from_array(np.zeros((4, 3, 3, 3), np.float32), "w")
    m = numpy_helper.from_array(np.zeros((4 * 30 * 30, 10), np.float32), "m")
    nodes = [
        helper.make_node("Cast", ["x"], ["xb"], to=TensorProto.BFLOAT16),
        helper.make_node("Cast", ["w"], ["wb"], to=TensorProto.BFLOAT16),
        helper.make_node("Conv", ["xb", "wb"], ["c"]),
        helper.make_node("Flatten", ["c"], ["f"]),
        helper.make_node("Cast", ["m"], ["mb"], to=TensorProto.BFLOAT16),
        helper.make_node("MatMul", ["f", "mb"], ["yb"]),
        helper.make_node("Cast", ["yb"], ["y"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(nodes, "bf16_probe",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], [w, m])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    try:
        sess = ort.InferenceSession(model.SerializeToString(), providers=[provider])
        sess.run(None, {"x": np.zeros((1, 3, 32, 32), np.float32)})
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "NOT_IMPLEMENTED" in first or "Could not find an implementation" in first:
            op = "Conv" if "Conv" in first else "MatMul" if "MatMul" in first else "bf16 operators"
            return False, (f"onnxruntime {ort.__version__} {provider} has no bf16 {op} kernel "
                           "(running the graph in fp32 instead would mislabel the cell)")
        return False, f"onnxruntime {provider} bf16 probe failed: {first[:200]}"
    return True, ""


@register_backend("onnxrt", order=20)
def availability(precision: str, device: str) -> tuple[bool, str]:
    ort = _ort()
    if ort is None:
        return False, "onnxrt needs the onnxruntime package (pip install onnxruntime, or onnxruntime-gpu for CUDA)"
    try:
        import onnxscript  # noqa: F401  (the dynamo exporter needs it)
    except ImportError:
        return False, "onnxrt export needs the onnxscript package"
    ok, reason = precision_on_device(precision, device)
    if not ok:
        return ok, reason
    have = ort.get_available_providers()
    if device == "cuda":
        if not ({"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(have)):
            return False, (f"onnxrt on CUDA needs onnxruntime-gpu (installed build offers {', '.join(have)})")
        if precision == "int8" and ("TensorrtExecutionProvider" not in have
                                    or os.environ.get("CIFAR_SPEED_ORT_TRT", "1") == "0"):
            return False, ("onnxrt int8 on CUDA needs the TensorRT execution provider (the CUDA provider has no "
                           "int8 convolution kernels: QDQ nodes would run on the host)")
        if precision == "bf16" and "CUDAExecutionProvider" in have:
            return _bf16_probe("CUDAExecutionProvider")
        return True, ""
    if precision == "bf16":
        return _bf16_probe()
    return True, ""


# -- sessions and runners --------------------------------------------------------------------------

def _session(onnx_path: Path, precision: str, device: str, cache_dir: Path | None,
             spin: str = OPTIONS["spin"].default):
    ort = _ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if device == "cpu":
        so.intra_op_num_threads = torch.get_num_threads()
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin == "on" else "0")
        return ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"]), "CPUExecutionProvider"
    have = ort.get_available_providers()
    providers: list = []
    if "TensorrtExecutionProvider" in have and os.environ.get("CIFAR_SPEED_ORT_TRT", "1") != "0":
        engine_dir = str((cache_dir or Path.home() / ".cache" / "cifar-speed") / "ort-trt-engines")
        os.makedirs(engine_dir, exist_ok=True)
        providers.append(("TensorrtExecutionProvider", {
            "trt_fp16_enable": precision == "fp16", "trt_int8_enable": precision == "int8",
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": engine_dir, "device_id": torch.cuda.current_device()}))
    if "CUDAExecutionProvider" in have and precision != "int8":
        # HEURISTIC, not EXHAUSTIVE (the default): the first run would otherwise try every algorithm.
        providers.append(("CUDAExecutionProvider", {"device_id": torch.cuda.current_device(),
                                                    "cudnn_conv_algo_search": "HEURISTIC"}))
    sess = ort.InferenceSession(str(onnx_path), so, providers=providers)
    return sess, sess.get_providers()[0]


def _parallel_sessions(model_bytes: bytes, threads: int):
    """The in-flight mode on CPU (cifar_speed/inflight.py): `threads` sessions of one intra-op thread
    each, called from as many Python threads (ORT releases the GIL in run), so several requests are
    served at once, as a server with one session per core would. Built on first use (from the
    model's bytes: a temporary export may be gone by then) and kept for the runner's life."""
    import queue
    from concurrent.futures import ThreadPoolExecutor

    state: dict = {}

    def start():
        ort = _ort()
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
        free: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(threads):
            free.put(ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"]))
        state.update(free=free, pool=ThreadPoolExecutor(threads, thread_name_prefix="ort-inflight"))

    def inflight(batches, calls: int):
        import time

        if not state:
            start()
        arrays = [b.contiguous().numpy() for b in batches]

        def one(i: int, t0: float) -> float:
            sess = state["free"].get()
            try:
                sess.run([OUTPUT_NAME], {INPUT_NAME: arrays[i % len(arrays)]})
            finally:
                state["free"].put(sess)
            return time.perf_counter() - t0

        futures = [state["pool"].submit(one, i, time.perf_counter()) for i in range(calls)]
        latencies = [f.result() for f in futures]
        return latencies, {"sessions": threads, "intra_op_threads": 1, "requests_in_flight": threads}

    return inflight


def runner_for(onnx_path: Path, precision: str, device: str, cache_dir: Path | None = None, info=None,
               spin: str = OPTIONS["spin"].default) -> Runner:
    sess, provider = _session(Path(onnx_path), precision, device, cache_dir, spin)
    info = {"provider": provider, "onnx": str(onnx_path), "threads": torch.get_num_threads() if device == "cpu" else None,
            **({"spin": spin} if device == "cpu" else {}), **(info or {})}
    if device == "cpu":
        def run(x: torch.Tensor) -> torch.Tensor:
            # .numpy() shares the tensor's memory: no copy on the way in or out.
            (y,) = sess.run([OUTPUT_NAME], {INPUT_NAME: x.contiguous().numpy()})
            return torch.from_numpy(y)
        return Runner(run, "onnxrt", precision, device, info,
                      inflight=_parallel_sessions(Path(onnx_path).read_bytes(), torch.get_num_threads()))

    import numpy as np
    binding = sess.io_binding()
    outputs: dict[int, torch.Tensor] = {}
    dev_id = torch.cuda.current_device()

    def run(x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        n = x.shape[0]
        if n not in outputs:
            outputs[n] = torch.empty((n, 10), dtype=torch.float32, device=x.device)
        y = outputs[n]
        binding.bind_input(INPUT_NAME, "cuda", dev_id, np.float32, tuple(x.shape), x.data_ptr())
        binding.bind_output(OUTPUT_NAME, "cuda", dev_id, np.float32, tuple(y.shape), y.data_ptr())
        # ORT launches on its own stream; make it wait for the producer of x, and us for it.
        torch.cuda.current_stream().synchronize()
        sess.run_with_iobinding(binding)
        return y.clone()

    info["io_binding"] = True
    return Runner(run, "onnxrt", precision, device, info)


def _write(model, meta, precision, device, path: Path, max_batch: int, options: dict) -> dict:
    """The .onnx for a cell at `path`: the export itself, or for int8 the calibrated QDQ model."""
    model, info = with_fold_bn(model, options, OPTIONS)
    if precision == "int8":
        calib = calibration.require(options, meta)
        return {**info, "quantization": quantize_int8(model, path, calib, device, max_batch=max_batch)}
    export_onnx(model, path, precision=precision, max_batch=max_batch)
    return info


def build(model, meta, precision, device, batch_sizes, cache_dir=None, **options):
    """Export (into `cache_dir`, kept for inspection, or a temporary folder removed once the session
    holds the graph) and open an ONNX Runtime session. int8 takes `calibration=` (a
    calibration.Calibration; default: the standard training-image sample for `meta`)."""
    import tempfile

    from . import batch_profile
    profile = batch_profile(batch_sizes)
    name = f"{getattr(model, 'model_name', 'model')}-{precision}.onnx"
    max_batch = max(1024, profile["max"])
    spin = options.get("spin", OPTIONS["spin"].default)
    if cache_dir:
        path = Path(cache_dir) / name
        extra = _write(model, meta, precision, device, path, max_batch, options)
        return runner_for(path, precision, device, Path(cache_dir), extra, spin=spin)
    with tempfile.TemporaryDirectory(prefix="cifar-speed-onnx-") as tmp:
        path = Path(tmp) / name
        extra = _write(model, meta, precision, device, path, max_batch, options)
        return runner_for(path, precision, device, None, {"onnx": "(temporary export)", **extra}, spin=spin)


# -- saved artifact ------------------------------------------------------------------------------------

def save(model, meta, precision, device, batch_sizes, path, profile=None, **options) -> dict:
    from . import batch_profile
    profile = profile or batch_profile(batch_sizes)
    extra = _write(model, meta, precision, device, Path(path), max(1024, profile["max"]), options)
    import onnx
    m = onnx.load(str(path), load_external_data=False)
    return {"artifact_format": "onnx", "opset": max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
            "dynamic_batch": True, **extra}


def load(path, sidecar: dict, device: str, spin: str = OPTIONS["spin"].default) -> Runner:
    try:
        import onnx
        onnx.checker.check_model(str(path))
    except Exception as e:
        raise CifarSpeedError(f"{path} is not a valid ONNX model: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    return runner_for(Path(path), sidecar["precision"], device, Path(path).parent, {"artifact": str(path)}, spin=spin)
