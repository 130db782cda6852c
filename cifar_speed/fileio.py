"""Atomic writes: a reader (or a crash) never sees a half-written file.

Everything is written to a temporary file in the destination folder, flushed and fsynced, then
moved into place with os.replace (atomic on POSIX when source and target share a filesystem).

An OS error while writing (no space, no permission, a file where a folder should be) becomes one
CifarSpeedError line naming the path and the cause; the temporary file is removed, so nothing is
half-written. The CLI turns any other OSError into the same kind of line (`os_error_line`).
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from .errors import CifarSpeedError

# atomic_path's temporaries: `.<name>.<random><suffix>.tmp` beside the target.
TMP_PREFIX, TMP_SUFFIX = ".", ".tmp"


def os_error_line(e: OSError, path: str | os.PathLike | None = None, action: str = "") -> str:
    """'cannot write runs/x.json: No space left on device': the path and the cause, one line."""
    where = e.filename if e.filename is not None else path
    cause = e.strerror or type(e).__name__
    text = f"{action + ' ' if action else ''}{where}: {cause}" if where is not None else cause
    if getattr(e, "filename2", None) is not None:
        text += f" (-> {e.filename2})"
    return text.replace("\n", " ")


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed.

    `suffix` lets tools that infer the format from the file name (onnx, torch.export) see the
    right extension on the temporary file.
    """
    path = Path(path)
    tmp_path = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", suffix=suffix + TMP_SUFFIX, dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        # Set after the writer ran: some writers recreate the file, and mkstemp makes it 0600. Every
        # file we write gets the mode a plain open() would give it (umask applies).
        os.chmod(tmp_path, 0o666 & ~_umask())
        with open(tmp_path, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
    except BaseException as e:
        if tmp_path is not None:
            with contextlib.suppress(OSError):
                tmp_path.unlink()
        if isinstance(e, OSError):
            named = e.filename not in (None, str(tmp_path), tmp_path)
            raise CifarSpeedError(os_error_line(e, None if named else path, "" if named else "cannot write")) from None
        raise


def atomic_write_many(files: dict[str | os.PathLike, bytes]) -> None:
    """Write several files as a set (a results JSON and its CSV): every temporary is written and
    fsynced before the first is moved into place, so a full disk or a bad path leaves none of them."""
    with contextlib.ExitStack() as stack:
        for path, data in files.items():
            tmp = stack.enter_context(atomic_path(path))
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                raise CifarSpeedError(os_error_line(e, path, "cannot write")) from None
    # Leaving the stack moves each complete file into place (os.replace), last one first.


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete atomic_path temporaries a killed process left in `folder` (only call this on a folder
    that no other process is writing, e.g. a training run's own work folder)."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for p in folder.iterdir():
            if p.name.startswith(TMP_PREFIX) and p.name.endswith(TMP_SUFFIX) and p.is_file():
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
    return removed


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def require_file(path: str | os.PathLike, what: str) -> Path:
    """`path` if it is a regular file, else one line saying what is there instead."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        raise CifarSpeedError(f"{what} {p} is a folder, not a file")
    if p.exists():
        raise CifarSpeedError(f"{what} {p} is not a regular file")
    raise CifarSpeedError(f"{what} {p} not found")


def check_output_dir(path: str | os.PathLike, flag: str = "--out", shown: str | os.PathLike | None = None) -> Path:
    """Refuse, before any work, an output folder that cannot be created or written: a file where a
    folder must be (the folder itself or any parent), or a folder this user cannot write. Creates
    nothing."""
    p = Path(path)
    shown = shown if shown is not None else p
    probe = p
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise CifarSpeedError(f"{flag} {shown}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise CifarSpeedError(f"{flag} {shown}: {probe} is not writable (permission denied)")
    return p


def check_output_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Like check_output_dir for a file to be written: its folder must be usable, and the path itself
    must not be a folder."""
    p = Path(path)
    if p.is_dir():
        raise CifarSpeedError(f"{flag} {p} is a folder; give a file path")
    check_output_dir(p.parent, flag, shown=p)
    return p
