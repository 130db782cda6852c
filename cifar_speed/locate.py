"""Where things are: checkpoints by name or path, and the results folder (no torch import here).

Shipped checkpoints live in results/checkpoints/. They are looked up under the current folder first,
then in the source checkout this package runs from (an editable install). A package installed
without -e has no results/ of its own, so results are written under the current folder, never into
site-packages.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import CifarSpeedError

RESULTS = Path("results")
CHECKPOINTS = RESULTS / "checkpoints"
_CHECKOUT = Path(__file__).resolve().parent.parent


def _existing_under_cwd_and_checkout(relative: Path) -> list[Path]:
    """`relative` under the current folder, then under the checkout, where it is a folder (once if both are one)."""
    found: list[Path] = []
    for base in (Path.cwd(), _CHECKOUT):
        d = (base / relative).resolve()
        if d.is_dir() and d not in found:
            found.append(d)
    return found


def shipped_dirs() -> list[Path]:
    """The results/checkpoints folders that exist: under the current folder, then the checkout's."""
    return _existing_under_cwd_and_checkout(CHECKPOINTS)


def shipped() -> dict[str, Path]:
    """name -> sidecar of every shipped checkpoint (sidecar and weights both present); the current
    folder's copy wins over the checkout's."""
    out: dict[str, Path] = {}
    for d in shipped_dirs():
        for sidecar in sorted(d.glob("*.json")):
            if sidecar.with_suffix(".safetensors").is_file():
                out.setdefault(sidecar.stem, sidecar)
    return out


def resolve_checkpoint(ref: str | os.PathLike) -> Path:
    """A checkpoint given as a path (`x`, `x.json`, `x.safetensors`) or as a shipped name (`cnn_tuned`).

    A path that exists wins. Anything that looks like a path (a folder part or a suffix) is returned
    as given so the loader reports what is wrong with it; a bare word that names no file and no
    shipped checkpoint is one error listing the names that exist.
    """
    p = Path(ref)
    if p.exists() or p.with_name(p.name + ".json").is_file() or p.with_name(p.name + ".safetensors").is_file():
        return p
    if len(p.parts) > 1 or p.suffix:
        return p
    names = shipped()
    if p.name in names:
        return names[p.name]
    listed = ", ".join(names) or "none found in ./results/checkpoints"
    raise CifarSpeedError(f"checkpoint {str(ref)!r}: no such file and no shipped checkpoint of that name "
                          f"(shipped: {listed}; `cifar-speed models` lists them)")


# Names that load a shipped checkpoint as another architecture with the same weights: `fast_tta` is
# `fast` with airbench's level-2 test-time augmentation (6 forwards per image), `fast_jpeg_tta` the
# same for the JPEG-robust `fast_jpeg`.
VIEWS = {"fast_tta": ("fast", "fast_tta"), "fast_jpeg_tta": ("fast_jpeg", "fast_tta")}


@dataclass(frozen=True)
class ModelRef:
    """A checkpoint and the architecture to load it as (None: the one its sidecar names); `view`: the
    row name where it is not the architecture's (fast_jpeg_tta, built as fast_tta)."""
    path: Path
    architecture: str | None = None
    view: str | None = None

    @property
    def name(self) -> str:
        """The row name in results: the view's name, else the checkpoint file's stem."""
        return self.view or self.architecture or Path(self.path).with_suffix("").name

    def __str__(self) -> str:
        return f"{self.path} as {self.architecture}" if self.architecture else str(self.path)


def resolve_model(ref: str | os.PathLike) -> ModelRef:
    """resolve_checkpoint, plus the view names (VIEWS) a sweep can time: `fast_tta` is the `fast`
    checkpoint built as fast_tta."""
    p = Path(ref)
    if p.name in VIEWS and len(p.parts) == 1 and not p.suffix and not p.exists():
        base, architecture = VIEWS[p.name]
        return ModelRef(resolve_checkpoint(base), architecture, p.name if p.name != architecture else None)
    return ModelRef(resolve_checkpoint(ref))


def results_dir(machine: str) -> Path:
    """./results/<machine>/ under the current folder: where bench writes unless --out says otherwise."""
    return Path.cwd() / RESULTS / machine


def results_roots() -> list[Path]:
    """The results folders that exist: ./results (where bench writes), then the checkout's (the committed
    measurements); `recommend` reads both by default."""
    return _existing_under_cwd_and_checkout(RESULTS)
