"""`cifar-speed train RECIPE.toml`: train one recipe into a checkpoint (see train/*.toml)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model from a recipe file")
    p.add_argument("recipe", help="a recipe file, e.g. train/cnn.toml")
    p.add_argument("--epochs", type=float, help="override the recipe's epoch count (for quick runs)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available, else cpu (printed)")
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

    from ..checks import Range, check
    from ..fileio import check_output_dir
    from ..train.recipe import check_field

    if args.nproc < 1:
        raise CifarSpeedError("--nproc must be a positive integer")
    check(args.nproc, Range(1, 1024, integer=True), "--nproc")
    if args.epochs is not None:
        check_field("train", "epochs", args.epochs, "--epochs")
    if args.seed is not None:
        check_field("", "seed", args.seed, "--seed")
    if args.name is not None and (not args.name or args.name in (".", "..") or "/" in args.name or os.sep in args.name):
        raise CifarSpeedError(f"--name {args.name!r} must be a plain file name (no folders): outputs go in --out")
    check_output_dir(args.out)  # before any work: a bad --out must not cost a training run
    if args.device is None:  # the same default as bench and eval: the best device here, said out loud
        from ..backends import default_device
        from ..console import make_console

        args.device = default_device()
        make_console().print(f"device: {args.device} (the best available here; choose with --device)")
    if args.nproc > 1 and "RANK" not in os.environ:
        return _launch_torchrun(args)
    recipe = load_recipe(args.recipe)
    if args.seed is not None:
        recipe.seed = args.seed
    if args.name:
        recipe.name = args.name
    sidecar = train(recipe, data_dir=args.data_dir, device=args.device, out_dir=args.out, epochs=args.epochs,
                    resume=args.resume, show_progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        meta = json.loads(Path(sidecar).read_text())
        line = f"{recipe.name}: test accuracy {meta['test_accuracy']:.4f}"
        if "test_accuracy_tta" in meta:
            line += f" (with TTA {meta['test_accuracy_tta']:.4f})"
        from ..console import make_console

        make_console().print(f"{line}; {meta['train_seconds']:.0f} s training; checkpoint {sidecar}")
    return 0


def _launch_torchrun(args) -> int:
    """Re-launch this command under torchrun (one machine, N processes), after checking the inputs
    here so a bad recipe or data folder is one line, not N failing workers and torchrun's report."""
    import torch

    from .. import data as D
    from ..errors import CifarSpeedError
    from ..train import load_recipe
    from ..devices import resolve_device

    if not torch.distributed.is_available():
        raise CifarSpeedError("--nproc needs a PyTorch build with torch.distributed")
    load_recipe(args.recipe)
    dev = resolve_device(args.device)
    if dev.type == "cuda" and args.nproc > torch.cuda.device_count():
        raise CifarSpeedError(f"--nproc {args.nproc} with --device cuda needs {args.nproc} GPUs; "
                              f"{torch.cuda.device_count()} visible")
    if args.epochs is not None and args.epochs <= 0:
        raise CifarSpeedError("--epochs must be positive")
    D.resolve_data_dir(args.data_dir)
    # Rebuilt from the parsed arguments, not sys.argv: main(argv) may be called from Python.
    argv = ["train", args.recipe, "--device", args.device, "--out", str(args.out)]
    for flag, value in (("--epochs", args.epochs), ("--data-dir", args.data_dir), ("--seed", args.seed),
                        ("--name", args.name)):
        if value is not None:
            argv += [flag, str(value)]
    argv += ["--resume"] * bool(args.resume) + ["--no-progress"] * bool(args.no_progress)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
                "-m", "cifar_speed"]
    rc = subprocess.call(torchrun + argv)
    if rc != 0:
        raise CifarSpeedError(f"distributed training failed: torchrun exited with status {rc} (see the worker output above)")
    return 0
