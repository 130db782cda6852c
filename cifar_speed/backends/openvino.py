"""`openvino`: the project's ONNX export converted to an OpenVINO model, run by OpenVINO's CPU plugin.

Artifact: OpenVINO IR, `<name>.xml` (the graph) with `<name>.bin` (the weights) beside it, weights
kept in fp32 (`save_model` would otherwise compress them to fp16). The .bin is a companion file of the
artifact (artifacts.py hashes it into the sidecar and refuses a mismatched one).

Precision is the CPU plugin's INFERENCE_PRECISION_HINT, set explicitly for every cell: fp32 is `f32`
(on AMX / AVX512-BF16 CPUs the plugin's default would silently be bf16); bf16 is `bf16` and only where
the plugin itself lists BF16 among the CPU's OPTIMIZATION_CAPABILITIES (native bf16); fp16 runs on an
Intel GPU device (`GPU`) only, the CPU plugin has no fast fp16 here. int8 is NNCF post-training
quantization of the fp32 model (`nncf.quantize`, target device CPU), calibrated on the same
training-image sample as every other int8 backend (cifar_speed/calibration.py), one image per
calibration item, activation ranges the sample's global min / max (MINMAX, as ORT's and PT2E's
calibration: NNCF's default averages each item's min / max, which with one image per item clips
the brightest and darkest images' inputs). On CPUs without VNNI/AMX (`int8_isa() == "avx2"`)
NNCF's overflow fix is on for every layer (7-bit weights: VPMADDUBSW adds two u8 x s8 products
into a saturating int16, the same reason ONNX Runtime's reduce_range is on there). What the
quantizer leaves in floating point runs in bf16 where the CPU has it natively, else f32.

Programs are compiled per batch size with a static shape (the plugin plans memory and picks kernels
for the exact shape; compiled on first use, inside the harness's warm-up). Synchronous calls use the
LATENCY hint (one stream using every thread: one call at a time gets all cores, whatever the batch);
the server-style `inflight` path uses the THROUGHPUT hint with an AsyncInferQueue of the plugin's
optimal number of requests, so several requests are in flight on several streams. Streams, threads
and the precision the plugin reports for each are in the runner's info (and so in every cell).
"""
from __future__ import annotations

import contextlib
import io

import functools
import importlib.util
import shutil
import tempfile
import time
from pathlib import Path

import torch

from . import Option, Runner, precision_on_device, register_backend, with_fold_bn
from .. import calibration
from ..errors import CifarSpeedError
from ..fileio import atomic_path, sha256_file
from ..provenance import int8_isa

EXTENSION = ".xml"
COMPANIONS = (".bin",)          # files beside the artifact, named like it (artifacts.py hashes them)
# bench times the cached artifact, which serves every batch size (artifacts.runner_for, compile_checkpoint).
TIMED_FROM_ARTIFACT = True
PROFILE_SHAPES_ARTIFACT = False
INPUT_SHAPE = (3, 32, 32)
SYNC_HINT, ASYNC_HINT = "LATENCY", "THROUGHPUT"
_PRECISION_HINT = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
# fold_bn as in onnxrt, but off by default: the plugin folds a BatchNorm straight after a conv itself,
# not one behind the airbench layout's max-pool (a MulAdd node per conv group in session 10's batch-1
# profiles), yet with that BatchNorm folded into the conv's bias OpenVINO 2026.4.1's f32 CPU path
# computes conv(bias) -> max-pool -> GELU wrongly: fast's fp32 cell lost top-1 (flagged in
# results/intel-r-xeon-r-processor-2c-amx/accept-s12-1.json) while its bf16 and int8 cells kept theirs.
OPTIONS = {"fold_bn": Option(("off", "on"), "off",
                             "fold each BatchNorm into its conv before conversion, also through the max-pool of "
                             "the airbench layout (fast, frontier_*); on breaks f32 on OpenVINO 2026.4 (conv bias "
                             "-> max-pool -> GELU), bf16 and int8 keep top-1")}
ARTIFACT_OPTIONS = ("fold_bn",)


def _ov():
    try:
        import openvino
    except ImportError:
        return None
    return openvino


@functools.lru_cache(maxsize=1)
def core():
    """One OpenVINO Core per process (it owns the plugins and their thread pools)."""
    return _ov().Core()


def version() -> str | None:
    ov = _ov()
    return ov.__version__ if ov else None


def devices() -> list[str]:
    """OpenVINO's devices here, e.g. ['CPU'] or ['CPU', 'GPU.0']."""
    return list(core().available_devices) if _ov() else []


def cpu_capabilities() -> list[str]:
    return [str(c) for c in core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def device_names() -> dict[str, str]:
    """device -> its full name, for doctor."""
    return {d: str(core().get_property(d, "FULL_DEVICE_NAME")) for d in devices()}


# -- availability ------------------------------------------------------------------------------------

@register_backend("openvino", order=40)
def availability(precision: str, device: str) -> tuple[bool, str]:
    if _ov() is None:
        return False, "openvino needs the openvino package (pip install 'cifar-speed[openvino]')"
    if device != "cpu":
        return False, ("OpenVINO has no NVIDIA GPU plugin (its GPU device is an Intel GPU, reached from "
                       "device cpu with fp16); run openvino cells with --device cpu")
    if precision == "fp16":
        if not _gpu_device():
            return False, (f"openvino fp16 needs an Intel GPU (OpenVINO device GPU); OpenVINO sees only "
                           f"{', '.join(devices())} here, and its CPU plugin has no fast fp16 on this CPU")
        return True, ""
    caps = cpu_capabilities()
    if precision == "bf16" and "BF16" not in caps:
        return False, ("openvino bf16 needs native bf16 (AVX512-BF16 or AMX); the CPU plugin lists "
                       f"{', '.join(caps)} for this CPU")
    if precision == "int8":
        ok, reason = precision_on_device("int8", "cpu")
        if not ok:
            return ok, reason
        if "INT8" not in caps:
            return False, f"the OpenVINO CPU plugin lists no INT8 capability here ({', '.join(caps)})"
        if importlib.util.find_spec("nncf") is None:
            return False, "openvino int8 needs NNCF post-training quantization (pip install 'cifar-speed[openvino]')"
    return True, ""


def _gpu_device() -> str | None:
    return next((d for d in devices() if d.startswith("GPU")), None)


# -- the OpenVINO model --------------------------------------------------------------------------------

def convert(model: torch.nn.Module, max_batch: int = 1024):
    """The fp32 OpenVINO model of `model`, through the project's ONNX export (dynamic batch)."""
    from .onnxrt import export_onnx

    ov = _ov()
    with tempfile.TemporaryDirectory(prefix="cifar-speed-ov-") as tmp:
        onnx_path = export_onnx(model, Path(tmp) / "fp32.onnx", max_batch=max_batch)
        try:
            return ov.convert_model(str(onnx_path))
        except Exception as e:
            raise CifarSpeedError(f"OpenVINO could not convert the ONNX export: {_first_line(e)}") from None


def int8_settings() -> dict:
    """nncf.quantize settings for this CPU (recorded in the sidecar and the runner's info)."""
    # Full bias correction, not NNCF's fast one: with the fast one `cnn` int8 lost 0.89 point of top-1
    # (results/intel-r-xeon-r-processor-2c-amx/full-s11-cnn.json, flagged); the full one costs only
    # build time (full-s11-cnn-openvino.json re-measures it).
    return {"flow": "nncf.quantize (post-training, OpenVINO model)", "preset": "PERFORMANCE",
            "target_device": "CPU", "fast_bias_correction": False, "activation_range": "MINMAX",
            "overflow_fix": "enable" if int8_isa() == "avx2" else "first_layer_only", "int8_isa": int8_isa()}


def quantize_int8(ov_model, calib: "calibration.Calibration") -> tuple[object, dict]:
    """NNCF post-training quantization of the fp32 OpenVINO model on the calibration sample."""
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    s = int8_settings()
    # One image per item, so subset_size counts images exactly (the whole sample, like the others).
    items = [calib.images[i:i + 1].numpy() for i in range(calib.size)]
    advanced = AdvancedQuantizationParameters(
        overflow_fix=OverflowFix(s["overflow_fix"]),
        activations_range_estimator_params=getattr(RangeEstimatorParametersSet, s["activation_range"]))
    try:
        # NNCF draws rich progress bars on sys.stdout and has no switch for them: they would interleave
        # with our tables and the --json document, so they go nowhere.
        with contextlib.redirect_stdout(io.StringIO()):
            quantized = nncf.quantize(ov_model, nncf.Dataset(items), preset=nncf.QuantizationPreset.PERFORMANCE,
                                      target_device=nncf.TargetDevice.CPU, subset_size=calib.size,
                                      fast_bias_correction=s["fast_bias_correction"], advanced_parameters=advanced)
    except Exception as e:
        raise CifarSpeedError(f"NNCF int8 quantization failed: {_first_line(e)}") from None
    return quantized, {**s, "nncf": _nncf_version(), "calibration": calib.describe()}


def _nncf_version() -> str | None:
    from importlib import metadata
    try:
        return metadata.version("nncf")
    except metadata.PackageNotFoundError:
        return None


def ov_model_for(model, meta, precision: str, max_batch: int, options: dict) -> tuple[object, dict]:
    """(OpenVINO model, facts for the sidecar / info) for one cell."""
    model, facts = with_fold_bn(model, options, OPTIONS)
    ov_model = convert(model, max_batch)
    if precision != "int8":
        return ov_model, facts
    quantized, quantization = quantize_int8(ov_model, calibration.require(options, meta))
    return quantized, {**facts, "quantization": quantization}


# -- compiled programs and the runner --------------------------------------------------------------------

def compile_config(precision: str, hint: str) -> tuple[str, dict]:
    """(OpenVINO device, compile properties) for a cell."""
    if precision == "fp16":
        return _gpu_device(), {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": "f16"}
    if precision == "int8":
        rest = "bf16" if "BF16" in cpu_capabilities() else "f32"
    else:
        rest = _PRECISION_HINT[precision]
    # Threads as torch is told to use (what the harness's disturbance check and every other
    # backend assume), not the plugin's own guess.
    return "CPU", {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": rest,
                   "INFERENCE_NUM_THREADS": torch.get_num_threads()}


def _describe(compiled, ov_device: str, hint: str) -> dict:
    """What the plugin actually chose: read back from the compiled model, never assumed."""
    def prop(name):
        try:
            value = compiled.get_property(name)
        except Exception:
            return None
        return value.to_string() if hasattr(value, "to_string") else str(value)   # ov.Type -> "f32"
    out = {"ov_device": ov_device, "hint": hint, "inference_precision": prop("INFERENCE_PRECISION_HINT"),
           "streams": prop("NUM_STREAMS"), "threads": prop("INFERENCE_NUM_THREADS"),
           "optimal_requests": prop("OPTIMAL_NUMBER_OF_INFER_REQUESTS")}
    return {k: (int(v) if isinstance(v, str) and v.isdigit() else v) for k, v in out.items()}


class Programs:
    """Compiled models per (batch size, hint), each compiled on first use with a static shape."""

    def __init__(self, ov_model, precision: str):
        self.model, self.precision = ov_model, precision
        self._compiled: dict[tuple[int, str], object] = {}

    def get(self, batch: int, hint: str):
        key = (batch, hint)
        if key not in self._compiled:
            ov_device, config = compile_config(self.precision, hint)
            m = self.model.clone()
            m.reshape({m.inputs[0].get_any_name(): [batch, *INPUT_SHAPE]})
            try:
                self._compiled[key] = core().compile_model(m, ov_device, config)
            except Exception as e:
                raise CifarSpeedError(f"OpenVINO could not compile the model for {ov_device}: {_first_line(e)}") from None
        return self._compiled[key]

    def describe(self, batch: int, hint: str) -> dict:
        return _describe(self.get(batch, hint), compile_config(self.precision, hint)[0], hint)


def runner_for(ov_model, precision: str, device: str, info: dict | None = None, probe_batch: int = 1) -> Runner:
    programs = Programs(ov_model, precision)
    requests: dict[int, object] = {}

    ov = _ov()

    def run(x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        if n not in requests:
            requests[n] = programs.get(n, SYNC_HINT).create_infer_request()
        req = requests[n]
        # The plugin reads the caller's memory in place (a shared Tensor, no copy), and infer() runs
        # with no inputs argument: the dict form's Python dispatch is a visible share of a batch-1
        # call (results/intel-r-xeon-r-processor-2c-amx/compare-sweep-openvino-s10.txt).
        req.set_input_tensor(0, ov.Tensor(x.contiguous().numpy(), shared_memory=True))
        req.infer()
        # The output buffer is reused by the next call on this request: copy the (n x 10) logits out.
        return torch.from_numpy(req.get_output_tensor(0).data.copy())

    queues: dict[int, tuple[object, list[float]]] = {}

    def inflight(batches: list[torch.Tensor], calls: int) -> tuple[list[float], dict]:
        n = batches[0].shape[0]
        if n not in queues:
            # Built once per batch size, as a server keeps its requests: a queue built per call put
            # the creation of every infer request (and the first touch of their buffers) inside each
            # timed group, a cost that moved with the host's state for a whole run
            # (results/intel-r-xeon-r-processor-2c-amx/RUNS.md, session 16).
            queue = ov.AsyncInferQueue(programs.get(n, ASYNC_HINT))   # jobs = OPTIMAL_NUMBER_OF_INFER_REQUESTS
            done: list[float] = []
            queue.set_callback(lambda _req, t0: done.append(time.perf_counter() - t0))
            queues[n] = (queue, done)
        queue, done = queues[n]
        done.clear()
        arrays = [b.contiguous().numpy() for b in batches]
        for i in range(calls):
            queue.start_async({0: arrays[i % len(arrays)]}, userdata=time.perf_counter(), share_inputs=True)
        queue.wait_all()
        return list(done), {**programs.describe(n, ASYNC_HINT), "requests_in_flight": len(queue)}

    info = {"openvino": version(), "artifact_format": "openvino-ir", "shapes": "static, compiled per batch size",
            "sync": programs.describe(probe_batch, SYNC_HINT), **(info or {})}
    if precision == "int8":
        info["int8_isa"] = int8_isa()
    return Runner(run, "openvino", precision, device, info, inflight=inflight)


def build(model, meta, precision, device, batch_sizes, cache_dir=None, **options) -> Runner:
    """Convert (and for int8 quantize) in memory; with `cache_dir`, the IR is also written there for
    inspection. int8 takes `calibration=` (default: the standard training-image sample for `meta`)."""
    from . import batch_profile

    profile = batch_profile(batch_sizes)
    ov_model, facts = ov_model_for(model, meta, precision, max(1024, profile["max"]), options)
    if cache_dir:
        name = f"{getattr(model, 'model_name', 'model')}-{precision}.xml"
        write_ir(ov_model, Path(cache_dir) / name)
        facts["ir"] = str(Path(cache_dir) / name)
    return runner_for(ov_model, precision, device, facts, probe_batch=max(batch_sizes))


# -- saved artifact ------------------------------------------------------------------------------------

def write_ir(ov_model, xml_path: Path, bin_path: Path | None = None) -> tuple[Path, Path]:
    """The IR as two files, each appearing atomically: the .bin first, then the .xml that needs it."""
    ov = _ov()
    xml_path = Path(xml_path)
    bin_path = Path(bin_path) if bin_path else xml_path.with_suffix(".bin")
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ov-ir-", dir=xml_path.parent) as tmp:
        # compress_to_fp16=False: an fp32 cell must run fp32 weights (save_model halves them by default).
        ov.save_model(ov_model, str(Path(tmp) / "model.xml"), compress_to_fp16=False)
        for src, dst in ((Path(tmp) / "model.bin", bin_path), (Path(tmp) / "model.xml", xml_path)):
            with atomic_path(dst, suffix=dst.suffix) as out:
                shutil.copyfile(src, out)
    return xml_path, bin_path


def save(model, meta, precision, device, batch_sizes, path, profile=None, companions=None, **options) -> dict:
    """IR at `path` (the .xml) with its weights at companions[0] (default: `path` with .bin)."""
    from . import batch_profile

    profile = profile or batch_profile(batch_sizes)
    ov_model, facts = ov_model_for(model, meta, precision, max(1024, profile["max"]), options)
    write_ir(ov_model, Path(path), Path(companions[0]) if companions else None)
    return {"artifact_format": "openvino-ir", "openvino": version(), "weights_precision": "fp32",
            "dynamic_batch": True, **facts}


def load(path, sidecar: dict, device: str) -> Runner:
    path = Path(path)
    weights = path.with_suffix(".bin")
    try:
        ov_model = core().read_model(str(path), str(weights))
    except Exception as e:
        raise CifarSpeedError(f"{path} is not a readable OpenVINO IR (with {weights.name}): {_first_line(e)}") from None
    batch = int((sidecar.get("batch_profile") or {}).get("opt", 1))
    extra = {k: sidecar[k] for k in ("quantization",) if k in sidecar}
    return runner_for(ov_model, sidecar["precision"], device, {"artifact": str(path), **extra}, probe_batch=batch)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__

