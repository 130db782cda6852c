#!/usr/bin/env python3
"""Every shipped checkpoint's top-1 on the clean test set, on the tool's JPEG-75 set (Pillow), and on
an independent encode of the same images (torchvision.io's own libjpeg-turbo build, quality 75,
4:2:0), so a reader can see that `top1_jpeg75` does not depend on one library's encoder.

    .venv/bin/python tools/jpeg_crosscheck.py --out results/<machine>/jpeg-crosscheck.json [CKPT ...]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from torchvision.io import decode_jpeg, encode_jpeg  # noqa: E402

from cifar_speed import data as D  # noqa: E402
from cifar_speed.checkpoint import load_checkpoint  # noqa: E402
from cifar_speed.fileio import atomic_write_text  # noqa: E402
from cifar_speed.locate import shipped  # noqa: E402
from cifar_speed.provenance import provenance  # noqa: E402
from cifar_speed.evaluation import evaluate  # noqa: E402


def torchvision_jpeg(split: D.Split, quality: int) -> D.Split:
    images = torch.stack([decode_jpeg(encode_jpeg(img, quality=quality)) for img in split.images])
    return D.Split(images, split.labels)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="*", help="sidecars (default: every shipped checkpoint)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--quality", type=int, default=75)
    args = ap.parse_args()
    clean = D.load_split("test")
    ours = D.jpeg_version(clean, args.quality)
    theirs = torchvision_jpeg(clean, args.quality)
    rows = []
    for sidecar in args.checkpoints or [str(p) for p in shipped().values()]:
        model, meta = load_checkpoint(sidecar)
        acc = {name: evaluate(model, split, meta.mean, meta.std, "cpu")["accuracy"]
               for name, split in (("clean", clean), ("pillow", ours), ("torchvision", theirs))}
        rows.append({"checkpoint": meta.name or Path(sidecar).stem, "sidecar": sidecar,
                     "top1": acc["clean"], "top1_jpeg": acc["pillow"], "top1_jpeg_torchvision": acc["torchvision"],
                     "drop_points": 100 * (acc["clean"] - acc["pillow"]),
                     "encoders_differ_points": 100 * (acc["pillow"] - acc["torchvision"])})
        print(f"{rows[-1]['checkpoint']:<22} clean {acc['clean']:.4f}  jpeg{args.quality} {acc['pillow']:.4f} "
              f"(torchvision encode {acc['torchvision']:.4f})", flush=True)
    doc = {"schema": "cifar-speed-jpeg-crosscheck/1", "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "quality": args.quality, "subsampling": "4:2:0",
           "pillow_sha256": D.content_sha256(ours), "torchvision_sha256": D.content_sha256(theirs),
           "mean_abs_pixel_error": {"pillow": (ours.images.float() - clean.images.float()).abs().mean().item(),
                                    "torchvision": (theirs.images.float() - clean.images.float()).abs().mean().item()},
           "rows": rows, "provenance": provenance()}
    atomic_write_text(args.out, json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
