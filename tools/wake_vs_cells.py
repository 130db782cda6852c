#!/usr/bin/env python3
"""Does a cell's time follow the host's thread wake-up latency? Per cell of two runs of the same
command (bench records `wake_us`, harness.WakeProbe, beside each trial's canary reading): the change
of the cell's median between the runs beside the change of the wake-up readings taken around its own
trials, and the rank correlation between wake-up and trial median over the process medians of both
runs (each `--processes` worker is one machine state; both runs' workers pooled).

    .venv/bin/python tools/wake_vs_cells.py results/<machine>/accept-A-1.json results/<machine>/accept-A-2.json

A diagnostic for issue 11: cells that hand work between threads (async, one request in flight)
should follow the wake-up reading if it explains their run-to-run moves; compute-bound cells should not.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cifar_speed.commands.compare import cell_name  # noqa: E402
from cifar_speed.errors import CifarSpeedError  # noqa: E402
from cifar_speed.report import load_results  # noqa: E402
from cifar_speed.sweep import cells_of  # noqa: E402


def process_medians(cell) -> list[tuple[float, float]]:
    """(median wake-up us, median trial median ms) per process of the cell (one entry without processes)."""
    by_process: dict[int, list[dict]] = {}
    for t in cell.trials or []:
        by_process.setdefault(t.get("process", 0), []).append(t)
    return [(statistics.median(t["wake_us"] for t in ts), statistics.median(t["median_ms"] for t in ts))
            for ts in by_process.values() if all(t.get("wake_us") for t in ts)]


def spearman(pairs: list[tuple[float, float]]) -> float | None:
    if len(pairs) < 4:
        return None
    a, b = (np.argsort(np.argsort(np.asarray(col))) for col in zip(*pairs))
    return float(np.corrcoef(a, b)[0, 1])


def rows(old: dict, new: dict) -> list[tuple[str, float, float, float | None]]:
    """(cell, change of its median, change of the wake-up around its trials, rank correlation)."""
    a = {c.key: c for c in cells_of(old) if c.status == "ok"}
    b = {c.key: c for c in cells_of(new) if c.status == "ok"}
    out = []
    for key in sorted(a.keys() & b.keys(), key=cell_name):
        pa, pb = process_medians(a[key]), process_medians(b[key])
        if not pa or not pb:
            continue
        med = lambda ps, i: statistics.median(p[i] for p in ps)  # noqa: E731
        out.append((cell_name(key), med(pb, 1) / med(pa, 1) - 1, med(pb, 0) / med(pa, 0) - 1, spearman(pa + pb)))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("old")
    ap.add_argument("new")
    args = ap.parse_args(argv)
    try:
        table = rows(load_results(args.old), load_results(args.new))
    except (CifarSpeedError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not table:
        print(f"error: no cell of both files has wake-up readings (bench records them from commit 750ed7f on)",
              file=sys.stderr)
        return 2
    print(f"{'cell':58} {'median ms':>10} {'wake-up':>8} {'rank corr':>9}")
    for name, change, wake, rho in table:
        print(f"{name:58} {change * 100:+9.1f}% {wake * 100:+7.1f}% {'' if rho is None else f'{rho:+.2f}':>9}")
    for label, pick in (("async", lambda n: n.endswith(" async")), ("not async", lambda n: not n.endswith(" async"))):
        rhos = [r for n, _, _, r in table if pick(n) and r is not None]
        if rhos:
            print(f"median rank correlation, {label} cells: {statistics.median(rhos):+.2f} over {len(rhos)} cells")
    return 0


if __name__ == "__main__":
    sys.exit(main())
