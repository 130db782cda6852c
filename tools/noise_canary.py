#!/usr/bin/env python3
"""Does a fixed reference workload see the same slow-downs as a benchmark cell? (issue 11)

    python3 tools/noise_canary.py --model fast --model cnn_tuned --batch 1 \
        --out results/<machine>/noise-canary.json

On a virtual machine the host's other tenants slow our vCPUs down without any trace inside the VM
(process CPU time and /proc/stat steal stay clean), so trial medians of one cell move by 10-20 %.
Here each trial of an eager fp32 cell (0.15 s) sits between two "canary" blocks (0.03 s of a fixed
192x192 matmul, median per call). If the canary's time follows the trial's, the slow-down is
the machine's, shared by every workload, and dividing by the canary removes part of it: the file
gives the correlation and the coefficient of variation of the trial medians before and after.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _median_time(fn, seconds: float, min_calls: int = 3) -> float:
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < min_calls:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def check(name: str, batch: int, trials: int, threads: int) -> dict:
    import numpy as np
    import torch

    from cifar_speed import backends, harness
    from cifar_speed.checkpoint import load_checkpoint
    from cifar_speed.locate import resolve_model

    torch.set_num_threads(threads)
    ref = resolve_model(name)
    model, meta = load_checkpoint(ref.path, model_name=ref.architecture)
    runner = backends.build("eager", model, meta, "fp32", "cpu", [batch])
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    # The harness's own canary (192x192 matmul, 0.03 s), here at the cell's thread count as measured.
    reference = harness.Canary(0.03, threads)

    def canary():
        return reference.read() / 1e3

    with torch.inference_mode():
        for _ in range(20):   # warm-up
            runner(x)
            canary()
        rows = []
        for _ in range(trials):
            before = canary()
            cell = _median_time(lambda: runner(x), 0.15)
            rows.append({"canary_before_ms": before * 1e3, "trial_median_ms": cell * 1e3,
                         "canary_after_ms": canary() * 1e3})
    t = np.array([r["trial_median_ms"] for r in rows])
    c = np.array([(r["canary_before_ms"] + r["canary_after_ms"]) / 2 for r in rows])
    normalized = t / c
    return {"model": name, "batch_size": batch, "threads": threads, "trials": rows,
            "trial_cv": float(t.std() / t.mean()), "canary_cv": float(c.std() / c.mean()),
            "correlation": float(np.corrcoef(t, c)[0, 1]),
            "normalized_cv": float(normalized.std() / normalized.mean())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--trials", type=int, default=60)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from cifar_speed.fileio import atomic_write_json
    from cifar_speed.provenance import provenance

    results = [check(m, args.batch, args.trials, args.threads) for m in args.model]
    for r in results:
        print(f"{r['model']} eager fp32 b{r['batch_size']} {r['threads']}t: trial CV {r['trial_cv']:.3f}, "
              f"canary CV {r['canary_cv']:.3f}, correlation {r['correlation']:.2f}, "
              f"CV after dividing by the canary {r['normalized_cv']:.3f}")
    atomic_write_json(Path(args.out), {"format": "cifar-speed-noise-canary/1", "provenance": provenance(),
                                       "method": "canary (0.03 s of a 192x192 fp32 matmul) before and after "
                                                 "each 0.15 s trial; their mean divides the trial median",
                                       "results": results})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
