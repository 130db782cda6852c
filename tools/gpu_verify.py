#!/usr/bin/env python3
"""GPU verification run: doctor, the GPU-marked tests, the sweep over the shipped checkpoints.

    python3 tools/gpu_verify.py                     # from the repository root (or anywhere)
    python3 tools/gpu_verify.py --prepare-carry .gpucarry   # here: wheels and the test batch, < 64 MiB
    python3 tools/gpu_verify.py --carry .gpucarry --results-root /tmp/res --deadline-s 480 \
        --pack $OUT/gpu-verify.tar.gz                # on a lent machine (it returns at most 8 files)

On a CUDA machine it writes everything under results/<gpu-name>/ (gpu-name as `machine_slug()` spells
it, e.g. nvidia-h200):

    doctor.txt, doctor.json       `cifar-speed doctor` (what runs here and why not)
    pytest-gpu.txt, .xml          `pytest -m gpu` (log and JUnit report)
    sweep-*.json, .csv, .txt      one `cifar-speed bench --device cuda` per entry of SWEEPS (or --sweep):
                                  eager for the candidate models, then torch.compile with CUDA graphs
                                  (reduce-overhead) and without (default), per model so that a step
                                  stopped by the deadline loses one model only
    timer-crosscheck.json         the harness against torch.utils.benchmark and triton's do_bench
    triton-*.txt                  Triton export checks (onnxrt always; trt where TensorRT is installed)
    gpu-verify.json               every step: command, status, seconds, what was skipped and why, provenance

Steps run in order of importance under one deadline (--deadline-s): each gets what is left of it, and
a step that would start with too little time is recorded as skipped, so the summary is always written.

Without a GPU it still runs (CPU-only mode): it prints doctor, runs the GPU-marked tests (which skip),
skips the CUDA sweep and the TensorRT export, says so, and writes its log under runs/gpu-verify/<machine>/
instead of results/ (nothing to commit). Exit status 0 when every step that ran passed; 1 otherwise.

Needs only what the GPU machine has (python, torch, numpy, rich, onnx, onnxruntime, pytest); uses more
where installed (onnxscript for ONNX export, torch-tensorrt / tensorrt, onnxruntime-gpu, tritonclient).
The package is imported from the checkout through PYTHONPATH: nothing is installed, except that
missing pure wheels (e.g. safetensors, onnxscript, onnx-ir) can be brought along with --wheels DIR; they
go to a private folder on PYTHONPATH (pip --no-index --target), never into the system environment.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REQUIRED = {"torch": "torch", "numpy": "numpy", "safetensors": "safetensors", "rich": "rich", "jsonschema": "jsonschema"}
# What the lent GPU machines lack (their image has torch, numpy, safetensors, rich, onnx, onnxscript):
# jsonschema and the packages it needs, as wheels for their Python 3.12.
CARRY_WHEELS = ["jsonschema", "jsonschema-specifications", "referencing", "rpds-py"]
OPTIONAL = {"onnx": "onnx", "onnxruntime": "onnxruntime", "onnxscript": "onnxscript", "onnx_ir": "onnx-ir",
            "pytest": "pytest", "tensorrt": "tensorrt", "torch_tensorrt": "torch-tensorrt", "tritonclient": "tritonclient"}


# The CUDA sweep, one `bench` per entry (name -> arguments), in order of importance. The models: the
# candidates of each accuracy bar (fast_tta 94 %, fast 93 %, frontier_m and mobilenetv3_small 88-89 %,
# frontier_s_plain and cnn_tuned 84 %); torch.compile only for the bar winners, because every
# (precision, batch size) is a graph of its own to compile.
# The GPU's trials agree to well under the CPU's 1.5 % target within the first rounds (cuda events),
# so --max-trials only bounds a noisy cell; 60 keeps a sweep inside a lent machine's minutes.
CUDA_COMMON = "--device cuda --precision fp32,fp16,bf16 --batch 1,32,64,128 --mode both --max-trials 60 --max-warmup 30"
SWEEPS = {
    "sweep-eager": "fast fast_tta frontier_l frontier_m frontier_s_plain mobilenetv3_small cnn_tuned --backend eager",
    "sweep-compile-ro-fast_tta": "fast_tta --backend compile --compile-mode reduce-overhead --dawnbench",
    "sweep-compile-ro-fast": "fast --backend compile --compile-mode reduce-overhead --dawnbench",
    "sweep-compile-ro-frontier_m": "frontier_m --backend compile --compile-mode reduce-overhead --dawnbench",
    "sweep-compile-ro-frontier_l": "frontier_l --backend compile --compile-mode reduce-overhead --dawnbench",
    "sweep-compile-fast": "fast --backend compile --dawnbench",
    "sweep-compile-frontier_m": "frontier_m --backend compile",
}
# The timer cross-check runs after this many sweeps (the rest follow it). The GPU-marked tests run
# before any sweep: on the first H200 run they came last and the deadline left them out.
SWEEPS_BEFORE_CROSSCHECK = 4


def log(msg: str = "") -> None:
    print(msg, flush=True)


class Verify:
    RESERVE_S = 15.0   # kept back from the deadline for the summary and the caller's packing

    def __init__(self, args):
        self.args = args
        self.deadline = time.monotonic() + args.deadline_s if args.deadline_s else None
        self.env = dict(os.environ)
        self.steps: list[dict] = []
        self.out: Path | None = None

    # -- environment ------------------------------------------------------------------------------------

    def python_path(self, extra: str | None = None) -> None:
        parts = [p for p in (extra, str(REPO), self.env.get("PYTHONPATH")) if p]
        self.env["PYTHONPATH"] = os.pathsep.join(parts)
        sys.path[:0] = [p for p in (extra, str(REPO)) if p]

    def missing(self, modules) -> list[str]:
        return [m for m in modules if importlib.util.find_spec(m) is None]

    def bring_wheels(self) -> None:
        """Install the carried wheels into a private folder on PYTHONPATH (no index, no system changes)
        when a package this script needs is missing here."""
        missing = self.missing(list(REQUIRED) + ["onnxscript", "onnx_ir"])
        if not missing:
            return
        wheels = self.args.wheels or (str(Path(self.args.carry) / "wheels") if self.args.carry else None)
        if not wheels:
            log(f"note: not installed here: {', '.join(missing)} (bring wheels with --wheels DIR to add them)")
            return
        target = Path(tempfile.mkdtemp(prefix="cifar-speed-gpu-verify-site-"))
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--target", str(target), *map(str, sorted(Path(wheels).glob("*.whl")))]
        log("$ " + shlex.join(cmd))
        rc = subprocess.call(cmd)
        if rc != 0:
            log(f"note: pip could not install the wheels in {wheels} (exit {rc}); continuing without them")
        self.python_path(str(target))
        importlib.invalidate_caches()

    # -- steps --------------------------------------------------------------------------------------------

    def record(self, name: str, status: str, **extra) -> dict:
        step = {"step": name, "status": status, **extra}
        self.steps.append(step)
        line = f"[{status}] {name}"
        if extra.get("reason"):
            line += f": {extra['reason']}"
        log(line)
        return step

    def time_left(self) -> float:
        return self.deadline - time.monotonic() if self.deadline else float("inf")

    def run(self, name: str, cmd: list[str], log_name: str | None, ok_codes=(0,), timeout=None, echo=True,
            min_s: float = 20.0) -> dict:
        """Run one step; its timeout is the smaller of `timeout` and what is left before the deadline
        (less a reserve for the summary). With under `min_s` left, the step is skipped, not started."""
        left = self.time_left() - self.RESERVE_S
        if left < min_s:
            return self.record(name, "skipped", reason=f"out of time: {max(0, left):.0f} s left before the deadline",
                               command=cmd)
        timeout = min(timeout or left, left)
        log(f"\n== {name}\n$ {shlex.join(cmd)}")
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=timeout)
            output, rc = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as e:
            output = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            rc = None
            timeout = round(timeout)
        seconds = round(time.perf_counter() - t0, 1)
        if echo or rc not in ok_codes:
            sys.stdout.write(output)
        if log_name and self.out:
            (self.out / log_name).write_text(output)
        if rc is None:
            return self.record(name, "failed", reason=f"timed out after {timeout} s", command=cmd, seconds=seconds)
        status = "ok" if rc in ok_codes else "failed"
        return self.record(name, status, command=cmd, returncode=rc, seconds=seconds,
                           **({"reason": f"exit status {rc}"} if status == "failed" else {}))

    def data_dir(self) -> str | None:
        a = self.args
        if a.carry:
            return self.unpack_data(Path(a.carry) / "data")
        data_dir = a.data_dir or os.environ.get("CIFAR_SPEED_DATA")
        if not data_dir and (REPO.parent / "shared" / "cifar10").is_dir():
            data_dir = str(REPO.parent / "shared" / "cifar10")  # where the dev / CI machines keep it
        return data_dir

    def unpack_data(self, folder: Path) -> str:
        """The carried test batch (xz-compressed, to fit the 64 MiB a device call may carry) unpacked."""
        import lzma
        import shutil

        dest = Path(tempfile.mkdtemp(prefix="cifar-speed-data-")) / "cifar-10-batches-py"
        dest.mkdir()
        for f in folder.iterdir():
            if f.suffix == ".xz":
                with lzma.open(f) as src, open(dest / f.stem, "wb") as out:
                    shutil.copyfileobj(src, out)
            else:
                shutil.copy2(f, dest / f.name)
        return str(dest.parent)

    def sweeps(self, gpu: bool) -> list[tuple[str, str]]:
        a = self.args
        if a.sweep:
            return [tuple(s.split("=", 1)) if "=" in s else (f"sweep-{i}", s) for i, s in enumerate(a.sweep, 1)]
        if gpu:
            return [(name, f"{extra} {CUDA_COMMON}") for name, extra in SWEEPS.items()]
        if a.cpu_smoke:   # a smoke test of this script's plumbing, not a measurement
            return [("sweep-cpu-smoke", "frontier_s_plain --device cpu --backend eager --precision fp32 --batch 32 "
                                        "--trials 2 --min-time 0.05 --min-reps 3 --max-warmup 1")]
        self.record("cifar-speed bench (sweeps)", "skipped",
                    reason="no CUDA GPU visible to torch (CPU-only mode; --cpu-smoke runs a tiny CPU sweep instead)")
        return []

    def sweep(self, name: str, extra: str, data_dir: str | None) -> dict:
        cmd = [sys.executable, "-m", "cifar_speed", "bench", *shlex.split(extra),
               "--out", str(self.out / f"{name}.json"), "--no-progress"]
        if data_dir:
            cmd += ["--data-dir", data_dir]
        cmd += shlex.split(self.args.bench_args or "")
        return self.run(name, cmd, f"{name}.txt", timeout=self.args.bench_timeout, min_s=60.0)

    def tests(self, have_pytest: bool, gpu: bool) -> None:
        """The GPU-marked tests (they skip themselves without CUDA; exit 5 = none collected)."""
        if not have_pytest:
            self.record("pytest -m gpu", "skipped", reason="pytest is not installed")
            return
        py = sys.executable
        cmd = [py, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
               f"--junitxml={self.out / 'pytest-gpu.xml'}", "tests"]
        step = self.run("pytest -m gpu", cmd, "pytest-gpu.txt", ok_codes=(0, 5), timeout=150)
        if not gpu:
            step["note"] = "no CUDA GPU: the GPU-marked tests were collected and skipped"

    def main(self) -> int:
        a = self.args
        self.python_path()
        self.bring_wheels()
        if missing := self.missing(REQUIRED):
            log(f"gpu_verify: error: required packages missing: {', '.join(missing)} "
                "(install them, or bring their wheels with --wheels DIR)")
            return 2
        import torch

        from cifar_speed.provenance import machine_slug, provenance

        gpu = torch.cuda.is_available()
        slug = machine_slug()
        root = Path(a.results_root) if a.results_root else (REPO / "results" if gpu else REPO / "runs" / "gpu-verify")
        self.out = root / slug
        self.out.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        log(f"gpu_verify: {'CUDA GPU ' + torch.cuda.get_device_name(0) if gpu else 'no CUDA GPU: CPU-only mode'}; "
            f"torch {torch.__version__}; writing to {self.out}")
        have = {m: importlib.util.find_spec(m) is not None for m in {**REQUIRED, **OPTIONAL}}
        py = sys.executable
        cli = [py, "-m", "cifar_speed"]

        data_dir = self.data_dir()
        if data_dir:
            self.env["CIFAR_SPEED_DATA"] = data_dir   # doctor's data check and the tests read it
        self.run("cifar-speed doctor", cli + ["doctor"], "doctor.txt", timeout=120)
        self.run("cifar-speed doctor --json", cli + ["doctor", "--json"], "doctor.json", echo=False, timeout=120)

        ckpts = [Path(c) for c in a.checkpoints]
        from cifar_speed.checkpoint import shipped_checkpoints
        ckpts = ckpts or shipped_checkpoints()
        sweeps = self.sweeps(gpu)
        self.tests(have["pytest"], gpu)
        for name, extra in sweeps[:SWEEPS_BEFORE_CROSSCHECK]:
            self.sweep(name, extra, data_dir)
        if gpu and not a.no_crosscheck:
            cmd = [py, str(REPO / "tools" / "timer_crosscheck.py"), "--device", "cuda",
                   "--out", str(self.out / "timer-crosscheck.json")]
            self.run("timer cross-check (torch.utils.benchmark, triton do_bench)", cmd, "timer-crosscheck.txt",
                     timeout=240)
        for name, extra in sweeps[SWEEPS_BEFORE_CROSSCHECK:]:
            self.sweep(name, extra, data_dir)

        # 4. Triton export: onnxrt anywhere (needs onnxscript), trt with TensorRT on a GPU
        from cifar_speed import triton

        with tempfile.TemporaryDirectory(prefix="cifar-speed-triton-") as tmp:
            if not ckpts:
                self.record("cifar-speed export --format triton", "skipped", reason="no checkpoint to export")
            else:
                ckpt = str(ckpts[0])
                for backend in ("onnxrt", "trt"):
                    name = f"cifar-speed export --format triton --backend {backend}"
                    reason = None
                    if not have["tritonclient"]:
                        reason = "tritonclient is not installed (Triton's config schema comes from it)"
                    elif not have["onnxscript"]:
                        reason = "onnxscript is not installed (the ONNX exporter needs it)"
                    elif backend == "trt":
                        reason = triton.trt_unavailable_reason()
                    if reason:
                        self.record(name, "skipped", reason=reason)
                        continue
                    self.run(name, cli + ["export", ckpt, "--format", "triton", "--backend", backend,
                                          "--out", str(Path(tmp) / backend)], f"triton-{backend}.txt")

        # 5. what this machine could not do, in one place
        cannot = []
        if not gpu:
            cannot.append("everything CUDA: no GPU visible to torch")
        if not have["torch_tensorrt"]:
            cannot.append("Torch-TensorRT backend (trt): torch-tensorrt is not installed")
        if not have["tensorrt"]:
            cannot.append("TensorRT plans for Triton: the tensorrt package is not installed")
        try:
            import onnxruntime as ort
            eps = ort.get_available_providers()
            if gpu and not {"CUDAExecutionProvider", "TensorrtExecutionProvider"} & set(eps):
                cannot.append(f"ONNX Runtime on the GPU: this onnxruntime build offers only {', '.join(eps)} "
                              "(onnxruntime-gpu is not installed)")
        except ImportError:
            cannot.append("ONNX Runtime: onnxruntime is not installed")
        for c in cannot:
            log(f"not run here: {c}")

        failed = [s for s in self.steps if s["status"] == "failed"]
        summary = {"format": "cifar-speed-gpu-verify/1", "date": stamp, "mode": "cuda" if gpu else "cpu-only",
                   "output_folder": str(self.out), "steps": self.steps, "not_run_here": cannot,
                   "packages": have, "checkpoints": [str(c) for c in ckpts], "provenance": provenance()}
        (self.out / "gpu-verify.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        log(f"\ngpu_verify: {len(self.steps) - len(failed)} step(s) ok or skipped, {len(failed)} failed; "
            f"summary {self.out / 'gpu-verify.json'}")
        for s in failed:
            log(f"  failed: {s['step']} ({s.get('reason')})")
        if a.pack:
            log(f"packed into {pack(self.out, Path(a.pack))}")
        return 1 if failed else 0


def pack(folder: Path, archive: Path) -> Path:
    """FOLDER as one gzipped tar at ARCHIVE (written under a temporary name, then renamed): a lent
    machine sends back at most 8 files, and a sweep alone writes four."""
    import tarfile

    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_name(archive.name + ".partial")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    os.replace(tmp, archive)
    return archive


def prepare_carry(folder: str, data_dir: str | None) -> int:
    """On a machine with the data and PyPI: gather what a lent GPU machine lacks into FOLDER, small
    enough for its 64 MiB carry limit: FOLDER/wheels (CARRY_WHEELS for CPython 3.12) and FOLDER/data
    (the CIFAR-10 test batch, xz-compressed, and batches.meta). On the GPU machine: --carry FOLDER."""
    import lzma
    import shutil

    dest = Path(folder)
    src = Path(data_dir or os.environ.get("CIFAR_SPEED_DATA") or REPO.parent / "shared" / "cifar10")
    src = src / "cifar-10-batches-py" if (src / "cifar-10-batches-py").is_dir() else src
    if not (src / "test_batch").is_file():
        log(f"gpu_verify: error: no CIFAR-10 test_batch in {src} (pass --data-dir)")
        return 2
    (dest / "data").mkdir(parents=True, exist_ok=True)
    shutil.copy2(src / "batches.meta", dest / "data" / "batches.meta")
    with open(src / "test_batch", "rb") as f_in, lzma.open(dest / "data" / "test_batch.xz", "wb", preset=6) as f_out:
        shutil.copyfileobj(f_in, f_out)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", "-d", str(dest / "wheels")]
    for platform in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"):
        cmd += ["--platform", platform]
    cmd += CARRY_WHEELS
    log("$ " + shlex.join(cmd))
    rc = subprocess.call(cmd)
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file()) / 2**20
    log(f"carry folder {dest}: {size:.1f} MiB" + ("" if rc == 0 else f" (pip download failed, exit {rc})"))
    return rc


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results-root", help="folder that gets <machine>/ (default: results/ on a GPU, runs/gpu-verify/ without)")
    p.add_argument("--checkpoints", nargs="*", default=[], metavar="CKPT",
                   help="checkpoint sidecars to sweep (default: results/checkpoints/*.json)")
    p.add_argument("--data-dir", help="CIFAR-10 folder for the sweep's accuracy check (default: $CIFAR_SPEED_DATA, ...)")
    p.add_argument("--bench-args", help="extra arguments for `cifar-speed bench`, e.g. \"--min-time 0.5 --dawnbench\"")
    p.add_argument("--bench-timeout", type=float, help="seconds before the sweep is stopped (default: none)")
    p.add_argument("--sweep", action="append", metavar="[NAME=]ARGS",
                   help="a `cifar-speed bench` to run instead of the built-in SWEEPS (repeatable)")
    p.add_argument("--deadline-s", type=float, help="finish every step within this many seconds (steps that "
                   "would start too late are skipped and listed)")
    p.add_argument("--no-crosscheck", action="store_true", help="leave out the timer cross-check (once per "
                   "harness change is enough)")
    p.add_argument("--pack", metavar="ARCHIVE", help="also write the output folder as one .tar.gz (a lent "
                   "machine returns at most 8 files)")
    p.add_argument("--carry", help="a folder made by --prepare-carry here: wheels/ to install, data/ to unpack")
    p.add_argument("--wheels", help="folder of wheels for packages this machine lacks (installed to a private folder)")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="without a GPU, run a tiny eager-only CPU sweep to check the plumbing (not a measurement)")
    p.add_argument("--prepare-carry", metavar="FOLDER",
                   help="do not verify: gather wheels and the CIFAR-10 test batch for a GPU machine into FOLDER")
    return p.parse_args(argv)


if __name__ == "__main__":
    _args = parse_args()
    if _args.prepare_carry:
        raise SystemExit(prepare_carry(_args.prepare_carry, _args.data_dir))
    raise SystemExit(Verify(_args).main())
