#!/usr/bin/env python3
"""What building OpenVINO's AsyncInferQueue inside each timed group cost an async cell: the runner's
inflight (its queue built once per batch size) against the same requests through a queue built per
group (how `bench` timed async OpenVINO cells before session 16), interleaved group by group.

    .venv/bin/python tools/ov_async_queue_probe.py --model cnn_tuned --precision int8 --batch 1 \\
        --threads 1 --rounds 200 --out results/<machine>/ov-async-queue-probe.json

Each round times one group of each kind in alternating order; a group is as many requests as an
async cell's timed group (inflight.GROUP_PER_REQUEST per request in flight, at least MIN_GROUP).
Reported per kind: the median over rounds of a group's wall time per request, and the per-round
ratio per-group queue / kept queue.
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="cnn_tuned")
    p.add_argument("--precision", default="int8", choices=["fp32", "bf16", "int8"])
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--out", help="JSON file to write (default: print only)")
    a = p.parse_args(argv)
    if min(a.batch, a.threads, a.rounds) < 1:
        p.error("--batch, --threads and --rounds must be at least 1")

    from cifar_speed import allocator

    allocator.configure(allocator.DEFAULT)
    import torch

    from cifar_speed import inflight
    from cifar_speed.artifacts import runner_for
    from cifar_speed.backends.openvino import ASYNC_HINT, Programs, _ov, core
    from cifar_speed.errors import CifarSpeedError
    from cifar_speed.locate import resolve_model

    torch.set_num_threads(a.threads)
    try:
        ref = resolve_model(a.model)
        runner = runner_for(ref.path, "openvino", a.precision, "cpu", [a.batch], architecture=ref.architecture)
    except CifarSpeedError as e:
        p.exit(2, f"ov_async_queue_probe: error: {e}\n")
    # The cached IR that `bench` times, compiled once with the async cells' hint; both kinds use it.
    program = Programs(core().read_model(runner.info["artifact"]), a.precision).get(a.batch, ASYNC_HINT)
    ov = _ov()
    g = torch.Generator().manual_seed(0)
    arrays = [torch.randn(a.batch, 3, 32, 32, generator=g).numpy() for _ in range(4)]

    def queue_with_callback():
        queue = ov.AsyncInferQueue(program)
        queue.set_callback(lambda _req, t0: time.perf_counter() - t0)
        return queue

    def requests(queue, calls: int) -> None:
        for i in range(calls):
            queue.start_async({0: arrays[i % len(arrays)]}, userdata=time.perf_counter(), share_inputs=True)
        queue.wait_all()

    kept = queue_with_callback()
    calls = max(inflight.MIN_GROUP, inflight.GROUP_PER_REQUEST * len(kept))   # an async cell's timed group
    kinds = {"kept_queue": lambda: requests(kept, calls),                     # bench since session 16
             "queue_per_group": lambda: requests(queue_with_callback(), calls)}   # bench before
    for fn in kinds.values():                                       # warm both paths
        for _ in range(5):
            fn()
    times: dict[str, list[float]] = {k: [] for k in kinds}
    for r in range(a.rounds):
        for k in (list(kinds) if r % 2 == 0 else list(reversed(kinds))):
            t0 = time.perf_counter()
            kinds[k]()
            times[k].append((time.perf_counter() - t0) / calls * 1e3)
    ratios = [b / k for k, b in zip(times["kept_queue"], times["queue_per_group"])]
    doc = {"format": "cifar-speed-ov-async-queue-probe/1", "model": a.model, "precision": a.precision,
           "batch_size": a.batch, "threads": a.threads, "rounds": a.rounds, "calls_per_group": calls,
           "requests_in_flight": len(kept),
           "ms_per_request": {k: {"median": statistics.median(v), "min": min(v), "max": max(v), "rounds": v}
                              for k, v in times.items()},
           "queue_per_group_over_kept": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}}
    for k, v in doc["ms_per_request"].items():
        print(f"{k}: median {v['median']:.4f} ms per request [{v['min']:.4f}-{v['max']:.4f}]")
    q = doc["queue_per_group_over_kept"]
    print(f"queue per group / kept queue, per round: median {q['median']:.3f} [{q['min']:.3f}-{q['max']:.3f}]")
    if a.out:
        from cifar_speed.fileio import atomic_write_text
        from cifar_speed.provenance import provenance

        doc["provenance"] = provenance()
        atomic_write_text(Path(a.out), json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
