"""Triton Inference Server model repositories: `cifar-speed export CKPT --format triton`.

    model_repository/
      <model>/config.pbtxt        ModelConfig in protobuf text format, built with Triton's own schema
      <model>/labels.txt          the ten CIFAR-10 class names (Triton's classification extension)
      <model>/cifar-speed.json    where it came from: checkpoint, normalisation, precision, provenance
      <model>/1/model.onnx        --backend onnxrt (platform onnxruntime_onnx): the artifact that
                                  `cifar-speed compile --backend onnxrt` caches and `bench` times
                                  (fp32, fp16, or int8 as its calibrated QDQ graph), or
      <model>/1/model.plan        --backend trt    (platform tensorrt_plan; TensorRT + CUDA GPU needed), or
      <model>/1/model.xml + .bin  --backend openvino (backend "openvino": the IR that `cifar-speed
                                  compile --backend openvino` caches and `bench` times, fp32 or int8
                                  (NNCF); CPU instances, the THROUGHPUT hint a server wants)

The model takes the *normalised* fp32 NCHW batch (mean / std in cifar-speed.json and the checkpoint
sidecar) and returns fp32 logits, whatever the precision inside. Input / output names, dtypes and
dims in config.pbtxt are read from the served ONNX graph or IR (a TensorRT plan is built from the
ONNX graph), never typed by hand: the batch dimension must be dynamic and is left out of `dims`, as
Triton wants when max_batch_size > 0.

The config is a `ModelConfig` message from `tritonclient.grpc.model_config_pb2` (the schema Triton
itself parses), so a field or enum that Triton does not know cannot be written. The whole model
folder is built in a temporary folder beside the destination and renamed into place.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CifarSpeedError
from .fileio import atomic_write_json, atomic_write_text, sha256_file

if TYPE_CHECKING:   # checkpoint imports torch; the export's schema checks must not
    from .checkpoint import Checkpoint

FORMAT = "cifar-speed-triton/1"
MAX_BATCH_SIZE = 128
PREFERRED_BATCH_SIZES = (32, 64, 128)
MAX_QUEUE_DELAY_US = 100
BACKENDS = {  # --backend -> (Triton platform, file in the version folder, default instance kind)
    "onnxrt": ("onnxruntime_onnx", "model.onnx", "auto"),
    "trt": ("tensorrt_plan", "model.plan", "gpu"),
    "openvino": ("openvino", "model.xml", "cpu"),   # a backend, not a platform: config says backend: "openvino"
}
# Precisions each backend exports, and why not the others.
BACKEND_PRECISIONS = {
    "openvino": (("fp32", "int8"), "Triton's OpenVINO backend serves on CPUs, which have no fast fp16 here"),
    "trt": (("fp32", "fp16"), "an int8 TensorRT plan needs calibration in TensorRT, not built here yet"),
}
OPENVINO_PARAMETERS = {"PERFORMANCE_HINT": "THROUGHPUT"}   # several requests in flight on several streams
FORMATS = ("triton",)
PRECISIONS = ("fp32", "fp16", "int8")
INSTANCE_KINDS = {"auto": "KIND_AUTO", "gpu": "KIND_GPU", "cpu": "KIND_CPU"}
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

# ONNX TensorProto element type name -> Triton DataType name
_ONNX_TO_TRITON = {
    "FLOAT": "TYPE_FP32", "FLOAT16": "TYPE_FP16", "BFLOAT16": "TYPE_BF16", "DOUBLE": "TYPE_FP64",
    "INT8": "TYPE_INT8", "INT16": "TYPE_INT16", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64",
    "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16", "UINT32": "TYPE_UINT32", "UINT64": "TYPE_UINT64",
    "BOOL": "TYPE_BOOL", "STRING": "TYPE_STRING",
}


def model_config_pb2():
    """Triton's ModelConfig protobuf module, shipped by the tritonclient package."""
    try:
        from tritonclient.grpc import model_config_pb2 as pb
    except ImportError as e:
        raise CifarSpeedError(f"--format triton needs Triton's model-config schema from the tritonclient package "
                              f"({e}): pip install 'tritonclient[grpc]' (or 'cifar-speed[triton]')") from None
    return pb


# -- reading the graph -----------------------------------------------------------------------------

@dataclass(frozen=True)
class TensorSpec:
    name: str
    data_type: str          # Triton DataType name, e.g. TYPE_FP32
    dims: tuple[int, ...]   # without the batch dimension


def onnx_io(onnx_path: str | os.PathLike) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of an ONNX graph as Triton sees them: dynamic batch first, then fixed dims."""
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as e:
        raise CifarSpeedError(f"cannot read ONNX model {onnx_path}: {type(e).__name__}: {e}") from None
    initializers = {t.name for t in model.graph.initializer}

    def spec(v) -> TensorSpec:
        t = v.type.tensor_type
        elem = onnx.TensorProto.DataType.Name(t.elem_type)
        if elem not in _ONNX_TO_TRITON:
            raise CifarSpeedError(f"{onnx_path}: {v.name!r} has ONNX type {elem}, which Triton has no type for")
        dims = list(t.shape.dim)
        if not dims or dims[0].HasField("dim_value"):
            raise CifarSpeedError(f"{onnx_path}: {v.name!r} has no dynamic batch dimension (shape "
                                  f"{[d.dim_value or d.dim_param for d in dims]}); re-export with a dynamic batch")
        rest = []
        for d in dims[1:]:
            if not d.HasField("dim_value") or d.dim_value <= 0:
                raise CifarSpeedError(f"{onnx_path}: {v.name!r} has a dynamic non-batch dimension; Triton needs fixed dims here")
            rest.append(int(d.dim_value))
        return TensorSpec(v.name, _ONNX_TO_TRITON[elem], tuple(rest))

    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    outputs = [spec(v) for v in model.graph.output]
    return inputs, outputs


# -- the config --------------------------------------------------------------------------------------

def build_config(name: str, backend: str, inputs: list[TensorSpec], outputs: list[TensorSpec], *,
                 max_batch_size: int = MAX_BATCH_SIZE, preferred=PREFERRED_BATCH_SIZES,
                 instance_kind: str | None = None, instances: int = 1, label_filename: str | None = "labels.txt",
                 max_queue_delay_us: int = MAX_QUEUE_DELAY_US):
    """A ModelConfig message for the model folder `name`."""
    pb = model_config_pb2()
    platform, filename, default_kind = BACKENDS[backend]
    kind = instance_kind or default_kind
    if kind not in INSTANCE_KINDS:
        raise CifarSpeedError(f"unknown instance kind {kind!r}; valid: {', '.join(INSTANCE_KINDS)}")
    if backend == "trt" and kind == "cpu":
        raise CifarSpeedError("a TensorRT plan runs on a GPU only: --instance-kind cpu is not possible with --backend trt")
    if backend == "openvino":
        cfg = pb.ModelConfig(name=name, backend=platform, max_batch_size=max_batch_size,
                             default_model_filename=filename)
        for key, value in OPENVINO_PARAMETERS.items():
            cfg.parameters[key].string_value = value
    else:
        cfg = pb.ModelConfig(name=name, platform=platform, max_batch_size=max_batch_size,
                             default_model_filename=filename)
    for t in inputs:
        cfg.input.add(name=t.name, data_type=pb.DataType.Value(t.data_type), dims=list(t.dims))
    for i, t in enumerate(outputs):
        out = cfg.output.add(name=t.name, data_type=pb.DataType.Value(t.data_type), dims=list(t.dims))
        if label_filename and i == 0:
            out.label_filename = label_filename
    sizes = [b for b in preferred if b <= max_batch_size]
    cfg.dynamic_batching.preferred_batch_size.extend(sizes)
    cfg.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    cfg.instance_group.add(kind=pb.ModelInstanceGroup.Kind.Value(INSTANCE_KINDS[kind]), count=instances)
    return cfg


def config_text(cfg) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(cfg)


# -- TensorRT plan -------------------------------------------------------------------------------------

def trt_unavailable_reason() -> str | None:
    """Why a TensorRT plan cannot be built here, or None when it can."""
    import torch

    try:
        import tensorrt  # noqa: F401
        have_trt = True
    except Exception:  # ImportError, or OSError for a library / ABI mismatch
        have_trt = False
    gpu = torch.cuda.is_available()
    if have_trt and gpu:
        return None
    missing = "TensorRT and a CUDA GPU" if not (have_trt or gpu) else "a CUDA GPU" if have_trt else "TensorRT (the tensorrt package)"
    return f"--backend trt needs TensorRT and a CUDA GPU; this machine lacks {missing} (use --backend onnxrt)"


def build_plan(onnx_path: str | os.PathLike, plan_path: str | os.PathLike, *, precision: str = "fp32",
               max_batch: int = MAX_BATCH_SIZE, opt_batch: int | None = None) -> dict:
    """Build a serialized TensorRT engine from the ONNX file with the TensorRT builder API
    (OnnxParser; one optimisation profile batch 1..max_batch per input; FP16 flag for fp16).
    The plan is tied to this GPU model and TensorRT version: Triton must run the same TensorRT."""
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    major = int(str(trt.__version__).split(".")[0])
    # TensorRT 10 networks are always explicit-batch (the flag is deprecated); 8.x needs it set.
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise CifarSpeedError(f"TensorRT cannot parse {onnx_path}: {errors[:300]}")
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    opt = opt_batch or min(64, max_batch)  # the middle preferred size; min <= opt <= max
    shapes = {}
    for i in range(network.num_inputs):
        t = network.get_input(i)
        rest = tuple(t.shape)[1:]
        shapes[t.name] = [(1, *rest), (opt, *rest), (max_batch, *rest)]
        profile.set_shape(t.name, *shapes[t.name])
    config.add_optimization_profile(profile)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise CifarSpeedError("TensorRT failed to build an engine from the ONNX graph (see the TensorRT log above)")
    Path(plan_path).write_bytes(bytes(serialized))
    return {"tensorrt": str(trt.__version__), "profile": {k: [list(s) for s in v] for k, v in shapes.items()}}


# -- the repository --------------------------------------------------------------------------------------

@dataclass
class ExportResult:
    folder: Path
    config: Path
    artifact: Path
    written: bool      # False when an identical export was already there
    note: str


def _identity(meta: Checkpoint, backend: str, precision: str, max_batch_size: int, instance_kind: str,
              instances: int) -> dict:
    """What makes two exports the same model folder."""
    return {"weights_sha256": meta.weights_sha256, "model": meta.architecture, "backend": backend,
            "precision": precision, "max_batch_size": max_batch_size, "instance_kind": instance_kind,
            "instances": instances}


def _existing_identity(folder: Path) -> dict | None:
    try:
        info = json.loads((folder / "cifar-speed.json").read_text())
        if info.get("format") != FORMAT:
            return None
        artifact = folder / info["artifact"]
        if not artifact.is_file() or sha256_file(artifact) != info.get("artifact_sha256"):
            return None
        return info.get("identity")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def check_request(fmt: str, backend: str, precision: str, name: str | None, max_batch_size: int, instances: int,
                  instance_kind: str | None) -> None:
    if fmt not in FORMATS:
        raise CifarSpeedError(f"unknown export format {fmt!r}; valid: {', '.join(FORMATS)}")
    if backend not in BACKENDS:
        raise CifarSpeedError(f"unknown backend {backend!r} for --format triton; valid: {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise CifarSpeedError(f"precision {precision!r} cannot be exported for Triton; valid: {', '.join(PRECISIONS)}")
    allowed, why = BACKEND_PRECISIONS.get(backend, (PRECISIONS, ""))
    if precision not in allowed:
        raise CifarSpeedError(f"--backend {backend} exports {', '.join(allowed)} only ({why})")
    if name is not None and not _NAME.match(name):
        raise CifarSpeedError(f"model name {name!r} must be letters, digits, '_', '.', '-' (not starting with '.' or '-')")
    if not 1 <= max_batch_size <= 4096:
        raise CifarSpeedError(f"--max-batch-size must be between 1 and 4096, got {max_batch_size}")
    if instances < 1:
        raise CifarSpeedError(f"--instances must be at least 1, got {instances}")
    if instance_kind is not None and instance_kind not in INSTANCE_KINDS:
        raise CifarSpeedError(f"unknown instance kind {instance_kind!r}; valid: {', '.join(INSTANCE_KINDS)}")
    if backend == "trt" and instance_kind == "cpu":
        raise CifarSpeedError("a TensorRT plan runs on a GPU only: --instance-kind cpu is not possible with --backend trt")
    if backend == "openvino" and instance_kind not in (None, "cpu"):
        raise CifarSpeedError(f"Triton's OpenVINO backend runs CPU instances: --instance-kind {instance_kind} is not "
                              "possible with --backend openvino")


def export_triton(checkpoint: str | os.PathLike, out: str | os.PathLike = "model_repository", *, backend: str = "onnxrt",
                  precision: str = "fp32", name: str | None = None, max_batch_size: int = MAX_BATCH_SIZE,
                  instance_kind: str | None = None, instances: int = 1, force: bool = False) -> ExportResult:
    """Write (or refresh) `<out>/<name>/` for one checkpoint; other models in `out` are left alone."""
    from .checkpoint import load_checkpoint, paths_for

    _check_runtime(backend, precision, name, max_batch_size, instances, instance_kind)
    model, meta = load_checkpoint(checkpoint)
    name = name or meta.name or paths_for(checkpoint)[1].stem
    if not _NAME.match(name):
        raise CifarSpeedError(f"model name {name!r} is not a valid Triton model name: pass --name")
    kind = instance_kind or BACKENDS[backend][2]
    filename = BACKENDS[backend][1]
    out = Path(out)
    dest = out / name
    identity = _identity(meta, backend, precision, max_batch_size, kind, instances)
    if dest.exists() and not force and _existing_identity(dest) == identity:
        return ExportResult(dest, dest / "config.pbtxt", dest / "1" / filename, False, "unchanged")
    _check_destination(dest, identity, force)
    existed = dest.exists()

    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=out))
    try:
        (tmp / "1").mkdir()
        inputs, outputs, extra = _served_program(checkpoint, model, backend, precision, kind, max_batch_size,
                                                 tmp / "1" / filename)
        cfg = build_config(name, backend, inputs, outputs, max_batch_size=max_batch_size, instance_kind=kind,
                           instances=instances)
        _write_model_folder(tmp, cfg, checkpoint, meta, identity, backend, inputs, outputs, extra)
        _move_into_place(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    note = "replaced (--force)" if existed else "written"
    return ExportResult(dest, dest / "config.pbtxt", dest / "1" / filename, True, note)


def _check_runtime(backend, precision, name, max_batch_size, instances, instance_kind) -> None:
    """Every argument and what the backend needs on this machine, before any work."""
    check_request("triton", backend, precision, name, max_batch_size, instances, instance_kind)
    model_config_pb2()  # fail early when the schema is missing
    if backend == "trt" and (reason := trt_unavailable_reason()):
        raise CifarSpeedError(reason)
    if backend == "openvino":
        from .backends import openvino as ov_backend
        ok, reason = ov_backend.availability(precision, "cpu")
        if not ok:
            raise CifarSpeedError(f"--backend openvino: {reason}")


def _check_destination(dest: Path, identity: dict, force: bool) -> None:
    """An existing folder is replaced only with --force, and never when it is a file."""
    if dest.exists() and not force:
        there = _existing_identity(dest)
        if there is None:
            why = "not an intact cifar-speed export"
        else:
            short = lambda v: v[:12] if isinstance(v, str) and len(v) == 64 else v  # noqa: E731  (sha256)
            why = ", ".join(f"{k} {short(there.get(k))!r} there, {short(v)!r} asked"
                            for k, v in identity.items() if there.get(k) != v)
        raise CifarSpeedError(f"{dest} already exists and holds a different model ({why}); pass --force to replace it")
    if dest.exists() and not dest.is_dir():
        raise CifarSpeedError(f"{dest} exists and is not a folder")


def _served_program(checkpoint, model, backend: str, precision: str, kind: str, max_batch_size: int,
                    dest: Path) -> tuple[list[TensorSpec], list[TensorSpec], dict]:
    """The program Triton serves, written to `dest`, with its I/O as Triton sees it and facts for
    cifar-speed.json: onnxrt and openvino copy the cached artifact bench times; trt builds a plan."""
    from .backends.onnxrt import export_onnx

    if backend == "onnxrt":
        extra = _served_onnx(checkpoint, model, precision, kind, max_batch_size, dest)
        return (*onnx_io(dest), extra)
    if backend == "openvino":
        extra = _served_ir(checkpoint, precision, max_batch_size, dest)
        return (*ir_io(dest), extra)
    # fp16 on TensorRT: the fp32 graph built with the FP16 builder flag.
    onnx_file = dest.parent.parent / "model.onnx"
    export_onnx(model, onnx_file, precision="fp32", max_batch=max(1024, max_batch_size))
    inputs, outputs = onnx_io(onnx_file)
    extra = build_plan(onnx_file, dest, precision=precision, max_batch=max_batch_size)
    onnx_file.unlink()
    return inputs, outputs, extra


def _write_model_folder(tmp: Path, cfg, checkpoint, meta, identity: dict, backend: str, inputs, outputs,
                        extra: dict) -> None:
    """config.pbtxt, labels.txt and cifar-speed.json beside the served program, readable by the server."""
    from . import data as D
    from .checkpoint import paths_for
    from .provenance import provenance

    platform, filename, _ = BACKENDS[backend]
    atomic_write_text(tmp / "config.pbtxt", config_text(cfg))
    atomic_write_text(tmp / "labels.txt", "\n".join(D.CLASSES) + "\n")
    atomic_write_json(tmp / "cifar-speed.json", {
        "format": FORMAT, "identity": identity, "platform": platform,
        "artifact": f"1/{filename}", "artifact_sha256": sha256_file(tmp / "1" / filename),
        "inputs": [t.__dict__ for t in inputs], "outputs": [t.__dict__ for t in outputs],
        "input_layout": "NCHW, fp32, normalised: (pixel / 255 - mean) / std per channel",
        "normalize": {"mean": list(meta.mean), "std": list(meta.std)}, "classes": list(D.CLASSES),
        "checkpoint": {"path": str(paths_for(checkpoint)[1]), "model": meta.architecture, "name": meta.name,
                       "weights_sha256": meta.weights_sha256, "test_accuracy": meta.test_accuracy},
        **extra, "provenance": provenance(),
    })
    # Temporary files are created 0600; the server (often another user in a container) must read them.
    for p in (tmp, tmp / "1"):
        p.chmod(0o755)
    for f in (*tmp.iterdir(), *(tmp / "1").iterdir()):
        if f.is_file():
            f.chmod(0o644)


def _served_onnx(checkpoint, model, precision: str, instance_kind: str, max_batch_size: int, dest: Path) -> dict:
    """The served .onnx is the artifact `cifar-speed compile --backend onnxrt` caches and `bench` times
    (fp16: computes in fp16 with casts at the fp32 boundary; int8: the calibrated QDQ graph), copied
    from the cache, built there first if missing. Where this machine cannot run that cell (fp16 for
    GPU instances, exported on a CPU-only machine) the graph is exported afresh, as the same exporter
    would write it, and the metadata says so; int8 is never exported without its calibrated build."""
    from . import artifacts
    from .backends import UnavailableError, onnxrt

    device = "cuda" if instance_kind == "gpu" else "cpu"
    try:
        built = artifacts.compile_checkpoint(checkpoint, "onnxrt", precision, device, [max_batch_size])
    except UnavailableError as e:   # compile_checkpoint's own availability check, with its reason
        if precision == "int8":
            raise CifarSpeedError(f"--precision int8 for {instance_kind} instances: the calibrated int8 model is "
                                  f"built and checked on the machine that serves it ({e})") from None
        onnxrt.export_onnx(model, dest, precision=precision, max_batch=max(1024, max_batch_size))
        return {"compiled_artifact": None, "compiled_artifact_note": f"exported afresh: {e}"}
    shutil.copyfile(built.artifact, dest)
    sidecar = artifacts.read_artifact_sidecar(built.artifact) or {}
    return {"compiled_artifact": {"path": str(built.artifact), "sha256": sidecar.get("artifact_sha256"),
                                  "cache_hit": built.cache_hit, "device": device},
            **({"quantization": sidecar["quantization"]} if "quantization" in sidecar else {})}


def _served_ir(checkpoint, precision: str, max_batch_size: int, dest: Path) -> dict:
    """The served IR (model.xml + model.bin) is the artifact `cifar-speed compile --backend openvino`
    caches and `bench` times (int8: the NNCF-quantized model), copied from the cache, built there
    first if missing. Triton's OpenVINO backend compiles it on the serving CPU, as bench does here."""
    from . import artifacts
    from .backends import get_backend

    built = artifacts.compile_checkpoint(checkpoint, "openvino", precision, "cpu", [max_batch_size])
    (weights,) = artifacts.companion_paths(get_backend("openvino"), built.artifact)
    shutil.copyfile(built.artifact, dest)
    shutil.copyfile(weights, dest.with_suffix(".bin"))
    sidecar = artifacts.read_artifact_sidecar(built.artifact) or {}
    return {"compiled_artifact": {"path": str(built.artifact), "sha256": sidecar.get("artifact_sha256"),
                                  "cache_hit": built.cache_hit, "device": "cpu"},
            "openvino": sidecar.get("openvino"), "weights_precision": sidecar.get("weights_precision"),
            "companions": {"model.bin": sha256_file(dest.with_suffix(".bin"))},
            **({"quantization": sidecar["quantization"]} if "quantization" in sidecar else {})}


def ir_io(xml_path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """(inputs, outputs) of an OpenVINO IR as Triton sees them: dynamic batch first, then fixed dims."""
    from .backends import openvino as ov_backend

    def spec(port) -> TensorSpec:
        name, shape = port.get_any_name(), port.get_partial_shape()
        kind = _OV_TO_TRITON.get(port.get_element_type().get_type_name())
        if kind is None:
            raise CifarSpeedError(f"{xml_path}: {name!r} has OpenVINO type {port.get_element_type()}, which Triton has no type for")
        if len(shape) < 1 or not shape[0].is_dynamic or not all(d.is_static for d in list(shape)[1:]):
            raise CifarSpeedError(f"{xml_path}: {name!r} needs a dynamic batch and fixed other dims (shape {shape})")
        return TensorSpec(name, kind, tuple(d.get_length() for d in list(shape)[1:]))

    model = ov_backend.core().read_model(str(xml_path))
    return [spec(p) for p in model.inputs], [spec(p) for p in model.outputs]


_OV_TO_TRITON = {"f32": "TYPE_FP32", "f16": "TYPE_FP16", "bf16": "TYPE_BF16", "i64": "TYPE_INT64",
                 "i32": "TYPE_INT32", "u8": "TYPE_UINT8", "i8": "TYPE_INT8"}


def _move_into_place(tmp: Path, dest: Path) -> None:
    """Rename the finished folder to `dest`; an old folder (--force) is renamed aside first and removed
    only once the new one is in place, so a failure leaves the old model intact."""
    if not dest.exists():
        os.rename(tmp, dest)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".old", dir=dest.parent))
    old.rmdir()
    os.rename(dest, old)
    try:
        os.rename(tmp, dest)
    except BaseException:
        os.rename(old, dest)
        raise
    with contextlib.suppress(OSError):
        shutil.rmtree(old)
