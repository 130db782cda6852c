"""Where a number came from: machine, processor features, library versions, commit, load.

Every results file and checkpoint sidecar embeds `provenance()` so a figure can be traced back.
"""
from __future__ import annotations

import datetime as _dt
import functools
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def cpu_info() -> dict:
    """CPU model name and the vector / matrix features that decide which precisions are fast."""
    model, vendor, flags = platform.processor() or "unknown", "unknown", set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        if m := re.search(r"^model name\s*:\s*(.+)$", text, re.M):
            model = m.group(1).strip()
        if m := re.search(r"^vendor_id\s*:\s*(.+)$", text, re.M):
            vendor = m.group(1).strip()
        if m := re.search(r"^flags\s*:\s*(.+)$", text, re.M):
            flags = set(m.group(1).split())
    except OSError:
        pass
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile", "avx512_fp16"]
    return {
        "model": model,
        "vendor": vendor,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "features": [f for f in wanted if f in flags],
    }


def cpu_has_fast_bf16() -> bool:
    """True where the CPU has native bf16 arithmetic (AMX or AVX512-BF16): bf16 is then worth it."""
    feats = set(cpu_info()["features"])
    return bool(feats & {"amx_bf16", "avx512_bf16"})


def cpu_bf16_trains_faster() -> bool:
    """Whether training's `precision = "auto"` takes bf16 on this CPU: with AMX, or AVX512-BF16 on an AMD
    CPU. Native bf16 alone is not enough: bench/test_training.py measured every model's step slower in
    bf16 than in fp32 on an Intel Xeon whose AMX the VM hides (oneDNN's AVX512-BF16 kernels), while on
    AMD Zen 4 bf16 was the faster one for all but MobileNetV3 (results/<machine>/train-throughput.json)."""
    info = cpu_info()
    feats = set(info["features"])
    return "amx_bf16" in feats or ("avx512_bf16" in feats and info.get("vendor") == "AuthenticAMD")


def cpu_has_fast_int8() -> bool:
    """True where int8 kernels beat fp32: VNNI/AMX do one instruction per 4-way dot product, AVX2 does
    it in two (vpmaddubsw + vpmaddwd), still twice the lanes of fp32. Which of them ran is the
    cell's `int8_isa`, so a reader never mistakes an AVX2 int8 figure for a VNNI one."""
    return int8_isa() != "none"


def int8_isa() -> str:
    feats = set(cpu_info()["features"])
    for isa, needed in (("amx", "amx_int8"), ("avx512_vnni", "avx512_vnni"), ("avx2", "avx2")):
        if needed in feats:
            return isa
    return "none"


# `git archive` writes the commit into this file (.gitattributes: export-subst), so a tree unpacked
# from an archive (the GPU machine's copy) still says which commit it is.
ARCHIVE_COMMIT = Path(__file__).with_name("ARCHIVE_COMMIT")


def archive_commit(path: Path = ARCHIVE_COMMIT) -> str | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text if re.fullmatch(r"[0-9a-f]{40}", text) else None   # "$Format:%H$" outside an archive


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """HEAD (with -dirty for uncommitted changes to tracked files), or the archive's commit outside git."""
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        if out.returncode != 0:
            return archive_commit()
        dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return archive_commit()


def gpu_info() -> dict | None:
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    info = {"name": props.name, "capability": f"{props.major}.{props.minor}",
            "memory_gib": round(props.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        if out.returncode == 0:
            info["driver"] = out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def versions() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "onnx": _version("onnx"),
        "onnxscript": _version("onnxscript"),
        "onnxruntime": _version("onnxruntime") or _version("onnxruntime-gpu"),
        "torch_tensorrt": _version("torch-tensorrt") or _version("torch_tensorrt"),
        "tensorrt": _version("tensorrt"),
        "openvino": _version("openvino"),
        "nncf": _version("nncf"),
        "cifar_speed": _version("cifar-speed"),
    }


def provenance() -> dict:
    """Everything needed to judge a measurement: who, where, with what, under which load."""
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "machine": machine_slug(),
        "platform": platform.platform(),
        "cpu": cpu_info(),
        "gpu": gpu_info(),
        "torch_threads": torch.get_num_threads(),
        "load_average": list(load) if load else None,
        "versions": versions(),
        "git_commit": git_commit(),
        # The command as typed, so a results file says how to make it again.
        "command": _command(),
    }


def _command() -> str | None:
    if not sys.argv or not sys.argv[0]:
        return None
    program = Path(sys.argv[0]).name
    program = "python -m cifar_speed" if program == "__main__.py" else program
    return shlex.join([program, *sys.argv[1:]])


def machine_slug() -> str:
    """A folder name for results: the GPU name where there is one, else the CPU model and core count."""
    import torch

    return _slug(torch.cuda.get_device_name(0)) if torch.cuda.is_available() else cpu_slug(cpu_info())


def cpu_slug(info: dict) -> str:
    """The folder name of a CPU from its cpu_info() record, this machine's or one a file recorded."""
    return _slug(f"{info['model']}-{info['usable_cpus']}c-{cpu_isa_tier(info['features'])}")


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def cpu_isa_tier(features: list[str]) -> str:
    """The best matrix/vector tier of a CPU's features. Cloud VMs report the same model name ("AMD EPYC")
    for processors with and without AVX-512, whose speeds differ by 2-4x, so results folders need it."""
    feats = set(features)
    for tier, needed in (("amx", "amx_tile"), ("avx512bf16", "avx512_bf16"), ("avx512", "avx512f"), ("avx2", "avx2")):
        if needed in feats:
            return tier
    return "base"


def recorded_machine(prov: dict) -> str:
    """The machine a recorded provenance names, spelled as machine_slug() spells it today. Files written
    before the slug carried the CPU's tier say "amd-epyc-2c" for AMD EPYCs with and without AVX-512;
    the CPU record they kept tells which."""
    cpu = prov.get("cpu") or {}
    if prov.get("gpu") or not {"model", "usable_cpus", "features"} <= cpu.keys():
        return str(prov.get("machine", "?"))
    return cpu_slug(cpu)
