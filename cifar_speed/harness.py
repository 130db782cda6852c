"""Timing a Runner honestly: warm up until stable, time every call, summarise, flag disturbance.

CPU: each call is timed with time.perf_counter; process CPU time (time.process_time) is read over the
whole timed phase. CPU/wall near the thread count means the threads had the cores; far below it
(another process took them) marks the measurement `disturbed`.
CUDA: a pair of CUDA events per call, recorded on the stream that runs the work, read after a
synchronise. Two modes, named in every result: `device` (inputs already on the device) and `host`
(inputs in pinned host memory, the copy to the device is inside the timed region; on CPU both are
the same thing).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass

import torch

MODES = ("device", "host")


@dataclass
class Settings:
    min_time_s: float = 2.0        # timed phase lasts at least this long ...
    min_reps: int = 30             # ... and at least this many calls
    max_reps: int = 100_000
    warmup_min_reps: int = 5
    warmup_max_s: float = 10.0     # give up waiting for stability after this (recorded)
    warmup_window: int = 5         # stability: medians of two consecutive windows ...
    warmup_tolerance: float = 0.05 # ... differ by less than this fraction
    n_inputs: int = 4              # distinct batches rotated through (no cache-warm single input)
    disturbed_fraction: float = 0.6  # disturbed if cpu/wall < this x threads

    def as_dict(self) -> dict:
        return asdict(self)


QUICK = Settings(min_time_s=0.05, min_reps=3, warmup_min_reps=1, warmup_max_s=0.5, warmup_window=2)


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


def summarize(times_s, batch_size: int) -> dict:
    """Latency statistics in ms per batch and throughput (images/s at the median latency)."""
    ms = [t * 1e3 for t in times_s]
    median = percentile(ms, 50)
    return {
        "n": len(ms), "median_ms": median, "p90_ms": percentile(ms, 90), "p99_ms": percentile(ms, 99),
        "mean_ms": statistics.fmean(ms), "min_ms": min(ms), "max_ms": max(ms),
        "std_ms": statistics.pstdev(ms) if len(ms) > 1 else 0.0,
        "images_per_s": batch_size / (median / 1e3) if median > 0 else float("inf"),
        "ms_per_image": median / batch_size,
    }


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


def measure(runner, batch_size: int, settings: Settings | None = None, mode: str = "device",
            source: torch.Tensor | None = None) -> dict:
    """Warm up until stable, then time calls for at least min_time_s and min_reps; return the stats."""
    settings = settings or Settings()
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    device = runner.device
    cuda = device.startswith("cuda")
    xs = make_inputs(batch_size, device, mode, settings.n_inputs, source)
    if cuda and mode == "host":
        fn = lambda x: runner(x.to(device, non_blocking=True))  # noqa: E731  copy inside the timed call
    else:
        fn = runner
    timer = _CudaTimer() if cuda else _CpuTimer()

    # Warm-up: until two consecutive windows agree (compilation, autotuning, clock ramp, caches).
    warm: list[float] = []
    t_start = time.perf_counter()
    i = 0
    while True:
        timer.time(fn, xs[i % len(xs)])
        i += 1
        warm.extend(timer.collect() if not cuda or i % settings.warmup_window == 0 else [])
        if i >= settings.warmup_min_reps and is_stable(warm, settings.warmup_window, settings.warmup_tolerance):
            stable = True
            break
        if time.perf_counter() - t_start > settings.warmup_max_s:
            stable = False
            break
    if cuda:
        warm.extend(timer.collect())
    warmup_s = time.perf_counter() - t_start

    # Timed phase.
    if cuda:
        torch.cuda.synchronize()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    reps = 0
    while reps < settings.max_reps and (reps < settings.min_reps or time.perf_counter() - wall0 < settings.min_time_s):
        timer.time(fn, xs[reps % len(xs)])
        reps += 1
    if cuda:
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    times = timer.collect()

    stats = summarize(times, batch_size)
    threads = torch.get_num_threads()
    if cuda:
        flag, ratio = None, cpu / wall if wall > 0 else 0.0
    else:
        flag, ratio = disturbed(cpu, wall, threads, settings.disturbed_fraction)
    stats.update({
        "mode": mode, "device": device, "batch_size": batch_size, "timer": "cuda-events" if cuda else "perf_counter",
        "wall_s": wall, "cpu_s": cpu, "cpu_wall_ratio": ratio, "threads": threads, "disturbed": flag,
        "warmup_reps": i, "warmup_s": warmup_s, "warmup_stable": stable, "inputs_rotated": len(xs),
    })
    return stats


def dawnbench_latency(runner, images: torch.Tensor, labels: torch.Tensor | None = None,
                      warmup: int = 50) -> dict:
    """DAWNBench inference latency: classify the test images one at a time; total time / N.

    `images` are the normalised test images on the host (10,000 for the official figure); each one is
    copied to the device inside the timed loop, as a one-image request would be.
    """
    device = runner.device
    cuda = device.startswith("cuda")
    for i in range(min(warmup, len(images))):
        runner(images[i:i + 1].to(device))
    runner.sync()
    preds = []
    cpu0, t0 = time.process_time(), time.perf_counter()
    for i in range(len(images)):
        y = runner(images[i:i + 1].to(device))
        preds.append(y.argmax(1))
    runner.sync()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    pred = torch.cat(preds).cpu()
    out = {"images": len(images), "total_s": wall, "ms_per_image": wall / len(images) * 1e3,
           "cpu_wall_ratio": cpu / wall if wall > 0 else 0.0, "timer": "perf_counter+sync" if cuda else "perf_counter"}
    if labels is not None:
        out["top1"] = (pred == labels).float().mean().item()
    return out


# -- machine peak --------------------------------------------------------------------------------

def matmul_peak(dtype: torch.dtype = torch.bfloat16, device: str = "cpu", size: int | None = None,
                seconds: float = 1.0) -> float:
    """Best achieved GFLOP/s (GOP/s for int8) of square matmuls on this device: the denominator of
    peak_fraction for cells of that precision. int8 uses torch._int_mm (int8 x int8 -> int32), the
    kernel family (VNNI on CPU, IMMA on CUDA) that quantized convolutions run on."""
    size = size or (8192 if device == "cuda" else 2048)
    if dtype == torch.int8:
        a = torch.randint(-128, 128, (size, size), device=device, dtype=torch.int8)
        b = torch.randint(-128, 128, (size, size), device=device, dtype=torch.int8)
        mm = torch._int_mm
    else:
        a = torch.randn(size, size, device=device, dtype=dtype)
        b = torch.randn(size, size, device=device, dtype=dtype)
        mm = torch.matmul
    flops = 2 * size ** 3
    best = 0.0
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    for _ in range(2):
        mm(a, b)
    sync()
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        mm(a, b)
        sync()
        best = max(best, flops / (time.perf_counter() - t0) / 1e9)
    return best
