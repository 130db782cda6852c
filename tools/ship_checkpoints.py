#!/usr/bin/env python3
"""Copy trained checkpoints from runs/ into results/checkpoints/, the ones `cifar-speed bench` uses.

Each model is re-evaluated on the official test set with its weights rounded to fp16; where the
accuracy is unchanged the shipped file stores fp16 (half the size in git), else fp32. The sidecar
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
from cifar_speed.checkpoint import SHIPPED_DIR, load_checkpoint, save_checkpoint  # noqa: E402
from cifar_speed.evaluation import evaluate  # noqa: E402


def ship(sidecar: Path, out_dir: Path, data_dir, name: str | None = None) -> str:
    model, meta = load_checkpoint(sidecar)
    test = D.load_split("test", data_dir)
    mean, std = meta.mean, meta.std
    fp32 = evaluate(model, test, mean, std, "cpu")["accuracy"]
    rounded = load_checkpoint(sidecar)[0]
    with torch.no_grad():
        for p in rounded.state_dict().values():
            if p.is_floating_point():
                p.copy_(p.half().float())
    fp16 = evaluate(rounded, test, mean, std, "cpu")["accuracy"]
    same = fp16 == fp32
    source_sha = meta.get("weights_sha256")
    meta = {k: v for k, v in meta.items() if k not in ("format", "storage_dtype", "weights_file", "weights_sha256")}
    meta["shipping"] = {
        "source_weights_sha256": source_sha,
        "test_accuracy_fp32_weights": fp32,
        "test_accuracy_fp16_weights": fp16,
        "storage": "float16" if same else "float32",
        "why": "fp16-rounded weights give the same test accuracy" if same else "fp16 rounding changed the test accuracy",
    }
    if name and name != meta["name"]:
        meta["shipping"]["trained_as"], meta["name"] = meta["name"], name
    save_checkpoint(out_dir / meta["name"], model, meta, storage_dtype=torch.float16 if same else torch.float32)
    return f"{meta['name']}: fp32 {fp32:.4f}, fp16-rounded {fp16:.4f} -> stored as {meta['shipping']['storage']}"


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
