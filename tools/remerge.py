#!/usr/bin/env python3
"""Recompute the cells of a `bench --processes N` results file from the trials it records, with
today's merge (cifar_speed.processes.remerge), into a new file (JSON, CSV and skipped CSV, as bench
writes them); the measurements are the recorded trials, only the statistics over processes are redone.

    .venv/bin/python tools/remerge.py results/<machine>/NAME.json --out results/<machine>/NAME-remerged.json
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cifar_speed.errors import CifarSpeedError  # noqa: E402
from cifar_speed.processes import remerge  # noqa: E402
from cifar_speed.report import load_results  # noqa: E402
from cifar_speed.resultsfile import write_results  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", help="a results file written by bench --processes N (N > 1)")
    ap.add_argument("--out", required=True, help="where the recomputed file goes")
    args = ap.parse_args(argv)
    try:
        merged = load_results(args.results)
        if (merged.get("harness") or {}).get("processes", 1) < 2:
            raise CifarSpeedError(f"{args.results}: not a bench --processes N file (harness.processes missing or 1)")
        out = remerge(merged)
        out["harness"]["remerged"] = "cells recomputed from the recorded trials by tools/remerge.py"
        path, csv_path = write_results(out, args.out)
    except (CifarSpeedError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} and {csv_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
