"""`cifar-speed bench [CKPT...]`: the sweep over checkpoints x backends x precisions x batch sizes."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console

from .. import backends, calibration, harness, sweep
from ..report import peak_text
from ..errors import CifarSpeedError


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmark checkpoints across backends, precisions and batch sizes")
from ..fileio import check_output_file
    p.add_argument("checkpoints", nargs="*", metavar="CKPT",
                   help="shipped checkpoint names (`cifar-speed models`), or sidecars / stems "
                        "(default: every checkpoint in ./results/checkpoints/)")
    p.add_argument("--backend", action="append", metavar="NAMES",
                   help=f"comma-separated, from {', '.join(backends.BACKENDS)} (default: every one available here)")
    p.add_argument("--precision", action="append", metavar="NAMES",
                   help=f"comma-separated, from {', '.join(backends.PRECISIONS)} (default: all; unavailable ones are listed)")
    p.add_argument("--batch", default=",".join(map(str, sweep.DEFAULT_BATCHES)),
                   help="comma-separated batch sizes (default 32,64,128)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--mode", choices=["device", "host", "both"],
                   help="inputs already on the device, or copied from host memory inside the timing "
                        "(default: device on CPU, both on CUDA)")
    p.add_argument("--data-dir", help="CIFAR-10 folder (default: $CIFAR_SPEED_DATA, then ~/.cache/cifar-speed)")
    p.add_argument("--out", help="results JSON path (default: results/<machine>/<name>.json, CSV beside it)")
    p.add_argument("--name", help="results file name (default: bench-<date>-<time>)")
    p.add_argument("--cache-dir", help="where ONNX exports and TensorRT engines are cached")
    p.add_argument("--compile-mode", default="default", help="torch.compile mode: default, max-autotune, reduce-overhead (CUDA)")
    p.add_argument("--min-time", type=float, default=harness.Settings.min_time_s, help="seconds timed per cell (default %(default)s)")
    p.add_argument("--min-reps", type=int, default=harness.Settings.min_reps, help="calls timed per cell, at least (default %(default)s)")
    p.add_argument("--max-warmup", type=float, default=harness.Settings.warmup_max_s,
                   help="seconds to wait for stable timings before measuring anyway (recorded; default %(default)s)")
    p.add_argument("--tolerance", type=float, default=sweep.DEFAULT_TOLERANCE,
                   help="flag a cell whose top-1 is this far (fraction) below eager fp32 (default %(default)s)")
    p.add_argument("--peak-gflops", type=float, help="peak GFLOP/s for peak_fraction (default: measured at the start of the run)")
    p.add_argument("--calib-size", default=str(calibration.DEFAULT_SIZE), metavar="N",
                   help="int8: training images in the calibration sample (default %(default)s; never test images)")
    p.add_argument("--calib-seed", default=str(calibration.DEFAULT_SEED), metavar="SEED",
                   help="int8: seed that draws the calibration sample (default %(default)s)")
    p.add_argument("--dawnbench", action="store_true", help="also measure batch-1 latency over the test images (DAWNBench)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _joined(values):
    return None if not values else ",".join(values)


def run(args) -> int:
    console = Console()
    if not console.is_terminal:  # piped / CI log: do not squeeze the table into 80 columns
        console = Console(width=160)
    batches = backends.parse_batches(args.batch)
    names = backends.parse_choices(_joined(args.backend), list(backends.BACKENDS), "backend")
    precisions = backends.parse_choices(_joined(args.precision), list(backends.PRECISIONS), "precision")
    if args.min_time <= 0 or args.min_reps < 1 or args.max_warmup <= 0:
        raise CifarSpeedError("--min-time and --max-warmup must be positive, --min-reps a positive integer")
    calib_size, calib_seed = calibration.check_params(args.calib_size, args.calib_seed)
    if not 0 <= args.tolerance < 1:
        raise CifarSpeedError("--tolerance is a fraction of top-1 in [0, 1)")
    if args.compile_mode not in ("default", "max-autotune", "reduce-overhead"):
        raise CifarSpeedError(f"unknown torch.compile mode {args.compile_mode!r}; valid modes: default, max-autotune, reduce-overhead")
    from ..locate import resolve_checkpoint

    checkpoints = [resolve_checkpoint(c) for c in args.checkpoints] or sweep.default_checkpoints()
def _check_numeric_flags(args) -> None:
    """NaN, infinities and absurd values would otherwise reach the results file (NaN --min-time) or a
    peak fraction (negative --peak-gflops)."""
    from ..checks import Range, check

    check(args.min_time, Range(0, 3600, low_open=True, why="seconds per cell"), "--min-time")
    check(args.max_warmup, Range(0, 3600, low_open=True, why="seconds per cell"), "--max-warmup")
    check(args.min_reps, Range(1, 10**7, integer=True), "--min-reps")
    check(args.tolerance, Range(0, 1, high_open=True, why="a fraction of top-1"), "--tolerance")
    if args.peak_gflops is not None:
        check(args.peak_gflops, Range(0, 10**9, low_open=True), "--peak-gflops")


    device = args.device or backends.default_device()
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise CifarSpeedError("--device cuda: no CUDA GPU visible to torch")
    out = Path(args.out) if args.out else sweep.default_results_path(args.name)
    if args.name is not None and (not args.name or "/" in args.name or args.name in (".", "..")):
        raise CifarSpeedError(f"--name {args.name!r} must be a plain file name (no folders)")
    check_output_file(out)  # before the sweep: a bad --out must not cost a whole run
    settings = harness.Settings(min_time_s=args.min_time, min_reps=args.min_reps, warmup_max_s=args.max_warmup)
    cfg = sweep.SweepConfig(
        checkpoints=checkpoints, backends=names, precisions=precisions, batches=batches, device=device,
    _check_numeric_flags(args)
        data_dir=args.data_dir, settings=settings, cache_dir=args.cache_dir, tolerance=args.tolerance,
        modes=None if args.mode in (None,) else (["device", "host"] if args.mode == "both" else [args.mode]),
        compile_mode=args.compile_mode, dawnbench=args.dawnbench, peak_gflops=args.peak_gflops,
        calib_size=calib_size, calib_seed=calib_seed)
    results = sweep.run_sweep(cfg, progress=not args.no_progress, console=console)
    json_path, csv_path = sweep.write_results(results, out)
    for mode in results["harness"]["modes"]:
        console.print(sweep.table(results, mode))
    for line in sweep.skipped_lines(results):
        console.print(f"[yellow]skipped[/] {line}")
    for c in results["cells"]:
        if c.get("status") == "failed":
            console.print(f"[red]failed[/] {c['model']} {c['backend']} {c['precision']} b{c.get('batch_size', '-')}: {c['reason']}")
    n_dist = sum(1 for c in results["cells"] if c.get("disturbed"))
    if n_dist:
        console.print(f"[yellow]{n_dist} cell(s) disturbed[/]: another process shared the CPU (cpu/wall below "
                      f"{settings.disturbed_fraction} x threads); rerun on an idle machine")
    peak = results["peak"]
    console.print(f"peak used for peak_fraction: {peak_text(peak)}"
                  + (" [yellow]- disturbed: pass --peak-gflops from `cifar-speed doctor --peak` on an idle machine[/]"
                     if peak.get("disturbed") else ""))
    console.print(f"results: {json_path} and {csv_path}")
    # Results are written either way; a cell that failed to build or run makes the exit status 1.
    return 1 if any(c.get("status") == "failed" for c in results["cells"]) else 0
