#!/usr/bin/env python3
"""GPU verification run: doctor, the GPU-marked tests, the sweep over the shipped checkpoints.

    python3 tools/gpu_verify.py                     # from the repository root (or anywhere)
    python3 tools/gpu_verify.py --results-root "$OUT/results" --wheels wheels/   # on a lent machine

On a CUDA machine it writes everything under results/<gpu-name>/ (gpu-name as `machine_slug()` spells
it, e.g. nvidia-h100-80gb-hbm3):

    doctor.txt, doctor.json       `cifar-speed doctor` (what runs here and why not)
    pytest-gpu.txt, .xml          `pytest -m gpu` (log and JUnit report)
    bench.json, bench.csv         `cifar-speed bench --device cuda` over results/checkpoints/*.json
    bench.txt                     the sweep's console output (tables, skipped cells and why)
    triton.txt                    Triton export checks (onnxrt always; trt where TensorRT is installed)
    gpu-verify.json               every step: command, status, seconds, what was skipped and why, provenance

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
REQUIRED = {"torch": "torch", "numpy": "numpy", "safetensors": "safetensors", "rich": "rich"}
OPTIONAL = {"onnx": "onnx", "onnxruntime": "onnxruntime", "onnxscript": "onnxscript", "onnx_ir": "onnx-ir",
            "pytest": "pytest", "tensorrt": "tensorrt", "torch_tensorrt": "torch-tensorrt", "tritonclient": "tritonclient"}


def log(msg: str = "") -> None:
    print(msg, flush=True)


class Verify:
    def __init__(self, args):
        self.args = args
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
        """Install missing packages from --wheels into a private folder (no index, no system changes)."""
        missing = self.missing(list(REQUIRED) + ["onnxscript", "onnx_ir"])
        if not missing:
            return
        wheels = self.args.wheels
        if not wheels:
            log(f"note: not installed here: {', '.join(missing)} (bring wheels with --wheels DIR to add them)")
            return
        target = Path(tempfile.mkdtemp(prefix="cifar-speed-gpu-verify-site-"))
        dists = [REQUIRED.get(m) or OPTIONAL[m] for m in missing]
        cmd = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", "--find-links", str(wheels),
               "--target", str(target), *dists]
        log("$ " + shlex.join(cmd))
        rc = subprocess.call(cmd)
        if rc != 0:
            log(f"note: pip could not install {', '.join(dists)} from {wheels} (exit {rc}); continuing without them")
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

    def run(self, name: str, cmd: list[str], log_name: str | None, ok_codes=(0,), timeout=None, echo=True) -> dict:
        log(f"\n== {name}\n$ {shlex.join(cmd)}")
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, timeout=timeout)
            output, rc = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as e:
            output = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            rc = None
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

        # 1. doctor
        self.run("cifar-speed doctor", cli + ["doctor"], "doctor.txt")
        self.run("cifar-speed doctor --json", cli + ["doctor", "--json"], "doctor.json", echo=False)

        # 2. GPU-marked tests (they skip themselves without CUDA; exit 5 = none collected)
        if not have["pytest"]:
            self.record("pytest -m gpu", "skipped", reason="pytest is not installed")
        else:
            cmd = [py, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
                   f"--junitxml={self.out / 'pytest-gpu.xml'}", "tests"]
            step = self.run("pytest -m gpu", cmd, "pytest-gpu.txt", ok_codes=(0, 5))
            if not gpu:
                step["note"] = "no CUDA GPU: the GPU-marked tests were collected and skipped"

        # 3. the sweep over the shipped checkpoints
        from cifar_speed.checkpoint import shipped_checkpoints

        ckpts = [Path(c) for c in a.checkpoints] or shipped_checkpoints()
        device = "cuda" if gpu else ("cpu" if a.cpu_smoke else None)
        if device is None:
            self.record("cifar-speed bench (sweep)", "skipped",
                        reason="no CUDA GPU visible to torch (CPU-only mode; --cpu-smoke runs a tiny CPU sweep instead)")
        elif not ckpts:
            self.record("cifar-speed bench (sweep)", "skipped", reason="no checkpoints in results/checkpoints/ (and none given)")
        else:
            cmd = cli + ["bench", *map(str, ckpts), "--device", device, "--out", str(self.out / "bench.json"), "--no-progress"]
            data_dir = a.data_dir or os.environ.get("CIFAR_SPEED_DATA")
            if not data_dir and (REPO.parent / "shared" / "cifar10").is_dir():
                data_dir = str(REPO.parent / "shared" / "cifar10")  # where the dev / CI machines keep it
            if data_dir:
                cmd += ["--data-dir", data_dir]
            if device == "cpu":  # a smoke test of this script's plumbing, not a measurement
                cmd += ["--backend", "eager", "--precision", "fp32", "--batch", "32", "--min-time", "0.05",
                        "--min-reps", "3", "--max-warmup", "1"]
            cmd += shlex.split(a.bench_args or "")
            self.run(f"cifar-speed bench --device {device}", cmd, "bench.txt", timeout=a.bench_timeout)

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
        return 1 if failed else 0


def prepare_carry(folder: str, data_dir: str | None) -> int:
    """On a machine with the data and PyPI: gather what a lent GPU machine lacks, under 64 MiB, into
    FOLDER/wheels (safetensors, onnxscript, onnx-ir: pure or abi3 wheels) and FOLDER/data (the CIFAR-10
    test batch the sweep checks accuracy on). Carry FOLDER to the GPU machine and pass
    --wheels FOLDER/wheels --data-dir FOLDER/data."""
    import shutil

    dest = Path(folder)
    src = Path(data_dir or os.environ.get("CIFAR_SPEED_DATA") or REPO.parent / "shared" / "cifar10")
    src = src / "cifar-10-batches-py" if (src / "cifar-10-batches-py").is_dir() else src
    if not (src / "test_batch").is_file():
        log(f"gpu_verify: error: no CIFAR-10 test_batch in {src} (pass --data-dir)")
        return 2
    (dest / "data" / "cifar-10-batches-py").mkdir(parents=True, exist_ok=True)
    for f in ("test_batch", "batches.meta"):
        shutil.copy2(src / f, dest / "data" / "cifar-10-batches-py" / f)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--platform",
           "manylinux2014_x86_64", "--python-version", "3.10", "--implementation", "cp", "-d", str(dest / "wheels"),
           "safetensors", "onnxscript", "onnx-ir"]
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
