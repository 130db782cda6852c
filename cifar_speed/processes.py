"""`bench --processes N`: every cell's trials from N fresh processes, run one after another.

A process has a state of its own that lasts as long as it does (where its buffers landed, which
kernels a library chose, how its threads were placed): in committed CPU runs one cell read fast in
every trial of one process and slow in the others (results/amd-epyc-2c-avx2/RUNS.md). The trials of one
process cannot show that; trials from several can, which is why pyperf times in worker processes.
Here each process runs the whole sweep (its own warm-up and adaptive trials), and the parent merges
their results: each process counts once in a cell's figure, median and speed-up (see `_merged_cell`),
the speed-up still comes from the rounds a cell and its baseline both ran in the same process, the
trial-level spreads and percentiles are the harness's own over the pooled trials, and each process's
figure, median and speed-up are kept beside them, so a reader sees the state of each process.
"""
from __future__ import annotations

import copy
import json
import multiprocessing
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from . import harness
from .errors import CifarSpeedError
from .inflight import BASELINE_MODE
from .sweep import Cell, SweepConfig, timed_cell

# A merged trial's round is process * ROUND_STRIDE + its round in that process: unique in the cell,
# and equal for a cell and its baseline exactly when they ran in the same round of the same process.
ROUND_STRIDE = 100_000
# Fields of a cell that the timing does not produce: taken from the first process's cell.
_BUILD_FIELDS = ("model", "architecture", "backend", "precision", "device", "memory_format", "variant_options",
                 "baseline", "requested", "runner", "build_and_eval_s", "accuracy", "accuracy_flagged", "dawnbench")


def run_in_processes(cfg: SweepConfig, n: int, progress: bool, say=print) -> dict:
    """The sweep run in `n` spawned processes one after another, merged (see the module's docstring)."""
    ctx = multiprocessing.get_context("spawn")   # a fresh interpreter: nothing inherited from this one
    parts = []
    with tempfile.TemporaryDirectory(prefix="cifar-speed-processes-") as tmp:
        for k in range(n):
            say(f"process {k + 1} of {n}")
            out, err = Path(tmp) / f"part-{k}.json", Path(tmp) / f"error-{k}.txt"
            worker = ctx.Process(target=_worker, args=(cfg if k == 0 else timing_only(cfg), str(out), str(err), progress))
            started = time.monotonic()
            worker.start()
            worker.join()
            if err.is_file():
                raise CifarSpeedError(err.read_text().strip())
            if worker.exitcode != 0 or not out.is_file():
                raise CifarSpeedError(f"bench process {k + 1} of {n} ended with status {worker.exitcode}")
            parts.append(json.loads(out.read_text()))
            parts[-1]["process_wall_s"] = time.monotonic() - started
            say(f"process {k + 1} of {n}: {_phases_text(_phases(parts[-1]))}")
    return merge(parts)


def _phases(part: dict) -> dict:
    """Where a process's time went: the whole process, building and scoring its variants (each once), its
    timed trials, and the rest (start-up, data, the peak probe, rebuilds at other thread counts, warm-ups,
    the canary between trials); what decides whether more, shorter processes are affordable."""
    cells = [c for c in part["cells"] if c.get("status") == "ok"]
    # A variant is built and scored once; each of its cells (batch, mode, thread count) repeats that time.
    builds = {(c.get("model"), c.get("backend"), c.get("precision"), c.get("variant_options"), c.get("memory_format")):
              c.get("build_and_eval_s") or 0.0 for c in cells}
    build = sum(builds.values())
    timed = sum((c.get("latency") or {}).get("wall_s") or 0.0 for c in cells)
    wall = part.get("process_wall_s")
    return {"wall_s": wall, "build_and_eval_s": build, "timed_s": timed,
            "other_s": wall - build - timed if wall is not None else None}


def _phases_text(ph: dict) -> str:
    return (f"{ph['wall_s']:.0f} s: building and scoring cells {ph['build_and_eval_s']:.0f} s, timed trials "
            f"{ph['timed_s']:.0f} s, the rest {ph['other_s']:.0f} s")


def timing_only(cfg: SweepConfig) -> SweepConfig:
    """A later process's config: the merge takes accuracy, agreement and DAWNBench from the first
    process (_BUILD_FIELDS), so a later one scores only the images its cells are timed on (the first
    n_inputs x largest batch: the same input batches as the first process's, harness.make_inputs)
    instead of the whole test set twice over, the clean and the JPEG copy."""
    timed = cfg.settings.n_inputs * max(int(b) for b in cfg.batches)
    return replace(cfg, eval_limit=min(timed, cfg.eval_limit) if cfg.eval_limit else timed)


def _worker(cfg: SweepConfig, out: str, err: str, progress: bool) -> None:
    from . import sweep

    try:
        results = sweep.run_sweep(cfg, progress=progress)
    except CifarSpeedError as e:   # one line for the parent to say, as bench itself would
        Path(err).write_text(str(e))
        return
    Path(out).write_text(json.dumps(results, default=str))


def merge(parts: list[dict]) -> dict:
    """One results document from the documents of several processes' sweeps of the same cells."""
    merged = copy.deepcopy(parts[0])
    merged["harness"]["processes"] = len(parts)
    merged["harness"]["order"] += (f"; the whole sweep in each of {len(parts)} processes, one after another, "
                                   "a cell's median and speed-up the medians over processes (bench --processes)")
    merged["process_runs"] = [{"created": p.get("created"), "peak": p.get("peak"),
                               "accuracy_images": p["harness"].get("accuracy_images"), **_phases(p)} for p in parts]
    cells = [Cell.from_dict(c) for c in merged["cells"]]
    per_process = [{c.key: c for c in (Cell.from_dict(d) for d in p["cells"])} for p in parts]
    trials = {c.key: _pooled(c.key, per_process) for c in cells}
    out = []
    for c in cells:
        failed = _failure(c.key, per_process)
        if failed is not None:
            out.append(Cell(**_build(c), batch_size=c.batch_size, mode=c.mode, threads=c.threads,
                            status="failed", reason=failed))
            continue
        out.append(_merged_cell(c, trials[c.key], trials.get(_baseline_key(c, cells)),
                                merged["models"][c.model]["flops_per_image"], merged["peak"]))
    merged["cells"] = [c.to_dict() for c in out]
    return merged


def remerge(merged: dict) -> dict:
    """A merged document with its cells recomputed from the trials it records, each tagged with its
    process: how a file written by an older merge gets this one's statistics (tools/remerge.py)."""
    out = copy.deepcopy(merged)
    out["harness"].update(figure=harness.FIGURE_TEXT, figure_quantile=harness.FIGURE_QUANTILE)
    cells = [Cell.from_dict(c) for c in out["cells"]]
    own = {c.key: _by_process(c) for c in cells if c.status == "ok" and c.trials}
    out["cells"] = [_merged_cell(c, own[c.key], own.get(_baseline_key(c, cells)),
                                 out["models"][c.model]["flops_per_image"], out["peak"]).to_dict()
                    if c.key in own else c.to_dict() for c in cells]
    return out


def _by_process(cell: Cell) -> list[tuple[int, list[harness.Trial]]]:
    """(process, its trials) from a merged cell's trial records, their rounds as recorded."""
    groups: dict[int, list] = {}
    for r in cell.trials:
        if not isinstance(r.get("process"), int):
            raise CifarSpeedError(f"cell {' '.join(map(str, cell.key))}: a trial without its process; not a merged file")
        groups.setdefault(r["process"], []).append(trial_from_record(r, cell.threads or 1))
    return sorted(groups.items())


def _merged_cell(c: Cell, own: list, baseline: list | None, flops: float, peak: dict) -> Cell:
    """One cell from its trials in every process, each process counting once: its figure (and its
    median) is the median of the processes' figures (medians) and its error their spread (the
    adaptive trial count gives a process that reads noisily more trials, and pooled, one such process
    pulled a cell's median towards itself: results/amd-epyc-2c-avx2/processes-pooled-cnn_tuned-b128.json);
    likewise the speed-up is the median of each process's speed-up (harness.figure_ratio). Trial-level
    spreads and percentiles stay pooled."""
    pooled = [t for _, ts in own for t in ts]
    per_process = [statistics.median(t.median_ms for t in ts) for _, ts in own]
    figures = [harness.figure_of([t.median_ms for t in ts]) for _, ts in own]
    median, figure = statistics.median(per_process), statistics.median(figures)
    lat = {**c.latency, **harness.summarize_trials(pooled, c.batch_size), "median_ms": median,
           "median_rse": harness.finite(harness.relative_se(per_process)), "median_of": "process medians",
           "lower_quartile_ms": figure, "lower_quartile_rse": harness.finite(harness.relative_se(figures)),
           "images_per_s": c.batch_size / (figure / 1e3), "ms_per_image": figure / c.batch_size}
    # No speed-up from the pooled trials: it is each process's (_per_process_speedups), which
    # would otherwise replace most of the pooled fields and leave the rest (a range) from another rule.
    cell = timed_cell(_build(c), c.batch_size, c.mode, c.threads, lat, pooled, None, flops, peak)
    cell.trials = [{**t.to_dict(), "process": k} for k, ts in own for t in ts]
    cell.processes = [{"process": k, "trials": len(ts), "median_ms": m, "lower_quartile_ms": f}
                      for (k, ts), m, f in zip(own, per_process, figures)]
    _per_process_host_normalized(cell, own)
    if baseline:
        _per_process_speedups(cell, own, dict(baseline))
    return cell


def _per_process_speedups(cell: Cell, own: list, base_by_process: dict) -> None:
    """Each process's speed-up (harness.figure_ratio, raw and in canary units; the per-round ratios'
    median beside them) and the cell's: the median over processes, its range that of every round's
    ratio in every process."""
    ranges: dict[bool, list[float]] = {False: [], True: []}
    for entry, (k, ts) in zip(cell.processes, own):
        for field, normalized in (("speedup_vs_eager_fp32", False), ("speedup_host_normalized", True)):
            r = harness.figure_ratio(base_by_process[k], ts, normalized) if k in base_by_process else None
            entry[field] = r["value"] if r else None
            ranges[normalized] += [r["min"], r["max"]] if r else []
            if not normalized:
                entry["speedup_paired_median"] = r["paired_median"] if r else None
    ratios = [e["speedup_vs_eager_fp32"] for e in cell.processes if e["speedup_vs_eager_fp32"] is not None]
    if ratios:
        cell.speedup_vs_eager_fp32 = statistics.median(ratios)
        cell.speedup_rse = harness.finite(harness.relative_se(ratios))
        cell.speedup_paired_median = statistics.median(e["speedup_paired_median"] for e in cell.processes
                                                       if e["speedup_paired_median"] is not None)
        cell.speedup_range = [min(ranges[False]), max(ranges[False])]
    host = [e["speedup_host_normalized"] for e in cell.processes if e["speedup_host_normalized"] is not None]
    if len(host) == len(own):
        cell.speedup_host_normalized = statistics.median(host)
        cell.speedup_host_normalized_range = [min(ranges[True]), max(ranges[True])]


def _per_process_host_normalized(cell: Cell, own: list) -> None:
    """The host-normalised figure and median by the raw ones' rule, each process counting once (what
    `compare` judges); pooled, a process given more trials by the adaptive count would weigh more.
    Only where every trial has its canary reading, as for one process."""
    host = (cell.latency or {}).get("host_normalized")
    if not host or not all(t.normalized for _, ts in own for t in ts):
        return
    for entry, (_, ts) in zip(cell.processes, own):
        entry["host_normalized_median"] = statistics.median(t.normalized for t in ts)
        entry["host_normalized_lower_quartile"] = harness.figure_of([t.normalized for t in ts])
    values = [e["host_normalized_median"] for e in cell.processes]
    figures = [e["host_normalized_lower_quartile"] for e in cell.processes]
    cell.latency["host_normalized"] = {**host, "median": statistics.median(values), "median_of": "process medians",
                                       "median_rse": harness.finite(harness.relative_se(values)),
                                       "lower_quartile": statistics.median(figures),
                                       "lower_quartile_rse": harness.finite(harness.relative_se(figures))}


def _build(cell: Cell) -> dict:
    return {name: getattr(cell, name) for name in _BUILD_FIELDS}


def _failure(key: tuple, per_process: list[dict]) -> str | None:
    """Why the cell is not timed in every process (missing, or failed there), else None."""
    for k, cells in enumerate(per_process):
        c = cells.get(key)
        if c is None:
            return f"not measured in process {k + 1} of {len(per_process)}"
        if c.status != "ok" or not c.trials:
            return f"failed in process {k + 1} of {len(per_process)}: {c.reason or 'no trial ran'}"
    return None


def _pooled(key: tuple, per_process: list[dict]) -> list[tuple[int, list[harness.Trial]]]:
    """(process, its trials of the cell), the rounds renumbered per process (ROUND_STRIDE)."""
    out = []
    for k, cells in enumerate(per_process):
        c = cells.get(key)
        if c is not None and c.status == "ok":
            out.append((k, [trial_from_record(r, c.threads or 1, offset=k * ROUND_STRIDE) for r in c.trials]))
    return out


def _baseline_key(cell: Cell, cells: list[Cell]) -> tuple | None:
    """The eager fp32 cell that a sweep paired this one with: same batch, threads and (baseline) mode."""
    mode = BASELINE_MODE if cell.mode == "async" else cell.mode
    return next((b.key for b in cells if b.baseline and b.model == cell.model and b.batch_size == cell.batch_size
                 and b.threads == cell.threads and b.mode == mode), None)


def trial_from_record(r: dict, threads: int, offset: int = 0) -> harness.Trial:
    """A Trial as a results file records it (its calls decoded from `calls_ms`)."""
    dist = harness.Disturbance(r["wall_s"], r["cpu_s"], threads, r["cpu_wall_ratio"], r.get("others_cpu_s"),
                               r.get("steal_s"), r.get("disturbed"), r.get("why"))
    times = [ms / 1e3 for ms in harness.decode_calls(r["calls_ms"])]
    return harness.Trial(offset + r["round"], times, dist, r.get("canary_ms"), r.get("wake_us"))
