"""Mode "async": throughput with several requests in flight, the way a server keeps the cores busy.

A synchronous cell times one call at a time: each call must use every core by itself, and the
cores idle while Python prepares the next call. A server instead keeps several requests in flight
(OpenVINO: the THROUGHPUT hint's streams fed by an AsyncInferQueue; ONNX Runtime: one session per
stream, called from as many threads). A runner that can do this exposes
`inflight(batches, calls) -> (per-request latencies in s, facts)` (backends.Runner.inflight).

`AsyncCellTimer` times it with the harness's own warm-up, trials, disturbance counters and summary,
so an async cell sits beside the synchronous ones in the same round-robin: each timed "call" is a
group of `calls_per_group` requests submitted back to back, and what is recorded for it is the
group's wall time divided by its size, the interval at which requests complete. images/s =
batch / median of those (the same formula as a synchronous cell) is then the served throughput, and
a paired ratio against eager fp32's synchronous trial of the same round is a throughput ratio. Each
request's own latency (submit to completion, others queued beside it) is kept separately, in the
cell's latency.inflight, because it is not the interval and must not be read as one.
"""
from __future__ import annotations

import time

from . import harness

MODE = "async"
BASELINE_MODE = "device"        # async cells are compared with eager fp32 called synchronously
GROUP_PER_REQUEST = 4           # requests per timed group, per request in flight (fill and drain amortised)
MIN_GROUP = 8


class _GroupTimer:
    """harness's timer interface (time / collect): one entry per group, its wall time / its size."""

    def __init__(self):
        self.times: list[float] = []

    def time(self, fn, x):
        t0 = time.perf_counter()
        calls = fn(x)
        self.times.append((time.perf_counter() - t0) / calls)

    def collect(self) -> list[float]:
        out, self.times = self.times, []
        return out


class AsyncCellTimer(harness.CellTimer):
    """A cell of mode "async": `runner.inflight` timed in trials like any harness.CellTimer."""

    baseline_mode = BASELINE_MODE

    def __init__(self, runner, batch_size: int, settings: harness.Settings | None = None, source=None,
                 threads: int | None = None, counters=harness.read_cpu_counters):
        if getattr(runner, "inflight", None) is None:
            raise ValueError(f"{runner.backend} {runner.precision} has no in-flight mode")
        super().__init__(runner, batch_size, settings, "device", source, threads, counters)
        self.mode = MODE
        self.group = MIN_GROUP
        self.how: dict = {}
        self.request_latencies: list[float] = []
        self.fn = self._group
        self.timer = _GroupTimer()

    def _group(self, _x) -> int:
        """One group of requests in flight, cycling through the cell's distinct input batches."""
        calls = self.group
        latencies, self.how = self.runner.inflight(self.xs, calls)
        self.request_latencies.extend(latencies)
        # Size later groups to the number of requests the backend keeps in flight.
        self.group = max(MIN_GROUP, GROUP_PER_REQUEST * int(self.how.get("requests_in_flight") or 1))
        return calls

    def warm_up(self):
        out = super().warm_up()
        self.request_latencies = []      # keep only the timed trials' requests
        return out

    def _settle(self) -> None:
        kept = len(self.request_latencies)
        super()._settle()
        del self.request_latencies[kept:]   # the settle's requests are not timed: not in the latencies

    def summary(self) -> dict:
        lat = harness.summarize(self.request_latencies, self.batch_size) if self.request_latencies else {}
        return {**super().summary(), "mode": MODE, "timer": "perf_counter per group of requests in flight",
                "inflight": {**self.how, "calls_per_group": self.group,
                             "per_call_value": "wall time of a group / its requests (the completion interval)",
                             "request_latency_ms": {k: lat.get(k) for k in ("n", "median_ms", "p90_ms", "p99_ms",
                                                                           "p99_note", "max_ms")}}}


def timers_for(runner, batches, settings, source, threads) -> list[AsyncCellTimer]:
    """The async cells of one runner (none when its backend has no in-flight mode, or on CUDA)."""
    if getattr(runner, "inflight", None) is None or runner.device != "cpu":
        return []
    return [AsyncCellTimer(runner, b, settings, source, threads) for b in batches]
