"""`cifar-speed train RECIPE.toml`: train one recipe into a checkpoint (see train/*.toml)."""
from __future__ import annotations

import os
import subprocess
import sys

from rich.console import Console


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model from a recipe file")
    p.add_argument("recipe", help="a recipe file, e.g. train/cnn.toml")
    p.add_argument("--epochs", type=float, help="override the recipe's epoch count (for quick runs)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--out", default="runs", help="folder for <name>.safetensors/.json and <name>.work/ (default: runs)")
    p.add_argument("--resume", action="store_true", help="continue from the last completed epoch in <out>/<name>.work")
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py")
    p.add_argument("--seed", type=int, help="override the recipe's seed")
    p.add_argument("--name", help="output name (default: the recipe's file name)")
    p.add_argument("--nproc", type=int, default=1, help="train with N processes (DistributedDataParallel via torchrun)")
    p.add_argument("--no-progress", action="store_true", help="plain per-epoch lines only")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import CifarSpeedError
    from ..train import load_recipe
    from ..train.loop import train

    if args.nproc < 1:
        raise CifarSpeedError("--nproc must be a positive integer")
    if args.nproc > 1 and "RANK" not in os.environ:
        # Re-launch under torchrun, which sets up the process group and restarts nothing by itself.
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
                    "-m", "cifar_speed"]
        argv = [a for a in sys.argv[1:] if not a.startswith("--nproc")]
        if "--nproc" in sys.argv:
            i = sys.argv.index("--nproc")
            argv = [a for j, a in enumerate(sys.argv[1:], 1) if j not in (i, i + 1)]
        return subprocess.call(torchrun + argv)
    recipe = load_recipe(args.recipe)
    if args.seed is not None:
        recipe.seed = args.seed
    if args.name:
        recipe.name = args.name
    if args.epochs is not None and args.epochs <= 0:
        raise CifarSpeedError("--epochs must be positive")
    sidecar = train(recipe, data_dir=args.data_dir, device=args.device, out_dir=args.out, epochs=args.epochs,
                    resume=args.resume, show_progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        import json

        meta = json.loads(open(sidecar).read())
        line = f"{recipe.name}: test accuracy {meta['test_accuracy']:.4f}"
        if "test_accuracy_tta" in meta:
            line += f" (with TTA {meta['test_accuracy_tta']:.4f})"
        Console().print(f"{line}; {meta['train_seconds']:.0f} s training; checkpoint {sidecar}")
    return 0
