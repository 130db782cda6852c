"""Timing a Runner honestly: warm up once, time it in several short trials, summarise, flag disturbance.

Method (after pyperf and hyperfine): a cell is warmed up once (until two consecutive windows of
call times agree: compilation, autotuning, caches), then timed in short blocks, the trials. The
sweep runs the trials of all the cells of the run round-robin (A B C ... A B C ...), so every cell
sees the same spread of machine states (clock, cache, neighbour load) instead of one long block
each, minutes apart. A cell reports the median over trials of each trial's median latency, the
spread of the trial medians (min-max, IQR) and the number of timed calls.

The figure a cell is judged by (its images/s, and the speed-up) is the lower quartile of its trial
medians (`figure_of`), not their median: on a shared VM interference only ever adds time, and it
does not slow every cell alike. While the host is slow to run our second vCPU (the wake-up reading
rises), a cell that meets an OpenMP barrier at every layer (eager fp32 at batch 1 on 2 threads) runs
far slower and a one-thread cell not at all, and such phases last seconds to minutes, so one process
can spend all its trials in one (tools/host_phases.py records them). A median then weighs how much
of the run the host spent in them, which moved every speed-up divided by such a cell between two
runs of the acceptance pair; the lower quartile reads the speed the machine gives when the host lets
it. The speed-up is the baseline's figure over the cell's from the rounds both ran (`figure_ratio`):
matched trials, but not a per-round ratio, because a slow phase moves the two sides of a round's
ratio by different factors. The median of the trial medians and the median of the per-round ratios
(`paired_ratio`) stay in every record.

How many trials: at least `trials` rounds; then, up to `max_trials`, further rounds for the cells
whose figure or speed-up is not yet known to `target_rse` (`relative_se`: the figure's standard
error from the trials' robust spread), each with its baseline. On a shared VM the spread between
trials, not the calls inside one, limits a cell, and noisy cells (batch 1, one thread) need several
times the trials of quiet ones (batch 128): a fixed count is either too few for them or wasted on
the rest.

Before each trial the cell runs untimed for `settle_s`: switching cells costs something (another
runtime's threads still spinning, cold caches) that belongs to no cell's speed.

Host speed (CPU): between consecutive trials a fixed reference workload, the canary (a 192x192
fp32 matmul on one thread, `Canary`), is timed. On a shared VM other tenants slow our vCPUs down in ways neither
CPU time nor steal shows; whatever slows the cells slows the canary too. Each trial keeps the mean of
the readings before and after it, and a cell also reports its time in canary units (`host_normalized`:
trial median / canary), which `compare` uses to tell a change of the code from a change of the host.
With each canary reading goes a wake-up reading (`WakeProbe`: a hand-off to a sleeping thread and
back), kept per trial as `wake_us`: it watches the host state a matmul cannot see, how fast a blocked
thread runs again (a VM's idle vCPU waits for its host), which cells that hand work between threads
(asynchronous requests, one in flight) pay on every call.

CPU: each call is timed with time.perf_counter. Over each trial two views of disturbance are read:
the process's CPU time (time.process_time: did our threads run?) and the machine's counters in
/proc/stat for the CPUs we may run on (steal time, CPU used by other processes: did someone else
take the cores we asked for?). CUDA: a pair of CUDA events per call, recorded on the stream that
runs the work, read after a synchronise. Two modes, named in every result: `device` (inputs
already on the device) and `host` (inputs in pinned host memory, the copy to the device is inside
the timed region; on CPU both are the same thing).
"""
from __future__ import annotations

import base64
import math
import os
import statistics
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .defaults import Settings  # noqa: F401  (harness.Settings is the public name)
from .errors import UnavailableError

MODES = ("device", "host")
P99_MIN_CALLS = 100     # below this many timed calls p99 is (nearly) the maximum: not reported
TIMINGS_ENCODING = "base64 of little-endian float32 milliseconds, one per timed call (harness.decode_calls)"


# Settings lives in defaults.py (torch-free: `bench --help` prints its defaults).


QUICK = Settings(trials=3, max_trials=3, trial_time_s=0.01, trial_min_reps=3, warmup_min_reps=1, warmup_max_s=0.5, canary_s=0.002,
                 settle_s=0.002,
                 warmup_window=2)


# -- statistics ------------------------------------------------------------------------------------

def percentile(values, q: float) -> float:
    """Linear-interpolated percentile (numpy's default method), q in [0, 100]."""
    xs = sorted(values)
    if not xs:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def p99(values_ms) -> tuple[float | None, str | None]:
    """(p99, None) from at least P99_MIN_CALLS calls; (None, why) from fewer (p99 would be ~the max)."""
    if len(values_ms) < P99_MIN_CALLS:
        return None, f"only {len(values_ms)} timed calls; p99 needs at least {P99_MIN_CALLS}"
    return percentile(values_ms, 99), None


def summarize(times_s, batch_size: int) -> dict:
    """Latency statistics of one block of calls in ms per batch, images/s at the median latency."""
    ms = [t * 1e3 for t in times_s]
    median = percentile(ms, 50)
    p, why = p99(ms)
    return {
        "n": len(ms), "median_ms": median, "p90_ms": percentile(ms, 90), "p99_ms": p, "p99_note": why,
        "mean_ms": statistics.fmean(ms), "min_ms": min(ms), "max_ms": max(ms),
        "std_ms": statistics.pstdev(ms) if len(ms) > 1 else 0.0,
        "images_per_s": batch_size / (median / 1e3) if median > 0 else float("inf"),
        "ms_per_image": median / batch_size,
    }


def spread(values) -> dict:
    """Median, min, max and interquartile range of a few numbers (trial medians, paired ratios)."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "iqr": percentile(values, 75) - percentile(values, 25), "n": len(values)}


FIGURE_QUANTILE = 25   # a cell's figure: this percentile of its trial medians (see the module docstring)
FIGURE_TEXT = ("lower quartile of the trial medians (per process, then the median over processes); speed-up: "
               "the baseline's lower quartile over the cell's, from the rounds both ran")


def rank_correlation(xs, ys) -> float | None:
    """Spearman's rho of paired readings (ties ranked by their order: the readings are continuous);
    None below 3 pairs. For diagnostics (tools/host_around_cells.py, tools/host_phases.py)."""
    if len(xs) < 3:
        return None

    def ranks(values):
        order = sorted(range(len(values)), key=list(values).__getitem__)
        r = [0] * len(order)
        for rank, k in enumerate(order):
            r[k] = rank
        return r

    n = len(xs)
    return 1 - 6 * sum((a - b) ** 2 for a, b in zip(ranks(xs), ranks(ys))) / (n * (n * n - 1))


def figure_of(values) -> float:
    """A cell's figure from its trial medians (or their canary-normalised values): the lower quartile."""
    return percentile(values, FIGURE_QUANTILE)


ROBUST_FROM = 10   # relative_se: from this many values on, the MAD; below, the standard deviation
# Student's t, two-sided 95 %, for 2..8 degrees of freedom: the few values (a handful of processes or
# trials) whose error is their standard deviation; from ROBUST_FROM values on, 1.96.
T95 = {2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}


# The large-sample standard error of a sample's q-th percentile, in sigmas / sqrt(n), for normal data:
# sqrt(p (1 - p)) / phi(z_p): 1.2533 for the median, 1.3626 for a quartile.
QUANTILE_SE = {50: 1.2533, 25: 1.3626, 75: 1.3626}


def relative_se(values, quantile: int = 50) -> float:
    """The standard error of the median (or the `quantile`-th percentile, QUANTILE_SE) of `values`,
    relative to it (inf below 3 values): 1.2533 x sigma / sqrt(n) for the median, its large-sample
    error. sigma of log(values): 1.4826 x their median
    absolute deviation, robust to the few trials a neighbour's burst spoils, from ROBUST_FROM values
    on; below that their sample standard deviation, because the MAD of a handful is mostly luck
    (of three process medians two alike made it 0, and a cell read +-0.0 %)."""
    if len(values) < 3 or min(values) <= 0:
        return math.inf
    logs = [math.log(v) for v in values]
    if len(logs) < ROBUST_FROM:
        sigma = statistics.stdev(logs)
    else:
        centre = statistics.median(logs)
        sigma = 1.4826 * statistics.median(abs(x - centre) for x in logs)
    return QUANTILE_SE[quantile] * sigma / math.sqrt(len(values))


def confidence_95(rse: float, n: int) -> float:
    """The 95 % confidence half-width, relative, of a median whose relative_se from n values is rse:
    Student's t exactly where relative_se took the standard deviation (3 to ROBUST_FROM - 1 values)."""
    return (T95[n - 1] if 3 <= n < ROBUST_FROM else 1.96) * rse


def disturbed(cpu_s: float, wall_s: float, threads: int, fraction: float = 0.6) -> tuple[bool, float]:
    """(flag, cpu/wall). The process's threads should keep ~`threads` cores busy while timed."""
    ratio = cpu_s / wall_s if wall_s > 0 else 0.0
    return ratio < fraction * max(1, threads), ratio


def is_stable(times, window: int, tolerance: float) -> bool:
    if len(times) < 2 * window:
        return False
    a = statistics.median(times[-2 * window:-window])
    b = statistics.median(times[-window:])
    return abs(a - b) <= tolerance * max(a, b)


# -- the machine's view: /proc/stat ---------------------------------------------------------------

@dataclass(frozen=True)
class CpuCounters:
    """Cumulative seconds, summed over the CPUs this process may run on (its affinity set)."""
    busy_s: float    # user + nice + system + irq + softirq: work done by anyone, us included
    steal_s: float   # time the hypervisor ran something else while a vCPU wanted to run
    cpus: int


def usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def read_cpu_counters(path: str | os.PathLike = "/proc/stat", cpus: list[int] | None = None) -> CpuCounters | None:
    """The per-CPU counters of /proc/stat for `cpus` (default: our affinity set); None off Linux.

    Per-CPU lines, not the aggregate one: in a container pinned to some cores, work on the other
    cores does not compete with us. guest time is already inside user/nice, so it is not added."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    wanted = {f"cpu{i}" for i in (cpus if cpus is not None else usable_cpus())}
    busy = steal = 0
    n = 0
    for line in lines:
        parts = line.split()
        if not parts or parts[0] not in wanted:
            continue
        vals = [int(v) for v in parts[1:]] + [0] * 8
        user, nice, system, _idle, _iowait, irq, softirq, st = vals[:8]
        busy += user + nice + system + irq + softirq
        steal += st
        n += 1
    if n == 0:
        return None
    return CpuCounters(busy / hz, steal / hz, n)


@dataclass
class Disturbance:
    """What one timed block got from the machine, from both views, and the verdict."""
    wall_s: float
    cpu_s: float                 # this process, all threads
    threads: int                 # cores the process asked for
    cpu_wall_ratio: float
    others_cpu_s: float | None   # CPU time of other processes on our CPUs (None: no /proc/stat)
    steal_s: float | None
    disturbed: bool | None       # None: not judged (CUDA: the host CPU is not what is timed)
    why: str | None = None


def judge(wall_s: float, cpu_s: float, threads: int, before: CpuCounters | None, after: CpuCounters | None,
          settings: Settings = Settings(), process_fraction: float | None = None) -> Disturbance:
    """Flag a block where the machine gave the process less than it asked for.

    Process view: cpu/wall below `process_fraction` (default settings.disturbed_fraction) x threads:
    our threads were not running (preempted, or waiting). Machine view: other processes plus steal
    used more than the cores we left free (cpus - threads) plus `contention_fraction` x threads:
    they ate into ours, even where our own CPU time looks full (a VM's steal)."""
    fraction = settings.disturbed_fraction if process_fraction is None else process_fraction
    threads = max(1, threads)
    flag, ratio = disturbed(cpu_s, wall_s, threads, fraction)
    reasons = [f"process cpu/wall {ratio:.2f} < {fraction:g} x {threads} threads"] if flag else []
    others = steal = None
    if before is not None and after is not None and wall_s > 0:
        steal = max(0.0, after.steal_s - before.steal_s)
        others = max(0.0, after.busy_s - before.busy_s - cpu_s)
        taken = (others + steal) / wall_s                       # cores someone else used
        allowed = max(0, after.cpus - threads) + settings.contention_fraction * threads
        if taken > allowed:
            flag = True
            reasons.append(f"other processes {others / wall_s:.2f} + steal {steal / wall_s:.2f} cores "
                           f"> {allowed:.2f} free of {after.cpus}")
    return Disturbance(wall_s, cpu_s, threads, ratio, others, steal, flag, "; ".join(reasons) or None)


# -- timers ----------------------------------------------------------------------------------------

class _CpuTimer:
    def __init__(self):
        self.times: list[float] = []

    def time(self, fn, x):
        t0 = time.perf_counter()
        y = fn(x)
        self.times.append(time.perf_counter() - t0)
        return y

    def collect(self) -> list[float]:
        out, self.times = self.times, []
        return out


class _CudaTimer:
    """Events recorded on the current stream around each call; read after one synchronise."""

    def __init__(self):
        self.pairs = []

    def time(self, fn, x):
        stream = torch.cuda.current_stream()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record(stream)
        y = fn(x)
        end.record(stream)
        self.pairs.append((start, end))
        return y

    def collect(self) -> list[float]:
        torch.cuda.synchronize()
        out = [s.elapsed_time(e) / 1e3 for s, e in self.pairs]
        self.pairs = []
        return out


def make_inputs(batch_size: int, device: str, mode: str, n: int, source: torch.Tensor | None = None,
                seed: int = 0) -> list[torch.Tensor]:
    """`n` distinct normalised batches: slices of `source` (real images) or seeded noise."""
    if source is not None and len(source) >= batch_size:
        starts = [(i * batch_size) % max(1, len(source) - batch_size + 1) for i in range(n)]
        xs = [source[s:s + batch_size].clone() for s in starts]
    else:
        g = torch.Generator().manual_seed(seed)
        xs = [torch.randn(batch_size, 3, 32, 32, generator=g) for _ in range(n)]
    if device == "cpu":
        return [x.contiguous() for x in xs]
    if mode == "host":
        return [x.pin_memory() for x in xs]
    return [x.to(device) for x in xs]


# -- trials ----------------------------------------------------------------------------------------

def encode_calls(times_s) -> str:
    return base64.b64encode(np.asarray([t * 1e3 for t in times_s], dtype="<f4").tobytes()).decode("ascii")


def decode_calls(text: str) -> list[float]:
    """Per-call milliseconds of one trial, as a results file stores them (TIMINGS_ENCODING)."""
    return np.frombuffer(base64.b64decode(text), dtype="<f4").astype(float).tolist()


@dataclass
class Trial:
    """One timed block of a cell: its per-call times, what the machine gave it, and the host's speed
    around it (the canary's mean ms per call before and after, and of its wake-up probe in
    microseconds; None without a canary)."""
    round: int
    times_s: list[float]
    disturbance: Disturbance
    canary_ms: float | None = None
    wake_us: float | None = None

    @property
    def median_ms(self) -> float:
        return percentile(self.times_s, 50) * 1e3

    @property
    def normalized(self) -> float | None:
        """The trial median in canary units: what is left of its speed once the host's is divided out."""
        return self.median_ms / self.canary_ms if self.canary_ms else None

    def to_dict(self) -> dict:
        d = self.disturbance
        return {"round": self.round, "n": len(self.times_s), "median_ms": self.median_ms, "wall_s": d.wall_s,
                "cpu_s": d.cpu_s, "cpu_wall_ratio": d.cpu_wall_ratio, "others_cpu_s": d.others_cpu_s,
                "steal_s": d.steal_s, "disturbed": d.disturbed, "why": d.why, "canary_ms": self.canary_ms,
                "wake_us": self.wake_us, "calls_ms": encode_calls(self.times_s)}


class Canary:
    """The host's speed now: the median time of a fixed 192x192 fp32 matmul over `seconds`.

    Read between consecutive trials; the reading after one trial is the reading before the next, so
    a round of N cells costs N readings. One thread by default: a multi-threaded matmul waits at
    OpenMP barriers, and another runtime's pool still spinning after its trial (ONNX Runtime,
    OpenVINO) stalled it 50-100x, which measured the previous cell, not the host. Restores torch's
    thread setting. Each reading also reads `wake` (last_wake_us), when given."""
    SIZE = 192

    def __init__(self, seconds: float, threads: int = 1, min_calls: int = 3, wake: "WakeProbe | None" = None):
        g = torch.Generator().manual_seed(0)
        self.a, self.b = torch.randn(self.SIZE, self.SIZE, generator=g), torch.randn(self.SIZE, self.SIZE, generator=g)
        self.seconds, self.threads, self.min_calls = seconds, threads, min_calls
        self.wake = wake
        self.last_ms: float | None = None
        self.last_wake_us: float | None = None

    @classmethod
    def for_timers(cls, timers: list["CellTimer"]) -> "Canary | None":
        """A canary for CPU cells whose settings ask for one; None for CUDA (the host is not what is timed)."""
        if not timers or any(t.cuda for t in timers) or timers[0].settings.canary_s <= 0:
            return None
        return cls(timers[0].settings.canary_s, wake=WakeProbe.shared())

    def read(self) -> float:
        saved = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            times, end = [], time.perf_counter() + self.seconds
            while time.perf_counter() < end or len(times) < self.min_calls:
                t0 = time.perf_counter()
                torch.mm(self.a, self.b)
                times.append(time.perf_counter() - t0)
        finally:
            torch.set_num_threads(saved)
        self.last_ms = statistics.median(times) * 1e3
        self.last_wake_us = self.wake.read() if self.wake else None
        return self.last_ms

    def latest(self) -> float:
        """The reading taken right after the previous trial, or a fresh one."""
        return self.last_ms if self.last_ms is not None else self.read()


class WakeProbe:
    """The host's thread wake-up latency now: the median round trip, in microseconds, of `calls`
    hand-offs to a helper thread blocked on an event and back (two blocked-thread wake-ups each).

    A diagnostic beside the canary, never a divisor: on a VM a blocked thread runs again only once
    its vCPU is scheduled by the host, a cost no compute canary sees and that asynchronous cells
    with one request in flight pay per call. The helper is a daemon thread that sleeps between
    readings; `shared()` is the process's one probe (a sweep makes a canary per model)."""
    _shared: "WakeProbe | None" = None

    def __init__(self, calls: int = 32):
        self.calls = calls
        self._go, self._back = threading.Event(), threading.Event()
        threading.Thread(target=self._serve, daemon=True, name="cifar-speed-wake-probe").start()

    @classmethod
    def shared(cls) -> "WakeProbe":
        if cls._shared is None:
            cls._shared = cls()
        return cls._shared

    def _serve(self) -> None:
        while True:
            self._go.wait()
            self._go.clear()
            self._back.set()

    def read(self) -> float:
        times = []
        for _ in range(self.calls):
            t0 = time.perf_counter()
            self._go.set()
            self._back.wait()
            self._back.clear()
            times.append(time.perf_counter() - t0)
        return statistics.median(times) * 1e6


@dataclass
class Warmup:
    reps: int
    seconds: float
    stable: bool


class CellTimer:
    """One cell (a runner at one batch size, mode and thread count) ready to be timed in trials.

    warm_up() once, then trial(round) as often as wanted: the sweep interleaves the trials of many
    CellTimers. `counters` reads the machine's CPU counters (injectable for tests)."""

    def __init__(self, runner, batch_size: int, settings: Settings | None = None, mode: str = "device",
                 source: torch.Tensor | None = None, threads: int | None = None, counters=read_cpu_counters):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.runner, self.batch_size, self.mode = runner, batch_size, mode
        self.settings = settings or Settings()
        self.threads = threads or torch.get_num_threads()
        self.counters = counters
        self.device = runner.device
        self.cuda = self.device.startswith("cuda")
        self.xs = make_inputs(batch_size, self.device, mode, self.settings.n_inputs, source)
        if self.cuda and mode == "host":
            self.fn = lambda x: runner(x.to(self.device, non_blocking=True))  # the copy is inside the timed call
        else:
            self.fn = runner
        self.timer = _CudaTimer() if self.cuda else _CpuTimer()
        self.warmup: Warmup | None = None
        self.trials: list[Trial] = []
        self.failure: Exception | None = None   # what the runner raised; the cell takes no more trials

    def relative_error(self, baseline: "CellTimer | None" = None) -> float:
        """How well the cell is known so far: the relative standard error of its figure and, given
        its baseline, of its speed-up (from the per-round ratios), whichever is larger."""
        errors = [relative_se([t.median_ms for t in self.trials], FIGURE_QUANTILE)]
        if baseline is not None and baseline is not self:
            ratio = paired_ratio(baseline.trials, self.trials)
            errors.append(ratio["rse"] if ratio else math.inf)
        return max(errors)

    def warm_up(self) -> Warmup:
        """Call until two consecutive windows agree (compilation, autotuning, clock ramp, caches)."""
        s = self.settings
        torch.set_num_threads(self.threads)
        warm: list[float] = []
        t_start = time.perf_counter()
        i, stable = 0, False
        while True:
            self.timer.time(self.fn, self.xs[i % len(self.xs)])
            i += 1
            warm.extend(self.timer.collect() if not self.cuda or i % s.warmup_window == 0 else [])
            if i >= s.warmup_min_reps and is_stable(warm, s.warmup_window, s.warmup_tolerance):
                stable = True
                break
            if time.perf_counter() - t_start > s.warmup_max_s:
                break
        if self.cuda:
            self.timer.collect()
        self.warmup = Warmup(i, time.perf_counter() - t_start, stable)
        return self.warmup

    def trial(self, round_: int, canary: Canary | None = None) -> Trial:
        """One timed block: at least trial_time_s and trial_min_reps calls (between canary readings),
        after settle_s of untimed calls."""
        s = self.settings
        canary_before = canary.latest() if canary else None
        wake_before = canary.last_wake_us if canary else None
        torch.set_num_threads(self.threads)
        self._settle()
        if self.cuda:
            torch.cuda.synchronize()
        before = self.counters()
        cpu0, wall0 = time.process_time(), time.perf_counter()
        reps = 0
        while reps < s.max_reps and (reps < s.trial_min_reps or time.perf_counter() - wall0 < s.trial_time_s):
            self.timer.time(self.fn, self.xs[reps % len(self.xs)])
            reps += 1
        if self.cuda:
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
        after = self.counters()
        if self.cuda:  # the CPU only launches work here: its load does not say what the GPU got
            dist = Disturbance(wall, cpu, self.threads, cpu / wall if wall > 0 else 0.0, None, None, None)
        else:
            dist = judge(wall, cpu, self.threads, before, after, s)
        t = Trial(round_, self.timer.collect(), dist,
                  (canary_before + canary.read()) / 2 if canary else None,
                  _mean_of(wake_before, canary.last_wake_us) if canary else None)
        self.trials.append(t)
        return t

    def _settle(self) -> None:
        """Untimed calls for settle_s (at least one): what switching from the previous cell costs."""
        if self.settings.settle_s <= 0:
            return
        end = time.perf_counter() + self.settings.settle_s
        i = 0
        while i == 0 or time.perf_counter() < end:
            self.fn(self.xs[i % len(self.xs)])
            i += 1
        if self.cuda:
            torch.cuda.synchronize()

    def summary(self) -> dict:
        """The cell's latency record: its figure and the median of trial medians, with their errors;
        the trial medians' spread; pooled percentiles."""
        medians = [t.median_ms for t in self.trials]
        return {**summarize_trials(self.trials, self.batch_size), "median_rse": finite(relative_se(medians)),
                "lower_quartile_rse": finite(relative_se(medians, FIGURE_QUANTILE)), "mode": self.mode, "device": self.device,
                "timer": "cuda-events" if self.cuda else "perf_counter", "threads": self.threads,
                "warmup_reps": self.warmup.reps if self.warmup else 0,
                "warmup_s": self.warmup.seconds if self.warmup else 0.0,
                "warmup_stable": self.warmup.stable if self.warmup else False, "inputs_rotated": len(self.xs)}


def summarize_trials(trials: list[Trial], batch_size: int) -> dict:
    """The cell's figure (figure_of the trial medians; images/s from it) and the median of the trial
    medians; their spread; percentiles pooled over every call (p99 only from P99_MIN_CALLS calls);
    the cell is disturbed when most trials were."""
    if not trials:
        raise ValueError("no trials to summarise")
    medians = [t.median_ms for t in trials]
    pooled = summarize([x for t in trials for x in t.times_s], batch_size)
    sp = spread(medians)
    flags = [t.disturbance.disturbed for t in trials]
    judged = [f for f in flags if f is not None]
    n_dist = sum(1 for f in judged if f)
    host = _host_normalized(trials)
    figure = figure_of(medians)
    return {
        **pooled, **host,
        "median_ms": sp["median"], "trial_median_ms": {"min": sp["min"], "max": sp["max"], "iqr": sp["iqr"]},
        "lower_quartile_ms": figure, "figure": "lower_quartile_ms",
        "images_per_s": batch_size / (figure / 1e3),
        "images_per_s_range": [batch_size / (sp["max"] / 1e3), batch_size / (sp["min"] / 1e3)],
        "ms_per_image": figure / batch_size, "pooled_median_ms": pooled["median_ms"],
        "trials": len(trials), "trials_disturbed": n_dist,
        "disturbed": (n_dist * 2 > len(judged)) if judged else None,
        "wall_s": sum(t.disturbance.wall_s for t in trials), "cpu_s": sum(t.disturbance.cpu_s for t in trials),
        "cpu_wall_ratio": (sum(t.disturbance.cpu_s for t in trials) / sum(t.disturbance.wall_s for t in trials)
                           if sum(t.disturbance.wall_s for t in trials) > 0 else 0.0),
    }


def _host_normalized(trials: list[Trial]) -> dict:
    """The canary's readings over the cell's trials and the trial medians in canary units (only when
    every trial has a reading: a half-normalised cell would compare with nothing)."""
    if not all(t.canary_ms for t in trials):
        return {}
    units = spread([t.normalized for t in trials])
    canary = spread([t.canary_ms for t in trials])
    out = {"canary_ms": {"median": canary["median"], "min": canary["min"], "max": canary["max"]},
           "host_normalized": {"median": units["median"], "min": units["min"], "max": units["max"],
                               "iqr": units["iqr"], "lower_quartile": figure_of([t.normalized for t in trials]),
                               "unit": "trial median / canary ms per call"}}
    if all(t.wake_us for t in trials):
        wake = spread([t.wake_us for t in trials])
        out["wake_us"] = {"median": wake["median"], "min": wake["min"], "max": wake["max"]}
    return out


def _mean_of(a: float | None, b: float | None) -> float | None:
    return (a + b) / 2 if a is not None and b is not None else None


def paired_ratio(baseline: list[Trial], cell: list[Trial], normalized: bool = False) -> dict | None:
    """Speed-up over the baseline: per round, baseline median / cell median of the trials that ran in
    that round (seconds apart, same machine state); the median and spread of those ratios.
    normalized: each trial median divided by its canary first (None where a trial has none)."""
    def value(t: Trial) -> float | None:
        return t.normalized if normalized else t.median_ms

    base = {t.round: value(t) for t in baseline}
    ratios = [base[t.round] / value(t) for t in cell if base.get(t.round) and value(t)]
    return {**spread(ratios), "rse": relative_se(ratios)} if ratios else None


def figure_ratio(baseline: list[Trial], cell: list[Trial], normalized: bool = False) -> dict | None:
    """Speed-up over the baseline as a cell reports it: the baseline's figure over the cell's, each
    from its trials in the rounds both ran (normalized: the trial medians in canary units). Beside it
    (`paired_median`, `min`, `max`, `rse`) the per-round ratios of `paired_ratio`: their spread, and
    the error the figure ratio is given (a ratio of two quartiles has no simpler one)."""
    paired = paired_ratio(baseline, cell, normalized)
    if paired is None:
        return None

    def values(trials: list[Trial]) -> dict[int, float]:
        return {t.round: v for t in trials if (v := t.normalized if normalized else t.median_ms)}

    base, own = values(baseline), values(cell)
    rounds = base.keys() & own.keys()
    return {"value": figure_of([base[r] for r in rounds]) / figure_of([own[r] for r in rounds]),
            "paired_median": paired["median"], "min": paired["min"], "max": paired["max"],
            "rse": paired["rse"], "n": paired["n"]}


def run_round_robin(timers: list[CellTimer], trials: int | None = None, baseline_of=None, on_step=None) -> None:
    """Warm every cell up once, then rounds, each timing its cells once in turn (A B C ... A B C ...).

    The first `trials` rounds (default: the settings' `trials`) time every cell. Later rounds, up to
    the settings' `max_trials`, time only the cells not yet known to `target_rse` (median, and
    speed-up against `baseline_of(timer)`), each with its baseline: a speed-up pairs trials of one
    round. An explicit `trials` means exactly that many rounds. A cell whose runner raises keeps the
    exception in `failure` and leaves the rounds; the others go on. on_step(timer, what) is called
    before each warm-up and trial (progress)."""
    s = timers[0].settings if timers else Settings()
    first, last = (trials, trials) if trials is not None else (s.trials, max(s.trials, s.max_trials))
    baseline_of = baseline_of or (lambda t: None)
    for t in timers:
        _guarded(t, t.warm_up, on_step, "warm-up")
    canary = Canary.for_timers([t for t in timers if t.failure is None])
    for r in range(last):
        cells = _round_cells(timers, r >= first, baseline_of, s.target_rse)
        if not cells:
            break
        for t in cells:
            if t.failure is None:
                _guarded(t, lambda: t.trial(r, canary), on_step,
                         f"trial {r + 1}" if r < first else f"trial {r + 1} of at most {last} (until ±{s.target_rse:.1%})")


def _round_cells(timers: list[CellTimer], extra: bool, baseline_of, target: float) -> list[CellTimer]:
    """The cells a round times: every live one; in an extra round the unsettled ones and their baselines."""
    live = [t for t in timers if t.failure is None]
    if not extra:
        return live
    wanted = set()
    for t in live:
        baseline = baseline_of(t)
        if t.relative_error(baseline) > target:
            wanted |= {id(t)} | ({id(baseline)} if baseline is not None else set())
    return [t for t in live if id(t) in wanted]


def _guarded(timer: CellTimer, step, on_step, what: str) -> None:
    if on_step:
        on_step(timer, what)
    try:
        step()
    except Exception as e:  # one cell's runner failing must not end the others' measurement
        timer.failure = e


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def measure(runner, batch_size: int, settings: Settings | None = None, mode: str = "device",
            source: torch.Tensor | None = None) -> dict:
    """One cell on its own (no interleaving): warm up, trials until its median is precise (or
    `max_trials`), the summary. Raises what the runner raised."""
    timer = CellTimer(runner, batch_size, settings, mode, source)
    run_round_robin([timer])
    if timer.failure is not None:
        raise timer.failure
    return {**timer.summary(), "batch_size": batch_size, "trial_records": [t.to_dict() for t in timer.trials]}


def dawnbench_latency(runner, images: torch.Tensor, labels: torch.Tensor | None = None,
                      warmup: int = 50, method: str = "loop", wait_each: bool = False) -> dict:
    """DAWNBench inference latency: classify the test images one at a time; total time / N.

    `images` are the normalised test images on the host (10,000 for the official figure); each one is
    copied to the device inside the timed loop, as a one-image request would be. Requests are not
    synchronised one by one (DAWNBench divides the loop's total time by N): the device may work on
    image i while the host issues image i+1.

    method "loop": per image, a pageable host -> device copy, the runner, an argmax (several launches).
    method "graph" (CUDA, runners with `graph_capturable`): the images sit in pinned host memory;
    per image one asynchronous copy into a static input, one replay of a CUDA graph holding the
    forward pass and the argmax, one device-side copy of the answer: launch cost is what batch 1
    pays for on a GPU, and this is the least a serving loop can issue per request.

    wait_each: wait for each answer before issuing the next image and time every request on its own
    (p50/p99 per request): what one client that sends an image and waits sees. On a CPU every call
    already returns its answer, so this only adds the per-request percentiles.
    """
    if method not in ("loop", "graph"):
        raise ValueError(f"unknown DAWNBench method {method!r}")
    classify = _graph_classifier(runner, images) if method == "graph" else _loop_classifier(runner, images)
    for i in range(min(warmup, len(images))):
        classify(i)
    runner.sync()
    preds, per_request = [], []
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(len(images)):
        if wait_each:
            start = time.perf_counter()
            preds.append(classify(i))
            runner.sync()
            per_request.append(time.perf_counter() - start)
        else:
            preds.append(classify(i))
    runner.sync()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    pred = torch.cat(preds).cpu()
    cuda = runner.device.startswith("cuda")
    out = {"images": len(images), "total_s": wall, "ms_per_image": wall / len(images) * 1e3,
           "cpu_wall_ratio": cpu / wall if wall > 0 else 0.0, "method": method, "waited": wait_each,
           "timer": "perf_counter+sync" if cuda else "perf_counter"}
    if wait_each:
        p50, p99 = np.percentile(np.asarray(per_request) * 1e3, [50, 99])
        out.update(p50_ms=float(p50), p99_ms=float(p99))
    if labels is not None:
        out["top1"] = (pred == labels).float().mean().item()
    return out


def _loop_classifier(runner, images: torch.Tensor):
    def classify(i: int) -> torch.Tensor:
        return runner(images[i:i + 1].to(runner.device)).argmax(1)
    return classify


def _graph_classifier(runner, images: torch.Tensor):
    if not runner.device.startswith("cuda"):
        raise UnavailableError("the graph DAWNBench method needs CUDA")
    if not runner.graph_capturable:
        what = " ".join(filter(None, (runner.backend, runner.info.get("mode"))))
        raise UnavailableError(f"{what} runner cannot be captured in a CUDA graph (it may replay graphs of its own)")
    host = images.contiguous().pin_memory()
    x = torch.empty((1, *images.shape[1:]), device=runner.device)
    x.copy_(host[:1])
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):   # warm-up off the capture stream, as torch.cuda.graph asks
        for _ in range(3):
            runner(x)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        answer = runner(x).argmax(1)

    def classify(i: int) -> torch.Tensor:
        x.copy_(host[i:i + 1], non_blocking=True)
        graph.replay()
        return answer.clone()   # the next replay overwrites `answer`; the clone is stream-ordered
    return classify


# -- machine peak --------------------------------------------------------------------------------

PEAK_KEYS = {"fp32": "fp32_gflops", "bf16": "bf16_gflops", "fp16": "fp16_gflops", "int8": "int8_gops"}
PEAK_THREADS_FRACTION = 0.9   # a probe is a pure arithmetic loop: it keeps every thread busy, or was shared
# The conv-shaped probe: a 3x3 convolution, 64 -> 64 channels on 32x32 images (the body of the CIFAR
# networks here), batch 32. int8 has no portable conv kernel in torch: its probe is the same conv
# as the GEMM an int8 convolution runs (im2col: M = N*H*W, K = 9*Cin, N = Cout) through torch._int_mm.
CONV_SHAPE = {"batch": 32, "channels": 64, "size": 32, "kernel": 3}


def _sync(device: str):
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def matmul_op(dtype: torch.dtype, device: str = "cpu", size: int | None = None):
    """(call, flops per call) of a square matmul; int8 uses torch._int_mm (int8 x int8 -> int32), the
    kernel family (VNNI on CPU, IMMA on CUDA) that quantized convolutions run on."""
    size = size or (8192 if device.startswith("cuda") else 2048)
    if dtype == torch.int8:
        a = torch.randint(-128, 128, (size, size), device=device, dtype=torch.int8)
        b = torch.randint(-128, 128, (size, size), device=device, dtype=torch.int8)
        return (lambda: torch._int_mm(a, b)), 2 * size ** 3
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    return (lambda: torch.matmul(a, b)), 2 * size ** 3


def conv_op(dtype: torch.dtype, device: str = "cpu", shape: dict | None = None):
    """(call, flops per call) of the conv-shaped probe (CONV_SHAPE), channels_last as the backends run it."""
    s = shape or CONV_SHAPE
    n, c, hw, k = s["batch"], s["channels"], s["size"], s["kernel"]
    flops = 2 * n * hw * hw * c * c * k * k
    if dtype == torch.int8:
        a = torch.randint(-128, 128, (n * hw * hw, k * k * c), device=device, dtype=torch.int8)
        b = torch.randint(-128, 128, (k * k * c, c), device=device, dtype=torch.int8)
        return (lambda: torch._int_mm(a, b)), flops
    x = torch.randn(n, c, hw, hw, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(c, c, k, k, device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    fn = torch.nn.functional.conv2d
    return (lambda: fn(x, w, padding=k // 2)), flops


@dataclass
class ProbeReading:
    gflops: float
    disturbance: Disturbance

    def to_dict(self) -> dict:
        d = self.disturbance
        return {"gflops": self.gflops, "cpu_wall_ratio": d.cpu_wall_ratio, "others_cpu_s": d.others_cpu_s,
                "steal_s": d.steal_s, "disturbed": d.disturbed, "why": d.why}


def probe(call, flops: float, device: str = "cpu", seconds: float = 0.5, counters=read_cpu_counters) -> ProbeReading:
    """Best GFLOP/s of `call` over `seconds`, judged like a trial with a threshold of 0.9 x threads
    (an arithmetic loop keeps every thread busy; less means the cores were shared)."""
    sync = _sync(device)
    call()          # warm (caches, oneDNN primitive creation); sized_op already ran it once
    sync()
    threads = torch.get_num_threads()
    before = counters()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    best, end = 0.0, wall0 + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        call()
        sync()
        best = max(best, flops / (time.perf_counter() - t0) / 1e9)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    if device.startswith("cuda"):
        dist = Disturbance(wall, cpu, threads, cpu / wall if wall > 0 else 0.0, None, None, None)
    else:
        dist = judge(wall, cpu, threads, before, counters(), process_fraction=PEAK_THREADS_FRACTION)
    return ProbeReading(best, dist)


PROBE_CALL_S = 0.05   # grow a probe until one call takes this long (or its full size): long enough to time,
                      # short enough that a slow fallback kernel cannot take minutes


def sized_op(make, dtype: torch.dtype, device: str, scales: list):
    """(call, flops, scale): `make(dtype, device, scale)` at the smallest scale whose one call takes
    PROBE_CALL_S, or the largest. Without VNNI/AMX, torch._int_mm is a reference loop (~0.3 GOP/s on
    an AVX2 EPYC): a fixed 2048^3 probe would run a minute per call."""
    sync = _sync(device)
    for scale in scales:
        call, flops = make(dtype, device, scale)
        call()   # not timed: a first call pays library set-up (cuBLAS / cuDNN handles, lazy kernel loading),
        sync()   # which on an H200 made a 256^3 matmul look slow enough to be chosen as the probe
        t0 = time.perf_counter()
        call()
        sync()
        if time.perf_counter() - t0 >= PROBE_CALL_S:
            break
    return call, flops, scale


MATMUL_SIZES = [256, 512, 1024, 2048]
CONV_SHAPES = [{**CONV_SHAPE, "batch": b} for b in (1, 2, 4, 8, 16, 32)]
# A GPU reaches its rate only on much larger work than a 2-core CPU needs for 50 ms.
CUDA_MATMUL_SIZES = [2048, 4096, 8192]
CUDA_CONV_SHAPES = [{**CONV_SHAPE, "batch": b} for b in (256, 1024, 4096)]


def best_reading(readings: list[ProbeReading]) -> ProbeReading:
    """The best undisturbed reading; the best of all (still flagged) when every one was disturbed."""
    clean = [r for r in readings if not r.disturbance.disturbed]
    return max(clean or readings, key=lambda r: r.gflops)


def matmul_peak(dtype: torch.dtype = torch.bfloat16, device: str = "cpu", size: int | None = None,
                seconds: float = 1.0) -> float:
    """Best achieved GFLOP/s (GOP/s for int8) of square matmuls on this device."""
    call, flops = matmul_op(dtype, device, size)
    return probe(call, flops, device, seconds).gflops


def peak_precisions(device: str) -> dict[str, torch.dtype]:
    from .provenance import cpu_has_fast_bf16

    out = {"fp32": torch.float32}
    if device == "cuda" or cpu_has_fast_bf16():
        out["bf16"] = torch.bfloat16
    if device == "cuda":
        out["fp16"] = torch.float16
    out["int8"] = torch.int8
    return out


def measure_peak(device: str, seconds: float = 0.5, repeats: int = 3, counters=read_cpu_counters) -> dict:
    """Per precision, a square-matmul and a conv-shaped probe, each repeated `repeats` times with the
    best undisturbed reading kept. The % peak denominator of a precision is the higher of its two
    probes (named in `denominators`), so a convolution is measured against what this machine
    reached in a shape it runs, not only against the square GEMM."""
    out: dict = {"probes": {}, "denominators": {}}
    any_disturbed = False
    for name, dtype in peak_precisions(device).items():
        kept = {}
        cuda = device.startswith("cuda")
        for kind, make, scales in (("matmul", matmul_op, CUDA_MATMUL_SIZES if cuda else MATMUL_SIZES),
                                   ("conv", conv_op, CUDA_CONV_SHAPES if cuda else CONV_SHAPES)):
            try:
                call, flops, scale = sized_op(make, dtype, device, scales)
                readings = [probe(call, flops, device, seconds, counters) for _ in range(repeats)]
            except RuntimeError:  # no kernel of this kind on this device: no denominator from it
                continue
            best = best_reading(readings)
            kept[kind] = best
            out["probes"].setdefault(name, {})[kind] = {**best.to_dict(), "readings": [r.gflops for r in readings],
                                                       "shape": scale}
        if name == "int8" and kept and "fp32_gflops" in out and \
                max(r.gflops for r in kept.values()) < out["fp32_gflops"]:
            # Slower than fp32: on a CPU torch._int_mm has no int8 GEMM kernel for this ISA (a
            # reference loop), so it says nothing of what ONNX Runtime or Inductor reach in int8; on
            # CUDA the fp32 conv probe runs as TF32 on tensor cores (cuDNN's default).
            why = ("cuDNN runs fp32 convolutions as TF32 on tensor cores" if cuda
                   else "no int8 GEMM kernel for this CPU's ISA")
            out.setdefault("unmeasured", {})["int8"] = (
                f"torch._int_mm ran slower than the fp32 probe ({why}): no int8 denominator")
            continue
        if not kept:
            continue
        kind, best = max(kept.items(), key=lambda kv: kv[1].gflops)
        out[PEAK_KEYS[name]] = best.gflops
        out["denominators"][name] = kind
        any_disturbed |= bool(best.disturbance.disturbed)
    out.update({"source": f"measured by cifar_speed.harness.measure_peak on {device} at the start of this run: "
                          f"best undisturbed of {repeats} readings of a square matmul and a conv-shaped probe "
                          f"(3x3, {CONV_SHAPE['channels']} channels, {CONV_SHAPE['size']}x{CONV_SHAPE['size']}) "
                          f"per precision, the higher one the denominator",
                "threads": torch.get_num_threads(), "disturbed": any_disturbed if device == "cpu" else None,
                "conv_shape": CONV_SHAPE})
    return out


def peak_for(peak: dict, precision: str) -> float | None:
    """The denominator of peak_fraction for a cell of this precision (None: not measured)."""
    return peak.get(PEAK_KEYS.get(precision, "")) or peak.get("given_gflops")
