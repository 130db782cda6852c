"""Checkpoints: weights as safetensors plus a JSON sidecar that says what they are and where from.

    results/checkpoints/cnn.safetensors   tensors only (no code can run on load)
    results/checkpoints/cnn.json          model name, normalisation, accuracy, recipe, provenance

Both are written atomically; the sidecar records the sha256 of the weights file so a truncated or
swapped file is refused with one line instead of a traceback.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn

from .errors import CifarSpeedError
from .fileio import atomic_write_bytes, atomic_write_json, require_file
from .models import create_model, list_models, model_arguments
from .schemas import read_json_file, schema_error

FORMAT = "cifar-speed-checkpoint/1"
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "results" / "checkpoints"


def paths_for(path: str | os.PathLike) -> tuple[Path, Path]:
    """(weights, sidecar) for any of `x`, `x.json` or `x.safetensors`."""
    p = Path(path)
    stem = p.with_suffix("") if p.suffix in (".json", ".safetensors") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_checkpoint(path: str | os.PathLike, model: nn.Module, meta: dict, storage_dtype: torch.dtype = torch.float32) -> Path:
    """Write weights then sidecar, each atomically. `meta` must hold at least 'model' and 'normalize'."""
    weights, sidecar = paths_for(path)
    blob = weights_bytes(model, meta["model"], storage_dtype)
    atomic_write_bytes(weights, blob)
    full = {"format": FORMAT, **meta, "storage_dtype": str(storage_dtype).removeprefix("torch."),
            "weights_file": weights.name, "weights_sha256": hashlib.sha256(blob).hexdigest()}
    atomic_write_json(sidecar, full)
    return sidecar


def weights_bytes(model: nn.Module, model_name: str, storage_dtype: torch.dtype = torch.float32) -> bytes:
    """The safetensors file of a model's state, byte-identical for identical weights."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if storage_dtype != torch.float32:
        state = {k: v.to(storage_dtype) if v.is_floating_point() else v for k, v in state.items()}
    # Serialised in memory, then written by atomic_write_bytes: a full disk is then an OSError with
    # the path (safetensors' own writer reports it as its own error type).
    return _sorted_metadata(save(state, metadata={"format": FORMAT, "model": model_name}))


def _sorted_metadata(blob: bytes) -> bytes:
    """safetensors keeps `__metadata__` in a hash map, so its key order (and the file's sha256) changes
    from run to run; rewrite the header with that map sorted. Tensor entries keep their order."""
    n = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + n])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-(8 + len(text)) % 8)  # safetensors aligns the data section to 8 bytes
    return len(text).to_bytes(8, "little") + text + blob[8 + n:]


_HEX64 = "^[0-9a-f]{64}$"
_TRIPLE = {"type": "array", "minItems": 3, "maxItems": 3}


def sidecar_schema() -> dict:
    """What a checkpoint sidecar must look like before anything reads it (JSON Schema)."""
    return {
        "type": "object",
        "required": ["format", "model", "normalize"],
        "properties": {
            "format": {"const": FORMAT},
            "model": {"enum": list_models()},
            "name": {"type": "string"},
            "normalize": {"type": "object", "required": ["mean", "std"], "properties": {
                "mean": {**_TRIPLE, "items": {"type": "number", "minimum": -10, "maximum": 10}},
                "std": {**_TRIPLE, "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 10}}}},
            "model_kwargs": {"type": "object"},
            "weights_sha256": {"type": "string", "pattern": _HEX64},
            "weights_file": {"type": "string"},
            "storage_dtype": {"enum": ["float32", "float16", "bfloat16"]},
            "test_accuracy": {"type": "number", "minimum": 0, "maximum": 1},
            "test_accuracy_tta": {"type": "number", "minimum": 0, "maximum": 1},
            "train_seconds": {"type": "number", "minimum": 0},
        },
    }


class Checkpoint(dict):
    """A checkpoint's sidecar, validated (read_sidecar), with typed accessors for what the stages
    after training read: the architecture, the name, the normalisation, the weights' hash.

    It stays a mapping because the sidecar is an open record that is written back whole (provenance,
    recipe, history, shipping notes); code that flows a checkpoint between stages reads the
    properties, not string keys."""

    @property
    def architecture(self) -> str:
        """The registry name the weights load into."""
        return self["model"]

    @property
    def name(self) -> str | None:
        return self.get("name")

    @property
    def mean(self) -> tuple[float, float, float]:
        return tuple(self["normalize"]["mean"])

    @property
    def std(self) -> tuple[float, float, float]:
        return tuple(self["normalize"]["std"])

    @property
    def weights_sha256(self) -> str | None:
        return self.get("weights_sha256")

    @property
    def model_kwargs(self) -> dict:
        return dict(self.get("model_kwargs") or {})

    @property
    def test_accuracy(self) -> float | None:
        return self.get("test_accuracy")

    def normalize_images(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 [N,3,H,W] images as this model expects them: float, (x/255 - mean) / std."""
        from .data import normalize

        return normalize(images, self.mean, self.std)


def read_sidecar(path: str | os.PathLike) -> Checkpoint:
    if Path(path).is_dir():
        raise CifarSpeedError(f"{path} is a folder, not a checkpoint (give its .json sidecar or .safetensors file)")
    weights, sidecar = paths_for(path)
    require_file(sidecar, "checkpoint sidecar")
    meta = read_json_file(sidecar, "checkpoint sidecar")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CifarSpeedError(f"{sidecar} is not a cifar-speed checkpoint sidecar (format {FORMAT})")
    if not isinstance(meta.get("model"), str) or meta["model"] not in list_models():
        raise CifarSpeedError(f"{sidecar} names unknown model {str(meta.get('model'))[:40]!r}; known: {', '.join(list_models())}")
    problem = schema_error(meta, sidecar_schema())
    if problem:
        raise CifarSpeedError(f"{sidecar} is not a valid checkpoint sidecar: {problem}")
    check_model_kwargs(meta["model"], meta.get("model_kwargs", {}), sidecar)
    return Checkpoint(meta)


# Construction arguments a sidecar may set: numbers and flags only, bounded. A string argument can be
# a file path (mobilenetv3_small's imagenet_weights), and a path read from a file is never followed.
_MAX_KWARG_INT = 10_000


def check_model_kwargs(model: str, kwargs: dict, sidecar) -> dict:
    declared = model_arguments(model)
    for key, value in kwargs.items():
        p = declared.get(key)
        if p is None or p.kind not in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            raise CifarSpeedError(f"{sidecar}: model_kwargs sets {key[:40]!r}, which {model!r} does not take "
                                  f"(it takes {', '.join(declared) or 'none'})")
        if not _allowed_kwarg(p.default, value):
            raise CifarSpeedError(f"{sidecar}: model_kwargs {key} = {str(value)[:40]!r} refused: a sidecar may set only "
                                  f"numeric or true/false arguments of the default's type (integers 1..{_MAX_KWARG_INT})")
    return kwargs


def _allowed_kwarg(default, value) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and 1 <= value <= _MAX_KWARG_INT
    if isinstance(default, float):
        return isinstance(value, (int, float)) and abs(value) <= _MAX_KWARG_INT
    return False  # strings (paths), None, anything else


# Architectures a checkpoint of another loads as, their weights being the same: fast_tta is fast with
# test-time augmentation (architecture -> the one it is also built as).
SHARED_WEIGHTS = {"fast": "fast_tta"}


def load_checkpoint(path: str | os.PathLike, model_name: str | None = None, device: str = "cpu",
                    verify_hash: bool = True) -> tuple[nn.Module, Checkpoint]:
    """Build the model the sidecar names and load its weights (fp32, eval mode) after checking them.

    `model_name` forces the architecture: loading a `cnn` checkpoint as `fast` is refused. The
    `fast` / `fast_tta` pair shares weights, so either name loads a checkpoint of the other.
    """
    weights, sidecar = paths_for(path)
    meta = read_sidecar(path)
    name = model_name or meta.architecture
    if name != meta.architecture and {name, meta.architecture} not in [{a, b} for a, b in SHARED_WEIGHTS.items()]:
        raise CifarSpeedError(f"{sidecar} is a {meta.architecture!r} checkpoint, not {name!r}")
    require_file(weights, "checkpoint weights")
    blob = weights.read_bytes()  # hashed and parsed from the same bytes: no swap in between
    if verify_hash and meta.weights_sha256 and hashlib.sha256(blob).hexdigest() != meta.weights_sha256:
        raise CifarSpeedError(f"{weights} does not match the sha256 in its sidecar (corrupt or replaced)")
    try:
        state = load(blob)
    except (SafetensorError, ValueError, OSError) as e:
        raise CifarSpeedError(f"cannot read {weights}: {' '.join(str(e).split())[:120]}") from None
    model = create_model(name, **meta.model_kwargs)
    expected = model.state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise CifarSpeedError(f"{weights} does not hold {name!r} weights (tensor names or shapes differ)")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model.to(device).eval(), meta


def trained_weights_sha256(meta) -> str | None:
    """The sha256 of a checkpoint's weights as training wrote them: a shipped sidecar stores a copy
    (fp16 where that keeps its accuracy) and names its source in shipping.source_weights_sha256."""
    return (meta.get("shipping") or {}).get("source_weights_sha256") or meta.get("weights_sha256")


def shipped_checkpoints(directory: str | os.PathLike | None = None) -> list[Path]:
    """Sidecars of the checkpoints shipped in results/checkpoints (what `bench` uses by default):
    the current folder's, then the source checkout's (locate.shipped)."""
    if directory is None:
        from .locate import shipped

        return sorted(shipped().values(), key=lambda p: p.stem)
    return sorted(p for p in Path(directory).glob("*.json") if (p.with_suffix(".safetensors")).is_file())


def shipped_sidecars() -> dict[str, dict]:
    """checkpoint name -> its shipped sidecar's JSON (shipped_checkpoints), read as data only."""
    return {p.stem: read_json_file(p, "checkpoint sidecar") for p in shipped_checkpoints()}
