"""Crash-consistent resume points: each epoch's files are committed together or not at all.

    <out>/<name>.work/epoch-00003/weights.safetensors   the model
    <out>/<name>.work/epoch-00003/state.pt              optimiser, scheduler, RNG, progress (tensors + plain data)
    <out>/<name>.work/epoch-00003/manifest.json         written last: every file's sha256 and size

An epoch is staged in a hidden temporary folder (files, then the manifest, each fsynced) and becomes
visible with one rename of that folder, so a kill at any moment leaves either the previous epoch or
the new one, never a mix (weights of epoch 2 with the optimiser of epoch 1 would train a different
model without a word). Resuming takes the newest epoch whose manifest checks out and falls back to
an older one, saying so; leftovers of a killed save are removed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import CifarSpeedError
from ..fileio import os_error_line, remove_stale_temporaries

FORMAT = "cifar-speed-resume/1"
MANIFEST = "manifest.json"
_PREFIX, _STAGING_SUFFIX = "epoch-", ".tmp"
KEEP = 2  # the newest epoch and the one before it, to fall back to if the newest is later damaged
# Files of the layout before manifests (three separate renames, not verifiable as a set).
_LEGACY = ("last.json", "last.safetensors", "state.pt")


@dataclass
class ResumePoint:
    epoch: int
    folder: Path
    files: dict[str, bytes]
    manifest: dict


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once its folder's entry is on disk (POSIX); not possible on Windows.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_epoch(work: Path, epoch: int, files: dict[str, bytes], extra: dict | None = None) -> Path:
    """Commit one epoch's files as a set; returns its folder. Only the newest KEEP epochs are kept."""
    work = Path(work)
    staging = None
    created = not work.exists()
    try:
        work.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{_PREFIX}{epoch:05d}.", suffix=_STAGING_SUFFIX, dir=work))
        for name, data in files.items():
            _write_synced(staging / name, data)
        manifest = {"format": FORMAT, "epoch": epoch, **(extra or {}),
                    "files": {n: {"sha256": hashlib.sha256(d).hexdigest(), "bytes": len(d)} for n, d in files.items()}}
        _write_synced(staging / MANIFEST, json.dumps(manifest, indent=1).encode())
        _fsync_dir(staging)
        final = work / f"{_PREFIX}{epoch:05d}"
        if final.exists():  # a corrupt or superseded copy of this epoch (resume fell back past it)
            shutil.rmtree(final)
        os.replace(staging, final)  # the commit
        staging = None
        _fsync_dir(work)
    except OSError as e:
        raise CifarSpeedError(f"cannot save the resume point of epoch {epoch}: "
                              f"{os_error_line(e, work)}") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
            if created and work.is_dir() and not any(work.iterdir()):
                work.rmdir()   # a first save that failed leaves no empty <name>.work behind
    for old in _epoch_folders(work)[KEEP:]:  # newest first; the one before stays as a fallback
        shutil.rmtree(old, ignore_errors=True)
    return final


def _epoch_folders(work: Path) -> list[Path]:
    """Committed epoch folders, newest first."""
    if not work.is_dir():
        return []
    found = [p for p in work.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and p.name[len(_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]), reverse=True)


def remove_stale(work: Path) -> None:
    """Delete what a killed save left behind: staging folders and atomic-write temporaries."""
    work = Path(work)
    if not work.is_dir():
        return
    for p in work.iterdir():
        if p.is_dir() and p.name.startswith(f".{_PREFIX}") and p.name.endswith(_STAGING_SUFFIX):
            shutil.rmtree(p, ignore_errors=True)
    remove_stale_temporaries(work)


def _verify(folder: Path) -> ResumePoint:
    """The folder's files if its manifest is ours and every file matches it; else ValueError(why)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_bytes())
    except (OSError, ValueError) as e:
        raise ValueError(f"no readable manifest ({type(e).__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise ValueError("the manifest is not a cifar-speed resume manifest")
    epoch = manifest.get("epoch")
    if not isinstance(epoch, int) or isinstance(epoch, bool) or folder.name != f"{_PREFIX}{epoch:05d}":
        raise ValueError("the manifest names another epoch")
    files = {}
    for name, rec in manifest["files"].items():
        if not isinstance(rec, dict) or "/" in name or name.startswith(".") or name == MANIFEST:
            raise ValueError(f"the manifest lists {name!r} oddly")
        try:
            data = (folder / name).read_bytes()
        except OSError as e:
            raise ValueError(f"{name}: {e.strerror}") from None
        if len(data) != rec.get("bytes") or hashlib.sha256(data).hexdigest() != rec.get("sha256"):
            raise ValueError(f"{name} does not match its sha256 in the manifest")
        files[name] = data
    return ResumePoint(epoch, folder, files, manifest)


def latest(work: Path, say: Callable[[str], None] = print) -> ResumePoint | None:
    """The newest epoch whose files check out, or None when there is none. A run saved by a version
    without manifests is refused: its three files cannot be checked as a set."""
    work = Path(work)
    for folder in _epoch_folders(work):
        try:
            return _verify(folder)
        except ValueError as why:
            say(f"resume: {folder} is incomplete or corrupt ({why}); falling back to the previous epoch")
    if any((work / f).exists() for f in _LEGACY):
        raise CifarSpeedError(f"cannot resume from {work}: it was saved without a manifest by an older cifar-speed, "
                              "so its files cannot be checked as a set; delete it or train without --resume")
    return None
