"""`cifar-speed bench [CKPT...]`: the sweep over checkpoints x backends x precisions x batch sizes x threads.

Exit status: 0; 1 when a cell failed to build or run; 3 with --fail-on-disturbed when a cell (or
the peak probe) was disturbed; 2 for bad input. Results are written in every case."""
from __future__ import annotations

import json
from pathlib import Path

from .. import allocator, defaults
from ..errors import CifarSpeedError
from ..fileio import check_output_file

# torch, the backends and the sweep are imported inside the functions that run: `bench --help` does not need them.


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="benchmark checkpoints across backends, precisions and batch sizes")
    p.add_argument("checkpoints", nargs="*", metavar="CKPT",
                   help="shipped checkpoint names (`cifar-speed models`; fast_tta, fast_jpeg_tta = fast, fast_jpeg with test-time augmentation), "
                        "or sidecars / stems "
                        "(default: every checkpoint in ./results/checkpoints/)")
    p.add_argument("--backend", action="append", metavar="NAMES",
                   help=f"comma-separated, from {', '.join(defaults.BACKENDS)} (default: every one available here)")
    p.add_argument("--precision", action="append", metavar="NAMES",
                   help=f"comma-separated, from {', '.join(defaults.PRECISIONS)} (default: all; unavailable ones are listed)")
    p.add_argument("--batch", default=",".join(map(str, defaults.DEFAULT_BATCHES)),
                   help="comma-separated batch sizes (default 32,64,128)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    p.add_argument("--mode", choices=["device", "host", "both"],
                   help="inputs already on the device, or copied from host memory inside the timing "
                        "(default: device on CPU, both on CUDA)")
    p.add_argument("--data-dir", help="CIFAR-10 folder (default: $CIFAR_SPEED_DATA, then ~/.cache/cifar-speed)")
    p.add_argument("--out", help="results JSON path (default: results/<machine>/<name>.json, CSV beside it)")
    p.add_argument("--name", help="results file name (default: bench-<date>-<time>)")
    p.add_argument("--cache-dir", help="where ONNX exports and TensorRT engines are cached")
    p.add_argument("--option", action="append", default=[], metavar="BACKEND.NAME=VALUES",
                   help="a backend option, several comma-separated values measured as an axis (repeatable); "
                        "`cifar-speed doctor` lists each backend's options, e.g. compile.mode=max-autotune")
    p.add_argument("--compile-mode", help="short for --option compile.mode=MODE: default, max-autotune, reduce-overhead (CUDA)")
    p.add_argument("--trials", type=int, default=defaults.Settings.trials,
                   help="timed trials per cell at least, run round-robin across all the run's cells (default %(default)s)")
    p.add_argument("--max-trials", type=int, default=defaults.Settings.max_trials,
                   help="trials per cell at most: after --trials, rounds go on for the cells whose figure or "
                        "speed-up is not yet known to --target-rse (default %(default)s; equal to --trials: a fixed count)")
    p.add_argument("--target-rse", type=float, default=defaults.Settings.target_rse,
                   help="relative standard error of a cell's figure (the lower quartile of its trial medians) and of "
                        "its speed-up at which "
                        "it needs no more trials (default %(default)s)")
    p.add_argument("--min-time", type=float, default=defaults.Settings.trial_time_s,
                   help="seconds timed per trial, at least (default %(default)s)")
    p.add_argument("--min-reps", type=int, default=defaults.Settings.trial_min_reps,
                   help="calls timed per trial, at least (default %(default)s)")
    p.add_argument("--threads", type=int, help="threads for every cell (default: every usable core); batch 1 is "
                                               "also measured at 1 thread (see --no-single-thread)")
    p.add_argument("--no-single-thread", action="store_true", help="do not add the 1-thread cells at batch 1")
    p.add_argument("--channels-last", action="store_true",
                   help="short for --option eager.memory_format=nchw,channels_last: eager in both layouts "
                        "(default: NCHW for every precision)")
    p.add_argument("--fail-on-disturbed", action="store_true",
                   help="exit 3 when a cell or the peak probe was disturbed (results are still written)")
    p.add_argument("--json", action="store_true",
                   help="print the results document to stdout (tables and progress go to stderr)")
    p.add_argument("--max-warmup", type=float, default=defaults.Settings.warmup_max_s,
                   help="seconds to wait for stable timings before measuring anyway (recorded; default %(default)s)")
    p.add_argument("--tolerance", type=float, default=defaults.DEFAULT_TOLERANCE,
                   help="flag a cell whose top-1 is this far (fraction) below eager fp32 (default %(default)s)")
    p.add_argument("--peak-gflops", type=float, help="peak GFLOP/s for peak_fraction (default: measured at the start of the run)")
    p.add_argument("--calib-size", default=str(defaults.CALIB_SIZE), metavar="N",
                   help="int8: training images in the calibration sample (default %(default)s; never test images)")
    p.add_argument("--calib-seed", default=str(defaults.CALIB_SEED), metavar="SEED",
                   help="int8: seed that draws the calibration sample (default %(default)s)")
    p.add_argument("--dawnbench", action="store_true", help="also measure batch-1 latency over the test images (DAWNBench)")
    p.add_argument("--processes", type=int, default=1, metavar="N",
                   help="run the whole sweep in N fresh processes one after another (N times as long); a cell's "
                        "figure and speed-up are the medians over processes, so a state that lasts a process "
                        "(memory placement, kernel choice) shows as spread, not as one run's bias (default %(default)s)")
    p.add_argument("--allocator", choices=allocator.ALLOCATORS, default=allocator.DEFAULT,
                   help="retain: freed memory stays in the process (no fresh pages faulted in on every eager call, "
                        "whose count varies from process to process); system: the C library's defaults "
                        "(default %(default)s; recorded as harness.allocator)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _joined(values):
    return None if not values else ",".join(values)


def _check_numeric_flags(args) -> None:
    """NaN, infinities and absurd values would otherwise reach the results file (NaN --min-time) or a
    peak fraction (negative --peak-gflops)."""
    from ..checks import Range, check

    check(args.min_time, Range(0, 3600, low_open=True, why="seconds per trial"), "--min-time")
    check(args.max_warmup, Range(0, 3600, low_open=True, why="seconds per cell"), "--max-warmup")
    check(args.min_reps, Range(1, 10**7, integer=True), "--min-reps")
    check(args.trials, Range(1, 1000, integer=True), "--trials")
    check(args.processes, Range(1, 100, integer=True), "--processes")
    check(args.max_trials, Range(1, 100_000, integer=True), "--max-trials")
    check(args.target_rse, Range(0, 1, low_open=True), "--target-rse")
    if args.threads is not None:
        check(args.threads, Range(1, 4096, integer=True), "--threads")
    check(args.tolerance, Range(0, 1, high_open=True, why="a fraction of top-1"), "--tolerance")
    if args.peak_gflops is not None:
        check(args.peak_gflops, Range(0, 10**9, low_open=True), "--peak-gflops")


def _config(args) -> tuple["sweep.SweepConfig", Path]:  # noqa: F821
    """Every flag checked, before any time is spent: the sweep's configuration and where it writes."""
    from .. import backends, calibration, harness, resultsfile, sweep
    from ..locate import resolve_model

    batches = backends.parse_batches(args.batch)
    names = backends.parse_choices(_joined(args.backend), list(backends.BACKENDS), "backend")
    precisions = backends.parse_choices(_joined(args.precision), list(backends.PRECISIONS), "precision")
    _check_numeric_flags(args)
    calib_size, calib_seed = calibration.check_params(args.calib_size, args.calib_seed)
    shorthands = ([f"compile.mode={args.compile_mode}"] if args.compile_mode else []) + \
        (["eager.memory_format=nchw,channels_last"] if args.channels_last else [])
    options = backends.option_axes(shorthands + args.option)
    checkpoints = [resolve_model(c) for c in args.checkpoints] or sweep.default_checkpoints()
    device = args.device or backends.default_device()
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise CifarSpeedError("--device cuda: no CUDA GPU visible to torch")
    if args.name is not None and (not args.name or "/" in args.name or args.name in (".", "..")):
        raise CifarSpeedError(f"--name {args.name!r} must be a plain file name (no folders)")
    out = Path(args.out) if args.out else resultsfile.default_results_path(args.name)
    check_output_file(out)  # before the sweep: a bad --out must not cost a whole run
    settings = harness.Settings(trials=args.trials, max_trials=max(args.trials, args.max_trials),
                                target_rse=args.target_rse, trial_time_s=args.min_time, trial_min_reps=args.min_reps,
                                warmup_max_s=args.max_warmup)
    cfg = sweep.SweepConfig(
        checkpoints=checkpoints, backends=names, precisions=precisions, batches=batches, device=device,
        data_dir=args.data_dir, settings=settings, cache_dir=args.cache_dir, tolerance=args.tolerance,
        modes=None if args.mode in (None,) else (["device", "host"] if args.mode == "both" else [args.mode]),
        options=options, dawnbench=args.dawnbench, peak_gflops=args.peak_gflops,
        calib_size=calib_size, calib_seed=calib_seed, threads=args.threads,
        single_thread_at_batch1=not args.no_single_thread, allocator=args.allocator)
    return cfg, out


def _third_party_output() -> list[dict]:
    """What libraries printed or warned while the cells were built and timed (a fallback, a precision
    caveat can explain a number): kept in the results file, one record per distinct message."""
    from .. import capture

    sink = capture.current()
    if sink is None:
        return []
    sink.drain()
    return sink.as_records()


def run(args) -> int:
    from .. import resultsfile, sweep
    from ..console import make_console
    from .compare import slow_around_line
    from ..report import accuracy_table, artifact_lines, peak_text, skipped_lines, table

    cfg, out = _config(args)
    console = make_console(stderr=args.json)   # --json: stdout carries the results document and nothing else
    if args.processes > 1:
        from ..processes import run_in_processes

        results = run_in_processes(cfg, args.processes, progress=not args.no_progress, say=console.print)
    else:
        results = sweep.run_sweep(cfg, progress=not args.no_progress, console=console)
    results["third_party_output"] = _third_party_output()
    json_path, csv_path = resultsfile.write_results(results, out)
    if args.json:
        print(json.dumps(results, default=str))
    for mode in results["harness"]["modes"]:
        console.print(table(results, mode))
    console.print(accuracy_table(results))
    for line in skipped_lines(results):
        console.print(f"[yellow]skipped[/] {line}")
    for line in artifact_lines(results):
        console.print(f"timed artifact {line}")
    for c in results["cells"]:
        if c.get("status") == "failed":
            console.print(f"[red]failed[/] {c['model']} {c['backend']} {c['precision']} b{c.get('batch_size', '-')}: {c['reason']}")
    n_dist = sum(1 for c in results["cells"] if c.get("disturbed"))
    if n_dist:
        console.print(f"[yellow]{n_dist} cell(s) disturbed[/]: most of their trials got less CPU than they asked "
                      f"for (other processes or steal took the cores, or cpu/wall below "
                      f"{cfg.settings.disturbed_fraction} x threads); rerun on an idle machine")
    slow_around = slow_around_line(results)
    if slow_around:
        console.print(slow_around, style="yellow", markup=False)
    peak = results["peak"]
    console.print(f"peak used for peak_fraction: {peak_text(peak)}"
                  + (" [yellow]- disturbed: pass --peak-gflops from `cifar-speed doctor --peak` on an idle machine[/]"
                     if peak.get("disturbed") else ""))
    console.print(f"results: {json_path}, {csv_path} and {resultsfile.skipped_path(csv_path)}")
    # Results are written either way; a cell that failed to build or run makes the exit status 1.
    if any(c.get("status") == "failed" for c in results["cells"]):
        return 1
    if args.fail_on_disturbed and (n_dist or peak.get("disturbed")):
        console.print("[red]--fail-on-disturbed[/]: " + (f"{n_dist} cell(s)" if n_dist else "the peak probe")
                      + " disturbed")
        return 3
    return 0
