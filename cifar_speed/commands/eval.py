"""`cifar-speed eval CKPT`: top-1 on the official 10,000 test images, per class, confusion matrix."""
from __future__ import annotations

import json

import torch
from rich.console import Console
from rich.table import Table


def add_parser(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on the official CIFAR-10 test set")
    p.add_argument("checkpoint", help="checkpoint sidecar (.json) or weights (.safetensors)")
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--model", help="expected architecture (refuses a checkpoint of another one); "
                                   "fast_tta evaluates a fast checkpoint with test-time augmentation")
    p.add_argument("--json", action="store_true", help="print JSON instead of tables")
    p.set_defaults(func=run)


def confusion_matrix(pred: torch.Tensor, labels: torch.Tensor, n: int = 10) -> torch.Tensor:
    """rows: true class, columns: predicted class."""
    return torch.bincount(labels * n + pred, minlength=n * n).view(n, n)


def run(args) -> int:
    from .. import data as D
    from ..checkpoint import load_checkpoint
    from ..train.loop import evaluate, resolve_device

    device = resolve_device(args.device)
    model, meta = load_checkpoint(args.checkpoint, model_name=args.model, device=str(device))
    test = D.load_split("test", args.data_dir)
    norm = meta["normalize"]
    result = evaluate(model, test, norm["mean"], norm["std"], device)
    cm = confusion_matrix(result["pred"], test.labels)
    per_class = {c: cm[i, i].item() / cm[i].sum().item() for i, c in enumerate(D.CLASSES)}
    recorded_key = "test_accuracy_tta" if args.model == "fast_tta" else "test_accuracy"
    out = {"checkpoint": str(args.checkpoint), "model": getattr(model, "model_name", meta["model"]),
           "accuracy": result["accuracy"], "recorded_accuracy": meta.get(recorded_key),
           "per_class_accuracy": per_class, "confusion_matrix": cm.tolist(), "images": len(test)}
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    console = Console()
    line = f"[bold]{out['model']}[/] top-1 on the official test set: [bold]{out['accuracy']:.4f}[/] ({len(test):,} images)"
    if out["recorded_accuracy"] is not None:
        line += f"; recorded at training: {out['recorded_accuracy']:.4f}"
    console.print(line)
    table = Table("true", *[c[:4] for c in D.CLASSES], "acc", title="confusion matrix (rows: true class, columns: predicted)")
    for i, c in enumerate(D.CLASSES):
        table.add_row(c, *[str(v) for v in cm[i].tolist()], f"{per_class[c]:.3f}")
    console.print(table)
    return 0
