#!/usr/bin/env python3
"""Copy trained checkpoints from runs/ into results/checkpoints/, the ones `cifar-speed bench` uses.

Each model is re-evaluated on the official test set and its JPEG-75 copy (and, for fast, with its
test-time augmentation) with its weights rounded to fp16; where every accuracy is unchanged the shipped
file stores fp16 (half the size in git), else fp32. The sidecar
keeps the training record and says which storage was chosen and why.

    .venv/bin/python tools/ship_checkpoints.py runs/fast.json runs/cnn.json ...
    .venv/bin/python tools/ship_checkpoints.py runs/frontier_l_jpeg95_q60_e14.json --as frontier_l

--as ships one run under the model's name (a seed of an experiment whose recipe became the shipped
one); the sidecar keeps the run's own name in shipping.trained_as.

    .venv/bin/python tools/ship_checkpoints.py --score-jpeg [results/checkpoints/fast.json ...]

--score-jpeg ships nothing: it scores the shipped checkpoints whose training predates the JPEG-75 set
(by default every one under --out without a JPEG-75 top-1) on that set, with the weights as shipped and
as training scores it, and records the figure in the sidecar, marked as scored here
(`test_accuracy_jpeg75_scored_by`, with this run's provenance), so that every top-1 the tool prints has its
JPEG-75 figure beside it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cifar_speed import data as D  # noqa: E402
from cifar_speed.checkpoint import (SHARED_WEIGHTS, SHIPPED_DIR, load_checkpoint, paths_for, read_sidecar,  # noqa: E402
                                    save_checkpoint)
from cifar_speed.errors import CifarSpeedError  # noqa: E402
from cifar_speed.evaluation import evaluate, jpeg75_scores  # noqa: E402
from cifar_speed.fileio import atomic_write_json  # noqa: E402
from cifar_speed.provenance import provenance  # noqa: E402

SCORED_BY = "tools/ship_checkpoints.py --score-jpeg"


def top1_by_set(sidecar: Path, sets: dict[str, D.Split]) -> tuple[dict[str, float], dict[str, float]]:
    """Top-1 of the checkpoint on each set, and of its view (fast_tta) where it has one, with the weights as
    trained and then rounded to fp16, each model loaded once: ({"top-1": .., "JPEG-75 top-1": ..,
    "fast_tta top-1": ..}, the same keys for the fp16-rounded weights)."""
    as_trained, rounded = {}, {}
    architecture = read_sidecar(sidecar).architecture
    # fast's test-time-augmentation figure is one of its headline numbers: fp16 storage must keep it too.
    for view in [None] + ([SHARED_WEIGHTS[architecture]] if architecture in SHARED_WEIGHTS else []):
        model, meta = load_checkpoint(sidecar, model_name=view)
        for scores in (as_trained, rounded):
            if scores is rounded:
                with torch.no_grad():
                    for p in model.state_dict().values():
                        if p.is_floating_point():
                            p.copy_(p.half().float())
            for name, split in sets.items():
                scores[f"{view + ' ' if view else ''}{name}"] = evaluate(model, split, meta.mean, meta.std, "cpu")["accuracy"]
    return as_trained, rounded


def ship(sidecar: Path, out_dir: Path, data_dir, name: str | None = None) -> str:
    model, meta = load_checkpoint(sidecar)
    test = D.load_split("test", data_dir)
    sets = {"top-1": test, "JPEG-75 top-1": D.jpeg_version(test, 75)}
    fp32, fp16 = top1_by_set(sidecar, sets)
    changed = [k for k in fp32 if fp16[k] != fp32[k]]
    same = not changed
    source_sha = meta.get("weights_sha256")
    meta = {k: v for k, v in meta.items() if k not in ("format", "storage_dtype", "weights_file", "weights_sha256")}
    meta["shipping"] = {
        "source_weights_sha256": source_sha,
        "test_accuracy_fp32_weights": fp32["top-1"],
        "test_accuracy_fp16_weights": fp16["top-1"],
        "checked": {k: {"fp32_weights": fp32[k], "fp16_weights": fp16[k]} for k in fp32},
        "storage": "float16" if same else "float32",
        "why": ("fp16-rounded weights give the same " + ", ".join(fp32) if same
                else "fp16 rounding changed the " + ", ".join(changed)),
    }
    if name and name != meta["name"]:
        meta["shipping"]["trained_as"], meta["name"] = meta["name"], name
    save_checkpoint(out_dir / meta["name"], model, meta, storage_dtype=torch.float16 if same else torch.float32)
    scores = ", ".join(f"{k} {fp32[k]:.4f} / {fp16[k]:.4f}" for k in fp32)
    return f"{meta['name']}: fp32 / fp16-rounded weights: {scores} -> stored as {meta['shipping']['storage']}"


def score_jpeg(sidecar: Path, data_dir) -> str:
    """Record a shipped checkpoint's JPEG-75 top-1 where its sidecar has none: the weights as shipped,
    scored as training scores it (eager fp32 on CPU), the set's sha256 and who scored it, when, where. The
    rest of the sidecar, the training record, is left as training and shipping wrote it."""
    sidecar = paths_for(sidecar)[1]      # given as its .json or its .safetensors: the .json is written
    meta = dict(read_sidecar(sidecar))   # checked: a cifar-speed sidecar, whose weights file is there
    if meta.get("test_accuracy_jpeg75") is not None:
        return f"{sidecar.stem}: JPEG-75 top-1 {meta['test_accuracy_jpeg75']:.4f} recorded already, unchanged"
    model, ckpt = load_checkpoint(sidecar)
    meta |= jpeg75_scores(model, D.load_split("test", data_dir), ckpt.mean, ckpt.std, "cpu")
    meta.update(test_accuracy_jpeg75_scored_by=SCORED_BY, test_accuracy_jpeg75_provenance=provenance())
    atomic_write_json(sidecar, meta)
    return (f"{sidecar.stem}: top-1 {meta['test_accuracy']:.4f}, JPEG-75 top-1 {meta['test_accuracy_jpeg75']:.4f} "
            "(scored now, recorded)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sidecars", nargs="*", type=Path)
    ap.add_argument("--out", type=Path, default=SHIPPED_DIR)
    ap.add_argument("--data-dir")
    ap.add_argument("--as", dest="name", metavar="NAME", help="ship the one run given under this name")
    ap.add_argument("--score-jpeg", action="store_true",
                    help="ship nothing: record the JPEG-75 top-1 of shipped checkpoints whose sidecar has none "
                         "(the sidecars given, else every one under --out)")
    args = ap.parse_args(argv)
    if args.score_jpeg:
        if args.name:
            ap.error("--score-jpeg ships nothing: --as does not apply")
        try:
            for s in args.sidecars or sorted(args.out.glob("*.json")):
                print(score_jpeg(s, args.data_dir))
        except CifarSpeedError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    if not args.sidecars:
        ap.error("give the sidecars of the runs to ship")
    if args.name and len(args.sidecars) != 1:
        ap.error("--as names one run: give one sidecar")
    for s in args.sidecars:
        print(ship(s, args.out, args.data_dir, args.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
