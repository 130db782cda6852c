#!/usr/bin/env python3
"""Watch the host's slow phases: one cell on 2 threads and on 1 thread, trial after trial, beside the
canary, the wake-up probe and a tiny 2-thread op, in fresh processes under several OpenMP settings
taken in turn.

    .venv/bin/python tools/host_phases.py --cell cnn_tuned:eager:fp32 --seconds 25 --repeats 3 \\
        --env "" --env OMP_WAIT_POLICY=ACTIVE --env OMP_WAIT_POLICY=PASSIVE --out results/<machine>/host-phases.json

Why (issue 11): on the 2-vCPU VMs, eager fp32 at batch 1 on 2 threads switched between a fast and a
slow speed from trial to trial, and some processes stayed slow for all their trials. If the slow
phases come from our own threads going to sleep between layers (OpenMP's wait policy), a setting
that keeps them spinning (OMP_WAIT_POLICY=ACTIVE, a large GOMP_SPINCOUNT) removes them; if they come
from the host (our second vCPU run late), they hit every setting at the same moments, the 1-thread
trials do not slow down, and the wake-up reading rises with them. Each round records: the 2-thread
and the 1-thread trial median (harness.CellTimer, bench's settings), the canary (1-thread matmul),
the wake-up round trip, and the median time of a 2-thread add of two 128k-element tensors (one
OpenMP fork-join per call). The settings alternate, so a phase of the host lands on whichever ran.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tools.fresh_process import env_setting_ok, run_json_child  # noqa: E402


def child(cell: str, seconds: float) -> list[dict]:
    from cifar_speed import allocator

    allocator.configure(allocator.DEFAULT)
    import torch

    from cifar_speed import harness
    from cifar_speed.artifacts import runner_for
    from cifar_speed.locate import resolve_model

    model, backend, precision = cell.split(":")
    ref = resolve_model(model)
    runner = runner_for(ref.path, backend, precision, "cpu", [1], architecture=ref.architecture)
    settings = harness.Settings()
    two, one = (harness.CellTimer(runner, 1, settings, threads=n) for n in (2, 1))
    two.warm_up()
    one.warm_up()
    canary = harness.Canary(settings.canary_s, wake=harness.WakeProbe.shared())
    a, b = torch.randn(1 << 17), torch.randn(1 << 17)

    def fork_join_us(calls: int = 200) -> float:
        torch.set_num_threads(2)
        times = []
        for _ in range(calls):
            t0 = time.perf_counter()
            torch.add(a, b)
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e6

    rounds, start = [], time.time()
    while time.time() - start < seconds:
        t2, t1 = two.trial(len(rounds)), one.trial(len(rounds))
        rounds.append({"t": time.time(), "two_threads_ms": t2.median_ms, "one_thread_ms": t1.median_ms,
                       "canary_ms": canary.read(), "wake_us": canary.last_wake_us, "fork_join_us": fork_join_us(),
                       "cpu_wall_ratio": t2.disturbance.cpu_wall_ratio, "steal_s": t2.disturbance.steal_s,
                       "others_cpu_s": t2.disturbance.others_cpu_s})
    return rounds


def run_one(cell: str, seconds: float, env_text: str) -> list[dict]:
    cmd = [sys.executable, __file__, "--child", "--cell", cell, "--seconds", str(seconds)]
    return run_json_child(cmd, env_text, "host_phases")


def summarize(rounds: list[dict], slow_ms: float) -> dict:
    from cifar_speed.harness import rank_correlation

    two = [r["two_threads_ms"] for r in rounds]
    wake = [r["wake_us"] for r in rounds]
    slow = [r for r in rounds if r["two_threads_ms"] > slow_ms]
    fast = [r for r in rounds if r["two_threads_ms"] <= slow_ms]

    def med(rs, k):
        return statistics.median(r[k] for r in rs) if rs else None

    return {"rounds": len(rounds), "slow_rounds": len(slow), "two_threads_ms": statistics.median(two),
            "one_thread_ms": med(rounds, "one_thread_ms"),
            "slow": {k: med(slow, k) for k in ("two_threads_ms", "one_thread_ms", "canary_ms", "wake_us", "fork_join_us")},
            "fast": {k: med(fast, k) for k in ("two_threads_ms", "one_thread_ms", "canary_ms", "wake_us", "fork_join_us")},
            "wake_vs_two_threads_rank_corr": rank_correlation(wake, two)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cell", default="cnn_tuned:eager:fp32", help="model:backend:precision (timed at batch 1)")
    p.add_argument("--seconds", type=float, default=25.0, help="per process")
    p.add_argument("--repeats", type=int, default=3, help="processes per setting, the settings alternating")
    p.add_argument("--env", action="append", default=None, metavar="'NAME=VALUE ...'",
                   help="a setting: environment variables for its processes ('' = none; repeatable)")
    p.add_argument("--slow", type=float, default=1.3,
                   help="a round is slow when its 2-thread trial median is above this times the lower quartile "
                        "of all 2-thread trial medians")
    p.add_argument("--out", help="JSON file to write (default: print only)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    parts = a.cell.split(":")
    if len(parts) != 3 or not all(parts):
        p.error(f"--cell {a.cell!r} is not model:backend:precision")
    if a.seconds <= 0 or a.repeats < 1 or a.slow <= 1:
        p.error("--seconds must be positive, --repeats at least 1, --slow above 1")
    if a.child:
        print(json.dumps(child(a.cell, a.seconds)))
        return 0
    envs = a.env if a.env is not None else [""]
    if not all(env_setting_ok(e) for e in envs):
        p.error("--env takes NAME=VALUE pairs separated by spaces")
    runs = []
    for i in range(a.repeats):
        for env in envs:
            runs.append({"env": env, "repeat": i, "rounds": run_one(a.cell, a.seconds, env)})
            print(f"repeat {i + 1}, env {env or '(none)'}: {len(runs[-1]['rounds'])} rounds", flush=True)
    from cifar_speed.harness import figure_of

    slow_ms = a.slow * figure_of([r["two_threads_ms"] for run in runs for r in run["rounds"]])
    t0 = min(r["t"] for run in runs for r in run["rounds"])
    for run in runs:
        run["summary"] = summarize(run["rounds"], slow_ms)
        for r in run["rounds"]:
            r["t"] = round(r["t"] - t0, 3)
        s = run["summary"]
        print(f"env {run['env'] or '(none)':26} repeat {run['repeat'] + 1}: 2t median {s['two_threads_ms']:.3f} ms, "
              f"slow rounds {s['slow_rounds']}/{s['rounds']}; slow vs fast rounds: 2t "
              f"{_pair(s, 'two_threads_ms', '.3f')} ms, 1t {_pair(s, 'one_thread_ms', '.3f')} ms, wake "
              f"{_pair(s, 'wake_us', '.0f')} us, fork-join {_pair(s, 'fork_join_us', '.1f')} us, canary "
              f"{_pair(s, 'canary_ms', '.4f')} ms")
    if a.out:
        from cifar_speed.fileio import atomic_write_text
        from cifar_speed.provenance import provenance

        doc = {"format": "cifar-speed-host-phases/1", "cell": a.cell, "batch": 1, "seconds": a.seconds,
               "slow_threshold_ms": slow_ms, "slow_rule": f"2-thread trial median > {a.slow:g} x the lower quartile of all",
               "runs": runs, "provenance": provenance()}
        atomic_write_text(Path(a.out), json.dumps(doc, indent=1) + "\n")
    return 0


def _pair(summary: dict, key: str, fmt: str) -> str:
    s, f = summary["slow"][key], summary["fast"][key]
    return f"{format(s, fmt) if s is not None else '-'} / {format(f, fmt) if f is not None else '-'}"


if __name__ == "__main__":
    raise SystemExit(main())
