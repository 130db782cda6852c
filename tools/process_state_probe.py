#!/usr/bin/env python3
"""Time one cell in several fresh processes, each alone, with address-space randomisation on and
off in turn: does a process keep a speed of its own for its whole life, and is it the address layout?

    .venv/bin/python tools/process_state_probe.py --cell cnn_tuned:compile:bf16:1 --threads 1 \\
        --processes 6 --out results/<machine>/process-state-probe.json

Each process builds the runner `bench` times (a compiled artifact from the cache), and
cifar_speed.harness.measure times it (warm-up, interleaved-style trials, median of trial medians)
under `bench`'s default allocator. "off" runs the same command under `setarch -R`
(ADDR_NO_RANDOMIZE), so that every process starts from the same addresses. If the processes'
medians spread as widely with it off, their states come from somewhere the layout of virtual
addresses does not reach (which physical pages a process gets, say), and only sampling more
processes (`bench --processes N`) averages them.

`--env VAR=VALUE ...` (repeated; '' for the plain environment) compares environment settings
instead, the same way, and each process records how much of its memory sat on transparent huge
pages (`anon_huge_kib`): e.g. `--env '' --env GLIBC_TUNABLES=glibc.malloc.hugetlb=1`.
"""
from __future__ import annotations

import argparse
import json
import platform
import re
import shutil
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools.fresh_process import env_setting_ok, run_json_child  # noqa: E402


def child(cell: str, threads: int) -> dict:
    from cifar_speed import allocator

    allocator.configure(allocator.DEFAULT)
    import torch

    from cifar_speed import harness
    from cifar_speed.artifacts import runner_for
    from cifar_speed.locate import resolve_model

    torch.set_num_threads(threads)
    model, backend, precision, batch = cell.split(":")
    ref = resolve_model(model)
    runner = runner_for(ref.path, backend, precision, "cpu", [int(batch)], architecture=ref.architecture)
    r = harness.measure(runner, int(batch), harness.Settings(trials=9, max_trials=9, trial_time_s=0.3))
    return {"median_ms": r["median_ms"], "lower_quartile_ms": r["lower_quartile_ms"],
            "trial_median_ms": [t["median_ms"] for t in r["trial_records"]], "anon_huge_kib": _anon_huge_kib()}


def _anon_huge_kib() -> int | None:
    """How much of this process's anonymous memory sits on transparent huge pages."""
    try:
        text = Path("/proc/self/smaps_rollup").read_text()
    except OSError:
        return None
    found = re.search(r"^AnonHugePages:\s+(\d+) kB", text, re.M)
    return int(found.group(1)) if found else None


def run_one(cell: str, threads: int, setting: str) -> dict:
    """One fresh process under `setting`: "on"/"off" (address randomisation) or "env:VAR=VALUE ..."."""
    cmd = [sys.executable, __file__, "--child", "--cell", cell, "--threads", str(threads)]
    if setting == "off":
        cmd = ["setarch", platform.machine(), "-R", *cmd]
    return run_json_child(cmd, setting.removeprefix("env:") if setting.startswith("env:") else "", "process_state_probe")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cell", default="cnn_tuned:compile:bf16:1", help="model:backend:precision:batch")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--processes", type=int, default=6, help="processes per setting, the settings alternating")
    p.add_argument("--env", action="append", metavar="VAR=VALUE ...",
                   help="compare environment settings instead of randomisation on/off (repeat; '' is the "
                        "plain environment), e.g. --env '' --env GLIBC_TUNABLES=glibc.malloc.hugetlb=1")
    p.add_argument("--out", help="JSON file to write (default: print only)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    parts = a.cell.split(":")
    if len(parts) != 4 or not parts[3].isdigit() or int(parts[3]) < 1:
        p.error(f"--cell {a.cell!r} is not model:backend:precision:batch")
    if a.threads < 1 or a.processes < 1:
        p.error("--threads and --processes must be at least 1")
    if a.child:
        print(json.dumps(child(a.cell, a.threads)))
        return 0
    if a.env is not None:
        bad = [e for e in a.env if not env_setting_ok(e)]
        if bad:
            p.error(f"--env {bad[0]!r} is not VAR=VALUE ...")
        settings = ["env:" + e for e in a.env]
    else:
        if shutil.which("setarch") is None:
            p.error("needs setarch (util-linux) to turn randomisation off")
        settings = ["on", "off"]
    runs = {s: [] for s in settings}
    for i in range(a.processes):
        for setting in settings:
            r = run_one(a.cell, a.threads, setting)
            runs[setting].append(r)
            print(f"process {i + 1}, {_label(setting)}: median {r['median_ms']:.4f} ms, lower quartile "
                  f"{r['lower_quartile_ms']:.4f} ms, huge pages {r['anon_huge_kib']} KiB", flush=True)
    summary = {}
    for setting, rs in runs.items():
        medians = [r["median_ms"] for r in rs]
        quartiles = [r["lower_quartile_ms"] for r in rs]
        summary[setting] = {"process_medians_ms": medians, "median": statistics.median(medians),
                            "max_over_min": max(medians) / min(medians),
                            "process_lower_quartiles_ms": quartiles,
                            "lower_quartile_max_over_min": max(quartiles) / min(quartiles)}
        print(f"{_label(setting)}: process medians {min(medians):.4f}-{max(medians):.4f} ms, "
              f"max/min {max(medians) / min(medians):.3f}; lower quartiles max/min "
              f"{max(quartiles) / min(quartiles):.3f}")
    if a.out:
        from cifar_speed.fileio import atomic_write_text
        from cifar_speed.provenance import provenance

        doc = {"format": "cifar-speed-process-state-probe/1", "cell": a.cell, "threads": a.threads,
               "runs": runs, "summary": summary, "provenance": provenance()}
        atomic_write_text(Path(a.out), json.dumps(doc, indent=1) + "\n")
    return 0


def _label(setting: str) -> str:
    if setting in ("on", "off"):
        return f"randomisation {setting}"
    return f"environment {setting[4:] or '(plain)'}"


if __name__ == "__main__":
    raise SystemExit(main())
