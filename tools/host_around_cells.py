#!/usr/bin/env python3
"""What the host readings taken around each cell's trials say about a pair of runs of the same
command: per cell, the change of its median between the runs; in each run, how much slower the
canary read around the cell's own trials than the run's median canary (a cell that leaves work
running past its trial, or that ran in a slower state, slows the reading after it); and, where bench
recorded it (harness.WakeProbe, `wake_us`), the change of the wake-up readings around its trials
and their rank correlation with the trial medians over process medians (both runs pooled).

    .venv/bin/python tools/host_around_cells.py results/<machine>/accept-A-1.json results/<machine>/accept-A-2.json

A diagnostic for issue 11: which host state, if any, the cells that moved between two runs followed.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cifar_speed.commands.compare import canary_offsets, cell_name  # noqa: E402
from cifar_speed.errors import CifarSpeedError  # noqa: E402
from cifar_speed.harness import rank_correlation  # noqa: E402
from cifar_speed.report import load_results  # noqa: E402
from cifar_speed.sweep import cells_of  # noqa: E402


@dataclass
class Row:
    cell: str
    change: float                     # new median / old median - 1
    canary_vs_run: tuple[float, float] | None   # (old, new): canary around its trials / the run's median - 1
    wake_change: float | None
    wake_rank_corr: float | None


def _median(trials: list[dict], field: str) -> float | None:
    values = [t[field] for t in trials if t.get(field)]
    return statistics.median(values) if len(values) == len(trials) and values else None


def process_medians(trials: list[dict], field: str) -> list[tuple[float, float]]:
    """(median `field`, median trial median ms) per process of the cell (one entry without processes)."""
    by_process: dict[int, list[dict]] = {}
    for t in trials:
        by_process.setdefault(t.get("process", 0), []).append(t)
    return [(_median(ts, field), statistics.median(t["median_ms"] for t in ts))
            for ts in by_process.values() if _median(ts, field) is not None]


def spearman(pairs: list[tuple[float, float]]) -> float | None:
    """Rank correlation of (reading, median) pairs; None below 4 (harness.rank_correlation)."""
    return rank_correlation(*zip(*pairs)) if len(pairs) >= 4 else None


def rows(old: dict, new: dict) -> list[Row]:
    a = {c.key: c for c in cells_of(old) if c.status == "ok" and c.trials}
    b = {c.key: c for c in cells_of(new) if c.status == "ok" and c.trials}
    offset_a, offset_b = canary_offsets(old), canary_offsets(new)
    out = []
    for key in sorted(a.keys() & b.keys(), key=cell_name):
        ta, tb = a[key].trials, b[key].trials
        change = _median(tb, "median_ms") / _median(ta, "median_ms") - 1
        canary = (offset_a[key], offset_b[key]) if key in offset_a and key in offset_b else None
        wa, wb = _median(ta, "wake_us"), _median(tb, "wake_us")
        wake = wb / wa - 1 if wa and wb else None
        rho = spearman(process_medians(ta, "wake_us") + process_medians(tb, "wake_us")) if wake is not None else None
        out.append(Row(cell_name(key), change, canary, wake, rho))
    return out


def _pct(x: float | None, width: int) -> str:
    return f"{'-' if x is None else f'{x * 100:+.1f}%':>{width}}"


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
        print("error: no cell of both files has recorded trials", file=sys.stderr)
        return 2
    print(f"{'cell':56} {'median':>8} {'canary vs run: old':>19} {'new':>7} {'wake-up':>8} {'rank corr':>9}")
    for r in table:
        old_c, new_c = r.canary_vs_run or (None, None)
        rho = "-" if r.wake_rank_corr is None else f"{r.wake_rank_corr:+.2f}"
        print(f"{r.cell:56} {_pct(r.change, 8)} {_pct(old_c, 19)} {_pct(new_c, 7)} {_pct(r.wake_change, 8)} {rho:>9}")
    for label, pick in (("async", lambda n: n.endswith(" async")), ("not async", lambda n: not n.endswith(" async"))):
        picked = [r for r in table if pick(r.cell)]
        canary = [r.canary_vs_run for r in picked if r.canary_vs_run]
        rhos = [r.wake_rank_corr for r in picked if r.wake_rank_corr is not None]
        if not picked:
            continue
        line = f"{label} cells ({len(picked)}): median change {statistics.median(r.change for r in picked) * 100:+.1f}%"
        if canary:
            line += (f"; canary around their trials vs the run's, median: old {statistics.median(c[0] for c in canary) * 100:+.2f}%,"
                     f" new {statistics.median(c[1] for c in canary) * 100:+.2f}%")
        if rhos:
            line += f"; wake-up rank correlation, median {statistics.median(rhos):+.2f}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
