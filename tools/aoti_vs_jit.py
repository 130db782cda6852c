#!/usr/bin/env python3
"""torch.compile two ways, on this machine: the JIT runner that `cifar-speed bench --backend compile`
times, and the AOTInductor package that `cifar-speed compile --backend compile` writes, loaded back.

    python3 tools/aoti_vs_jit.py --model fast --model cnn_tuned --batch 1,128 \
        --out results/<machine>/aoti-vs-jit.json

Same checkpoint, precision, batch size and inputs; after one warm-up each, the two runners' trials
alternate (JIT, AOTI, JIT, AOTI, ...) and the ratio AOTI / JIT is taken per round, so a slow stretch
of the machine hits both sides of a ratio. Also recorded: the largest logit difference between the
two on one batch, and how long each took to build.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def compare_model(name: str, precision: str, batches: list[int], settings, device: str = "cpu") -> list[dict]:
    import torch

    from cifar_speed import artifacts, backends, harness
    from cifar_speed.checkpoint import load_checkpoint
    from cifar_speed.locate import resolve_model

    ref = resolve_model(name)
    model, meta = load_checkpoint(ref.path, model_name=ref.architecture)
    t0 = time.perf_counter()
    jit = backends.build("compile", model, meta, precision, device, batches)
    jit_build_s = time.perf_counter() - t0
    built = artifacts.compile_checkpoint(ref.path, "compile", precision, device, batches, architecture=ref.architecture)
    aoti, sidecar = artifacts.load_artifact(built.artifact, device)
    rows = []
    for batch in batches:
        timers = {"jit": harness.CellTimer(jit, batch, settings), "aoti": harness.CellTimer(aoti, batch, settings)}
        harness.run_round_robin(list(timers.values()), settings.trials)
        x = timers["jit"].xs[0]
        with torch.no_grad():
            diff = (jit(x) - aoti(x)).abs().max().item()
        ratios = [a.median_ms / j.median_ms for j, a in zip(timers["jit"].trials, timers["aoti"].trials)]
        rows.append({
            "model": name, "precision": precision, "batch_size": batch, "device": device,
            "threads": torch.get_num_threads(),
            "jit": timers["jit"].summary(),
            "aoti_over_jit_time": harness.spread(ratios), "aoti_over_jit_per_round": ratios,
            "max_logit_diff": diff, "jit_build_s": jit_build_s,
            "aoti": {**timers["aoti"].summary(), "artifact": str(built.artifact),
                     "artifact_sha256": sidecar["artifact_sha256"], "cache_hit": built.cache_hit,
                     "build_s": sidecar.get("build_seconds")},
        })
        r = rows[-1]
        print(f"{name} {precision} b{batch}: JIT {r['jit']['images_per_s']:,.0f} img/s, "
              f"AOTI {r['aoti']['images_per_s']:,.0f} img/s, AOTI/JIT time {r['aoti_over_jit_time']['median']:.3f} "
              f"[{r['aoti_over_jit_time']['min']:.3f}-{r['aoti_over_jit_time']['max']:.3f}], "
              f"max logit diff {diff:.2g}", flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, help="shipped model name (repeatable)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", default="1,128", help="comma-separated batch sizes (default 1,128)")
    p.add_argument("--trials", type=int, default=15)
    p.add_argument("--out", required=True, help="results JSON (written atomically)")
    args = p.parse_args(argv)

    from cifar_speed import backends, harness
    from cifar_speed.errors import CifarSpeedError
    from cifar_speed.fileio import atomic_write_json
    from cifar_speed.provenance import provenance

    try:
        batches = backends.parse_batches(args.batch)
        settings = harness.Settings(trials=args.trials)
        rows = [r for name in args.model for r in compare_model(name, args.precision, batches, settings, args.device)]
    except CifarSpeedError as e:
        print(f"aoti_vs_jit: error: {e}", file=sys.stderr)
        return 2
    atomic_write_json(Path(args.out), {
        "format": "cifar-speed-aoti-vs-jit/1", "provenance": provenance(), "harness": settings.as_dict(),
        "method": "one warm-up per runner, then JIT and AOTI trials alternating; ratio per round",
        "rows": rows, "median_aoti_over_jit": statistics.median(r["aoti_over_jit_time"]["median"] for r in rows)})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
