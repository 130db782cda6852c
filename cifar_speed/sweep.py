"""The benchmark sweep: checkpoints x backends x precisions x batch sizes -> one results file.

For every cell: latency statistics and images/s (harness.measure), achieved GFLOP/s from the model's
FLOP count and its fraction of this machine's measured matmul peak, speed-up over eager fp32 at the
same batch size in the same run, and the artifact's top-1 on the official 10,000 test images plus
its agreement with eager fp32 (top-1 agreement, max |logit difference|). Accuracy is computed once
per model x backend x precision (the same compiled program serves every batch size), at the largest
batch of the sweep; a cell more than `tolerance` below eager fp32's top-1 is flagged. int8 cells are
calibrated on a fixed sample of training images (calibration.py: `calib_size` images drawn with
`calib_seed`), never on the test images they are scored on.

Read top to bottom: plan -> accuracy -> run -> files -> table.
"""
from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import backends, calibration, harness
from .checkpoint import load_checkpoint, paths_for, shipped_checkpoints
from .data import load_split, normalize
from .errors import CifarSpeedError
from .fileio import atomic_write_many
from .models import count_params, flops_per_image
from .provenance import cpu_has_fast_bf16, machine_slug, provenance

SCHEMA = "cifar-speed-bench/1"
DEFAULT_BATCHES = (32, 64, 128)
DEFAULT_TOLERANCE = 0.005   # top-1 may drop 0.5 percentage points below eager fp32 before a flag
BASELINE = ("eager", "fp32")


@dataclass
class SweepConfig:
    checkpoints: list
    backends: list[str] | None = None        # None: every backend available here
    precisions: list[str] | None = None      # None: every precision (unavailable ones listed as skipped)
    batches: list[int] = field(default_factory=lambda: list(DEFAULT_BATCHES))
    device: str | None = None
    data_dir: str | None = None
    settings: harness.Settings = field(default_factory=harness.Settings)
    modes: list[str] | None = None           # None: device (+ host on CUDA)
    cache_dir: str | None = None
    tolerance: float = DEFAULT_TOLERANCE
    compile_mode: str = "default"
    dawnbench: bool = False
    peak_gflops: float | None = None          # None: measure it at the start of the run
    eval_limit: int | None = None             # evaluate on the first N test images (tests only)
    test_split: object = None                 # a data.Split to use instead of loading (tests only)
    calib_size: int = calibration.DEFAULT_SIZE   # int8: training images in the calibration sample ...
    calib_seed: int = calibration.DEFAULT_SEED   # ... and the seed that draws them
    train_split: object = None                # a data.Split to calibrate from instead of loading (tests only)


# -- plan -----------------------------------------------------------------------------------------

def plan(backend_names, precisions, device: str) -> tuple[list[tuple[str, str]], list[dict]]:
    """(runnable (backend, precision) pairs, skipped cells with reasons).

    Asked for explicitly, a backend that can run none of the asked precisions, or a precision no asked
    backend can run, is an error (one line, with what is missing); otherwise unavailable
    combinations are skipped and listed.
    """
    explicit_backends, explicit_precisions = backend_names is not None, precisions is not None
    names = list(backend_names) if explicit_backends else list(backends.BACKENDS)
    precs = list(precisions) if explicit_precisions else list(backends.PRECISIONS)
    for b in names:
        backends.get_backend(b)
    for p in precs:
        backends.check_precision(p)
    run, skipped = [], []
    for b in names:
        for p in precs:
            ok, reason = backends.availability(b, p, device)
            (run.append((b, p)) if ok else skipped.append({"backend": b, "precision": p, "reason": reason}))
    if explicit_backends:
        for b in names:
            if not any(rb == b for rb, _ in run):
                reasons = "; ".join(sorted({s["reason"] for s in skipped if s["backend"] == b}))
                raise backends.UnavailableError(f"{b} cannot run here ({', '.join(precs)} on {device}): {reasons}")
    if explicit_precisions:
        for p in precs:
            if not any(rp == p for _, rp in run):
                reasons = "; ".join(sorted({s["reason"] for s in skipped if s["precision"] == p}))
                raise backends.UnavailableError(f"{p} cannot run here ({', '.join(names)} on {device}): {reasons}")
    return run, skipped


# -- accuracy -------------------------------------------------------------------------------------

def predict(runner, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits (fp32, CPU) for host `images` in batches; the last batch is padded to full size so
    fixed-shape programs see only the shapes they were built for."""
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        n = len(x)
        if n < batch_size:
            x = torch.cat([x, x[-1:].expand(batch_size - n, *x.shape[1:])])
        y = runner(x.to(runner.device))
        out.append(y[:n].float().cpu())
    return torch.cat(out)


def accuracy(logits: torch.Tensor, labels: torch.Tensor, ref_logits: torch.Tensor | None = None) -> dict:
    pred = logits.argmax(1)
    res = {"top1": (pred == labels).float().mean().item(), "images": len(labels)}
    if ref_logits is not None:
        res["agreement"] = (pred == ref_logits.argmax(1)).float().mean().item()
        res["max_logit_diff"] = (logits - ref_logits).abs().max().item()
    return res


# -- the run ----------------------------------------------------------------------------------------

PEAK_KEYS = {"fp32": "fp32_gflops", "bf16": "bf16_gflops", "fp16": "fp16_gflops", "int8": "int8_gops"}


def measure_peak(device: str, seconds: float = 1.0) -> dict:
    """Measured matmul peaks, one per precision: each cell's peak_fraction divides by the peak of its
    own precision (an int8 cell over a bf16 peak would read above 100 %)."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    out = {"fp32_gflops": harness.matmul_peak(torch.float32, device, seconds=seconds)}
    if device == "cuda" or cpu_has_fast_bf16():
        out["bf16_gflops"] = harness.matmul_peak(torch.bfloat16, device, seconds=seconds)
    if device == "cuda":
        out["fp16_gflops"] = harness.matmul_peak(torch.float16, device, seconds=seconds)
    try:
        out["int8_gops"] = harness.matmul_peak(torch.int8, device, seconds=seconds)
    except RuntimeError:  # no int8 GEMM kernel on this device: int8 cells get no peak_fraction
        pass
    out["source"] = f"measured by cifar_speed.harness.matmul_peak on {device} at the start of this run"
    if device == "cpu":
        # A peak measured while another process shares the cores is too low (and every
        # peak_fraction too high): say so, and pass --peak-gflops from an idle measurement instead.
        flag, ratio = harness.disturbed(time.process_time() - cpu0, time.perf_counter() - wall0,
                                        torch.get_num_threads())
        out.update({"cpu_wall_ratio": ratio, "disturbed": flag})
    return out


def peak_for(peak: dict, precision: str) -> float | None:
    """The denominator of peak_fraction for a cell of this precision (None: not measured)."""
    return peak.get(PEAK_KEYS.get(precision, "")) or peak.get("given_gflops")


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:300]


def run_sweep(cfg: SweepConfig, progress: bool = True, console=None) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    device = backends.check_device(cfg.device or backends.default_device())
    if not cfg.checkpoints:
        raise CifarSpeedError("no checkpoints to benchmark: pass CKPT paths or ship some in results/checkpoints/")
    batches = [int(b) for b in cfg.batches]
    if not batches or any(b < 1 for b in batches):
        raise CifarSpeedError(f"batch sizes must be positive integers, got {cfg.batches!r}")
    calib_size, calib_seed = calibration.check_params(cfg.calib_size, cfg.calib_seed)
    pairs, skipped = plan(cfg.backends, cfg.precisions, device)
    requested = set(pairs)
    # The reference for agreement and speed-up is always measured, and first.
    pairs = [BASELINE] + [p for p in pairs if p != BASELINE]
    modes = cfg.modes or (["device", "host"] if device == "cuda" else ["device"])
    # Validate every checkpoint, then the data, before any time is spent.
    loaded = [(ck, *load_checkpoint(ck)) for ck in cfg.checkpoints]
    split = cfg.test_split if cfg.test_split is not None else load_split("test", cfg.data_dir)
    n_eval = min(len(split), cfg.eval_limit or len(split))
    # int8 calibration samples (training images only), one per checkpoint's normalisation, drawn up front.
    # Without the training images, int8 asked for by name is an error; in a default sweep it is skipped.
    calibs = {}
    if any(p == "int8" for _, p in pairs):
        try:
            for ck, _, meta in loaded:
                calibs[str(ck)] = calibration.calibration_sample(meta, calib_size, calib_seed, cfg.data_dir,
                                                                 train=cfg.train_split)
        except CifarSpeedError as e:
            if cfg.precisions is not None and "int8" in cfg.precisions:
                raise
            calibs = {}
            skipped += [{"backend": b, "precision": p, "reason": f"int8 calibration needs the training images: {e}"}
                        for b, p in pairs if p == "int8"]
            pairs = [(b, p) for b, p in pairs if p != "int8"]

    peak = ({"given_gflops": cfg.peak_gflops, "source": "given on the command line (--peak-gflops), every precision"}
            if cfg.peak_gflops else measure_peak(device))

    results = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "provenance": provenance(),
        "harness": {**cfg.settings.as_dict(), "modes": modes, "device": device,
                    "accuracy_images": n_eval, "accuracy_tolerance": cfg.tolerance,
                    "compile_mode": cfg.compile_mode, "dawnbench": cfg.dawnbench,
                    **({"calibration": {"size": calib_size, "seed": calib_seed, "split": calibration.SPLIT}}
                       if calibs else {})},
        "peak": peak,
        "request": {"backends": cfg.backends, "precisions": cfg.precisions, "batches": batches},
        "models": {}, "skipped": skipped, "cells": [],
    }
    total = len(loaded) * len(pairs) * len(batches) * len(modes)
    prog = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, disable=not progress, transient=False)
    with prog:
        task = prog.add_task("bench", total=total)
        for ckpt, model, meta in loaded:
            # A row is a checkpoint, named by its file: several checkpoints may share an architecture
            # (lightnn and its distilled variants) and must not merge into one row.
            name = paths_for(ckpt)[1].stem
            while name in results["models"]:
                name += "+"
            norm = meta["normalize"]
            images = normalize(split.images[:n_eval], norm["mean"], norm["std"])
            labels = split.labels[:n_eval]
            flops = flops_per_image(model)
            ref_logits = None
            info = {"checkpoint": str(paths_for(ckpt)[1]), "architecture": meta["model"],
                    "weights_sha256": meta.get("weights_sha256"),
                    "params": count_params(model, trainable_only=False), "flops_per_image": flops,
                    "checkpoint_test_accuracy": meta.get("test_accuracy")}
            results["models"][name] = info
            baseline_ips: dict[tuple[int, str], float] = {}
            for backend, precision in pairs:
                base = {"model": name, "architecture": meta["model"], "backend": backend, "precision": precision,
                        "device": device}
                prog.update(task, description=f"{name} {backend} {precision}: building")
                t0 = time.perf_counter()
                try:
                    options = {"mode": cfg.compile_mode} if backend == "compile" else {}
                    if precision == "int8":
                        options["calibration"] = calibs[str(ckpt)]
                    runner = backends.build(backend, model, meta, precision, device, batches, cfg.cache_dir, **options)
                    prog.update(task, description=f"{name} {backend} {precision}: accuracy")
                    logits = predict(runner, images, max(batches))
                    build_s = time.perf_counter() - t0
                except backends.UnavailableError as e:
                    results["skipped"].append({"model": name, "backend": backend, "precision": precision, "reason": str(e)})
                    prog.advance(task, len(batches) * len(modes))
                    continue
                except Exception as e:  # a backend failing on one model must not lose the whole sweep
                    results["cells"].append({**base, "status": "failed", "reason": _one_line(e)})
                    prog.advance(task, len(batches) * len(modes))
                    continue
                if (backend, precision) == BASELINE:
                    ref_logits = logits
                    info["eager_fp32_top1"] = accuracy(logits, labels)["top1"]
                acc = accuracy(logits, labels, ref_logits)
                acc["eval_batch"] = max(batches)
                ref_top1 = info.get("eager_fp32_top1")
                flagged = ref_top1 is not None and acc["top1"] < ref_top1 - cfg.tolerance
                dawn = None
                if cfg.dawnbench:
                    prog.update(task, description=f"{name} {backend} {precision}: batch-1 latency")
                    try:
                        dawn = harness.dawnbench_latency(runner, images, labels)
                    except Exception as e:
                        dawn = {"status": "failed", "reason": _one_line(e)}
                for batch in batches:
                    for mode in modes:
                        prog.update(task, description=f"{name} {backend} {precision} b{batch} {mode}")
                        try:
                            stats = harness.measure(runner, batch, cfg.settings, mode, source=images)
                        except Exception as e:
                            results["cells"].append({**base, "batch_size": batch, "mode": mode,
                                                     "status": "failed", "reason": _one_line(e)})
                            prog.advance(task)
                            continue
                        ips = stats["images_per_s"]
                        if (backend, precision) == BASELINE:
                            baseline_ips[(batch, mode)] = ips
                        gflops = flops * ips / 1e9
                        peak_gflops = peak_for(peak, precision)
                        cell = {**base, "batch_size": batch, "mode": mode, "status": "ok",
                                "baseline": (backend, precision) == BASELINE,
                                "requested": (backend, precision) in requested,
                                "runner": runner.info, "build_and_eval_s": build_s,
                                "latency": stats, "images_per_s": ips, "gflops": gflops,
                                "peak_fraction": gflops / peak_gflops if peak_gflops else None,
                                "speedup_vs_eager_fp32": (ips / baseline_ips[(batch, mode)]
                                                          if (batch, mode) in baseline_ips else None),
                                "accuracy": acc, "accuracy_flagged": flagged, "disturbed": stats["disturbed"]}
                        if dawn is not None:
                            cell["dawnbench"] = dawn
                        results["cells"].append(cell)
                        prog.advance(task)
                del runner
    return results


# -- files ------------------------------------------------------------------------------------------

CSV_COLUMNS = ["model", "backend", "precision", "device", "batch_size", "mode", "status", "images_per_s",
               "median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "gflops", "peak_fraction",
               "speedup_vs_eager_fp32", "top1", "agreement", "max_logit_diff", "accuracy_flagged",
               "disturbed", "cpu_wall_ratio", "reason"]


def to_csv(results: dict) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for c in results["cells"]:
        lat, acc = c.get("latency", {}), c.get("accuracy", {})
        w.writerow({**c, **{k: lat.get(k) for k in ("median_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "cpu_wall_ratio")},
                    **{k: acc.get(k) for k in ("top1", "agreement", "max_logit_diff")}})
    for s in results.get("skipped", []):
        w.writerow({**s, "status": "unavailable"})
    return buf.getvalue()


def default_results_path(name: str | None = None) -> Path:
    name = name or "bench-" + _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    from .locate import results_dir

    return results_dir(machine_slug()) / f"{name}.json"


def write_results(results: dict, path) -> tuple[Path, Path]:
    """JSON and CSV side by side, written as a pair: both are staged and fsynced before either is
    moved into place, so a full disk or a bad folder leaves neither, never a JSON without its CSV."""
    path = Path(path)
    if path.suffix != ".json":
        path = path.with_name(path.name + ".json")
    csv_path = path.with_suffix(".csv")
    text = json.dumps(results, indent=2, sort_keys=False, default=str) + "\n"  # as atomic_write_json writes it
    atomic_write_many({csv_path: to_csv(results).encode(), path: text.encode()})
    return path, csv_path


def validate_results(obj) -> dict:
    """Refuse anything that is not a results file of this schema (one line)."""
    if not isinstance(obj, dict) or obj.get("schema") != SCHEMA or not isinstance(obj.get("cells"), list):
        raise CifarSpeedError(f"not a cifar-speed results file (schema {SCHEMA})")
    return obj


# -- table ------------------------------------------------------------------------------------------

def fastest(results: dict) -> dict[tuple[str, int, str], tuple[str, str]]:
    """(model, batch, mode) -> (backend, precision) of the highest images/s among ok cells."""
    best: dict = {}
    for c in results["cells"]:
        if c.get("status") != "ok":
            continue
        k = (c["model"], c["batch_size"], c["mode"])
        if k not in best or c["images_per_s"] > best[k][0]:
            best[k] = (c["images_per_s"], (c["backend"], c["precision"]))
    return {k: v[1] for k, v in best.items()}


def table(results: dict, mode: str | None = None):
    """A rich Table: rows model x backend/precision, a column group per batch size; ★ = fastest."""
    from rich.table import Table

    cells = [c for c in results["cells"] if mode is None or c.get("mode") == mode]
    mode = mode or (cells[0]["mode"] if cells else "device")
    cells = [c for c in cells if c.get("mode") == mode]
    batches = sorted({c["batch_size"] for c in cells if "batch_size" in c})
    best = fastest(results)
    t = Table(title=f"images/s ({mode}-resident inputs; x = speed-up over eager fp32; ★ fastest per model)")
    t.add_column("model", no_wrap=True)
    t.add_column("backend precision", no_wrap=True)
    for b in batches:
        t.add_column(f"b{b} img/s", justify="right", no_wrap=True)
        t.add_column(f"b{b} x", justify="right", no_wrap=True)
    t.add_column("top-1", justify="right")
    t.add_column("agree", justify="right")
    t.add_column("notes")
    rows: dict = {}
    for c in cells:
        rows.setdefault((c["model"], c["backend"], c["precision"]), {})[c.get("batch_size")] = c
    for (model, backend, precision), by_batch in rows.items():
        row = [model, f"{backend} {precision}"]
        notes, acc = set(), None
        for b in batches:
            c = by_batch.get(b)
            if not c or c.get("status") != "ok":
                row += ["failed" if c else "-", ""]
                if c:
                    notes.add(c.get("reason", "")[:60])
                continue
            star = best.get((model, b, mode)) == (backend, precision)
            ips = f"{c['images_per_s']:,.0f}" + (" ★" if star else "")
            row += [f"[bold green]{ips}[/]" if star else ips,
                    f"{c['speedup_vs_eager_fp32']:.2f}" if c.get("speedup_vs_eager_fp32") else ""]
            acc = c["accuracy"]
            if c.get("disturbed"):
                notes.add("disturbed")
            if c.get("accuracy_flagged"):
                notes.add("ACCURACY DROP")
        row += [f"{acc['top1'] * 100:.2f}%" if acc else "",
                f"{acc['agreement'] * 100:.2f}%" if acc and "agreement" in acc else "", ", ".join(sorted(notes))]
        t.add_row(*row)
    return t


def skipped_lines(results: dict) -> list[str]:
    seen, out = set(), []
    for s in results.get("skipped", []):
        k = (s["backend"], s["precision"], s["reason"])
        if k not in seen:
            seen.add(k)
            out.append(f"{s['backend']} {s['precision']}: {s['reason']}")
    return out


def default_checkpoints() -> list[Path]:
    found = shipped_checkpoints()
    if not found:
        raise CifarSpeedError("no shipped checkpoints in results/checkpoints/: pass checkpoint paths "
                              "(train one with `cifar-speed train`)")
    return found
