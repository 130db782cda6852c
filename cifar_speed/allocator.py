"""What the process's C allocator does with freed memory while cells are timed (`bench --allocator`).

glibc's malloc serves a block above its mmap threshold with fresh pages from the kernel and hands
them back when the block is freed; the threshold itself moves at run time with what the process
has allocated and freed so far. An eager PyTorch forward (and Inductor's generated code) allocates
its activations anew on every call, so a large batch can fault in tens of thousands of fresh pages
per call, the kernel zeroing each one, and how many depends on the threshold's state in that
process: a state that lasts as long as the process and moves eager cells from one process to the
next (results/intel-r-xeon-r-processor-2c-amx/RUNS.md, session 13). ONNX Runtime and OpenVINO keep
arenas of their own and never pay it, so it also tilts every speed-up over eager.

  retain  (default) freed memory stays in the process: no mmap for large blocks, no trimming of the
          heap, so after the warm-up a call reuses pages it already has (what jemalloc and tcmalloc
          do, and what PyTorch's CPU performance guide recommends preloading them for)
  system  the C library as a plain process gets it

`retain` is set with glibc's mallopt at the start of the run; where the C library is not glibc it
cannot be, and the results file says so (`harness.allocator`).
"""
from __future__ import annotations

import ctypes
import platform

ALLOCATORS = ("retain", "system")
DEFAULT = "retain"

# glibc's mallopt parameters (malloc.h) and the values `retain` gives them. mallopt takes a C int.
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4
_RETAIN = ((_M_MMAP_MAX, 0),                  # never mmap a block: every block comes from the heap ...
           (_M_TRIM_THRESHOLD, 2**31 - 1),    # ... which is never given back to the kernel ...
           (_M_TOP_PAD, 64 * 2**20))          # ... and grows 64 MiB at a time

_applied: str | None = None   # what this process was set to: mallopt's changes cannot be undone


def configure(kind: str = DEFAULT) -> dict:
    """Set this process's allocator behaviour; the record for the results file."""
    global _applied
    if kind not in ALLOCATORS:
        raise ValueError(f"allocator must be one of {', '.join(ALLOCATORS)}, got {kind!r}")
    if kind == "system":
        if _applied == "retain":
            return {"allocator": "retain", "requested": "system", "applied": False,
                    "how": "this process was set to retain earlier (mallopt cannot be undone)"}
        return {"allocator": "system", "requested": "system", "applied": True, "how": "the C library's defaults"}
    libc = _glibc()
    if libc is None:
        return {"allocator": "system", "requested": "retain", "applied": False,
                "how": f"retain needs glibc's mallopt; the C library here is {platform.libc_ver()[0] or 'not glibc'}"}
    if not all(libc.mallopt(param, value) == 1 for param, value in _RETAIN):
        return {"allocator": "system", "requested": "retain", "applied": False, "how": "glibc's mallopt refused"}
    _applied = "retain"
    return {"allocator": "retain", "requested": "retain", "applied": True,
            "how": "glibc mallopt: M_MMAP_MAX 0, M_TRIM_THRESHOLD 2**31-1, M_TOP_PAD 64 MiB"}


def _glibc():
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None
