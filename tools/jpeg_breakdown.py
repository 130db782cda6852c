#!/usr/bin/env python3
"""Which part of a JPEG round trip costs a checkpoint its top-1: the quantisation of the DCT blocks, the
4:2:0 chroma subsampling, or the two together (the tool's JPEG set).

Each checkpoint is scored, single view, on four versions of the official test images, all Pillow's
libjpeg-turbo: the clean images; quality Q with 4:4:4 chroma (quantisation alone); quality 100 with
4:2:0 chroma (subsampling with next to no quantisation); quality Q with 4:2:0 (the tool's set,
`top1_jpeg75` at Q = 75). The two partial drops need not add up to the whole.

    .venv/bin/python tools/jpeg_breakdown.py --out results/<machine>/jpeg-breakdown.json [CKPT ...]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cifar_speed import data as D  # noqa: E402
from cifar_speed.checkpoint import load_checkpoint  # noqa: E402
from cifar_speed.errors import CifarSpeedError  # noqa: E402
from cifar_speed.evaluation import evaluate  # noqa: E402
from cifar_speed.fileio import atomic_write_text  # noqa: E402
from cifar_speed.locate import shipped  # noqa: E402
from cifar_speed.provenance import provenance  # noqa: E402


def versions(clean: D.Split, quality: int) -> dict[str, D.Split]:
    """The four test sets, by the name each row's top-1 is stored under."""
    def roundtrip(q: int, subsampling: str) -> D.Split:
        return D.Split(D.jpeg_roundtrip(clean.images, q, subsampling), clean.labels)
    return {"top1": clean,
            "top1_quantisation_only": roundtrip(quality, "4:4:4"),
            "top1_subsampling_only": roundtrip(100, "4:2:0"),
            "top1_jpeg": D.jpeg_version(clean, quality)}


def row(sidecar: str, model, meta, sets: dict[str, D.Split]) -> dict:
    acc = {name: evaluate(model, split, meta.mean, meta.std, "cpu")["accuracy"] for name, split in sets.items()}
    points = lambda name: round(100 * (acc["top1"] - acc[name]), 2)  # noqa: E731
    return {"checkpoint": meta.name or Path(sidecar).stem, "sidecar": sidecar, **acc,
            "drop_points": points("top1_jpeg"), "drop_quantisation_points": points("top1_quantisation_only"),
            "drop_subsampling_points": points("top1_subsampling_only")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="*", help="sidecars (default: every shipped checkpoint)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--quality", type=int, default=75)
    args = ap.parse_args()
    try:
        sidecars = args.checkpoints or [str(p) for p in shipped().values()]
        loaded = [load_checkpoint(s) for s in sidecars]  # a bad file fails before minutes of encoding
        clean = D.load_split("test")
        sets = versions(clean, args.quality)
        rows = []
        for sidecar, (model, meta) in zip(sidecars, loaded):
            rows.append(row(sidecar, model, meta, sets))
            r = rows[-1]
            print(f"{r['checkpoint']:<34} clean {100 * r['top1']:.2f}  drop: q{args.quality} 4:2:0 {r['drop_points']:.2f} pt, "
                  f"q{args.quality} 4:4:4 {r['drop_quantisation_points']:.2f} pt, q100 4:2:0 "
                  f"{r['drop_subsampling_points']:.2f} pt", flush=True)
    except CifarSpeedError as e:
        print(f"jpeg_breakdown: error: {e}", file=sys.stderr)
        return 2
    doc = {"schema": "cifar-speed-jpeg-breakdown/1",
           "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "quality": args.quality, "encoder": "Pillow (libjpeg-turbo), baseline, no optimisation passes",
           "sets": {name: {"sha256": D.content_sha256(split),
                           "mean_abs_pixel_error": (split.images.float() - clean.images.float()).abs().mean().item()}
                    for name, split in sets.items()},
           "rows": rows, "provenance": provenance()}
    atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
