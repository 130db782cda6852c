"""The benchmark sweep: checkpoints x backends x precisions x batch sizes x threads -> one results file.

This module plans and runs; every table and plot is in report.py. Every model is built first, then
every cell timed together:

  plan             which (backend, precision, memory format) variants run here, which are skipped and why
  build_and_score  build each variant's runner once, at the run's thread count, and score it: top-1 on
                   the official 10,000 test images and on the same images after a JPEG round trip
                   (quality 75: `top1_jpeg75`), agreement with eager fp32 (top-1 agreement, max
                   |logit difference|). A cell more than `tolerance` below eager fp32's top-1 is flagged.
  time_cells       every cell of the run (model x variant x batch x mode x threads) warmed up once,
                   then timed in short trials, round-robin across all of them (harness.run_round_robin),
                   so every cell's trials span the whole run and the baseline and each cell share
                   the machine's state round by round; at least `trials` rounds, more for cells
                   whose figure or speed-up is not yet precise
  finish_cell      a `Cell` record: the lower quartile and the median of its trial medians with their
                   spread, images/s (from the lower quartile: harness.figure_of), GFLOP/s and % of the
                   measured peak of its precision, speed-up over eager fp32 of the same batch, mode
                   and threads = their lower quartiles' ratio over the rounds both ran

Threads are an axis: the run's count (`threads`, default every usable core) for every cell, and at
batch 1 also 1 thread (thread wake-up dominates tiny work). A runner is rebuilt per thread count,
because backends fix it when they build (ONNX Runtime's session, Inductor's generated OpenMP code).
int8 cells are calibrated on a fixed sample of training images (calibration.py), never on the test
images they are scored on.
"""
from __future__ import annotations

import datetime as _dt
import itertools
import math
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from . import allocator as allocator_mod
from . import artifacts, backends, calibration, harness, inflight
from .checkpoint import load_checkpoint, paths_for, shipped_checkpoints
from .data import load_split
from .defaults import DEFAULT_BATCHES, DEFAULT_JPEG_QUALITY, DEFAULT_TOLERANCE  # noqa: F401  (sweep.DEFAULT_* for callers)
from .errors import CifarSpeedError
from .harness import PEAK_KEYS, measure_peak, peak_for  # noqa: F401  (doctor and older callers import them from here)
from .locate import ModelRef
from .models import count_params, flops_per_image
from .provenance import provenance

SCHEMA = "cifar-speed-bench/2"
READABLE_SCHEMAS = ("cifar-speed-bench/1", SCHEMA)   # /1: one timed block per cell, before trials
BASELINE = ("eager", "fp32")
BASELINE_FORMAT = "nchw"


@dataclass
class SweepConfig:
    checkpoints: list
    backends: list[str] | None = None        # None: every backend available here
    precisions: list[str] | None = None      # None: every precision (unavailable ones listed as skipped)
    batches: list[int] = field(default_factory=lambda: list(DEFAULT_BATCHES))
    device: str | None = None
    data_dir: str | None = None
    settings: harness.Settings = field(default_factory=harness.Settings)
    modes: list[str] | None = None           # None: device (+ host on CUDA)
    cache_dir: str | None = None
    tolerance: float = DEFAULT_TOLERANCE
    # backend -> option -> values to measure (backends' OPTIONS; several values: an axis). Options not
    # given take the backend's declared default.
    options: dict = field(default_factory=dict)
    dawnbench: bool = False
    peak_gflops: float | None = None          # None: measure it at the start of the run
    eval_limit: int | None = None             # evaluate on the first N test images (tests only)
    test_split: object = None                 # a data.Split to use instead of loading (tests only)
    calib_size: int = calibration.DEFAULT_SIZE   # int8: training images in the calibration sample ...
    calib_seed: int = calibration.DEFAULT_SEED   # ... and the seed that draws them
    train_split: object = None                # a data.Split to calibrate from instead of loading (tests only)
    threads: int | None = None                # None: every usable core
    single_thread_at_batch1: bool = True      # batch 1 also at 1 thread when `threads` is more
    jpeg_quality: int | None = DEFAULT_JPEG_QUALITY   # None: no JPEG accuracy column
    jpeg_split: object = None                 # a data.Split to use instead of data.jpeg_test_split (tests only)
    allocator: str = allocator_mod.DEFAULT    # what the C allocator does with freed memory (allocator.py)


def _finite(x) -> bool:
    """A real number read from a results file (bools, NaN and infinities are not)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _recorded_rse(x) -> float | None:
    """A relative standard error as a results file recorded it, if it is one (finite, >= 0)."""
    return x if _finite(x) and x >= 0 else None


# Backends whose fold_bn option arrived after results files were written: a cell of theirs whose runner
# records neither its artifact options nor a fold count predates it and ran the unfolded graph (onnxrt
# before e32ae11, openvino before cc1ca27).
_FOLD_BN_LATER = ("onnxrt", "openvino")


def _recorded_variant(cell: "Cell") -> str | None:
    """The non-default options of a cell whose file did not write variant_options itself, from the
    artifact options its runner recorded, judged against today's defaults (a default that changed
    since the run must not relabel the cell). No runner record (hand-made, converted): nothing known."""
    runner = cell.runner or {}
    if not runner or cell.status != "ok":
        return None
    recorded = runner.get("artifact_options")
    if recorded is None and cell.backend in _FOLD_BN_LATER and "fold_bn" not in runner:
        recorded = {"fold_bn": "off"}   # files before the option: nothing was folded
    try:
        declared = backends.declared_options(cell.backend)
    except (CifarSpeedError, ImportError):
        return None   # not one of our backends (e.g. a converted pytest-benchmark case)
    parts = [f"{k}={v}" for k, v in sorted((recorded or {}).items()) if k in declared and v != declared[k].default]
    return ",".join(parts) or None


@dataclass
class Cell:
    """One row of a results file: a variant timed at one batch size, input mode and thread count.

    The one schema that the sweep writes and the CSV, report.py and tools/update_readme.py read
    (`Cell.from_dict` also reads cells of /1 files, which lack threads, trials and spreads)."""
    model: str
    architecture: str
    backend: str
    precision: str
    device: str
    batch_size: int | None = None
    mode: str | None = None
    threads: int | None = None
    memory_format: str | None = None
    # The variant's other options where they differ from the backend's default ("mode=max-autotune"):
    # part of the key, so two values of an option axis are two rows.
    variant_options: str | None = None
    status: str = "ok"                        # ok | failed
    reason: str | None = None
    baseline: bool = False
    requested: bool = True
    runner: dict = field(default_factory=dict)
    build_and_eval_s: float | None = None
    latency: dict = field(default_factory=dict)
    images_per_s: float | None = None
    images_per_s_range: list | None = None    # [min, max] over trials
    gflops: float | None = None
    peak_fraction: float | None = None
    peak_denominator: str | None = None       # which measured figure peak_fraction divides by
    peak_note: str | None = None              # why, where peak_fraction is above 1
    speedup_vs_eager_fp32: float | None = None   # harness.figure_ratio (files before it: the per-round ratios' median)
    speedup_paired_median: float | None = None   # the median of the per-round ratios (harness.paired_ratio)
    speedup_range: list | None = None         # [min, max] of the per-round ratios
    speedup_rse: float | None = None          # relative standard error of their median (harness.relative_se)
    speedup_host_normalized: float | None = None   # the speed-up from trial medians divided by the canary
    speedup_host_normalized_range: list | None = None
    accuracy: dict = field(default_factory=dict)
    accuracy_flagged: bool = False
    disturbed: bool | None = None
    trials: list = field(default_factory=list)
    dawnbench: dict | None = None
    # bench --processes N: per process, its trial count, median and speed-up (None: one process)
    processes: list | None = None

    def trial_medians(self, normalized: bool = False) -> dict[int, float]:
        """round -> trial median in ms (in canary units when normalized), from the recorded trials;
        entries a hand-made or damaged file gets wrong are skipped, never trusted."""
        def number(x) -> bool:
            return _finite(x) and x > 0

        out = {}
        for t in self.trials if isinstance(self.trials, list) else []:
            if not isinstance(t, dict) or not isinstance(t.get("round"), int) or not number(t.get("median_ms")):
                continue
            if normalized and not number(t.get("canary_ms")):
                continue
            out[t["round"]] = t["median_ms"] / t["canary_ms"] if normalized else t["median_ms"]
        return out

    def median_count(self) -> int:
        """How many values median_rse comes from: the processes' medians (bench --processes), else the
        trials' medians."""
        if isinstance(self.processes, list) and len(self.processes) > 1:
            return len(self.processes)
        return len(self.trial_medians())

    def median_rse(self) -> float | None:
        """The relative standard error of the median trial latency: as recorded, else from the trials."""
        recorded = _recorded_rse(self.latency.get("median_rse") if isinstance(self.latency, dict) else None)
        if recorded is not None:
            return recorded
        medians = list(self.trial_medians().values())
        return harness.finite(harness.relative_se(medians)) if medians else None

    def figure_rse(self) -> float | None:
        """The relative standard error of the figure images_per_s comes from: the lower quartile of the
        trial medians in files that say so (latency "figure"), the median in files from before."""
        lat = self.latency if isinstance(self.latency, dict) else {}
        if lat.get("figure") != "lower_quartile_ms":
            return self.median_rse()
        recorded = _recorded_rse(lat.get("lower_quartile_rse"))
        if recorded is not None:
            return recorded
        medians = list(self.trial_medians().values())
        return harness.finite(harness.relative_se(medians, harness.FIGURE_QUANTILE)) if medians else None

    def recorded_speedup_rse(self) -> float | None:
        """The relative standard error of the speed-up as recorded (None where absent or damaged:
        the reader then pairs the trials with the baseline's itself)."""
        return _recorded_rse(self.speedup_rse)

    @property
    def key(self) -> tuple:
        """What `compare` matches two runs' cells by."""
        return (self.model, self.backend, self.precision, self.batch_size, self.mode, self.threads,
                self.memory_format, self.variant_options)

    def to_dict(self) -> dict:
        d = asdict(self)
        for optional in ("dawnbench", "processes"):
            if d[optional] is None:
                del d[optional]
        return d

    @classmethod
    def from_dict(cls, d: dict, default_threads: int | None = None) -> "Cell":
        names = {f.name for f in fields(cls)}
        d = {"architecture": d.get("model"), "device": "cpu", **d}   # hand-made / converted cells may lack them
        cell = cls(**{k: v for k, v in d.items() if k in names})
        if cell.threads is None:
            cell.threads = (cell.latency or {}).get("threads") or default_threads
        if cell.memory_format is None:
            cell.memory_format = (cell.runner or {}).get("memory_format")
        if cell.variant_options is None and cell.backend == "compile" and (cell.runner or {}).get("mode", "default") != "default":
            cell.variant_options = f"mode={cell.runner['mode']}"   # files before backend options: the mode was run-wide
        if cell.variant_options is None:
            cell.variant_options = _recorded_variant(cell)
        return cell


def cells_of(results: dict) -> list[Cell]:
    """The cells of a results file of either readable schema, as records."""
    threads = results.get("provenance", {}).get("torch_threads")
    return [Cell.from_dict(c, threads) for c in results["cells"]]


# -- plan -----------------------------------------------------------------------------------------

def plan(backend_names, precisions, device: str) -> tuple[list[tuple[str, str]], list[dict]]:
    """(runnable (backend, precision) pairs, skipped cells with reasons).

    Asked for explicitly, a backend that can run none of the asked precisions, or a precision no asked
    backend can run, is an error (one line, with what is missing); otherwise unavailable
    combinations are skipped and listed.
    """
    explicit_backends, explicit_precisions = backend_names is not None, precisions is not None
    names = list(backend_names) if explicit_backends else list(backends.BACKENDS)
    precs = list(precisions) if explicit_precisions else list(backends.PRECISIONS)
    for b in names:
        backends.get_backend(b)
    for p in precs:
        backends.check_precision(p)
    run, skipped = [], []
    for b in names:
        for p in precs:
            ok, reason = backends.availability(b, p, device)
            (run.append((b, p)) if ok else skipped.append({"backend": b, "precision": p, "reason": reason}))
    if explicit_backends:
        for b in names:
            if not any(rb == b for rb, _ in run):
                reasons = "; ".join(sorted({s["reason"] for s in skipped if s["backend"] == b}))
                raise backends.UnavailableError(f"{b} cannot run here ({', '.join(precs)} on {device}): {reasons}")
    if explicit_precisions:
        for p in precs:
            if not any(rp == p for _, rp in run):
                reasons = "; ".join(sorted({s["reason"] for s in skipped if s["precision"] == p}))
                raise backends.UnavailableError(f"{p} cannot run here ({', '.join(names)} on {device}): {reasons}")
    return run, skipped


@dataclass(frozen=True)
class Variant:
    """What gets built once per model: a backend, a precision and a value for each of the backend's
    declared options (backends.Option)."""
    backend: str
    precision: str
    options: tuple[tuple[str, str], ...] = ()

    @property
    def memory_format(self) -> str | None:
        """None: the backend chooses its own (recorded from the runner)."""
        return dict(self.options).get("memory_format")

    @property
    def is_baseline(self) -> bool:
        return (self.backend, self.precision) == BASELINE and self.memory_format in (None, BASELINE_FORMAT)

    @property
    def non_default(self) -> str | None:
        """Options other than the layout that differ from the backend's default: 'mode=max-autotune'."""
        declared = backends.declared_options(self.backend)
        parts = [f"{k}={v}" for k, v in self.options
                 if k != "memory_format" and v != getattr(declared.get(k), "default", None)]
        return ",".join(parts) or None

    def label(self) -> str:
        """'eager fp32 nchw', 'compile fp32 max-autotune', 'onnxrt int8 fold_bn=on': the layout always,
        other options where they differ from the default (an on/off one with its name)."""
        declared = backends.declared_options(self.backend)
        shown = [v if k == "memory_format" or v not in ("on", "off") else f"{k}={v}" for k, v in self.options
                 if k == "memory_format" or v != getattr(declared.get(k), "default", None)]
        return " ".join([self.backend, self.precision, *shown])


def variants(pairs: list[tuple[str, str]], axes: dict | None = None) -> list[Variant]:
    """One variant per (backend, precision) and per combination of the values asked for each declared
    option (`axes`: backend -> option -> values); an option not asked for takes its default."""
    out = []
    for b, p in pairs:
        asked = (axes or {}).get(b, {})
        per_option = [[(name, v) for v in asked.get(name) or [opt.default]]
                      for name, opt in backends.declared_options(b).items() if asked.get(name) or opt.default]
        out += [Variant(b, p, combo) for combo in itertools.product(*per_option)]
    if BASELINE in pairs and not any(v.is_baseline for v in out):
        # Asked for eager in channels_last only: the NCHW baseline is still what speed-ups divide by.
        defaults = tuple((n, o.default) for n, o in backends.declared_options(BASELINE[0]).items() if o.default)
        out.insert(0, Variant(*BASELINE, defaults))
    return out


def thread_groups(threads: int, batches: list[int], single_thread_at_batch1: bool) -> list[tuple[int, list[int]]]:
    """(thread count, batch sizes timed at it): every batch at `threads`, batch 1 also at 1 thread."""
    groups = [(threads, list(batches))]
    if single_thread_at_batch1 and threads > 1 and 1 in batches:
        groups.append((1, [1]))
    return groups


def default_threads() -> int:
    return len(harness.usable_cpus())


# -- accuracy -------------------------------------------------------------------------------------

def predict(runner, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits (fp32, CPU) for host `images` in batches; the last batch is padded to full size so
    fixed-shape programs see only the shapes they were built for."""
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i:i + batch_size]
        n = len(x)
        if n < batch_size:
            x = torch.cat([x, x[-1:].expand(batch_size - n, *x.shape[1:])])
        y = runner(x.to(runner.device))
        out.append(y[:n].float().cpu())
    return torch.cat(out)


def accuracy(logits: torch.Tensor, labels: torch.Tensor, ref_logits: torch.Tensor | None = None) -> dict:
    pred = logits.argmax(1)
    res = {"top1": (pred == labels).float().mean().item(), "images": len(labels)}
    if ref_logits is not None:
        res["agreement"] = (pred == ref_logits.argmax(1)).float().mean().item()
        res["max_logit_diff"] = (logits - ref_logits).abs().max().item()
    return res


@dataclass
class EvalSet:
    """One model's normalised test images (and their JPEG round trip) with labels."""
    images: torch.Tensor
    labels: torch.Tensor
    jpeg_images: torch.Tensor | None
    jpeg_quality: int | None


def _dawnbench(runner, ev) -> dict:
    """The DAWNBench batch-1 figure: the plain per-image loop, and where the runner can be captured in a
    CUDA graph, the graph method too; the faster one is the cell's figure, the other kept beside it."""
    cpu = not runner.device.startswith("cuda")
    # A CPU call returns its answer, so the loop already waits for each one: time each request in
    # that same pass rather than running the 10,000 images a second time.
    loop = harness.dawnbench_latency(runner, ev.images, ev.labels, wait_each=cpu)
    if cpu:
        return {**loop, "per_request": _request_figures(loop)}
    if not runner.graph_capturable:
        return {**loop, "per_request": _per_request(runner, ev, "loop")}
    try:
        graph = harness.dawnbench_latency(runner, ev.images, ev.labels, method="graph")
    except Exception as e:
        return {**loop, "graph": {"status": "failed", "reason": _one_line(e)},
                "per_request": _per_request(runner, ev, "loop")}
    best, other = (graph, loop) if graph["ms_per_image"] <= loop["ms_per_image"] else (loop, graph)
    return {**best, other["method"]: other, "per_request": _per_request(runner, ev, best["method"])}


def _per_request(runner, ev, method: str) -> dict:
    """The same images, each answer waited for before the next is sent: a single client's latency."""
    try:
        r = harness.dawnbench_latency(runner, ev.images, ev.labels, method=method, wait_each=True)
    except Exception as e:
        return {"status": "failed", "reason": _one_line(e)}
    return _request_figures(r)


def _request_figures(r: dict) -> dict:
    return {k: r[k] for k in ("method", "images", "ms_per_image", "p50_ms", "p99_ms", "top1") if k in r}


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}"[:300]


def build_runner(v: Variant, model, meta, device: str, batches: list[int], cfg: SweepConfig, calib,
                 ref: ModelRef | None = None):
    """A variant's runner under the current torch thread count: the cached artifact loaded back for
    the backends that time one (artifacts.runner_for), an in-memory build for the others."""
    options = dict(v.options)
    return artifacts.runner_for(ref.path if ref else None, v.backend, v.precision, device, batches,
                                options=options, calib=calib if v.precision == "int8" else None,
                                architecture=ref.architecture if ref else None, model=model, meta=meta,
                                cache_dir=cfg.cache_dir)


def build_and_score(v: Variant, model, meta, device: str, batches: list[int], cfg: SweepConfig, calib,
                    ev: EvalSet, ref_logits: torch.Tensor | None, ref: ModelRef | None = None):
    """(runner, logits, accuracy, seconds): build once, then top-1 on the test images and their JPEG
    round trip with the same runner, at the largest batch of the sweep."""
    t0 = time.perf_counter()
    runner = build_runner(v, model, meta, device, batches, cfg, calib, ref)
    logits, acc = score(runner, ev, max(batches), ref_logits if not v.is_baseline else None)
    if v.is_baseline:
        acc.update({"agreement": 1.0, "max_logit_diff": 0.0})
    return runner, logits, acc, time.perf_counter() - t0


def score(runner, ev: EvalSet, batch: int, ref_logits: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """(logits, accuracy): the runner's top-1 on the test images and on their JPEG round trip, at `batch`;
    what every bench cell and the pytest-benchmark suite report."""
    logits = predict(runner, ev.images, batch)
    acc = accuracy(logits, ev.labels, ref_logits)
    if ev.jpeg_images is not None:
        acc[f"top1_jpeg{ev.jpeg_quality}"] = accuracy(predict(runner, ev.jpeg_images, batch), ev.labels)["top1"]
    acc["eval_batch"] = batch
    return logits, acc


# -- timing -----------------------------------------------------------------------------------------

@dataclass
class Slot:
    """A cell being timed: its variant and its harness timer (which keeps a failure of the runner)."""
    variant: Variant
    timer: harness.CellTimer

    @property
    def error(self) -> str | None:
        return _one_line(self.timer.failure) if self.timer.failure is not None else None


def baseline_of(slot: Slot, slots: list[Slot]) -> Slot | None:
    """Eager fp32 at the slot's batch size and (baseline) mode, in the same thread group."""
    t = slot.timer
    return next((r for r in slots if r.variant.is_baseline and r.timer.batch_size == t.batch_size
                 and r.timer.mode == getattr(t, "baseline_mode", t.mode)), None)


def time_cells(groups: list["TimingGroup"], advance=lambda desc: None) -> None:
    """Every cell of the run timed in one set of interleaved rounds (harness.run_round_robin): a round
    times every group's cells, group after group, so a cell's trials spread over the whole run and
    meet the same spread of host states as every other cell's, while a cell and its baseline stay
    seconds apart within the round (the speed-up pairs them). Progress named by model and variant."""
    slots = [s for g in groups for s in g.slots]
    names = {id(s.timer): (g.name, s) for g in groups for s in g.slots}
    bases = {id(s.timer): (b.timer if (b := baseline_of(s, g.slots)) else None) for g in groups for s in g.slots}

    def step(timer, what):
        name, s = names[id(timer)]
        advance(f"{name} {s.variant.label()} b{timer.batch_size} {timer.threads}t: {what}")

    harness.run_round_robin([s.timer for s in slots], baseline_of=lambda t: bases[id(t)], on_step=step)


def _peak_note(fraction: float, precision: str, peak: dict) -> str | None:
    if fraction <= 1:
        return None
    why = (f"above 100 % of the best {precision} probe: this model's convolutions ran faster than the "
           f"probes' shapes (square matmul, {peak.get('conv_shape', 'conv')} conv) on this machine")
    if peak.get("disturbed"):
        why += "; the peak probe itself was disturbed, so the denominator is too low"
    if "given_gflops" in peak:
        why = "above the peak given on the command line (--peak-gflops): that figure is too low for this precision"
    return why


def finish_cell(base: dict, slot: Slot, baseline: Slot | None, flops: float, peak: dict) -> Cell:
    """The Cell record of a timed slot: statistics, throughput, % peak, paired speed-up."""
    t = slot.timer
    if slot.error or not t.trials:
        return Cell(**base, batch_size=t.batch_size, mode=t.mode, threads=t.threads, status="failed",
                    reason=slot.error or "no trial ran")
    paired = baseline is not None and not baseline.error
    return timed_cell(base, t.batch_size, t.mode, t.threads, t.summary(), t.trials,
                      baseline.timer.trials if paired else None, flops, peak)


def timed_cell(base: dict, batch_size: int, mode: str, threads: int, lat: dict, trials: list[harness.Trial],
               baseline_trials: list[harness.Trial] | None, flops: float, peak: dict) -> Cell:
    """A cell from its trials and latency summary: throughput, % peak, and the speed-up over its
    baseline from the rounds both ran (harness.figure_ratio; what a sweep and a merge of several
    processes' sweeps both write)."""
    ips = lat["images_per_s"]
    gflops = flops * ips / 1e9
    denom = peak_for(peak, base["precision"])
    fraction = gflops / denom if denom else None
    ratio = harness.figure_ratio(baseline_trials, trials) if baseline_trials else None
    host = harness.figure_ratio(baseline_trials, trials, normalized=True) if baseline_trials else None
    kinds = peak.get("denominators", {})
    return Cell(**base, batch_size=batch_size, mode=mode, threads=threads, latency=lat, images_per_s=ips,
                images_per_s_range=lat["images_per_s_range"], gflops=gflops, peak_fraction=fraction,
                peak_denominator=(f"{base['precision']} {kinds[base['precision']]} probe" if base["precision"] in kinds
                                  else "--peak-gflops" if "given_gflops" in peak else None),
                peak_note=(_peak_note(fraction, base["precision"], peak) if fraction is not None
                           else peak.get("unmeasured", {}).get(base["precision"])),
                speedup_vs_eager_fp32=ratio["value"] if ratio else None,
                speedup_paired_median=ratio["paired_median"] if ratio else None,
                speedup_range=[ratio["min"], ratio["max"]] if ratio else None,
                speedup_rse=harness.finite(ratio["rse"]) if ratio else None,
                speedup_host_normalized=host["value"] if host else None,
                speedup_host_normalized_range=[host["min"], host["max"]] if host else None,
                disturbed=lat["disturbed"], trials=[tr.to_dict() for tr in trials])


# -- the run ----------------------------------------------------------------------------------------

def _load_eval(cfg: SweepConfig, split, jpeg, meta, n_eval: int) -> EvalSet:
    images = meta.normalize_images(split.images[:n_eval])
    jpeg_images = meta.normalize_images(jpeg.images[:n_eval]) if jpeg is not None else None
    return EvalSet(images, split.labels[:n_eval], jpeg_images, cfg.jpeg_quality if jpeg is not None else None)


def _jpeg_split(cfg: SweepConfig):
    """The JPEG-75 test split beside the clean one (None when not asked for or in tests without one)."""
    if cfg.jpeg_split is not None:
        return cfg.jpeg_split
    if not cfg.jpeg_quality or cfg.test_split is not None:
        return None
    from .data import jpeg_test_split
    return jpeg_test_split(cfg.data_dir, cfg.jpeg_quality)


def run_sweep(cfg: SweepConfig, progress: bool = True, console=None) -> dict:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    device = backends.check_device(cfg.device or backends.default_device())
    if not cfg.checkpoints:
        raise CifarSpeedError("no checkpoints to benchmark: pass CKPT paths or ship some in results/checkpoints/")
    batches = [int(b) for b in cfg.batches]
    if not batches or any(b < 1 for b in batches):
        raise CifarSpeedError(f"batch sizes must be positive integers, got {cfg.batches!r}")
    if cfg.settings.trials < 1:
        raise CifarSpeedError(f"trials must be a positive integer, got {cfg.settings.trials!r}")
    if device != "cpu" and cfg.single_thread_at_batch1:
        # On a GPU the host's thread count only sizes CPU-side ops: a 1-thread axis would rebuild (and
        # recompile) every runner to time the same kernels again.
        cfg = replace(cfg, single_thread_at_batch1=False)
    threads = cfg.threads or default_threads()
    if threads < 1:
        raise CifarSpeedError(f"threads must be a positive integer, got {cfg.threads!r}")
    calib_size, calib_seed = calibration.check_params(cfg.calib_size, cfg.calib_seed)
    try:
        memory = allocator_mod.configure(cfg.allocator)   # before anything is built or timed
    except ValueError as e:
        raise CifarSpeedError(str(e)) from None
    pairs, skipped = plan(cfg.backends, cfg.precisions, device)
    requested = set(pairs)
    # The reference for agreement and speed-up is always measured, and first.
    pairs = [BASELINE] + [p for p in pairs if p != BASELINE]
    modes = cfg.modes or (["device", "host"] if device == "cuda" else ["device"])
    # Validate every checkpoint, then the data, before any time is spent.
    loaded = [(ck, *load_checkpoint(_ref(ck).path, model_name=_ref(ck).architecture)) for ck in cfg.checkpoints]
    split = cfg.test_split if cfg.test_split is not None else load_split("test", cfg.data_dir)
    jpeg = _jpeg_split(cfg)
    n_eval = min(len(split), cfg.eval_limit or len(split))
    calibs, pairs, skipped = _calibrations(cfg, loaded, pairs, skipped, calib_size, calib_seed)
    torch.set_num_threads(threads)
    peak = ({"given_gflops": cfg.peak_gflops, "source": "given on the command line (--peak-gflops), every precision"}
            if cfg.peak_gflops else measure_peak(device))

    results = {
        "schema": SCHEMA,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "provenance": provenance(),
        "harness": {**cfg.settings.as_dict(), "modes": modes, "device": device, "threads": threads,
                    "thread_groups": [{"threads": t, "batches": b} for t, b in
                                      thread_groups(threads, batches, cfg.single_thread_at_batch1)],
                    "order": ("round-robin over every cell of the run per trial, each model and thread count's cells "
                              "together; after `trials` rounds only the cells whose figure or speed-up is not yet "
                              "within target_rse, with their baselines, up to max_trials"),
                    "figure": harness.FIGURE_TEXT, "figure_quantile": harness.FIGURE_QUANTILE,
                    "allocator": memory, "timings_encoding": harness.TIMINGS_ENCODING, "p99_min_calls": harness.P99_MIN_CALLS,
                    "accuracy_images": n_eval, "accuracy_tolerance": cfg.tolerance,
                    "jpeg_quality": cfg.jpeg_quality if jpeg is not None else None,
                    "options": cfg.options, "dawnbench": cfg.dawnbench,
                    **({"calibration": {"size": calib_size, "seed": calib_seed, "split": calibration.SPLIT}}
                       if calibs else {})},
        "peak": peak,
        "request": {"backends": cfg.backends, "precisions": cfg.precisions, "batches": batches},
        "models": {}, "skipped": skipped, "cells": [],
    }
    prog = Progress(TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn(),
                    console=console, disable=not progress, transient=False)
    with prog:
        task = prog.add_task("bench", total=None)

        def advance(desc: str) -> None:
            prog.update(task, description=desc)

        built = [_build_model(cfg, results, ckpt, model, meta, _load_eval(cfg, split, jpeg, meta, n_eval), device,
                              batches, modes, threads, requested, pairs, calibs.get(str(ckpt)), advance)
                 for ckpt, model, meta in loaded]
        time_cells([g for _, groups in built for g in groups], advance)
        for failed, groups in built:
            results["cells"] += [c.to_dict() for c in failed + [c for g in groups for c in g.finish(peak)]]
    torch.set_num_threads(threads)
    return results


def _ref(ckpt) -> ModelRef:
    """A sweep's checkpoint entry (a path, or a ModelRef that names the architecture to load it as)."""
    return ckpt if isinstance(ckpt, ModelRef) else ModelRef(Path(ckpt))


def _calibrations(cfg, loaded, pairs, skipped, size, seed):
    """int8 calibration samples (training images only), one per checkpoint, drawn up front. Without
    the training images, int8 asked for by name is an error; in a default sweep it is skipped."""
    calibs = {}
    if not any(p == "int8" for _, p in pairs):
        return calibs, pairs, skipped
    try:
        for ck, _, meta in loaded:
            calibs[str(ck)] = calibration.calibration_sample(meta, size, seed, cfg.data_dir, train=cfg.train_split)
    except CifarSpeedError as e:
        if cfg.precisions is not None and "int8" in cfg.precisions:
            raise
        skipped = skipped + [{"backend": b, "precision": p, "reason": f"int8 calibration needs the training images: {e}"}
                             for b, p in pairs if p == "int8"]
        return {}, [(b, p) for b, p in pairs if p != "int8"], skipped
    return calibs, pairs, skipped


@dataclass
class TimingGroup:
    """One model's cells at one thread count: the slots timed together with their baseline, and what
    finishes their records."""
    name: str
    slots: list[Slot]
    bases: dict                 # variant -> the fields its cells share (accuracy, runner ...)
    flops: float

    def finish(self, peak: dict) -> list[Cell]:
        return [finish_cell(self.bases[s.variant], s, baseline_of(s, self.slots), self.flops, peak) for s in self.slots]


def _build_model(cfg, results, ckpt, model, meta, ev: EvalSet, device, batches, modes, threads, requested,
                 pairs, calib, advance) -> tuple[list[Cell], list[TimingGroup]]:
    """A model's variants built and scored, and its cells ready to time: (cells that failed to build,
    one TimingGroup per thread count)."""
    # A row is a checkpoint, named by its file: several checkpoints may share an architecture
    # (lightnn and its distilled variants) and must not merge into one row.
    ref = _ref(ckpt)
    architecture = ref.architecture or meta.architecture
    name = ref.view or ref.architecture or paths_for(ref.path)[1].stem
    while name in results["models"]:
        name += "+"
    flops = flops_per_image(model)
    info = {"checkpoint": str(paths_for(ref.path)[1]), "architecture": architecture,
            "weights_sha256": meta.weights_sha256, "params": count_params(model, trainable_only=False),
            "flops_per_image": flops, "checkpoint_test_accuracy": meta.test_accuracy}
    results["models"][name] = info
    failed: list[Cell] = []
    bases: dict[Variant, dict] = {}            # variant -> the fields its cells share (accuracy, runner ...)
    built: dict[Variant, object] = {}          # variant -> its runner at the run's thread count
    ref_logits = None
    for v in variants(pairs, cfg.options):
        advance(f"{name} {v.label()}: building and scoring")
        base = {"model": name, "architecture": architecture, "backend": v.backend, "precision": v.precision,
                "device": device, "memory_format": v.memory_format, "variant_options": v.non_default,
                "baseline": v.is_baseline,
                "requested": (v.backend, v.precision) in requested}
        try:
            runner, logits, acc, build_s = build_and_score(v, model, meta, device, batches, cfg, calib, ev, ref_logits,
                                                           ref)
        except backends.UnavailableError as e:
            results["skipped"].append({"model": name, "backend": v.backend, "precision": v.precision, "reason": str(e)})
            continue
        except Exception as e:  # a backend failing on one model must not lose the whole sweep
            failed.append(Cell(**base, status="failed", reason=_one_line(e)))
            continue
        if v.is_baseline:
            ref_logits = logits
            info["eager_fp32_top1"] = acc["top1"]
        ref_top1 = info.get("eager_fp32_top1")
        base.update({"runner": runner.info, "build_and_eval_s": build_s, "accuracy": acc,
                     "accuracy_flagged": ref_top1 is not None and acc["top1"] < ref_top1 - cfg.tolerance,
                     "memory_format": v.memory_format or runner.info.get("memory_format")})
        if cfg.dawnbench:
            advance(f"{name} {v.label()}: batch-1 latency")
            try:
                base["dawnbench"] = _dawnbench(runner, ev)
            except Exception as e:
                base["dawnbench"] = {"status": "failed", "reason": _one_line(e)}
        built[v], bases[v] = runner, base
    groups = []
    for n_threads, group_batches in thread_groups(threads, batches, cfg.single_thread_at_batch1):
        torch.set_num_threads(n_threads)
        runners = {v: (r, bases[v]) for v, r in built.items()} if n_threads == threads else \
            _rebuild(bases, model, meta, device, batches, cfg, calib, failed, n_threads, ref)
        slots = [Slot(v, harness.CellTimer(runner, b, cfg.settings, mode, ev.images, n_threads))
                 for v, (runner, _) in runners.items() for b in group_batches for mode in modes]
        # Mode "async" beside the synchronous cells where the backend keeps requests in flight (inflight.py).
        slots += [Slot(v, t) for v, (runner, _) in runners.items()
                  for t in inflight.timers_for(runner, group_batches, cfg.settings, ev.images, n_threads)]
        groups.append(TimingGroup(name, slots, {v: b for v, (_, b) in runners.items()}, flops))
    torch.set_num_threads(threads)
    return failed, groups


def _rebuild(bases, model, meta, device, batches, cfg, calib, out: list, n_threads: int, ref: ModelRef) -> dict:
    """The variants built again under `n_threads` (scores reused: the same program at another thread
    count); a build that fails here is a failed cell of that thread count."""
    runners = {}
    for v, base in bases.items():
        try:
            runner = build_runner(v, model, meta, device, batches, cfg, calib, ref)
        except Exception as e:
            out.append(Cell(**base, threads=n_threads, status="failed", reason=_one_line(e)))
            continue
        runners[v] = (runner, {**base, "runner": runner.info})
    return runners


# -- the results document ---------------------------------------------------------------------------
# (written to disk, with its CSVs, by resultsfile.py)

def validate_results(obj) -> dict:
    """Refuse anything that is not a results file of a schema this version reads (one line)."""
    if not isinstance(obj, dict) or obj.get("schema") not in READABLE_SCHEMAS or not isinstance(obj.get("cells"), list):
        raise CifarSpeedError(f"not a cifar-speed results file (schema {' or '.join(READABLE_SCHEMAS)})")
    return obj


def default_checkpoints() -> list[Path]:
    found = shipped_checkpoints()
    if not found:
        raise CifarSpeedError("no shipped checkpoints in results/checkpoints/: pass checkpoint paths "
                              "(train one with `cifar-speed train`)")
    return found
