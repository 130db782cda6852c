"""Checkpoints: weights as safetensors plus a JSON sidecar that says what they are and where from.

    results/checkpoints/cnn.safetensors   tensors only (no code can run on load)
    results/checkpoints/cnn.json          model name, normalisation, accuracy, recipe, provenance

Both are written atomically; the sidecar records the sha256 of the weights file so a truncated or
swapped file is refused with one line instead of a traceback.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from .errors import CifarSpeedError
from .fileio import atomic_path, atomic_write_json, sha256_file
from .models import create_model, list_models

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
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if storage_dtype != torch.float32:
        state = {k: v.to(storage_dtype) if v.is_floating_point() else v for k, v in state.items()}
    with atomic_path(weights, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT, "model": meta["model"]})
    full = {"format": FORMAT, **meta, "storage_dtype": str(storage_dtype).removeprefix("torch."),
            "weights_file": weights.name, "weights_sha256": sha256_file(weights)}
    atomic_write_json(sidecar, full)
    return sidecar


def read_sidecar(path: str | os.PathLike) -> dict:
    weights, sidecar = paths_for(path)
    if not sidecar.is_file():
        raise CifarSpeedError(f"checkpoint sidecar {sidecar} not found")
    try:
        meta = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CifarSpeedError(f"checkpoint sidecar {sidecar} is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CifarSpeedError(f"{sidecar} is not a cifar-speed checkpoint sidecar (format {FORMAT})")
    if meta.get("model") not in list_models():
        raise CifarSpeedError(f"{sidecar} names unknown model {meta.get('model')!r}; known: {', '.join(list_models())}")
    return meta


def load_checkpoint(path: str | os.PathLike, model_name: str | None = None, device: str = "cpu",
                    verify_hash: bool = True) -> tuple[nn.Module, dict]:
    """Build the model the sidecar names and load its weights (fp32, eval mode) after checking them.

    `model_name` forces the architecture: loading a `cnn` checkpoint as `fast` is refused. The
    `fast` / `fast_tta` pair shares weights, so either name loads a checkpoint of the other.
    """
    weights, sidecar = paths_for(path)
    meta = read_sidecar(path)
    name = model_name or meta["model"]
    if name != meta["model"] and {name, meta["model"]} != {"fast", "fast_tta"}:
        raise CifarSpeedError(f"{sidecar} is a {meta['model']!r} checkpoint, not {name!r}")
    if not weights.is_file():
        raise CifarSpeedError(f"checkpoint weights {weights} not found")
    if verify_hash and meta.get("weights_sha256") and sha256_file(weights) != meta["weights_sha256"]:
        raise CifarSpeedError(f"{weights} does not match the sha256 in its sidecar (corrupt or replaced)")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as e:
        raise CifarSpeedError(f"cannot read {weights}: {e}") from None
    model = create_model(name, **meta.get("model_kwargs", {}))
    expected = model.state_dict()
    if set(state) != set(expected) or any(state[k].shape != expected[k].shape for k in expected):
        raise CifarSpeedError(f"{weights} does not hold {name!r} weights (tensor names or shapes differ)")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    return model.to(device).eval(), meta


def shipped_checkpoints(directory: str | os.PathLike | None = None) -> list[Path]:
    """Sidecars of the checkpoints shipped in results/checkpoints (what `bench` uses by default)."""
    d = Path(directory) if directory else SHIPPED_DIR
    return sorted(p for p in d.glob("*.json") if (p.with_suffix(".safetensors")).is_file())
