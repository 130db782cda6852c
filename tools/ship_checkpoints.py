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
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cifar_speed import data as D  # noqa: E402
from cifar_speed.checkpoint import SHARED_WEIGHTS, SHIPPED_DIR, load_checkpoint, read_sidecar, save_checkpoint  # noqa: E402
from cifar_speed.evaluation import evaluate  # noqa: E402


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sidecars", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=SHIPPED_DIR)
    ap.add_argument("--data-dir")
    ap.add_argument("--as", dest="name", metavar="NAME", help="ship the one run given under this name")
    args = ap.parse_args(argv)
    if args.name and len(args.sidecars) != 1:
        ap.error("--as names one run: give one sidecar")
    for s in args.sidecars:
        print(ship(s, args.out, args.data_dir, args.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
