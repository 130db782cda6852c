"""Compiled artifacts on disk (`cifar-speed compile`): the file, a JSON sidecar, and a cache key.

    <out>/<checkpoint>.<backend>-<precision>-<device>.<ext>        the artifact (.onnx / .pt2 / .ep)
    <out>/<checkpoint>.<backend>-<precision>-<device>.<ext>.json   what it is and where it came from

The key hashes everything the artifact depends on: the checkpoint's weights file (its content, hashed
here), model and construction arguments, backend, precision, batch profile, device (GPU or CPU
model), backend options, library versions, and the source of our code that builds the file (the
backend's module, the model definitions, calibration): a fix to an exporter or to a model's layout
must not leave the artifacts built before it in service. A second
compile with the same key and an intact artifact (sha256 matches the sidecar) is free; a changed
input, a corrupt artifact or a foreign sidecar rebuilds. Loading refuses anything whose sidecar or
hash does not check out. An int8 artifact also depends on its calibration sample: its size, seed,
split and the sha256 of the chosen training indices are in the key and in the sidecar's
`calibration`.

A backend whose artifact is more than one file (OpenVINO IR: `.xml` + `.bin`) names the others'
suffixes in `COMPANIONS`; they sit beside the artifact under its name, their sha256 go into the
sidecar's `companions`, and a missing or changed one means rebuild (compile) or refuse (load).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from . import backends, calibration
from .checkpoint import load_checkpoint, paths_for, read_sidecar
from .errors import CifarSpeedError
from .fileio import atomic_path, atomic_write_json, require_file, sha256_file
from .provenance import cpu_info, gpu_info, machine_slug, provenance, versions

FORMAT = "cifar-speed-artifact/1"
# Versions an artifact can depend on; a python upgrade alone does not invalidate it.
KEY_VERSIONS = ("torch", "onnx", "onnxscript", "onnxruntime", "torch_tensorrt", "tensorrt", "openvino", "nncf")


def default_out_dir() -> Path:
    from .data import cache_root

    return cache_root() / "artifacts" / machine_slug()


def device_description(device: str) -> str:
    if device == "cuda":
        g = gpu_info()
        return f"cuda:{g['name']} (sm {g['capability']})" if g else "cuda:unavailable"
    c = cpu_info()
    return f"cpu:{c['model']} [{' '.join(c['features'])}]"


def cache_key(*, weights_sha256: str, model: str, backend: str, precision: str, profile: dict,
              device: str, options: dict | None = None, lib_versions: dict | None = None,
              model_kwargs: dict | None = None, code_sha256: str = "") -> str:
    lib_versions = lib_versions if lib_versions is not None else versions()
    material = {
        "format": FORMAT, "weights_sha256": weights_sha256, "model": model, "model_kwargs": model_kwargs or {},
        "backend": backend, "code_sha256": code_sha256,
        "precision": precision, "profile": profile, "device": device,
        "options": options or {}, "versions": {k: lib_versions.get(k) for k in KEY_VERSIONS},
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def builder_code_sha256(module) -> str:
    """sha256 over the source files that decide what a backend writes: its module, the backend
    interface, calibration and every model definition (a family may build on another's layers)."""
    package = Path(__file__).parent
    files = [Path(module.__file__), package / "backends" / "__init__.py", package / "calibration.py",
             *sorted((package / "models").glob("*.py"))]
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()


def artifact_path(out_dir, checkpoint, backend: str, precision: str, device: str, view: str | None = None,
                  options: dict | None = None) -> Path:
    """`view`: the architecture a checkpoint is built as when that is not its own (fast_tta of fast).
    Artifact options away from their default name the file too (`+fold_bn=off`), so that two
    variants of one cell are two cache entries rather than one file rebuilt in turn."""
    module = backends.get_backend(backend)
    declared = backends.declared_options(backend)
    stem = paths_for(checkpoint)[0].with_suffix("").name + (f"+{view}" if view else "")
    variant = "".join(f"+{k}={v}" for k, v in sorted((options or {}).items())
                      if k in declared and v != declared[k].default)
    return Path(out_dir) / f"{stem}.{backend}-{precision}-{device}{variant}{module.EXTENSION}"


def artifact_options(backend: str, options: dict | None) -> dict:
    """Every option that shapes the backend's file, at the value given or else its default. All of
    them go into the cache key, so an entry built before a default changed is not served after it."""
    return _option_values(backend, options, "ARTIFACT_OPTIONS")


def run_options(backend: str, options: dict | None) -> dict:
    """Every option the backend applies when it loads an artifact to run it (its RUN_OPTIONS, e.g.
    ONNX Runtime's thread spinning), at the value given or else its default: not part of the file."""
    return _option_values(backend, options, "RUN_OPTIONS")


def _option_values(backend: str, options: dict | None, kind: str) -> dict:
    """The options the backend lists under `kind`, each at the value given or else its default."""
    declared = backends.declared_options(backend)
    return {k: (options or {}).get(k, declared[k].default) for k in getattr(backends.get_backend(backend), kind, ())}


def companion_paths(module, artifact: str | os.PathLike) -> list[Path]:
    """The files that belong with `artifact` (the backend's COMPANIONS suffixes), e.g. the IR's .bin."""
    return [Path(artifact).with_suffix(s) for s in getattr(module, "COMPANIONS", ())]


def companions_intact(module, artifact, meta: dict) -> bool:
    """Every companion file exists and matches the sha256 the sidecar recorded for it."""
    want = meta.get("companions") or {}
    paths = companion_paths(module, artifact)
    return (sorted(p.name for p in paths) == sorted(want)
            and all(p.is_file() and sha256_file(p) == want[p.name] for p in paths))


def sidecar_path(artifact: str | os.PathLike) -> Path:
    a = Path(artifact)
    return a.with_name(a.name + ".json")


def read_artifact_sidecar(artifact) -> dict | None:
    """The sidecar as a dict, or None when it is missing, unreadable or not ours."""
    s = sidecar_path(artifact)
    try:
        meta = json.loads(s.read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


@dataclass
class CompileResult:
    artifact: Path
    sidecar: Path
    cache_hit: bool
    key: str
    seconds: float
    note: str = ""
    artifact_sha256: str = ""      # of the file as it was checked or written here (load need not hash it again)


@dataclass(frozen=True)
class _Plan:
    """What one compile builds: the key that names it and the inputs behind the key."""
    key: str
    weights_sha256: str
    profile: dict
    options: dict
    calib: calibration.Calibration | None
    view: str | None


def compile_checkpoint(checkpoint, backend: str, precision: str, device: str | None = None,
                       batch_sizes=(32, 64, 128), out_dir=None, options: dict | None = None,
                       force: bool = False, calibration_size: int = calibration.DEFAULT_SIZE,
                       calibration_seed: int = calibration.DEFAULT_SEED, data_dir=None,
                       train_split=None, calib: calibration.Calibration | None = None,
                       architecture: str | None = None) -> CompileResult:
    """Build (or reuse) the artifact for one checkpoint x backend x precision on this machine.

    int8 draws its calibration sample (`calibration_size` training images, `calibration_seed`) from
    the training split in `data_dir` (`train_split` replaces it in tests), unless a drawn sample is
    given as `calib` (the sweep draws one per checkpoint). `architecture` builds the checkpoint as
    another architecture that shares its weights (fast_tta from fast; see load_checkpoint)."""
    device = backends.check_device(device or backends.default_device())
    module = _saving_backend(backend, precision, device)
    meta = read_sidecar(checkpoint)
    view = architecture if architecture and architecture != meta.architecture else None
    if precision == "int8" and calib is None:
        calib = calibration.calibration_sample(meta, calibration_size, calibration_seed, data_dir, train=train_split)
    shaping = artifact_options(backend, options)
    plan = _plan(module, checkpoint, meta, backend, precision, device, batch_sizes, {**(options or {}), **shaping},
                 calib if precision == "int8" else None, view)
    out = artifact_path(out_dir or default_out_dir(), checkpoint, backend, precision, device, view, shaping)
    t0 = time.perf_counter()
    cached_sha256, note = (None, "rebuilt: --force") if force else _cached(module, out, plan.key)
    if cached_sha256:
        return CompileResult(out, sidecar_path(out), True, plan.key, time.perf_counter() - t0, "cache hit",
                             cached_sha256)
    if force and not (out.exists() or sidecar_path(out).exists()):
        note = ""
    sha = _build(module, checkpoint, out, plan, backend, precision, device, list(batch_sizes), t0)
    return CompileResult(out, sidecar_path(out), False, plan.key, time.perf_counter() - t0, note or "built", sha)


def _saving_backend(backend: str, precision: str, device: str):
    """The backend's module, if it saves artifacts and runs this precision on this device."""
    module = backends.get_backend(backend)
    backends.check_precision(precision)
    if not hasattr(module, "save"):
        raise CifarSpeedError(f"backend {backend!r} has no saved artifact; compile one of: "
                              + ", ".join(b for b in backends.BACKENDS if hasattr(backends.get_backend(b), "save")))
    ok, reason = module.availability(precision, device)
    if not ok:
        raise backends.UnavailableError(f"{backend} {precision} on {device} is unavailable: {reason}")
    return module


def _plan(module, checkpoint, meta, backend, precision, device, batch_sizes, options, calib, view) -> _Plan:
    profile = backends.batch_profile(batch_sizes)
    # A backend whose artifact serves any batch up to its fixed maximum (ONNX, OpenVINO IR) is the
    # same file whatever batch sizes were asked for: `compile` then `bench --batch 1,128` share it.
    key_profile = profile if getattr(module, "PROFILE_SHAPES_ARTIFACT", True) else None
    key_options = {**options, "calibration": calib.describe()} if calib is not None else options
    # The key hashes the weights file itself, not the sidecar's record of it: a sidecar without
    # weights_sha256 (or one left beside swapped weights) must not serve the old artifact.
    weights_sha256 = sha256_file(require_file(paths_for(checkpoint)[0], "checkpoint weights"))
    key = cache_key(weights_sha256=weights_sha256, model=view or meta.architecture, backend=backend,
                    precision=precision, profile=key_profile, device=device_description(device),
                    options=key_options, model_kwargs=meta.model_kwargs or None,
                    code_sha256=builder_code_sha256(module))
    return _Plan(key, weights_sha256, profile, options, calib, view)


def _cached(module, out: Path, key: str) -> tuple[str | None, str]:
    """(the artifact's sha256, "") when the cache entry at `out` is this key's and intact; else
    (None, why it is rebuilt)."""
    old = read_artifact_sidecar(out)
    if old is None:
        exists = out.exists() or sidecar_path(out).exists()
        return None, "rebuilt: previous file was not a cifar-speed artifact" if exists else ""
    if old.get("cache_key") != key:
        return None, "rebuilt: inputs changed"
    sha = sha256_file(out) if out.is_file() else None
    if sha == old.get("artifact_sha256") and companions_intact(module, out, old):
        return sha, ""
    return None, "rebuilt: artifact corrupt (sha256 mismatch)"


def _build(module, checkpoint, out: Path, plan: _Plan, backend, precision, device, batch_sizes, t0) -> str:
    """Write the artifact (and companions), then the sidecar that ties them together; its sha256."""
    model, meta = load_checkpoint(checkpoint, model_name=plan.view)
    companions = companion_paths(module, out)
    calib = plan.calib
    with atomic_path(out, suffix=module.EXTENSION) as tmp:
        # Companions are written (atomically) straight to their final names: only the artifact
        # itself goes through `tmp`, and the sidecar written last ties the set together.
        extra = module.save(model, meta, precision, device, batch_sizes, tmp, profile=plan.profile, **plan.options,
                            **({"calibration": calib} if calib is not None else {}),
                            **({"companions": companions} if companions else {}))
    sha = sha256_file(out)
    atomic_write_json(sidecar_path(out), {
        **extra,
        "format": FORMAT, "cache_key": plan.key, "artifact": out.name, "artifact_sha256": sha,
        **({"companions": {p.name: sha256_file(p) for p in companions}} if companions else {}),
        "backend": backend, "precision": precision, "device": device,
        "device_description": device_description(device), "batch_profile": plan.profile, "options": plan.options,
        "checkpoint": {"path": str(paths_for(checkpoint)[1]), "model": meta.architecture, "view": plan.view,
                       "weights_sha256": plan.weights_sha256,
                       "normalize": {"mean": list(meta.mean), "std": list(meta.std)},
                       "test_accuracy": meta.test_accuracy},
        **({"calibration": calib.describe()} if calib is not None else {}),
        "build_seconds": round(time.perf_counter() - t0, 2),
        "provenance": provenance(),
    })
    return sha


def times_artifact(module, precision: str, device: str, options: dict) -> bool:
    """Does `bench` time this backend's saved artifact for this cell? The module's
    timed_from_artifact(precision, device, options) rule when it has one, else TIMED_FROM_ARTIFACT."""
    rule = getattr(module, "timed_from_artifact", None)
    return bool(rule(precision, device, options)) if rule else getattr(module, "TIMED_FROM_ARTIFACT", False)


def runner_for(checkpoint, backend: str, precision: str, device: str, batch_sizes, *, options: dict | None = None,
               calib: calibration.Calibration | None = None, architecture: str | None = None,
               model=None, meta: dict | None = None, cache_dir=None) -> backends.Runner:
    """The runner `bench` and the pytest-benchmark suite time. A backend that declares
    TIMED_FROM_ARTIFACT runs its artifact: the cache entry `cifar-speed compile` writes (built now if
    missing) loaded back from disk, so the cell is the file a user ships, named with its sha256.
    Others build in memory from `model` (loaded from `checkpoint` when not given)."""
    options = dict(options or {})
    module = backends.get_backend(backend)
    if checkpoint is not None and times_artifact(module, precision, device, options):
        out_dir = Path(cache_dir) / "artifacts" if cache_dir else None
        # Only the options that shape the file are part of its key (`compile` passes none of the
        # run-time ones, e.g. torch.compile's mode, and must hit the same entry); compile fills in
        # their defaults, so `cifar-speed compile` without --option hits the default variant too.
        shaping = artifact_options(backend, options)
        built = compile_checkpoint(checkpoint, backend, precision, device, batch_sizes, out_dir=out_dir,
                                   options=shaping, calib=calib, architecture=architecture)
        running = run_options(backend, options)
        runner, sidecar = load_artifact(built.artifact, device, verified_sha256=built.artifact_sha256,
                                        run_options=running)
        runner.info.update({"artifact": str(built.artifact), "artifact_sha256": sidecar["artifact_sha256"],
                            "cache_hit": built.cache_hit, **({"artifact_options": shaping} if shaping else {}),
                            **({"run_options": running} if running else {}),
                            **({"quantization": sidecar["quantization"]} if "quantization" in sidecar else {})})
        return runner
    if model is None:
        model, meta = load_checkpoint(checkpoint, model_name=architecture)
    if calib is not None:
        options["calibration"] = calib
    return backends.build(backend, model, meta, precision, device, batch_sizes, cache_dir, **options)


def load_artifact(path, device: str | None = None, verified_sha256: str | None = None,
                  run_options: dict | None = None) -> tuple[backends.Runner, dict]:
    """Load a compiled artifact after checking its sidecar and hash; refuse anything else.
    `verified_sha256`: the file's hash as compile_checkpoint just checked or wrote it (not hashed again);
    `run_options`: the backend's RUN_OPTIONS (run_options()), for backends that have any."""
    path = Path(path)
    if path.name.endswith(".json") and path.with_suffix("").exists():
        path = path.with_suffix("")
    if not path.is_file():
        raise CifarSpeedError(f"artifact {path} not found")
    meta = read_artifact_sidecar(path)
    if meta is None:
        raise CifarSpeedError(f"{path} has no cifar-speed artifact sidecar ({sidecar_path(path).name}): "
                              "refusing a foreign artifact; build it with `cifar-speed compile`")
    if (verified_sha256 or sha256_file(path)) != meta.get("artifact_sha256"):
        raise CifarSpeedError(f"{path} does not match the sha256 in its sidecar (corrupt or replaced): "
                              "rebuild it with `cifar-speed compile --force`")
    device = device or meta["device"]
    if device != meta["device"]:
        raise CifarSpeedError(f"{path} was built for {meta['device']}, not {device}")
    module = backends.get_backend(meta["backend"])
    if not companions_intact(module, path, meta):
        raise CifarSpeedError(f"{path}: a file that belongs with it ({', '.join(p.name for p in companion_paths(module, path))}) "
                              "is missing or does not match its sidecar: rebuild it with `cifar-speed compile --force`")
    return module.load(path, meta, device, **(run_options or {})), meta
