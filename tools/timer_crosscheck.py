#!/usr/bin/env python3
"""Check the harness against independent timers on a few cells: the same runner, the same inputs.

    python3 tools/timer_crosscheck.py --device cuda --out results/<machine>/timer-crosscheck.json
    python3 tools/timer_crosscheck.py --device cpu --cell fast:eager:fp32:128

For each cell (model:backend:precision:batch[:compile-mode]) the runner is built once and timed by
  harness      cifar_speed.harness.measure: warm-up, interleaved-style trials, median of trial medians
               (CUDA events per call on a GPU, perf_counter per call on a CPU); beside it their lower
               quartile, the figure a cell reports (`utils_over_harness_lower_quartile`)
  utils        torch.utils.benchmark.Timer.blocked_autorange: wall time of blocks of calls, synchronised
               on CUDA (the median block time per call)
  do_bench     triton.testing.do_bench (CUDA only): its median over calls, with L2 flushed between calls
The three run in turn, `--rounds` times, and each ratio (independent / harness) is taken per round.
A ratio near 1 says the harness measures what the independent timers measure; do_bench flushes the
L2 cache before each call, so on small models it reads a little slower than a warm-cache harness.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cifar_speed import allocator  # noqa: E402  (after the path; a light module: ctypes and platform)

DEFAULT_CELLS = {"cuda": ["fast:eager:fp16:128", "fast:compile:fp16:1:reduce-overhead"],
                 "cpu": ["fast:eager:fp32:128", "frontier_s_plain:eager:fp32:1"]}


def parse_cell(text: str) -> dict:
    parts = text.split(":")
    if len(parts) not in (4, 5):
        raise SystemExit(f"timer_crosscheck: error: cell {text!r} is not model:backend:precision:batch[:mode]")
    return {"model": parts[0], "backend": parts[1], "precision": parts[2], "batch": int(parts[3]),
            "compile_mode": parts[4] if len(parts) == 5 else "default"}


def build(cell: dict, device: str):
    from cifar_speed import backends
    from cifar_speed.checkpoint import load_checkpoint
    from cifar_speed.locate import resolve_model

    ref = resolve_model(cell["model"])
    model, meta = load_checkpoint(ref.path, model_name=ref.architecture)
    options = {"mode": cell["compile_mode"]} if cell["backend"] == "compile" else {}
    return backends.build(cell["backend"], model, meta, cell["precision"], device, [cell["batch"]], **options)


def time_cell(cell: dict, device: str, rounds: int) -> dict:
    import torch
    import torch.utils.benchmark as tub

    from cifar_speed import harness

    runner = build(cell, device)
    xs = harness.make_inputs(cell["batch"], device, "device", 4)
    settings = harness.Settings(trials=5, trial_time_s=0.2, warmup_max_s=30.0)
    harness.measure(runner, cell["batch"], settings)          # compile, autotune, CUDA-graph capture
    try:
        from triton.testing import do_bench
    except ImportError:
        do_bench = None
    per_round = []
    for _ in range(rounds):
        measured = harness.measure(runner, cell["batch"], settings)
        h = measured["median_ms"]
        # Timer runs at 1 thread unless told: give it the thread count the harness times at.
        t = tub.Timer("f(x)", globals={"f": runner, "x": xs[0]},
                      num_threads=torch.get_num_threads()).blocked_autorange(min_run_time=1.0)
        row = {"harness_ms": h, "harness_lower_quartile_ms": measured["lower_quartile_ms"], "utils_ms": t.median * 1e3}
        if do_bench is not None and device == "cuda":
            row["do_bench_ms"] = do_bench(lambda: runner(xs[0]), warmup=50, rep=500, return_mode="median")
        per_round.append(row)
    out = {**cell, "device": device, "rounds": per_round}
    for name, key, harness_key in (("utils_over_harness", "utils_ms", "harness_ms"),
                                   ("do_bench_over_harness", "do_bench_ms", "harness_ms"),
                                   ("utils_over_harness_lower_quartile", "utils_ms", "harness_lower_quartile_ms")):
        ratios = [r[key] / r[harness_key] for r in per_round if key in r]
        if ratios:
            out[name] = {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}
    del runner
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default=None)
    p.add_argument("--cell", action="append", help="model:backend:precision:batch[:compile-mode] (repeatable)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", help="JSON file to write (default: print only)")
    p.add_argument("--allocator", choices=allocator.ALLOCATORS, default=allocator.DEFAULT,
                   help="as `cifar-speed bench --allocator` (default retain); every timer runs under it")
    a = p.parse_args(argv)
    import torch

    from cifar_speed.provenance import provenance

    memory = allocator.configure(a.allocator)

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cells = [parse_cell(c) for c in (a.cell or DEFAULT_CELLS[device])]
    results = []
    for cell in cells:
        r = time_cell(cell, device, a.rounds)
        results.append(r)
        ratios = {k: round(v["median"], 3) for k, v in r.items() if k.endswith("_over_harness")}
        print(f"{cell['model']} {cell['backend']} {cell['precision']} b{cell['batch']}: harness "
              f"{statistics.median(x['harness_ms'] for x in r['rounds']):.4f} ms; ratios {ratios}", flush=True)
    doc = {"format": "cifar-speed-timer-crosscheck/1", "cells": results, "allocator": memory,
           "provenance": provenance()}
    if a.out:
        from cifar_speed.fileio import atomic_write_text

        atomic_write_text(Path(a.out), json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
