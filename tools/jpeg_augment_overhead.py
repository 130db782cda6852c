#!/usr/bin/env python3
"""What the JPEG training augmentation costs: a training step of a model with and without it.

    python3 tools/jpeg_augment_overhead.py --model fast --batch 256 --fraction 0.5 \
        --out results/<machine>/jpeg-augment-overhead.json

Two cells on real training images, timed by the harness with their trials interleaved: the step
alone (forward, backward, SGD update) and the augmentation followed by the same step. The overhead
is taken per round (step with augmentation / step alone), so a slow stretch of the machine hits
both sides of each ratio. The loop's other work (loading, flips, crops) is left out, so the step
alone is shorter than an epoch's share and the overhead reads high, never low.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def measure_overhead(model_name: str, batch: int, fraction: float, quality: tuple[int, int], trials: int,
                     images=None) -> dict:
    import torch
    import torch.nn.functional as F

    from cifar_speed import data as D, harness
    from cifar_speed.backends import Runner
    from cifar_speed.models import create_model

    torch.manual_seed(0)
    if images is None:
        images = D.load_split("train").images[:4 * batch]
    x_all = D.normalize(images, D.CIFAR_MEAN, D.CIFAR_STD)
    model = create_model(model_name).train()
    if hasattr(model, "init_whitening"):
        model.init_whitening(x_all)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3, momentum=0.9)
    labels = torch.zeros(batch, dtype=torch.long)
    jpeg = D.JpegAugment(fraction, *quality)
    gen = torch.Generator().manual_seed(0)

    def step(x):
        loss = F.cross_entropy(model(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    settings = harness.Settings(trials=trials, max_trials=trials, trial_time_s=0.0, trial_min_reps=1)
    cells = {name: harness.CellTimer(Runner(fn, "train-step", "fp32", "cpu"), batch, settings, source=x_all)
             for name, fn in (("step", step), ("jpeg+step", lambda x: step(jpeg(x, D.CIFAR_MEAN, D.CIFAR_STD, gen))))}
    harness.run_round_robin(list(cells.values()))
    ratio = harness.paired_ratio(cells["jpeg+step"].trials, cells["step"].trials)  # (aug + step) / step
    return {"model": model_name, "batch_size": batch, "jpeg_fraction": fraction, "jpeg_quality": list(quality),
            "threads": torch.get_num_threads(),
            "step_ms": cells["step"].summary()["median_ms"], "jpeg_step_ms": cells["jpeg+step"].summary()["median_ms"],
            "overhead": ratio["median"] - 1, "overhead_range": [ratio["min"] - 1, ratio["max"] - 1],
            "overhead_rse": ratio["rse"],   # relative standard error of the median ratio (aug + step) / step
            "rounds": ratio["n"], "trials": {k: [t.to_dict() for t in c.trials] for k, c in cells.items()}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="fast")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("--quality", default="30,95", help="MIN,MAX (default %(default)s)")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)

    from cifar_speed.errors import CifarSpeedError
    from cifar_speed.fileio import atomic_write_text
    from cifar_speed.provenance import provenance

    try:
        quality = tuple(int(q) for q in args.quality.split(","))
        if len(quality) != 2:
            raise ValueError
    except ValueError:
        print(f"error: --quality {args.quality!r}: expected MIN,MAX", file=sys.stderr)
        return 2
    try:
        row = measure_overhead(args.model, args.batch, args.fraction, quality, args.trials)
    except CifarSpeedError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    doc = {"schema": "cifar-speed-jpeg-augment-overhead/1", **row, "provenance": provenance()}
    atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
    print(f"{args.model} b{args.batch}: step {row['step_ms']:.0f} ms, with JPEG augmentation at "
          f"{args.fraction:.0%} {row['jpeg_step_ms']:.0f} ms: {row['overhead']:+.1%} (median of the per-round ratios) "
          f"[{row['overhead_range'][0]:+.1%} to {row['overhead_range'][1]:+.1%}] over {row['rounds']} rounds "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
