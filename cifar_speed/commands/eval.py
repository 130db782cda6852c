"""`cifar-speed eval CKPT`: top-1 on the official 10,000 test images, per class, confusion matrix."""
from __future__ import annotations

import json

from rich.table import Table


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on the official CIFAR-10 test set")
    p.add_argument("checkpoint", metavar="CKPT",
                   help="a shipped checkpoint's name (`cifar-speed models`; fast_tta, fast_jpeg_tta = fast, fast_jpeg with "
                        "test-time augmentation), or a sidecar (.json) / weights (.safetensors)")
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu")
    p.add_argument("--model", help="expected architecture (refuses a checkpoint of another one); "
                                   "fast_tta evaluates a fast checkpoint with test-time augmentation")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.add_argument("--jpeg-quality", type=int, default=75, choices=range(1, 101), metavar="Q",
                   help="also score the test set after a JPEG round trip at this quality (default 75)")
    p.set_defaults(func=run)


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, n: int = 10) -> torch.Tensor:
    """rows: true class, columns: predicted class."""
    import torch

    return torch.bincount(labels * n + pred, minlength=n * n).view(n, n)


def run(args) -> int:
    from .. import data as D
    from ..checkpoint import load_checkpoint
    from ..console import clear_status, make_console, status, status_count
    from ..locate import resolve_model

    status("loading PyTorch")
    from ..backends import default_device
    from ..devices import resolve_device
    from ..evaluation import evaluate

    device = resolve_device(args.device or default_device())
    status("loading the checkpoint")
    ref = resolve_model(args.checkpoint)
    model, meta = load_checkpoint(ref.path, model_name=args.model or ref.architecture, device=str(device))
    status("loading and verifying the test set")
    test = D.load_split("test", args.data_dir)
    status(f"evaluating on {len(test):,} test images ({device})")
    result = evaluate(model, test, meta.mean, meta.std, device, on_batch=status_count)
    cm = confusion_matrix(result["pred"], test.labels)
    # The same model on the same images as users' JPEGs arrive: the clean top-1 alone flatters models
    # that lean on high-frequency detail (see README "Accuracy on JPEG inputs").
    status(f"evaluating on the JPEG copy (quality {args.jpeg_quality}; built once, then cached)")
    jpeg = D.jpeg_version(test, args.jpeg_quality)
    jpeg_result = evaluate(model, jpeg, meta.mean, meta.std, device, on_batch=status_count)
    jpeg_cm = confusion_matrix(jpeg_result["pred"], test.labels)
    per_class = {c: cm[i, i].item() / cm[i].sum().item() for i, c in enumerate(D.CLASSES)}
    recorded_key = "test_accuracy_tta" if (args.model or ref.architecture) == "fast_tta" else "test_accuracy"
    out = {"checkpoint": str(ref.path), "device": str(device), "model": getattr(model, "model_name", meta.architecture),
           "accuracy": result["accuracy"], "recorded_accuracy": meta.get(recorded_key),
           "per_class_accuracy": per_class, "confusion_matrix": cm.tolist(), "images": len(test),
           f"top1_jpeg{args.jpeg_quality}": jpeg_result["accuracy"], "jpeg_quality": args.jpeg_quality,
           "jpeg_sha256": D.content_sha256(jpeg),
           "per_class_accuracy_jpeg": {c: jpeg_cm[i, i].item() / jpeg_cm[i].sum().item() for i, c in enumerate(D.CLASSES)}}
    clear_status()
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    console = make_console()
    line = f"[bold]{out['model']}[/] top-1 on the official test set: [bold]{out['accuracy']:.4f}[/] ({len(test):,} images, {device})"
    if out["recorded_accuracy"] is not None:
        line += f"; recorded at training: {out['recorded_accuracy']:.4f}"
    console.print(line)
    console.print(f"top-1 on the same images as JPEG (quality {args.jpeg_quality}, 4:2:0, Pillow): "
                  f"[bold]{jpeg_result['accuracy']:.4f}[/] ({jpeg_result['accuracy'] - result['accuracy']:+.4f})")
    table = Table("true", *[c[:4] for c in D.CLASSES], "acc", f"jpeg{args.jpeg_quality}",
                  title="confusion matrix (rows: true class, columns: predicted)")
    for i, c in enumerate(D.CLASSES):
        table.add_row(c, *[str(v) for v in cm[i].tolist()], f"{per_class[c]:.3f}", f"{out['per_class_accuracy_jpeg'][c]:.3f}")
    console.print(table)
    return 0
